package node_test

// The rest of the conformance walk: the sentences of docs/PROTOCOL.md whose
// defaults are seconds or minutes (keepalive, typing), or that need a full
// disk or a full node. They are checked on nodes whose timers, caps and
// free-space probe are set for the test; the rule is the same, only the
// number differs, and each check waits for what the document promises
// rather than for a time.

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"parley/node"
	"parley/wire"
)

// pingConn is a raw connection that counts the server's pings and answers
// them only if answer is set (a client that never pongs, to see the idle
// timeout).
type pingConn struct {
	rawConn
	answer bool
	pings  atomic.Int64
}

func (p *pingConn) OnPing(c *gws.Conn, payload []byte) {
	p.pings.Add(1)
	if p.answer {
		_ = c.WritePong(payload)
	}
}

// dialTuned opens a protocol connection from the source address from (nil:
// any) and returns it with its hello; pings are answered if answer.
func dialTuned(t *testing.T, n *node.Node, token string, from net.IP, answer bool) (*conn, *pingConn, wire.Hello) {
	t.Helper()
	p := &pingConn{rawConn: rawConn{frames: make(chan []byte, 1024), closed: make(chan error, 1)}, answer: answer}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	opt := &gws.ClientOption{Addr: n.WSURL(), RequestHeader: h}
	if from != nil {
		opt.NewDialer = func() (gws.Dialer, error) { return &net.Dialer{LocalAddr: &net.TCPAddr{IP: from}}, nil }
	}
	c, _, err := gws.NewClient(p, opt)
	if err != nil {
		t.Fatal(err)
	}
	p.conn = c
	go c.ReadLoop()
	t.Cleanup(func() { c.NetConn().Close() })
	var hello wire.Hello
	if err := wire.Unmarshal(p.next(t), &hello); err != nil || hello.Type != wire.TypeHello {
		t.Fatalf("first frame: %+v %v", hello, err)
	}
	return &conn{rawConn: &p.rawConn}, p, hello
}

// typingFramesBefore returns the typing frames c receives before the ev
// frame (conv, seq): the send that made that event is the marker after
// which a forwarded typing frame would have been queued.
func typingFramesBefore(t *testing.T, c *conn, conv, seq uint64) []wire.Typing {
	t.Helper()
	var out []wire.Typing
	c.frame(t, func(b []byte, typ string) bool {
		if typ == wire.TypeTypingEvent {
			var ty wire.Typing
			if err := wire.Unmarshal(b, &ty); err != nil {
				t.Fatal(err)
			}
			out = append(out, ty)
			return false
		}
		var ev wire.Event
		return typ == wire.TypeEvent && wire.Unmarshal(b, &ev) == nil && ev.Conv == conv && ev.Seq == seq
	})
	// frame left what it skipped pending: the typing frames are consumed.
	c.pending = slices.DeleteFunc(c.pending, func(b []byte) bool {
		typ, _ := wire.PeekType(b)
		return typ == wire.TypeTypingEvent
	})
	return out
}

