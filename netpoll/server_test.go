package netpoll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"parley/internal/testwait"
)

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	err := Config{Path: "v1", MaxMessageSize: 10, PingInterval: time.Minute, IdleTimeout: time.Second, TickInterval: -1}.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"Path", "MaxMessageSize", "TickInterval", "IdleTimeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
	if _, err := NewServer(Config{}, nil); err == nil {
		t.Fatal("nil handler accepted")
	}
}

func TestGWSEcho(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	g := dialGWS(t, s.Addr(), "?token=good")
	c := h.waitOpened(t)
	if c.Session() != "user-1" || c.RemoteAddr() == "" || c.ID() == 0 {
		t.Fatalf("conn session %v remote %q id %d", c.Session(), c.RemoteAddr(), c.ID())
	}
	if err := g.conn.WriteString("héllo"); err != nil {
		t.Fatal(err)
	}
	g.expect(t, gws.OpcodeText, []byte("héllo"))
	if err := g.conn.WriteMessage(gws.OpcodeBinary, []byte{0, 1, 2, 255}); err != nil {
		t.Fatal(err)
	}
	g.expect(t, gws.OpcodeBinary, []byte{0, 1, 2, 255})
	if err := g.conn.WriteMessage(gws.OpcodeBinary, nil); err != nil {
		t.Fatal(err)
	}
	g.expect(t, gws.OpcodeBinary, nil)

	// The loop counts a frame after handing it to the socket, which can be
	// after the client has it.
	testwait.Eventually(t, "frames counted", func() bool { return s.Stats().FramesOut == 3 })
	st := s.Stats()
	if st.OpenConnections != 1 || st.HandshakesAccepted != 1 || st.FramesIn != 3 || st.BytesIn == 0 || st.BytesOut == 0 {
		t.Fatalf("stats %+v", st)
	}

	// A normal close from the client: OnClose gets the peer's code.
	if err := g.conn.WriteClose(1000, []byte("bye")); err != nil {
		t.Fatal(err)
	}
	ev := h.waitClosed(t)
	var ce *CloseError
	if !errors.As(ev.err, &ce) || ce.Code != 1000 || ce.Reason != "bye" || !ce.Remote {
		t.Fatalf("OnClose error %v", ev.err)
	}
	if err := c.Send(PrepareText([]byte("late"))); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after close: %v", err)
	}
	testwait.Eventually(t, "open count to drop", func() bool { return s.Stats().OpenConnections == 0 })
}

func TestGWSLargeMessages(t *testing.T) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.MaxMessageSize = 256 << 10
	s := startServer(t, cfg, h)
	g := dialGWS(t, s.Addr(), "?token=good")
	c := h.waitOpened(t)

	in := bytes.Repeat([]byte("0123456789abcdef"), (200<<10)/16) // 200 KiB, spans many reads
	if err := g.conn.WriteMessage(gws.OpcodeBinary, in); err != nil {
		t.Fatal(err)
	}
	g.expect(t, gws.OpcodeBinary, in)

	out := bytes.Repeat([]byte("é"), 300<<10) // server to client, 600 KiB text
	if err := c.Send(PrepareText(out)); err != nil {
		t.Fatal(err)
	}
	g.expect(t, gws.OpcodeText, out)
}

