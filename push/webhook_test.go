package push_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"parley/push"
	"parley/push/pushtest"
)

func newWebhook(t *testing.T, recv *pushtest.WebhookReceiver, now func() time.Time) *push.Webhook {
	t.Helper()
	w, err := push.NewWebhook(push.WebhookConfig{SecretFile: recv.SecretFile, HTTPClient: recv.Client(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWebhookDeliversSignedEvent(t *testing.T) {
	recv := pushtest.NewWebhookReceiver(t)
	w := newWebhook(t, recv, nil)
	n := push.Notification{Title: "Ann", Body: "hi", Conv: 7, Seq: 42, Badge: 3, CollapseKey: "c7", IdempotencyKey: "m42-d1"}
	res, err := w.Send(context.Background(), push.Target{Provider: push.ProviderWebhook, Token: recv.URL + "/u/1"}, n)
	if err != nil {
		t.Fatalf("Send: %v (receiver rejections: %q)", err, recv.Rejections())
	}
	if res.Status != http.StatusNoContent || res.Gone || res.Retryable {
		t.Fatalf("result %+v, want 204 and nothing else", res)
	}
	got := recv.Delivered()
	if len(got) != 1 {
		t.Fatalf("%d deliveries, want 1", len(got))
	}
	d := got[0]
	if d.ID != "m42-d1" || d.Event.Type != push.WebhookEventType || d.Event.Data.Conv != "7" || d.Event.Data.Seq != "42" ||
		d.Event.Data.Title != "Ann" || d.Event.Data.Body != "hi" || d.Event.Data.Badge == nil || *d.Event.Data.Badge != 3 {
		t.Fatalf("delivery %+v", d)
	}
}

func TestWebhookPreviewOffSendsGenericBody(t *testing.T) {
	recv := pushtest.NewWebhookReceiver(t)
	w := newWebhook(t, recv, nil)
	_, err := w.Send(context.Background(), push.Target{Token: recv.URL + "/u/1"}, push.Notification{Conv: 1, Seq: 1, IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err, recv.Rejections())
	}
	if d := recv.Delivered()[0]; d.Event.Data.Body != push.GenericBody || d.Event.Data.Title != "" {
		t.Fatalf("title %q body %q, want generic body only", d.Event.Data.Title, d.Event.Data.Body)
	}
}

// A sender whose clock is 10 minutes behind produces a timestamp the receiver
// must refuse: this is the replay defence, and it shows the receiver really
// checks the timestamp rather than only the signature.
func TestWebhookStaleTimestampRejected(t *testing.T) {
	recv := pushtest.NewWebhookReceiver(t)
	w := newWebhook(t, recv, func() time.Time { return time.Now().Add(-10 * time.Minute) })
	res, err := w.Send(context.Background(), push.Target{Token: recv.URL + "/u/1"}, push.Notification{Body: "x", IdempotencyKey: "k"})
	var pe *push.ProviderError
	if !errors.As(err, &pe) || res.Status != http.StatusUnauthorized || res.Retryable || res.Gone {
		t.Fatalf("res %+v err %v, want 401 not retryable", res, err)
	}
	if r := recv.Rejections(); len(r) != 1 || !strings.Contains(r[0], "webhook-timestamp") {
		t.Fatalf("rejections %q, want one about the timestamp", r)
	}
}

// A sender with another secret must be refused: the receiver checks the MAC.
func TestWebhookWrongSecretRejected(t *testing.T) {
	recv := pushtest.NewWebhookReceiver(t)
	other := pushtest.NewWebhookReceiver(t)
	w, err := push.NewWebhook(push.WebhookConfig{SecretFile: other.SecretFile, HTTPClient: recv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.Send(context.Background(), push.Target{Token: recv.URL + "/u/1"}, push.Notification{Body: "x", IdempotencyKey: "k"})
	if err == nil || res.Status != http.StatusUnauthorized {
		t.Fatalf("res %+v err %v, want 401", res, err)
	}
	if r := recv.Rejections(); len(r) != 1 || !strings.Contains(r[0], "signature") {
		t.Fatalf("rejections %q", r)
	}
}

func TestWebhookStatusMapping(t *testing.T) {
	recv := pushtest.NewWebhookReceiver(t)
	w := newWebhook(t, recv, nil)
	recv.Respond("/gone", pushtest.Response{Status: http.StatusGone})
	recv.Respond("/busy", pushtest.Response{Status: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"30"}}})
	recv.Respond("/down", pushtest.Response{Status: http.StatusBadGateway})
	recv.Respond("/bad", pushtest.Response{Status: http.StatusBadRequest})
	recv.Respond("/moved", pushtest.Response{Status: http.StatusFound, Header: http.Header{"Location": {"/elsewhere"}}})
	for _, tc := range []struct {
		path string
		want push.Result
	}{
		{"/gone", push.Result{Gone: true, Status: 410}},
		{"/busy", push.Result{Retryable: true, RetryAfter: 30 * time.Second, Status: 429}},
		{"/down", push.Result{Retryable: true, Status: 502}},
		{"/bad", push.Result{Status: 400}},
		{"/moved", push.Result{Status: 302}}, // not followed: a redirected POST is not a delivery
	} {
		res, err := w.Send(context.Background(), push.Target{Token: recv.URL + tc.path}, push.Notification{Body: "x", IdempotencyKey: "k"})
		if err == nil || res != tc.want {
			t.Errorf("%s: res %+v err %v, want %+v and an error", tc.path, res, err, tc.want)
		}
	}
	if len(recv.Delivered()) != 0 || len(recv.Rejections()) != 0 {
		t.Fatalf("delivered %d, rejected %q", len(recv.Delivered()), recv.Rejections())
	}
}

// The default client must not let a user-registered URL reach the server's
// own network.
func TestWebhookDefaultClientRefusesLoopback(t *testing.T) {
	recv := pushtest.NewWebhookReceiver(t)
	w, err := push.NewWebhook(push.WebhookConfig{SecretFile: recv.SecretFile})
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.Send(context.Background(), push.Target{Token: recv.URL + "/u"}, push.Notification{Body: "x", IdempotencyKey: "k"})
	if !errors.Is(err, push.ErrPrivateAddress) || !res.Gone || res.Retryable {
		t.Fatalf("res %+v err %v, want a Gone refusal", res, err)
	}
	if len(recv.Delivered()) != 0 {
		t.Fatal("delivered despite the guard")
	}
	allowed, err := push.NewWebhook(push.WebhookConfig{SecretFile: recv.SecretFile, AllowPrivateNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := allowed.Send(context.Background(), push.Target{Token: recv.URL + "/u"}, push.Notification{Body: "x", IdempotencyKey: "k"}); err != nil {
		t.Fatalf("AllowPrivateNetworks: %v", err)
	}
}

func TestWebhookBadSecretFile(t *testing.T) {
	for _, content := range []string{"whsec_not base64!", "whsec_AAAA"} {
		f := t.TempDir() + "/s"
		writeFile(t, f, content)
		if _, err := push.NewWebhook(push.WebhookConfig{SecretFile: f}); err == nil {
			t.Errorf("secret %q accepted", content)
		}
	}
	if _, err := push.NewWebhook(push.WebhookConfig{SecretFile: t.TempDir() + "/missing"}); err == nil {
		t.Error("missing file accepted")
	}
}
