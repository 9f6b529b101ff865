package push_test

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"parley/push"
	"parley/push/pushtest"
)

func newWebPush(t *testing.T, fake *pushtest.WebPush, now func() time.Time) *push.WebPush {
	t.Helper()
	w, err := push.NewWebPush(push.WebPushConfig{VAPIDKeyFile: fake.VAPIDKeyFile, Subject: "mailto:ops@parley.invalid",
		HTTPClient: fake.Client(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func target(s pushtest.WebPushSubscription) push.Target {
	return push.Target{Provider: push.ProviderWebPush, Endpoint: s.Endpoint, P256dh: s.P256dh, Auth: s.Auth}
}

func TestWebPushDeliversEncryptedMessage(t *testing.T) {
	fake := pushtest.NewWebPush(t)
	w := newWebPush(t, fake, nil)
	if w.PublicKey() != fake.VAPIDPublic {
		t.Fatalf("PublicKey %s, want %s", w.PublicKey(), fake.VAPIDPublic)
	}
	sub := fake.Subscribe(t)
	n := push.Notification{Title: "Ann", Body: "hi", Conv: 7, Seq: 42, Badge: 2, CollapseKey: "conv-7", TTL: 2 * time.Hour}
	res, err := w.Send(context.Background(), target(sub), n)
	if err != nil || res.Status != http.StatusCreated {
		t.Fatalf("Send: %+v %v (fake rejections %q)", res, err, fake.Rejections())
	}
	m := fake.Messages()[0]
	p, err := pushtest.WebPushPayload(m)
	if err != nil {
		t.Fatalf("plaintext %q: %v", m.Plaintext, err)
	}
	if p["title"] != "Ann" || p["body"] != "hi" || p["conv"] != "7" || p["seq"] != "42" || p["badge"] != 2.0 || p["tag"] != "conv-7" {
		t.Errorf("payload %v", p)
	}
	if m.Header.Get("TTL") != "7200" || m.Header.Get("Urgency") != "high" || len(m.Header.Get("Topic")) != 32 {
		t.Errorf("headers TTL %q Urgency %q Topic %q", m.Header.Get("TTL"), m.Header.Get("Urgency"), m.Header.Get("Topic"))
	}
	if m.VAPIDSubject != "mailto:ops@parley.invalid" {
		t.Errorf("sub %q", m.VAPIDSubject)
	}
}

// Padded base64 (some libraries serialise keys that way) must work too.
func TestWebPushAcceptsPaddedKeys(t *testing.T) {
	fake := pushtest.NewWebPush(t)
	w := newWebPush(t, fake, nil)
	sub := fake.Subscribe(t)
	tg := target(sub)
	tg.Auth += "=="
	tg.P256dh += "="
	if _, err := w.Send(context.Background(), tg, push.Notification{Body: "x"}); err != nil {
		t.Fatal(err, fake.Rejections())
	}
}

func TestWebPushGoneAndRetryAfter(t *testing.T) {
	fake := pushtest.NewWebPush(t)
	w := newWebPush(t, fake, nil)
	gone, busy, down := fake.Subscribe(t), fake.Subscribe(t), fake.Subscribe(t)
	fake.Expire(gone.Endpoint)
	fake.Respond(busy.Endpoint, pushtest.Response{Status: 429, Header: http.Header{"Retry-After": {"120"}}})
	fake.Respond(down.Endpoint, pushtest.Response{Status: 502})
	for _, tc := range []struct {
		name string
		sub  pushtest.WebPushSubscription
		want push.Result
	}{
		{"410", gone, push.Result{Gone: true, Status: 410}},
		{"429", busy, push.Result{Retryable: true, RetryAfter: 2 * time.Minute, Status: 429}},
		{"502", down, push.Result{Retryable: true, Status: 502}},
	} {
		res, err := w.Send(context.Background(), target(tc.sub), push.Notification{Body: "x"})
		if err == nil || res != tc.want {
			t.Errorf("%s: %+v %v, want %+v", tc.name, res, err, tc.want)
		}
	}
	// An endpoint the service no longer knows answers 404: also Gone.
	unknown := fake.Subscribe(t)
	unknown.Endpoint = fake.URL + "/wpush/never-issued"
	if res, _ := w.Send(context.Background(), target(unknown), push.Notification{Body: "x"}); !res.Gone || res.Status != 404 {
		t.Errorf("unknown endpoint: %+v", res)
	}
}

func TestWebPushMalformedSubscriptionIsGone(t *testing.T) {
	fake := pushtest.NewWebPush(t)
	w := newWebPush(t, fake, nil)
	good := fake.Subscribe(t)
	for name, tg := range map[string]push.Target{
		"http endpoint": {Endpoint: strings.Replace(good.Endpoint, "https:", "http:", 1), P256dh: good.P256dh, Auth: good.Auth},
		"short auth":    {Endpoint: good.Endpoint, P256dh: good.P256dh, Auth: "AAAA"},
		"not a point":   {Endpoint: good.Endpoint, P256dh: base64.RawURLEncoding.EncodeToString(make([]byte, 65)), Auth: good.Auth},
	} {
		if res, err := w.Send(context.Background(), tg, push.Notification{Body: "x"}); !res.Gone || err == nil {
			t.Errorf("%s: %+v %v, want Gone", name, res, err)
		}
	}
	if len(fake.Messages()) != 0 {
		t.Fatal("a malformed subscription reached the service")
	}
}

// The fake must refuse what a real push service refuses, or the tests above
// prove nothing: a VAPID key other than the one subscribed with, a JWT that
// has expired by the service's clock, and a body encrypted for another
// subscription.
func TestFakeWebPushRejects(t *testing.T) {
	fake := pushtest.NewWebPush(t)
	other := pushtest.NewWebPush(t)
	wrongVAPID, err := push.NewWebPush(push.WebPushConfig{VAPIDKeyFile: other.VAPIDKeyFile, Subject: "mailto:a@b.invalid", HTTPClient: fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	sub := fake.Subscribe(t)
	if res, err := wrongVAPID.Send(context.Background(), target(sub), push.Notification{Body: "x"}); err == nil || res.Status != 401 {
		t.Errorf("wrong VAPID key: %+v %v", res, err)
	}

	stale := newWebPush(t, fake, func() time.Time { return time.Now().Add(-13 * time.Hour) })
	if res, err := stale.Send(context.Background(), target(sub), push.Notification{Body: "x"}); err == nil || res.Status != 401 {
		t.Errorf("expired VAPID JWT: %+v %v", res, err)
	}

	w := newWebPush(t, fake, nil)
	stranger, _ := ecdh.P256().GenerateKey(nil)
	tg := target(sub)
	tg.P256dh = base64.RawURLEncoding.EncodeToString(stranger.PublicKey().Bytes())
	if res, err := w.Send(context.Background(), tg, push.Notification{Body: "x"}); err == nil || res.Status != 400 {
		t.Errorf("encrypted for another key: %+v %v", res, err)
	}
	if r := fake.Rejections(); len(r) != 3 || !strings.Contains(r[0], "k=") || !strings.Contains(r[1], "expired") || !strings.Contains(r[2], "decrypt") {
		t.Errorf("rejections %q", r)
	}
	if len(fake.Messages()) != 0 {
		t.Fatal("fake accepted a bad message")
	}
}

func TestNewWebPushChecksConfig(t *testing.T) {
	fake := pushtest.NewWebPush(t)
	if _, err := push.NewWebPush(push.WebPushConfig{VAPIDKeyFile: fake.VAPIDKeyFile, Subject: "ops@parley.invalid"}); err == nil {
		t.Error("subject without mailto: accepted")
	}
	raw := t.TempDir() + "/vapid.txt"
	writeFile(t, raw, base64.RawURLEncoding.EncodeToString(make([]byte, 31))+"\n")
	if _, err := push.NewWebPush(push.WebPushConfig{VAPIDKeyFile: raw, Subject: "mailto:a@b.invalid"}); err == nil {
		t.Error("31-byte scalar accepted")
	}
}

// web-push tooling prints the VAPID private key as a base64url scalar; such
// a file must sign exactly like the PEM of the same key.
func TestWebPushRawVAPIDKey(t *testing.T) {
	fake := pushtest.NewWebPush(t)
	block, _ := pem.Decode(readFile(t, fake.VAPIDKeyFile))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	scalar, err := k.(*ecdsa.PrivateKey).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	raw := t.TempDir() + "/vapid.txt"
	writeFile(t, raw, base64.RawURLEncoding.EncodeToString(scalar)+"\n")
	w, err := push.NewWebPush(push.WebPushConfig{VAPIDKeyFile: raw, Subject: "mailto:a@b.invalid", HTTPClient: fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Send(context.Background(), target(fake.Subscribe(t)), push.Notification{Body: "x"}); err != nil {
		t.Fatal(err, fake.Rejections())
	}
}