func TestGWSFragmentedMessage(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	g := dialGWS(t, s.Addr(), "?token=good")
	h.waitOpened(t)
	// gws writes whole messages only, so write the fragments on its socket
	// ourselves (it writes nothing else meanwhile) and let gws read the echo.
	frames := concat(
		clientFrame(false, opText, []byte("frag")),
		clientFrame(false, opContinuation, []byte("mented ")),
		clientFrame(true, opPing, []byte("between")),
		clientFrame(true, opContinuation, []byte("message")),
	)
	for i := range frames { // one byte per write: many small reads on the server
		if _, err := g.conn.NetConn().Write(frames[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	g.expect(t, gws.OpcodeText, []byte("fragmented message"))
}

func TestGWSManyConnections(t *testing.T) {
	const conns, msgs = 200, 5
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	clients := make([]*gwsClient, conns)
	var wg sync.WaitGroup
	var dialErr atomic.Value
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := &gwsClient{msgs: make(chan gwsMsg, 1024), closed: make(chan error, 1)}
			conn, _, err := gws.NewClient(g, &gws.ClientOption{Addr: "ws://" + s.Addr() + "/v1/ws?token=good", HandshakeTimeout: ioGuard})
			if err != nil {
				dialErr.Store(err)
				return
			}
			g.conn = conn
			go conn.ReadLoop()
			clients[i] = g
		}()
	}
	wg.Wait()
	if err := dialErr.Load(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, g := range clients {
			_ = g.conn.NetConn().Close()
		}
	})
	testwait.Eventually(t, "all connections open", func() bool { return s.Stats().OpenConnections == conns })

	// Every client echoes concurrently.
	for i, g := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range msgs {
				msg := fmt.Appendf(nil, "client %d message %d", i, j)
				if err := g.conn.WriteMessage(gws.OpcodeText, msg); err != nil {
					t.Error(err)
					return
				}
				if err := g.check(gws.OpcodeText, msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()

	// A broadcast: one prepared frame, the same bytes to every connection,
	// sent from several goroutines at once.
	frame := PrepareBinary([]byte("to everyone"))
	all := h.openConns()
	for part := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := part; i < len(all); i += 4 {
				if err := all[i].Send(frame); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for _, g := range clients {
		g.expect(t, gws.OpcodeBinary, []byte("to everyone"))
	}
}

func TestAuthorizeRefusal(t *testing.T) {
	h := newTestHandler()
	var seen atomic.Pointer[Request]
	h.authorize = func(r *Request) (any, int, string) {
		seen.Store(r)
		if r.Header.Get("Authorization") == "Bearer good" {
			return 42, 0, ""
		}
		return nil, http.StatusUnauthorized, "token expired"
	}
	s := startServer(t, testConfig(), h)

	c := dialRaw(t, s.Addr())
	resp, body := c.request(upgradeRequest("/v1/ws?token=bad"))
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "token expired") || resp.Header.Get("Upgrade") != "" {
		t.Fatalf("got %s %q, headers %v", resp.Status, body, resp.Header)
	}
	c.expectEOF()
	if r := seen.Load(); r == nil || r.Query.Get("token") != "bad" || r.Path != "/v1/ws" || r.RemoteAddr == "" {
		t.Fatalf("Authorize saw %+v", r)
	}

	// gws sees the refusal as a failed dial with the status.
	_, gresp, err := gws.NewClient(&gwsClient{}, &gws.ClientOption{Addr: "ws://" + s.Addr() + "/v1/ws", HandshakeTimeout: ioGuard})
	if err == nil || gresp == nil || gresp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("gws dial: err %v resp %v", err, gresp)
	}

	// The header route works, and the session is what Authorize returned.
	ok := dialRaw(t, s.Addr())
	if resp, body := ok.request(upgradeRequest("/v1/ws", "Authorization: Bearer good")); resp.StatusCode != 101 {
		t.Fatalf("got %s %s", resp.Status, body)
	}
	if got := h.waitOpened(t).Session(); got != 42 {
		t.Fatalf("session %v", got)
	}
	if st := s.Stats(); st.HandshakesRefused != 2 || st.HandshakesAccepted != 1 {
		t.Fatalf("stats %+v", st)
	}
	select {
	case ev := <-h.closed:
		t.Fatalf("OnClose for a connection never opened: %+v", ev)
	default:
	}
}

func TestHandshakeRejectedOverTheWire(t *testing.T) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.MaxHandshakeSize = 1024
	s := startServer(t, cfg, h)
	base := upgradeRequest("/v1/ws?token=good")
	for _, tc := range []struct {
		name   string
		raw    string
		status int
	}{
		{"wrong path", strings.Replace(base, "/v1/ws", "/v2/ws", 1), 404},
		{"plain GET", editRequest(editRequest(base, "Upgrade", ""), "Connection", "keep-alive"), 426},
		{"version 8", editRequest(base, "Sec-WebSocket-Version", "8"), 426},
		{"bad key", editRequest(base, "Sec-WebSocket-Key", "abc"), 400},
		{"POST", strings.Replace(base, "GET", "POST", 1), 405},
		{"too large", upgradeRequest("/v1/ws", "X-Pad: "+strings.Repeat("p", 2000)), 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, s.Addr())
			resp, _ := c.request(tc.raw)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			c.expectEOF()
		})
	}
	if st := s.Stats(); st.HandshakesRefused != 6 || st.OpenConnections != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHandshakeInPiecesAndPipelinedFrames(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	c := dialRaw(t, s.Addr())
	req := upgradeRequest("/v1/ws?token=good")
	// The request arrives in pieces, the last one followed at once by two
	// frames the client did not wait to send.
	c.write([]byte(req[:10]))
	c.write([]byte(req[10:40]))
	c.write(concat([]byte(req[40:]), clientFrame(true, opText, []byte("early")), clientFrame(true, opBinary, []byte("bird"))))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("response %v %v", resp, err)
	}
	c.expectFrame(opText, []byte("early"))
	c.expectFrame(opBinary, []byte("bird"))
}

