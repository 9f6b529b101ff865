package bench

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeAccounts is the accounts half of the HTTP API: it registers names,
// answers the first register of every user with 503 when flaky, and refuses
// bodies with unknown fields, as the node does.
type fakeAccounts struct {
	mu       sync.Mutex
	users    map[string]uint64
	flaky    bool
	refused  map[string]bool
	inFlight atomic.Int64
	maxSeen  atomic.Int64
}

func (f *fakeAccounts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxSeen.Load()
		if n <= m || f.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	var body struct{ Username, Password, Device string }
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Password != benchPassword {
		http.Error(w, `{"code":"invalid"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/v1/register":
		if f.flaky && !f.refused[body.Username] {
			f.refused[body.Username] = true
			http.Error(w, `{"code":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		if _, taken := f.users[body.Username]; taken {
			http.Error(w, `{"code":"username_taken"}`, http.StatusConflict)
			return
		}
		f.users[body.Username] = uint64(len(f.users) + 1)
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"user_id": f.users[body.Username], "username": body.Username})
	case "/v1/login":
		id, ok := f.users[body.Username]
		if !ok || body.Device == "" {
			http.Error(w, `{"code":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"token": "tok-" + body.Username, "user_id": id, "device_id": 100 + id})
	default:
		http.NotFound(w, r)
	}
}

func TestCreateAccounts(t *testing.T) {
	fake := &fakeAccounts{users: map[string]uint64{}, refused: map[string]bool{}, flaky: true}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	m := newAccountMaker(srv.URL, 4)
	var done atomic.Int64
	accounts, err := m.create(t.Context(), 50, func() { done.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if len(accounts) != 50 || done.Load() != 50 {
		t.Fatalf("%d accounts, %d callbacks", len(accounts), done.Load())
	}
	seen := map[uint64]bool{}
	for i, a := range accounts {
		if a.User == 0 || seen[a.User] || a.Token != "tok-"+a.Name || a.Device != 100+a.User || !strings.HasPrefix(a.Name, m.prefix) {
			t.Fatalf("account %d: %+v", i, a)
		}
		seen[a.User] = true
	}
	if got := fake.maxSeen.Load(); got > 4 {
		t.Fatalf("%d requests in flight, limit 4", got)
	}
	if len(fake.refused) != 50 {
		t.Fatalf("%d registers were refused with 503 and retried, want 50", len(fake.refused))
	}
	if len(m.prefix) > 10 || len(accounts[0].Name) > 32 {
		t.Fatalf("names too long: %q", accounts[0].Name)
	}
}

func TestCreateAccountsStopsOnError(t *testing.T) {
	fake := &fakeAccounts{users: map[string]uint64{}, refused: map[string]bool{}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	m := newAccountMaker(srv.URL, 2)
	fake.users[m.prefix+"0000003"] = 999 // a name the run will try: 409
	_, err := m.create(t.Context(), 20, func() {})
	if err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("got %v", err)
	}
}
