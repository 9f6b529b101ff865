package node_test

import (
	"errors"
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
	cfg.RatePerSecond, cfg.RateBurst = 1, 200 // the default burst; a refill too slow to matter however slowly the test runs
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	r := dialRaw(t, n.WSURL(), login(t, n, alice, "phone"))
	const flood = 1000 // well over the burst of 200
	for i := 1; i <= flood; i++ {
		b, _ := msgpack.Marshal(map[string]any{"t": "ping", "id": i})
		if r.conn.WriteMessage(gws.OpcodeBinary, b) != nil {
			break // closed by the server: what it answered is counted below
		}
	}
	ok, limited, err := r.drainUntilClosed(t)
	if limited == 0 || ok == 0 || ok+limited >= flood {
		t.Fatalf("ok %d, limited %d of %d: flood not limited", ok, limited, flood)
	}
	requireClosed(t, err, 1008, "rate limit exceeded")
	// Another user's connection works normally meanwhile.
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	if err := cb.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// Malformed frames are charged to the rate limiter like any request: a
// flood of them gets a burst of bad_frame replies, then rate_limited, then
// the connection is closed; it does not get a reply per frame.
func TestMalformedFloodIsRateLimited(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.RatePerSecond, cfg.RateBurst = 1, 200 // the default burst; a refill too slow to matter however slowly the test runs
	n := startNodeWith(t, cfg)
	alice := register(t, n, "alice")
	r := dialRaw(t, n.WSURL(), login(t, n, alice, "phone"))
	const flood = 1000
	r.writeUntilClosed(flood, []byte{0xc1}) // never used in msgpack
	frames, closeErr := r.untilClosed(t)
	bad, limited := 0, 0
	for _, b := range frames {
		var rep wire.Reply
		if err := wire.Unmarshal(b, &rep); err != nil {
			t.Fatal(err)
		}
		switch rep.Code {
		case wire.CodeBadFrame:
			bad++
		case wire.CodeRateLimited:
			limited++
		default:
			t.Fatalf("unexpected reply %+v", rep)
		}
	}
	if bad == 0 || limited == 0 || bad+limited >= flood {
		t.Fatalf("%d bad_frame and %d rate_limited replies to %d malformed frames, then %v", bad, limited, flood, closeErr)
	}
	requireClosed(t, closeErr, 1008, "rate limit exceeded")
}

// writeUntilClosed sends frame n times or until the connection fails.
func (r *rawConn) writeUntilClosed(n int, frame []byte) {
	for range n {
		if r.conn.WriteMessage(gws.OpcodeBinary, frame) != nil {
			return
		}
	}
}

// drainUntilClosed counts ok and rate_limited (or busy) replies until the
// server closes the connection, and returns the close error.
func (r *rawConn) drainUntilClosed(t *testing.T) (ok, limited int, closeErr error) {
	t.Helper()
	frames, closeErr := r.untilClosed(t)
	for _, b := range frames {
		var rep wire.Reply
		if err := wire.Unmarshal(b, &rep); err != nil {
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
	return ok, limited, closeErr
}

// untilClosed collects the frames that arrive until the connection closes
// (the read loop hands over every frame before the close).
func (r *rawConn) untilClosed(t *testing.T) ([][]byte, error) {
	t.Helper()
	var frames [][]byte
	for {
		select {
		case b := <-r.frames:
			frames = append(frames, b)
		case err := <-r.closed:
			for {
				select {
				case b := <-r.frames:
					frames = append(frames, b)
				default:
					return frames, err
				}
			}
		case <-time.After(time.Minute):
			t.Fatal("the connection was not closed")
		}
	}
}

// requireClosed checks that err is the server's close frame with code and
// reason.
func requireClosed(t *testing.T, err error, code uint16, reason string) {
	t.Helper()
	var ce *gws.CloseError
	if !errors.As(err, &ce) || ce.Code != code || string(ce.Reason) != reason {
		t.Fatalf("closed with %v, want %d %q", err, code, reason)
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