func TestProtocolViolationsCloseTheConnection(t *testing.T) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.MaxMessageSize = 1000
	s := startServer(t, cfg, h)
	tests := []struct {
		name  string
		input []byte
		code  uint16
	}{
		{"unmasked frame", rawFrame(0x80|opText, false, 2, []byte("hi")), CloseProtocolError},
		{"reserved opcode", rawFrame(0x80|0x3, true, 0, nil), CloseProtocolError},
		{"reserved control opcode", rawFrame(0x80|0xC, true, 0, nil), CloseProtocolError},
		{"rsv bits", rawFrame(0x80|0x20|opBinary, true, 1, []byte("x")), CloseProtocolError},
		{"control frame too large", clientFrame(true, opPing, bytes.Repeat([]byte("p"), 126)), CloseProtocolError},
		{"fragmented control frame", clientFrame(false, opPong, nil), CloseProtocolError},
		{"continuation without start", clientFrame(true, opContinuation, []byte("x")), CloseProtocolError},
		{"new message while fragmented", concat(clientFrame(false, opBinary, []byte("a")), clientFrame(false, opText, []byte("b"))), CloseProtocolError},
		{"invalid utf8", clientFrame(true, opText, []byte{'a', 0xC0, 0x80}), CloseInvalidPayload},
		{"oversize message", clientFrame(true, opBinary, make([]byte, 1001)), CloseMessageTooBig},
		{"oversize reassembled", concat(clientFrame(false, opBinary, make([]byte, 800)), clientFrame(true, opContinuation, make([]byte, 300))), CloseMessageTooBig},
		{"oversize declared, payload never sent", rawFrame(0x80|opBinary, true, 1<<30, nil), CloseMessageTooBig},
		{"64-bit length top bit", rawFrame(0x80|opBinary, true, 1<<63|5, nil), CloseProtocolError},
		{"close payload of one byte", clientFrame(true, opClose, []byte{0x03}), CloseProtocolError},
		{"close code 1006", clientFrame(true, opClose, closePayload(1006, "")), CloseProtocolError},
		{"close code 2000", clientFrame(true, opClose, closePayload(2000, "")), CloseProtocolError},
		{"close reason not utf8", clientFrame(true, opClose, closePayload(1000, "\xfe")), CloseInvalidPayload},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := upgradeRaw(t, s.Addr())
			h.waitOpened(t)
			c.write(tt.input)
			c.expectClose(tt.code)
			// A client answers the close frame; the server then closes TCP.
			c.write(clientFrame(true, opClose, closePayload(tt.code, "")))
			ev := h.waitClosed(t)
			var ce *CloseError
			if !errors.As(ev.err, &ce) || ce.Code != tt.code || ce.Remote {
				t.Fatalf("OnClose error %v", ev.err)
			}
			c.conn.Close()
			if got := s.Stats().ProtocolErrors; got != int64(i+1) {
				t.Fatalf("ProtocolErrors %d, want %d", got, i+1)
			}
		})
	}
}

