package node_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"parley/node"
	"parley/wire"
)

// testClock is a Config.Clock the test moves by hand.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// authAnswer is the status, error code and Retry-After of an accounts call.
type authAnswer struct {
	status     int
	code       wire.Code
	retryAfter string
	userID     uint64
}

func postAuth(t *testing.T, n *node.Node, path, user, password string) authAnswer {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"username": user, "password": password})
	resp, err := http.Post(n.HTTPURL()+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Code   wire.Code `json:"code"`
		UserID uint64    `json:"user_id"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return authAnswer{status: resp.StatusCode, code: out.Code, retryAfter: resp.Header.Get("Retry-After"), userID: out.UserID}
}

// TestLoginThrottle on the real server: per username, then per address,
// then per address for registrations; the injected clock lifts them.
func TestLoginThrottle(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	cfg := testConfig(t.TempDir())
	cfg.Clock = clock.Now
	cfg.AuthLimits = node.AuthLimits{
		UserFailures: 10, UserFailureEvery: 12 * time.Second, // the defaults
		IPFailures: 15, IPFailureEvery: 3 * time.Second,
		IPRegisters: 3, IPRegisterEvery: time.Minute,
	}
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")

	for i := range 10 {
		if a := postAuth(t, n, "/v1/login", "alice", "wrong-password"); a.status != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %+v, want 401", i+1, a)
		}
	}
	want429 := func(what string, a authAnswer) {
		t.Helper()
		if a.status != http.StatusTooManyRequests || a.code != wire.CodeRateLimited || a.retryAfter == "" {
			t.Fatalf("%s: %+v; want 429 rate_limited with Retry-After", what, a)
		}
	}
	a := postAuth(t, n, "/v1/login", "alice", "wrong-password")
	want429("11th wrong password", a)
	if a.retryAfter != "12" {
		t.Fatalf("Retry-After %q, want 12 (one failure per 12 s)", a.retryAfter)
	}
	// Throttled means the password is not even checked.
	want429("the right password while throttled", postAuth(t, n, "/v1/login", "alice", alice.password))

	// Another name from the same address works until the address's budget
	// (15 failures, 10 spent on alice) is spent; successes cost nothing.
	for i := range 3 {
		if a := postAuth(t, n, "/v1/login", "bob", bob.password); a.status != http.StatusOK {
			t.Fatalf("bob's login %d: %+v", i+1, a)
		}
	}
	for i := range 5 {
		if a := postAuth(t, n, "/v1/login", "bob", "wrong-password"); a.status != http.StatusUnauthorized {
			t.Fatalf("bob's wrong password %d: %+v, want 401", i+1, a)
		}
	}
	want429("bob once the address's budget is spent", postAuth(t, n, "/v1/login", "bob", bob.password))
	want429("an unknown name from the spent address", postAuth(t, n, "/v1/login", "nobody", "wrong-password"))

	// 12 s later alice has one attempt again, and the address four.
	clock.Advance(12 * time.Second)
	if a := postAuth(t, n, "/v1/login", "alice", alice.password); a.status != http.StatusOK {
		t.Fatalf("alice after the wait: %+v", a)
	}
	if a := postAuth(t, n, "/v1/login", "bob", bob.password); a.status != http.StatusOK {
		t.Fatalf("bob after the wait: %+v", a)
	}

	// Registrations: 3 per address at once (2 spent 12 s ago, a fifth of
	// one back since).
	if a := postAuth(t, n, "/v1/register", "carol", "carol-password"); a.status != http.StatusCreated {
		t.Fatalf("third registration: %+v", a)
	}
	a = postAuth(t, n, "/v1/register", "dave", "dave-password")
	want429("fourth registration", a)
	if a.retryAfter != "48" {
		t.Fatalf("registration Retry-After %q, want 48 (0.8 of a registration a minute)", a.retryAfter)
	}
	clock.Advance(time.Minute)
	if a := postAuth(t, n, "/v1/register", "dave", "dave-password"); a.status != http.StatusCreated {
		t.Fatalf("registration after the wait: %+v", a)
	}
}