func TestConformanceTimersAndStorage(t *testing.T) {
	var free atomic.Uint64
	free.Store(plenty)
	cfg := storageConfig(t.TempDir(), &free)
	cfg.PingInterval = time.Second    // netpoll's timer wheel ticks every second: the shortest it takes
	cfg.IdleTimeout = 3 * time.Second // the least it takes: the ping interval plus two ticks
	cfg.TypingThrottle = time.Hour    // a second start inside the window is suppressed however slow the machine
	cfg.TypingTTL = 2 * time.Hour     // (the ttl must exceed the throttle; its expiry is checked on the node below)
	cfg.TypingMaxMembers = 2
	n := startNodeWith(t, cfg)
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	ta, tb := login(t, n, alice, "phone"), login(t, n, bob, "phone")

	t.Run("§4.1 hello's ping_ms is the node's ping interval", func(t *testing.T) {
		_, _, hello := dialTuned(t, n, ta, nil, true)
		if hello.PingMS != 1000 {
			t.Fatalf("ping_ms %d, want 1000", hello.PingMS)
		}
	})
	t.Run("§2 keepalive: the server pings a connection it has received nothing from for ping_ms", func(t *testing.T) {
		_, p, _ := dialTuned(t, n, ta, nil, true)
		waitUntil(t, "a ping", func() bool { return p.pings.Load() >= 1 })
	})
	t.Run("§2 keepalive: a connection that answers pings outlives the idle timeout", func(t *testing.T) {
		c, p, _ := dialTuned(t, n, ta, nil, true)
		// The first ping comes after ping_ms (1 s) of quiet and each next
		// one at least ping_ms after the one before: 4 pings take more
		// than the idle timeout (3 s).
		waitUntil(t, "4 pings", func() bool { return p.pings.Load() >= 4 })
		wantOK(t, "ping", c.do(t, map[string]any{"t": "ping"}))
	})
	t.Run("§2 keepalive: a connection the server receives nothing from is closed 1001 after the idle timeout", func(t *testing.T) {
		c, p, _ := dialTuned(t, n, ta, nil, false)
		_, err := c.untilClosed(t)
		var ce *gws.CloseError
		if !errors.As(err, &ce) || ce.Code != 1001 {
			t.Fatalf("closed with %v, want 1001", err)
		}
		if p.pings.Load() == 0 {
			t.Fatal("closed without a ping first")
		}
	})

	a, _, _ := dialTuned(t, n, ta, nil, true)
	b, _, _ := dialTuned(t, n, tb, nil, true)
	rep := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", rep)
	dm := rep.Info.ID

	t.Run("§4.4 a start is forwarded once per window; renewals and a second stop are answered ok and not forwarded", func(t *testing.T) {
		wantOK(t, "typing on", a.do(t, map[string]any{"t": "typing", "conv": dm, "on": true}))
		wantOK(t, "typing renewal", a.do(t, map[string]any{"t": "typing", "conv": dm, "on": true}))
		wantOK(t, "typing off", a.do(t, map[string]any{"t": "typing", "conv": dm, "on": false}))
		wantOK(t, "typing off again", a.do(t, map[string]any{"t": "typing", "conv": dm, "on": false}))
		wantOK(t, "typing on inside the window", a.do(t, map[string]any{"t": "typing", "conv": dm, "on": true}))
		sent := a.do(t, map[string]any{"t": "send", "conv": dm, "cmid": "typing-marker", "body": "marker"})
		wantOK(t, "send", sent)
		got := typingFramesBefore(t, b, dm, sent.Seq)
		// One start, then one stop: the user's own stop, or the expiry's if
		// the ttl passed first. Never a second start.
		if len(got) != 2 || !got[0].On || got[1].On || got[0].User != alice.user || got[1].User != alice.user {
			t.Fatalf("typing frames %+v, want one start then one stop", got)
		}
	})
	t.Run("§4.4 groups over the typing size get no typing frames, and the request is still ok", func(t *testing.T) {
		rep := a.do(t, map[string]any{"t": "group.create", "name": "crowd", "users": []uint64{bob.user, carol.user}})
		wantOK(t, "group.create", rep)
		g := rep.Info.ID
		wantOK(t, "typing", a.do(t, map[string]any{"t": "typing", "conv": g, "on": true}))
		sent := a.do(t, map[string]any{"t": "send", "conv": g, "cmid": "crowd-marker", "body": "marker"})
		wantOK(t, "send", sent)
		if got := typingFramesBefore(t, b, g, sent.Seq); len(got) != 0 {
			t.Fatalf("typing frames in a group over the cap: %+v", got)
		}
	})

	t.Run("§6 storage_full refuses every write; reads, typing, ping and receipts go on; the connection stays open", func(t *testing.T) {
		free.Store(testMinFree - 1)
		n.CheckStorageForTest()
		defer func() { free.Store(plenty); n.CheckStorageForTest() }()
		writes := []map[string]any{
			{"t": "send", "conv": dm, "cmid": "full-1", "body": "x"},
			{"t": "dm.open", "user": carol.user},
			{"t": "group.create", "name": "g", "users": []uint64{bob.user}},
			{"t": "group.rename", "conv": dm, "name": "n"},
			{"t": "privacy.set", "hide_last_seen": true},
			{"t": "block", "user": carol.user},
			{"t": "unblock", "user": carol.user},
		}
		for _, w := range writes {
			wantCode(t, w["t"].(string), a.do(t, w), wire.CodeStorageFull)
		}
		reads := []map[string]any{
			{"t": "history", "conv": dm},
			{"t": "sync", "since": 0},
			{"t": "conv.list"},
			{"t": "conv.get", "conv": dm},
			{"t": "user.get", "user": bob.user},
			{"t": "typing", "conv": dm, "on": false},
			{"t": "ping"},
			{"t": "receipt", "conv": dm, "read": 1},
		}
		for _, r := range reads {
			wantOK(t, r["t"].(string), a.do(t, r))
		}
		// (A register of an existing account with its own password writes
		// nothing and is answered as before: a new name here.)
		for path, body := range map[string]string{
			"/v1/register": `{"username":"dave","password":"password-dave"}`,
			"/v1/login":    `{"username":"alice","password":"password-alice","device":"tablet"}`,
		} {
			resp, err := http.Post(n.HTTPURL()+path, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "30" {
				t.Fatalf("%s while full: %d, Retry-After %q; want 503 with Retry-After 30", path, resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}
		// It lifts by itself; the same connection writes again with the same cmid.
		free.Store(plenty)
		n.CheckStorageForTest()
		wantOK(t, "send once space is back", a.do(t, writes[0]))
	})
}

// TestConformanceConnectionCaps: §2's node and address caps, on a node
// that holds 3 connections, 2 per address. Loopback has many addresses,
// so the test is several clients.
func TestConformanceConnectionCaps(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.WSMaxConns = 3
	cfg.WSMaxConnsPerIP = 2
	n := startNodeWith(t, cfg)
	alice := register(t, n, "alice")
	ta := login(t, n, alice, "phone")
	ip1, ip2, ip3 := net.IPv4(127, 0, 0, 1), net.IPv4(127, 0, 0, 2), net.IPv4(127, 0, 0, 3)

	dialTuned(t, n, ta, ip1, true)
	dialTuned(t, n, ta, ip1, true)
	t.Run("§2 an address over its cap gets 429 with Retry-After, before the token is looked at", func(t *testing.T) {
		st, h, body := rawHandshakeFrom(t, ip1, n, "/v1/ws", upgradeHeaders)
		if st != 429 || h.Get("Retry-After") == "" {
			t.Fatalf("status %d, headers %v", st, h)
		}
		if msg := handshakeJSON(t, body, wire.CodeRateLimited); msg != "too many connections from this address, retry later" {
			t.Fatalf("message %q", msg)
		}
	})
	dialTuned(t, n, ta, ip2, true) // another address connects, up to the node's cap
	t.Run("§2 a node at its cap gets 503 with Retry-After, before the token is looked at", func(t *testing.T) {
		st, h, body := rawHandshakeFrom(t, ip3, n, "/v1/ws", upgradeHeaders)
		if st != 503 || h.Get("Retry-After") == "" {
			t.Fatalf("status %d, headers %v", st, h)
		}
		if msg := handshakeJSON(t, body, wire.CodeUnavailable); msg != "server at connection limit, retry later" {
			t.Fatalf("message %q", msg)
		}
	})
}

// TestConformanceTypingExpiry: §4.4's expiry, on a node whose typing ttl
// is 200 ms.
func TestConformanceTypingExpiry(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.TypingThrottle = 100 * time.Millisecond
	cfg.TypingTTL = 200 * time.Millisecond
	cfg.SignalTick = 20 * time.Millisecond
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	a, _, _ := dialTuned(t, n, login(t, n, alice, "phone"), nil, true)
	b, _, _ := dialTuned(t, n, login(t, n, bob, "phone"), nil, true)
	rep := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", rep)
	dm := rep.Info.ID

	t.Run("§4.4 the server sends the stop itself when a start is not renewed within the ttl", func(t *testing.T) {
		wantOK(t, "typing on", b.do(t, map[string]any{"t": "typing", "conv": dm, "on": true}))
		on := a.frame(t, func(_ []byte, typ string) bool { return typ == wire.TypeTypingEvent })
		off := a.frame(t, func(_ []byte, typ string) bool { return typ == wire.TypeTypingEvent })
		var ty1, ty2 wire.Typing
		if wire.Unmarshal(on, &ty1) != nil || wire.Unmarshal(off, &ty2) != nil || !ty1.On || ty2.On || ty2.User != bob.user || ty1.TTLms != 200 {
			t.Fatalf("typing frames %+v then %+v, want a start (ttl_ms 200) then the server's stop", ty1, ty2)
		}
	})
}