func TestPingPongAndControlBetweenFragments(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	c := upgradeRaw(t, s.Addr())
	c.write(clientFrame(true, opPing, []byte("are you there")))
	c.expectFrame(opPong, []byte("are you there"))
	c.write(clientFrame(true, opPing, nil))
	c.expectFrame(opPong, nil)
	c.write(concat(
		clientFrame(false, opBinary, []byte{1, 2}),
		clientFrame(true, opPing, []byte("mid")),
		clientFrame(true, opPong, []byte("unsolicited")),
		clientFrame(false, opContinuation, []byte{3}),
		clientFrame(true, opContinuation, []byte{4, 5}),
	))
	c.expectFrame(opPong, []byte("mid"))
	c.expectFrame(opBinary, []byte{1, 2, 3, 4, 5})
}

func TestClientCloseHandshake(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	for _, tc := range []struct {
		name    string
		payload []byte
		code    uint16 // in OnClose
	}{
		{"normal", closePayload(1000, "done"), 1000},
		{"application code", closePayload(4321, ""), 4321},
		{"going away", closePayload(1001, "tab closed"), 1001},
		{"no code", nil, CloseNoStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := upgradeRaw(t, s.Addr())
			h.waitOpened(t)
			c.write(clientFrame(true, opClose, tc.payload))
			op, payload, err := c.readFrame()
			if err != nil || op != opClose {
				t.Fatalf("reply op %d err %v", op, err)
			}
			// The server echoes the code (and nothing when there was none).
			if want := tc.payload[:min(2, len(tc.payload))]; !bytes.Equal(payload, want) {
				t.Fatalf("close reply %x, want %x", payload, want)
			}
			c.expectEOF()
			ev := h.waitClosed(t)
			var ce *CloseError
			if !errors.As(ev.err, &ce) || ce.Code != tc.code || !ce.Remote {
				t.Fatalf("OnClose error %v", ev.err)
			}
		})
	}
}

func TestServerClose(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	c := upgradeRaw(t, s.Addr())
	conn := h.waitOpened(t)
	// Frames sent before Close go out first, then the close frame.
	if err := conn.Send(PrepareText([]byte("last words"))); err != nil {
		t.Fatal(err)
	}
	conn.Close(4000, "kicked")
	conn.Close(4001, "twice") // ignored
	if err := conn.Send(PrepareText([]byte("too late"))); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	c.expectFrame(opText, []byte("last words"))
	if reason := c.expectClose(4000); reason != "kicked" {
		t.Fatalf("reason %q", reason)
	}
	// Data the client sends before answering is dropped, not delivered.
	c.write(clientFrame(true, opText, []byte("ignored")))
	c.write(clientFrame(true, opClose, closePayload(4000, "")))
	c.expectEOF()
	ev := h.waitClosed(t)
	var ce *CloseError
	if !errors.As(ev.err, &ce) || ce.Code != 4000 || ce.Reason != "kicked" || ce.Remote {
		t.Fatalf("OnClose error %v", ev.err)
	}
}

func TestClientVanishes(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	c := upgradeRaw(t, s.Addr())
	h.waitOpened(t)
	c.conn.Close()
	if ev := h.waitClosed(t); !errors.Is(ev.err, io.ErrUnexpectedEOF) {
		t.Fatalf("OnClose error %v", ev.err)
	}
}

