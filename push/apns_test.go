package push_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"parley/push"
	"parley/push/pushtest"
)

const deviceA = "8d2bd1bb3d9b4e0bb1d6a4f1ea6b6c1b0c8a7f3e2d1c0b9a8f7e6d5c4b3a2910"

func newAPNs(t *testing.T, fake *pushtest.APNs, now func() time.Time) *push.APNs {
	t.Helper()
	a, err := push.NewAPNs(push.APNsConfig{KeyFile: fake.KeyFile, KeyID: fake.KeyID, TeamID: fake.TeamID, Topic: fake.Topic,
		Endpoint: fake.URL, HTTPClient: fake.Client(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAPNsSendsAlertOverHTTP2(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	n := push.Notification{Title: "Ann", Body: "hi", Conv: 7, Seq: 42, Badge: 3, CollapseKey: strings.Repeat("k", 80),
		ThreadID: "conv-7", IdempotencyKey: "m42-d1", TTL: time.Hour, Data: map[string]string{"kind": "dm"}}
	before := time.Now()
	res, err := a.Send(context.Background(), push.Target{Provider: push.ProviderAPNs, Token: deviceA}, n)
	if err != nil || res.Status != 200 {
		t.Fatalf("Send: %+v %v (fake rejections %q)", res, err, fake.Rejections())
	}
	got := fake.Notifications()[0]
	if got.DeviceToken != deviceA || got.APS.Alert.Title != "Ann" || got.APS.Alert.Body != "hi" || got.APS.Badge == nil || *got.APS.Badge != 3 ||
		got.APS.ThreadID != "conv-7" || got.APS.Sound != "default" {
		t.Fatalf("notification %+v", got)
	}
	if string(got.Payload["conv"]) != `"7"` || string(got.Payload["seq"]) != `"42"` || string(got.Payload["kind"]) != `"dm"` {
		t.Errorf("custom keys %s %s %s", got.Payload["conv"], got.Payload["seq"], got.Payload["kind"])
	}
	if id := got.Header.Get("apns-collapse-id"); len(id) != 64 {
		t.Errorf("apns-collapse-id %q: an 80-byte key must be hashed to 64 bytes", id)
	}
	exp, _ := strconv.ParseInt(got.Header.Get("apns-expiration"), 10, 64)
	if want := before.Add(time.Hour).Unix(); exp < want || exp > want+5 {
		t.Errorf("apns-expiration %d, want about %d", exp, want)
	}
	// The same idempotency key gives the same apns-id on a retry.
	a.Send(context.Background(), push.Target{Token: deviceA}, n)
	if id1, id2 := got.Header.Get("apns-id"), fake.Notifications()[1].Header.Get("apns-id"); id1 == "" || id1 != id2 {
		t.Errorf("apns-id %q then %q", id1, id2)
	}
}

// The provider token is signed once, reused for 50 minutes, then replaced;
// concurrent sends share it.
func TestAPNsProviderTokenCachedAndRefreshed(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	fake.SetNow(now)
	a := newAPNs(t, fake, now)
	send := func() {
		if _, err := a.Send(context.Background(), push.Target{Token: deviceA}, push.Notification{Body: "x"}); err != nil {
			t.Fatalf("%v %q", err, fake.Rejections())
		}
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(send)
	}
	wg.Wait()
	advance(40 * time.Minute)
	send()
	if n := fake.ProviderTokens(); n != 1 {
		t.Fatalf("%d provider tokens within 40 minutes, want 1", n)
	}
	advance(15 * time.Minute)
	send()
	if n := fake.ProviderTokens(); n != 2 {
		t.Fatalf("%d provider tokens after 55 minutes, want 2", n)
	}
}

func TestAPNsGoneAndRetryable(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	a := newAPNs(t, fake, nil)
	dead, bad, busy, down, topic := "aa01", "aa02", "aa03", "aa04", "aa05"
	fake.Unregister(dead)
	fake.Respond(bad, pushtest.APNsError(400, "BadDeviceToken"))
	tooMany := pushtest.APNsError(429, "TooManyRequests")
	tooMany.Header.Set("Retry-After", "3")
	fake.Respond(busy, tooMany)
	fake.Respond(down, pushtest.APNsError(503, "ServiceUnavailable"))
	fake.Respond(topic, pushtest.APNsError(400, "DeviceTokenNotForTopic"))
	for _, tc := range []struct {
		token  string
		want   push.Result
		reason string
	}{
		{dead, push.Result{Gone: true, Status: 410}, "Unregistered"},
		{bad, push.Result{Gone: true, Status: 400}, "BadDeviceToken"},
		{busy, push.Result{Retryable: true, RetryAfter: 3 * time.Second, Status: 429}, "TooManyRequests"},
		{down, push.Result{Retryable: true, Status: 503}, "ServiceUnavailable"},
		{topic, push.Result{Status: 400}, "DeviceTokenNotForTopic"},
	} {
		res, err := a.Send(context.Background(), push.Target{Token: tc.token}, push.Notification{Body: "x"})
		if res != tc.want || err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: %+v %v, want %+v and %s", tc.token, res, err, tc.want, tc.reason)
		}
	}
	res, err := a.Send(context.Background(), push.Target{Token: "not-hex"}, push.Notification{Body: "x"})
	if !res.Gone || err == nil {
		t.Errorf("malformed token: %+v %v", res, err)
	}
}

// The fake must hold the sender to APNs's rules: a wrong key, topic or
// protocol is refused.
func TestFakeAPNsRejects(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	other := pushtest.NewAPNs(t)
	wrongKey, err := push.NewAPNs(push.APNsConfig{KeyFile: other.KeyFile, KeyID: fake.KeyID, TeamID: fake.TeamID, Topic: fake.Topic,
		Endpoint: fake.URL, HTTPClient: fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	wrongTopic, err := push.NewAPNs(push.APNsConfig{KeyFile: fake.KeyFile, KeyID: fake.KeyID, TeamID: fake.TeamID, Topic: "org.other",
		Endpoint: fake.URL, HTTPClient: fake.Client()})
	if err != nil {
		t.Fatal(err)
	}
	tr := fake.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	http1, err := push.NewAPNs(push.APNsConfig{KeyFile: fake.KeyFile, KeyID: fake.KeyID, TeamID: fake.TeamID, Topic: fake.Topic,
		Endpoint: fake.URL, HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		s      *push.APNs
		reason string
	}{
		"wrong key":   {wrongKey, "InvalidProviderToken"},
		"wrong topic": {wrongTopic, "TopicDisallowed"},
		"HTTP/1.1":    {http1, "HTTP2Required"},
	} {
		res, err := tc.s.Send(context.Background(), push.Target{Token: deviceA}, push.Notification{Body: "x"})
		if err == nil || res.Gone || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: %+v %v, want %s", name, res, err, tc.reason)
		}
	}
	if len(fake.Notifications()) != 0 {
		t.Fatal("fake accepted a bad request")
	}
}

func TestNewAPNsReportsEveryProblem(t *testing.T) {
	_, err := push.NewAPNs(push.APNsConfig{KeyFile: t.TempDir() + "/missing.p8"})
	for _, want := range []string{"KeyID", "TeamID", "Topic", "missing.p8"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

// APNs calling the provider token expired makes the next send sign a new one,
// but not when the token is younger than Apple's 20-minute minimum (that
// would earn TooManyProviderTokenUpdates instead).
func TestAPNsExpiredProviderToken(t *testing.T) {
	fake := pushtest.NewAPNs(t)
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	fake.SetNow(now)
	a := newAPNs(t, fake, now)
	const dev = "ab01"
	fake.Respond(dev, pushtest.APNsError(403, "ExpiredProviderToken"))
	send := func() push.Result {
		res, _ := a.Send(context.Background(), push.Target{Token: dev}, push.Notification{Body: "x"})
		return res
	}
	if res := send(); !res.Retryable || res.Gone {
		t.Fatalf("ExpiredProviderToken: %+v, want retryable", res)
	}
	send()
	if n := fake.ProviderTokens(); n != 1 {
		t.Fatalf("%d tokens: refreshed a 0-minute-old token", n)
	}
	mu.Lock()
	clock = clock.Add(25 * time.Minute)
	mu.Unlock()
	send() // answered expired again: this token is 25 minutes old, so it is dropped
	send()
	if n := fake.ProviderTokens(); n != 2 {
		t.Fatalf("%d tokens, want a refresh after ExpiredProviderToken at 25 minutes", n)
	}
}
