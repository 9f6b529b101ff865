package node_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/vmihailenco/msgpack/v5"

	"parley/wire"
)

// rawConn is a bare WebSocket connection for sending frames the SDK would
// refuse to build.
type rawConn struct {
	gws.BuiltinEventHandler
	conn   *gws.Conn
	frames chan []byte
	closed chan error
}

func (r *rawConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := append([]byte(nil), m.Bytes()...)
	m.Close()
	r.frames <- b
}

func (r *rawConn) OnClose(_ *gws.Conn, err error) { r.closed <- err }

func dialRaw(t *testing.T, url, token string) *rawConn {
	t.Helper()
	r := &rawConn{frames: make(chan []byte, 1024), closed: make(chan error, 1)}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	conn, _, err := gws.NewClient(r, &gws.ClientOption{Addr: url, RequestHeader: h})
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { conn.NetConn().Close() })
	if typ := r.nextType(t); typ != wire.TypeHello {
		t.Fatalf("first frame %q, want hello", typ)
	}
	return r
}

func (r *rawConn) nextType(t *testing.T) string {
	t.Helper()
	b := r.next(t)
	typ, err := wire.PeekType(b)
	if err != nil {
		t.Fatal(err)
	}
	return typ
}

func (r *rawConn) next(t *testing.T) []byte {
	t.Helper()
	select {
	case b := <-r.frames:
		return b
	case err := <-r.closed:
		t.Fatalf("connection closed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no frame within 10s")
	}
	return nil
}

// reply waits for the reply to request id (any reply if id is 0: a frame
// that fails to parse may or may not have had its id read), skipping events.
func (r *rawConn) reply(t *testing.T, id uint64) wire.Reply {
	t.Helper()
	for {
		var rep wire.Reply
		if err := wire.Unmarshal(r.next(t), &rep); err != nil {
			t.Fatal(err)
		}
		if (rep.Type == wire.TypeOK || rep.Type == wire.TypeError) && (id == 0 || rep.ID == id) {
			return rep
		}
	}
}

func (r *rawConn) write(t *testing.T, b []byte) {
	t.Helper()
	if err := r.conn.WriteMessage(gws.OpcodeBinary, b); err != nil {
		t.Fatal(err)
	}
}

func (r *rawConn) request(t *testing.T, v any) {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	r.write(t, b)
}

func TestBadInputGetsStableCodesAndConnectionSurvives(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	dm, err := ca.OpenDirect(ctxT(t), bob.user)
	if err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, n.WSURL(), login(t, n, carol, "phone"))

	cases := []struct {
		name  string
		frame any // []byte is sent as is
		id    uint64
		code  wire.Code
	}{
		{"garbage", []byte{0xc1, 0x00, 0x13}, 0, wire.CodeBadFrame},
		{"not a map", []any{1, 2}, 0, wire.CodeBadFrame},
		{"unknown type", map[string]any{"t": "teleport", "id": 1}, 1, wire.CodeUnknownType},
		{"wrong field type", map[string]any{"t": "send", "id": 2, "conv": "seven"}, 0, wire.CodeBadFrame},
		{"empty body", map[string]any{"t": "send", "id": 3, "conv": dm.ID, "cmid": "x"}, 3, wire.CodeInvalid},
		{"too long body", map[string]any{"t": "send", "id": 4, "conv": dm.ID, "cmid": "x", "body": strings.Repeat("b", wire.MaxBodyBytes+1)}, 4, wire.CodeTooLarge},
		{"not a member", map[string]any{"t": "send", "id": 5, "conv": dm.ID, "cmid": "x", "body": "hi"}, 5, wire.CodeNotMember},
		{"no such conv", map[string]any{"t": "send", "id": 6, "conv": 424242, "cmid": "x", "body": "hi"}, 6, wire.CodeNotFound},
		{"history not member", map[string]any{"t": "history", "id": 7, "conv": dm.ID}, 7, wire.CodeNotMember},
	}
	for _, c := range cases {
		if b, ok := c.frame.([]byte); ok {
			r.write(t, b)
		} else {
			r.request(t, c.frame)
		}
		rep := r.reply(t, c.id)
		if rep.Type != wire.TypeError || rep.Code != c.code {
			t.Errorf("%s: got %s %q (%s), want error %q", c.name, rep.Type, rep.Code, rep.Message, c.code)
		}
	}
	// Still alive and served.
	r.request(t, map[string]any{"t": "ping", "id": 99})
	if rep := r.reply(t, 99); rep.Type != wire.TypeOK {
		t.Fatalf("ping after bad input: %+v", rep)
	}
	// And nothing leaked into the conversation.
	evs, _, err := ca.History(ctxT(t), dm.ID, wire.DirAfter, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(messages(evs)) != 0 {
		t.Fatalf("bad input stored messages: %+v", evs)
	}
}

func TestFloodIsRateLimitedAndOthersUnaffected(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.RatePerSecond, cfg.RateBurst = 100, 200 // the production defaults
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	r := dialRaw(t, n.WSURL(), login(t, n, alice, "phone"))
	const flood = 1000 // well over the burst of 200
	for i := 1; i <= flood; i++ {
		r.request(t, map[string]any{"t": "ping", "id": i})
	}
	limited, ok := 0, 0
	for range flood {
		var rep wire.Reply
		if err := wire.Unmarshal(r.next(t), &rep); err != nil {
			t.Fatal(err)
		}
		switch {
		case rep.Type == wire.TypeOK:
			ok++
		case rep.Code == wire.CodeRateLimited || rep.Code == wire.CodeBusy:
			limited++
		default:
			t.Fatalf("unexpected reply %+v", rep)
		}
	}
	if limited == 0 || ok == 0 {
		t.Fatalf("ok %d, limited %d: flood not limited", ok, limited)
	}
	// Another user's connection works normally meanwhile.
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	if err := cb.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestBadTokenIsRefusedBeforeUpgrade(t *testing.T) {
	n := startNode(t, t.TempDir())
	for _, tok := range []string{"", "garbage", "eyJhbGciOiJIUzI1NiJ9.e30.bad"} {
		h := http.Header{}
		if tok != "" {
			h.Set("Authorization", "Bearer "+tok)
		}
		_, resp, err := gws.NewClient(&gws.BuiltinEventHandler{}, &gws.ClientOption{Addr: n.WSURL(), RequestHeader: h})
		if err == nil {
			t.Fatalf("token %q accepted", tok)
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("token %q: resp %v err %v, want 401", tok, resp, err)
		}
	}
}

// TestTokenForUnreplicatedDevice: a validly signed token naming a device this
// node has not applied yet (logged in on another node a moment ago) gets 503,
// which clients retry, not 401, which they take as final.
func TestTokenForUnreplicatedDevice(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice := register(t, n, "alice")
	login(t, n, alice, "phone")
	for _, tc := range []struct {
		device uint64
		want   int
	}{{1 << 40, http.StatusServiceUnavailable}, {0, http.StatusUnauthorized}} {
		h := http.Header{}
		h.Set("Authorization", "Bearer "+n.IssueTokenForTest(alice.user, tc.device))
		_, resp, err := gws.NewClient(&gws.BuiltinEventHandler{}, &gws.ClientOption{Addr: n.WSURL(), RequestHeader: h})
		if err == nil {
			t.Fatalf("device %d accepted", tc.device)
		}
		if resp == nil || resp.StatusCode != tc.want {
			t.Fatalf("device %d: resp %v err %v, want %d", tc.device, resp, err, tc.want)
		}
	}
}