func TestSlowConsumerIsClosedOthersUnaffected(t *testing.T) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.SendQueueBytes = 256 << 10
	cfg.CloseTimeout = time.Minute // the slow client reads the close frame before that
	s := startServer(t, cfg, h)

	slow := upgradeRaw(t, s.Addr())
	slowConn := h.waitOpened(t)
	fast := dialGWS(t, s.Addr(), "?token=good")
	fastConn := h.waitOpened(t)

	// The slow client never reads; the server sends until the bound trips.
	// Each Send waits until the loop has handed the queue to gnet, so the
	// queue itself never passes the bound: what trips it is gnet's outbound
	// buffer growing behind the full socket, which the loop measures. The
	// kernel's socket buffers absorb some megabytes first, so the loop is
	// bounded by bytes, far above what they can hold.
	frame := PrepareBinary(bytes.Repeat([]byte{'s'}, 16<<10))
	var sent int
	var err error
	for sent = 0; sent < 64<<20; sent += len(frame) {
		if err = slowConn.Send(frame); err != nil {
			break
		}
		deadline := time.Now().Add(ioGuard)
		for queuedBytes(slowConn) > 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
	}
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("sent %d bytes; Send returned %v, want ErrClosed after the loop closed the connection", sent, err)
	}
	testwait.Eventually(t, "overflow counted", func() bool { return s.Stats().QueueOverflows >= 1 })

	// The other connection is unaffected.
	if err := fastConn.Send(PrepareText([]byte("still here"))); err != nil {
		t.Fatal(err)
	}
	fast.expect(t, gws.OpcodeText, []byte("still here"))
	if err := fast.conn.WriteString("echo"); err != nil {
		t.Fatal(err)
	}
	fast.expect(t, gws.OpcodeText, []byte("echo"))

	// When the slow client reads again, it finds the close frame behind
	// what the socket had accepted.
	if reason := slow.expectClose(ClosePolicyViolation); reason != "slow consumer" {
		t.Fatalf("reason %q", reason)
	}
	slow.write(clientFrame(true, opClose, closePayload(ClosePolicyViolation, "")))
	slow.expectEOF()
	ev := h.waitClosed(t)
	var ce *CloseError
	if ev.c != slowConn || !errors.As(ev.err, &ce) || ce.Code != ClosePolicyViolation {
		t.Fatalf("OnClose %d: %v", ev.c.ID(), ev.err)
	}
}

// queuedBytes is what Send has queued and the loop has not yet written.
func queuedBytes(c *Conn) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pendingBytes
}

func TestSendQueueBoundCountsPendingBytes(t *testing.T) {
	// With the loop unable to flush (the frames are bigger than the bound),
	// Send itself refuses and closes.
	h := newTestHandler()
	cfg := testConfig()
	cfg.SendQueueBytes = 4096
	s := startServer(t, cfg, h)
	c := upgradeRaw(t, s.Addr())
	conn := h.waitOpened(t)
	if err := conn.Send(make([]byte, 4097)); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Send over the bound: %v", err)
	}
	if err := conn.Send(PrepareText(nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after overflow: %v", err)
	}
	c.expectClose(ClosePolicyViolation)
	if got := s.Stats().QueueOverflows; got != 1 {
		t.Fatalf("QueueOverflows %d", got)
	}
}

func TestIdleTimeoutWithShortConfig(t *testing.T) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.PingInterval = 50 * time.Millisecond
	cfg.IdleTimeout = 500 * time.Millisecond
	cfg.CloseTimeout = 100 * time.Millisecond
	s := startServer(t, cfg, h)

	// gws answers pings, so it stays; the raw client never answers.
	alive := dialGWS(t, s.Addr(), "?token=good")
	aliveConn := h.waitOpened(t)
	silent := upgradeRaw(t, s.Addr())
	silentConn := h.waitOpened(t)

	silent.expectFrame(opPing, nil) // pinged while quiet
	if reason := silent.expectClose(CloseGoingAway); reason != "idle timeout" {
		t.Fatalf("reason %q", reason)
	}
	// No close reply: the server closes after CloseTimeout anyway.
	silent.expectEOF()
	ev := h.waitClosed(t)
	if ev.c != silentConn {
		t.Fatalf("closed %d, want the silent connection", ev.c.ID())
	}
	if st := s.Stats(); st.IdleTimeouts != 1 || st.OpenConnections != 1 {
		t.Fatalf("stats %+v", st)
	}
	if err := aliveConn.Send(PrepareText([]byte("you stayed"))); err != nil {
		t.Fatal(err)
	}
	alive.expect(t, gws.OpcodeText, []byte("you stayed"))
}

