package push_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"parley/push"
	"parley/push/pushtest"
)

func newFCM(t *testing.T, fake *pushtest.FCM) *push.FCM {
	t.Helper()
	f, err := push.NewFCM(push.FCMConfig{ServiceAccountFile: fake.ServiceAccountFile, Endpoint: fake.URL, HTTPClient: fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFCMSendsV1Message(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake)
	n := push.Notification{Title: "Ann", Body: "hi", Conv: 7, Seq: 42, Badge: 3, CollapseKey: "conv-7", ThreadID: "conv-7",
		IdempotencyKey: "m42-d1", TTL: 90 * time.Minute, Data: map[string]string{"kind": "dm"}}
	for range 3 {
		res, err := f.Send(context.Background(), push.Target{Provider: push.ProviderFCM, Token: "tok-A"}, n)
		if err != nil || res.Status != 200 {
			t.Fatalf("Send: %+v %v (fake rejections: %q)", res, err, fake.Rejections())
		}
	}
	if g := fake.TokenGrants(); g != 1 {
		t.Errorf("%d access tokens fetched for 3 sends, want 1 (cached)", g)
	}
	m := fake.Messages()[0]
	if m.Token != "tok-A" || m.Notification == nil || m.Notification.Title != "Ann" || m.Notification.Body != "hi" {
		t.Fatalf("message %+v", m)
	}
	if m.Data["conv"] != "7" || m.Data["seq"] != "42" || m.Data["kind"] != "dm" {
		t.Errorf("data %v", m.Data)
	}
	if a := m.Android; a == nil || a.CollapseKey != "conv-7" || a.TTL != "5400s" || a.Priority != "HIGH" || a.Notification == nil || a.Notification.Tag != "conv-7" {
		t.Errorf("android %+v", m.Android)
	}
	if m.APNs == nil || m.APNs.Headers["apns-collapse-id"] != "conv-7" {
		t.Fatalf("apns %+v", m.APNs)
	}
	var aps struct {
		Badge    int    `json:"badge"`
		ThreadID string `json:"thread-id"`
	}
	if err := json.Unmarshal(m.APNs.Payload["aps"], &aps); err != nil || aps.Badge != 3 || aps.ThreadID != "conv-7" {
		t.Errorf("aps %s: %+v %v", m.APNs.Payload["aps"], aps, err)
	}
}

func TestFCMGone(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake)
	fake.Unregister("dead")
	fake.RejectTokenAsInvalid("garbled")
	for _, tok := range []string{"dead", "garbled"} {
		res, err := f.Send(context.Background(), push.Target{Token: tok}, push.Notification{Body: "x"})
		var pe *push.ProviderError
		if !res.Gone || res.Retryable || !errors.As(err, &pe) {
			t.Errorf("%s: res %+v err %v, want Gone", tok, res, err)
		}
	}
}

// An INVALID_ARGUMENT about the payload is our bug, not the device's: the
// registration must survive it.
func TestFCMPayloadErrorIsNotGone(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake)
	fake.Respond("tok", pushtest.FCMError(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "Invalid value at 'message.data'"))
	res, err := f.Send(context.Background(), push.Target{Token: "tok"}, push.Notification{Body: "x"})
	if err == nil || res.Gone || res.Retryable || res.Status != 400 {
		t.Fatalf("res %+v err %v", res, err)
	}
}

func TestFCMRetryable(t *testing.T) {
	fake := pushtest.NewFCM(t)
	f := newFCM(t, fake)
	quota := pushtest.FCMError(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "quota")
	quota.Header.Set("Retry-After", "17")
	fake.Respond("busy", quota)
	fake.Respond("down", pushtest.FCMError(503, "UNAVAILABLE", "UNAVAILABLE", "try later"))
	res, err := f.Send(context.Background(), push.Target{Token: "busy"}, push.Notification{Body: "x"})
	if err == nil || !res.Retryable || res.RetryAfter != 17*time.Second || res.Gone {
		t.Errorf("429: res %+v err %v", res, err)
	}
	res, err = f.Send(context.Background(), push.Target{Token: "down"}, push.Notification{Body: "x"})
	if err == nil || !res.Retryable || res.Gone {
		t.Errorf("503: res %+v err %v", res, err)
	}
}

// A service account key that the token endpoint does not know (here: the key
// of another fake) must not produce a send, and is not retryable.
func TestFCMWrongKeyIsRefusedAtTokenEndpoint(t *testing.T) {
	fake := pushtest.NewFCM(t)
	other := pushtest.NewFCM(t)
	// other's key file, but pointed at fake's token endpoint.
	var sa map[string]string
	json.Unmarshal(readFile(t, other.ServiceAccountFile), &sa)
	sa["token_uri"] = fake.URL + "/token"
	b, _ := json.Marshal(sa)
	file := t.TempDir() + "/sa.json"
	writeFile(t, file, string(b))
	f, err := push.NewFCM(push.FCMConfig{ServiceAccountFile: file, Endpoint: fake.URL, HTTPClient: fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.Send(context.Background(), push.Target{Token: "tok"}, push.Notification{Body: "x"})
	if err == nil || res.Retryable || res.Gone || len(fake.Messages()) != 0 {
		t.Fatalf("res %+v err %v messages %d", res, err, len(fake.Messages()))
	}
	if r := fake.Rejections(); len(r) != 1 || !strings.Contains(r[0], "assertion") {
		t.Fatalf("rejections %q, want the assertion refused", r)
	}
}

// The fake must refuse a message that does not follow the v1 schema, or the
// tests above would prove nothing about the format.
func TestFakeFCMRejectsMalformedMessage(t *testing.T) {
	fake := pushtest.NewFCM(t)
	post := func(bearer, body string) int {
		req, _ := http.NewRequest("POST", fake.URL+"/v1/projects/"+fake.ProjectID+"/messages:send", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+bearer)
		resp, err := fake.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	good := `{"message":{"token":"t","notification":{"body":"x"}}}`
	if code := post("made-up", good); code != 401 {
		t.Fatalf("unknown bearer token answered %d, want 401", code)
	}
	access := fake.IssueAccessToken()
	if code := post(access, good); code != 200 {
		t.Fatalf("valid message answered %d: %q", code, fake.Rejections())
	}
	for _, body := range []string{
		`{"message":{"token":"t","notification":{"text":"x"}}}`,             // unknown field
		`{"message":{"token":"t","android":{"ttl":"3600"}}}`,                // Duration without "s"
		`{"message":{"token":"t","android":{"priority":"urgent"}}}`,         // not an enum value
		`{"message":{"token":"t","data":{"seq":42}}}`,                       // data values must be strings
		`{"message":{"notification":{"body":"x"}}}`,                         // no target
		`{"message":{"token":"t","apns":{"payload":{"aps":"not object"}}}}`, // aps must be an object
	} {
		if code := post(access, body); code != 400 {
			t.Errorf("%s answered %d, want 400", body, code)
		}
	}
}
