package node_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// A connection does not outlive its token: when the token expires the
// server closes it with 1008 "token expired", and the token is refused at
// the handshake from then on.
func TestConnectionClosedWhenTokenExpires(t *testing.T) {
	clk := &fakeClock{now: time.Now()}
	cfg := testConfig(t.TempDir())
	cfg.Clock = clk.Now
	cfg.SignalTick = 5 * time.Millisecond // real ticks; the expiry follows the fake clock
	cfg.TokenTTL = time.Hour
	n := startNodeWith(t, cfg)
	alice := register(t, n, "alice")
	tok := login(t, n, alice, "phone")
	r := dialRaw(t, n.WSURL(), tok)

	// Before the expiry the connection works.
	clk.Advance(59 * time.Minute)
	r.request(t, map[string]any{"t": "ping", "id": 1})
	if rep := r.reply(t, 1); rep.Type != "ok" {
		t.Fatalf("ping before expiry: %+v", rep)
	}

	clk.Advance(2 * time.Minute)
	select {
	case err := <-r.closed:
		requireClosed(t, err, 1008, "token expired")
	case <-time.After(time.Minute): // a guard, not the verdict: the close comes within a sweep
		t.Fatal("the connection outlived its token")
	}
	if code := dialStatus(t, n.WSURL(), tok); code != 401 {
		t.Fatalf("expired token at the handshake: %d, want 401", code)
	}
}

// dialStatus tries a WebSocket handshake with token and returns the HTTP
// status it got (101 when it was upgraded).
func dialStatus(t *testing.T, url, token string) int {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	conn, resp, err := gws.NewClient(&gws.BuiltinEventHandler{}, &gws.ClientOption{Addr: url, RequestHeader: h})
	if err == nil {
		conn.NetConn().Close()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("handshake: %v", err)
	}
	return resp.StatusCode
}