func TestHandshakeTimeout(t *testing.T) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.HandshakeTimeout = 100 * time.Millisecond
	s := startServer(t, cfg, h)
	c := dialRaw(t, s.Addr())
	c.write([]byte("GET /v1/ws HTTP/1.1\r\n")) // and never the rest
	c.expectEOF()
	if st := s.Stats(); st.HandshakeTimeouts != 1 || st.HandshakesAccepted != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// fakeClock is a settable clock safe for the event loops to read.
type fakeClock struct{ ns atomic.Int64 }

func (f *fakeClock) now() time.Time          { return time.Unix(0, f.ns.Load()) }
func (f *fakeClock) advance(d time.Duration) { f.ns.Add(int64(d)) }

// TestHeartbeatFollowsTheClock drives the heartbeat with an injected clock:
// what happens depends only on the clock's value, not on how long the
// test takes.
func TestHeartbeatFollowsTheClock(t *testing.T) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.TickInterval = 5 * time.Millisecond // sweeps run this often in real time
	cfg.PingInterval = 25 * time.Second
	cfg.IdleTimeout = 60 * time.Second
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	clock.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s.clock = clock.now
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	c := upgradeRaw(t, s.Addr())
	h.waitOpened(t)

	frames := make(chan byte, 16)
	go func() {
		for {
			op, _, err := c.readFrame()
			if err != nil {
				close(frames)
				return
			}
			frames <- op
		}
	}()
	noFrame := func(what string) {
		// Let several sweeps run at this clock value; nothing may arrive.
		select {
		case op := <-frames:
			t.Fatalf("%s: unexpected frame op %d", what, op)
		case <-time.After(50 * time.Millisecond):
		}
	}
	nextFrame := func() byte {
		select {
		case op, ok := <-frames:
			if !ok {
				t.Fatal("socket closed")
			}
			return op
		case <-time.After(ioGuard):
			t.Fatal("no frame")
			return 0
		}
	}

	clock.advance(24 * time.Second)
	noFrame("24s quiet")
	clock.advance(1 * time.Second)
	if op := nextFrame(); op != opPing {
		t.Fatalf("op %d at 25s, want ping", op)
	}
	// The client answers at 30s: quiet restarts from there.
	clock.advance(5 * time.Second)
	c.write(clientFrame(true, opPong, nil))
	testwait.Eventually(t, "pong read", func() bool { return s.Stats().FramesIn >= 1 })
	clock.advance(24 * time.Second) // 54s: 24s after the pong
	noFrame("24s after the pong")
	clock.advance(1 * time.Second) // 55s
	if op := nextFrame(); op != opPing {
		t.Fatalf("op %d at 55s, want ping", op)
	}
	clock.advance(25 * time.Second) // 80s: 50s after the pong, pinged again
	if op := nextFrame(); op != opPing {
		t.Fatalf("op %d at 80s, want ping", op)
	}
	clock.advance(9 * time.Second) // 89s: 59s after the pong
	noFrame("59s after the pong")
	clock.advance(1 * time.Second) // 90s: idle for IdleTimeout
	if op := nextFrame(); op != opClose {
		t.Fatalf("op %d at 90s, want close", op)
	}
}

