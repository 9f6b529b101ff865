package faults

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"parley/client"
	"parley/internal/testwait"
	"parley/push/pushtest"
	"parley/wire"
)

// webhookSink is a webhook receiver that checks every request's Standard
// Webhooks signature, counts attempts, and refuses (503) while failing is
// set: notifications are then pending on the leader, retried.
type webhookSink struct {
	srv    *httptest.Server
	secret []byte

	mu        sync.Mutex
	failing   bool
	attempts  int
	delivered map[string]int // webhook-id (conversation.seq.device) -> accepted deliveries
	bad       []string
}

func newWebhookSink(t *testing.T) (*webhookSink, string) {
	s := &webhookSink{secret: []byte("faults-webhook-secret-0123456789"), delivered: make(map[string]int)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, err := pushtest.VerifyWebhook(s.secret, r.Header, body, time.Now(), 5*time.Minute)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.attempts++
		switch {
		case err != nil:
			s.bad = append(s.bad, err.Error())
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case s.failing:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "down", http.StatusServiceUnavailable)
		default:
			s.delivered[r.URL.Path+"#"+r.Header.Get("webhook-id")]++
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(s.srv.Close)
	file := filepath.Join(t.TempDir(), "webhook.secret")
	if err := os.WriteFile(file, []byte("whsec_"+base64.StdEncoding.EncodeToString(s.secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s, file
}

func (s *webhookSink) setFailing(on bool) {
	s.mu.Lock()
	s.failing = on
	s.mu.Unlock()
}

func (s *webhookSink) snapshot() (attempts int, delivered map[string]int, bad []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := make(map[string]int, len(s.delivered))
	for k, v := range s.delivered {
		d[k] = v
	}
	return s.attempts, d, append([]string(nil), s.bad...)
}

// TestPushSurvivesLeaderLoss: notifications pending on the leader (the
// receiver refuses them for now) are all delivered after the leader is
// killed: the new leader resumes from the notifier's durable progress, so
// every offline device gets a notification for every message, at least
// once.
func TestPushSurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three node processes")
	}
	sink, secretFile := newWebhookSink(t)
	c := startCluster(t, "-push-webhook-secret", secretFile, "-push-allow-private")
	ctx := ctxFor(t, 3*time.Minute)

	// bob has two devices, carol one; each registers a webhook target and
	// goes offline. alice sends.
	alice := c.newUser(t, "alice", 0)
	defer alice.cl.Close()
	type device struct {
		user  uint64
		dev   uint64
		path  string
		token string
	}
	var devices []device
	var connected []*client.Client
	users := map[string]uint64{}
	for _, who := range []struct {
		name string
		devs int
		home int
	}{{"bob", 2, 1}, {"carol", 1, 2}} {
		var reg struct {
			UserID uint64 `json:"user_id"`
		}
		home := c.nodes[who.home]
		if code, err := postJSON(home.HTTPAddr, "/v1/register", map[string]string{"username": who.name, "password": "password-" + who.name}, &reg); err != nil || code != http.StatusCreated {
			t.Fatalf("register %s: %d %v", who.name, code, err)
		}
		users[who.name] = reg.UserID
		for i := range who.devs {
			var login struct {
				DeviceID uint64 `json:"device_id"`
				Token    string `json:"token"`
			}
			if code, err := postJSON(home.HTTPAddr, "/v1/login", map[string]string{"username": who.name, "password": "password-" + who.name, "device": fmt.Sprint(i)}, &login); err != nil || code != http.StatusOK {
				t.Fatalf("login %s: %d %v", who.name, code, err)
			}
			d := device{user: reg.UserID, dev: login.DeviceID, path: fmt.Sprintf("/%s-%d", who.name, i), token: login.Token}
			cl := pinned(t, home, d.token)
			if err := cl.SetPush(ctx, client.PushTarget{Provider: "webhook", Token: sink.srv.URL + d.path}); err != nil {
				t.Fatalf("push.set %s: %v", d.path, err)
			}
			connected = append(connected, cl)
			devices = append(devices, d)
		}
	}
	// Seen online on alice's node first: presence crosses nodes over the
	// peer links, and an "offline" read before they carried bob's and
	// carol's connections is no proof (it once let the messages go while
	// the leader, hearing of those connections a moment later, took bob
	// and carol for online, so it rightly sent nothing).
	testwait.Eventually(t, "bob and carol online on alice's node", func() bool {
		rep, err := alice.cl.Request(ctx, &wire.Request{Type: wire.TypePresenceSub, Users: []uint64{users["bob"], users["carol"]}})
		return err == nil && len(rep.Presence) == 2 && rep.Presence[0].Online && rep.Presence[1].Online
	}, testwait.Limit(time.Minute))
	for _, cl := range connected {
		cl.Close()
	}
	testwait.Eventually(t, "bob and carol offline", func() bool {
		rep, err := alice.cl.Request(ctx, &wire.Request{Type: wire.TypePresenceSub, Users: []uint64{users["bob"], users["carol"]}})
		return err == nil && len(rep.Presence) == 2 && !rep.Presence[0].Online && !rep.Presence[1].Online
	}, testwait.Limit(time.Minute))

	dm, err := alice.cl.OpenDirect(ctx, users["bob"])
	if err != nil {
		t.Fatal(err)
	}
	group, err := alice.cl.CreateGroup(ctx, "team", []uint64{users["bob"], users["carol"]})
	if err != nil {
		t.Fatal(err)
	}

	// The receiver is down: the leader's notifications stay pending.
	sink.setFailing(true)
	want := map[string]bool{} // path#conv.seq.device
	send := func(conv uint64, to []device, body string) {
		t.Helper()
		ack, err := alice.cl.Send(ctx, conv, body)
		if err != nil {
			t.Fatalf("send %s: %v", body, err)
		}
		for _, d := range to {
			want[fmt.Sprintf("%s#%d.%d.%d", d.path, conv, ack.Seq, d.dev)] = true
		}
	}
	for i := range 5 {
		send(dm.ID, devices[:2], fmt.Sprintf("dm %d", i))
		send(group.ID, devices, fmt.Sprintf("group %d", i))
	}
	testwait.Eventually(t, "attempts refused while the receiver is down", func() bool {
		attempts, _, _ := sink.snapshot()
		return attempts >= len(want)
	}, testwait.Limit(time.Minute))

	lead := c.leader(t, c.nodes...)
	t.Logf("kill -9 the leader %s with %d notifications pending", lead.name, len(want))
	lead.Kill9()
	sink.setFailing(false)
	rest := without(c.nodes, lead)
	c.leader(t, rest...)

	testwait.Eventually(t, "every notification delivered", func() bool {
		_, got, _ := sink.snapshot()
		for k := range want {
			if got[k] == 0 {
				return false
			}
		}
		return true
	}, testwait.Limit(2*time.Minute), testwait.Detail(func() string {
		_, got, bad := sink.snapshot()
		var missing []string
		for k := range want {
			if got[k] == 0 {
				missing = append(missing, k)
			}
		}
		sort.Strings(missing)
		return fmt.Sprintf("missing %v; refused as malformed: %v", missing, bad)
	}))
	attempts, got, bad := sink.snapshot()
	if len(bad) != 0 {
		t.Fatalf("malformed webhooks: %v", bad)
	}
	for k := range got {
		if !want[k] {
			t.Errorf("a notification nobody should get: %s", k)
		}
	}
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("%d notifications delivered (%d twice or more, allowed: at least once), %d attempts in all", len(got), dups, attempts)
}