func TestStopClosesConnections(t *testing.T) {
	h := newTestHandler()
	s, err := NewServer(testConfig(), h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	c := upgradeRaw(t, s.Addr())
	h.waitOpened(t)
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if reason := c.expectClose(CloseGoingAway); reason != "server shutdown" {
		t.Fatalf("reason %q", reason)
	}
	c.expectEOF()
	ev := h.waitClosed(t)
	var ce *CloseError
	if !errors.As(ev.err, &ce) || ce.Code != CloseGoingAway {
		t.Fatalf("OnClose error %v", ev.err)
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestStartFailsOnBusyAddress(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	cfg := testConfig()
	cfg.Addr = s.Addr()
	s2, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err == nil {
		_ = s2.Stop(t.Context())
		t.Fatal("second server started on a busy address")
	}
}

func TestConcurrentSendsAndClose(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	c := upgradeRaw(t, s.Addr())
	conn := h.waitOpened(t)

	const senders, perSender = 8, 500
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frame := PrepareText(fmt.Appendf(nil, "sender %d", i))
			for j := range perSender {
				if err := conn.Send(frame); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Send: %v", err)
					}
					return
				}
				accepted.Add(1)
				if i == 0 && j == perSender/2 {
					conn.Close(CloseNormal, "enough")
				}
			}
		}()
	}
	wg.Wait()
	// Every accepted frame arrives whole, in one stream ending in the close.
	var got int64
	for {
		op, payload, err := c.readFrame()
		if err != nil {
			t.Fatalf("after %d frames: %v", got, err)
		}
		if op == opClose {
			break
		}
		if op != opText || !strings.HasPrefix(string(payload), "sender ") {
			t.Fatalf("frame op %d %q", op, payload)
		}
		got++
	}
	if got != accepted.Load() {
		t.Fatalf("read %d frames, Send accepted %d", got, accepted.Load())
	}
}

// TestBurstBehindAFullSocket: frames queued faster than a client reads
// fill the socket; the loop's own writev writes what the socket takes and
// hands the rest (cut mid-frame) to gnet's buffer, and the client reads
// every frame whole and in order once it reads.
func TestBurstBehindAFullSocket(t *testing.T) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.SendQueueBytes = 64 << 20
	s := startServer(t, cfg, h)
	c := upgradeRaw(t, s.Addr())
	conn := h.waitOpened(t)

	const frames = 4000
	for i := range frames {
		// Sizes vary so that partial writes end at every kind of offset.
		payload := fmt.Appendf(nil, "%06d:", i)
		payload = append(payload, bytes.Repeat([]byte{'x'}, 1000+i%3001)...)
		if err := conn.Send(PrepareBinary(payload)); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	for i := range frames {
		op, payload, err := c.readFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := fmt.Sprintf("%06d:", i); op != opBinary || len(payload) != 7+1000+i%3001 || string(payload[:7]) != want {
			t.Fatalf("frame %d: op %d, %d bytes, %q", i, op, len(payload), payload[:min(7, len(payload))])
		}
	}
	if st := s.Stats(); st.FramesOut < frames {
		t.Fatalf("FramesOut %d", st.FramesOut)
	}
}

func TestCloseSanitizesCodeAndReason(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	c := upgradeRaw(t, s.Addr())
	conn := h.waitOpened(t)
	conn.Close(1005, strings.Repeat("r", 300)) // 1005 may not be sent
	if reason := c.expectClose(CloseNormal); len(reason) != maxCloseReason {
		t.Fatalf("reason of %d bytes", len(reason))
	}
}

func TestTwoServersInOneProcess(t *testing.T) {
	// Start and stop concurrently (gnet has process-wide state), talk to
	// both in between.
	servers := make([]*Server, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i], errs[i] = NewServer(testConfig(), newTestHandler())
			if errs[i] == nil {
				errs[i] = servers[i].Start()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		g := dialGWS(t, s.Addr(), "?token=good")
		if err := g.conn.WriteString("ping"); err != nil {
			t.Fatal(err)
		}
		g.expect(t, gws.OpcodeText, []byte("ping"))
	}
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Stop(context.Background())
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}
