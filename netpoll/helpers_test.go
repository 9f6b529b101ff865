package netpoll

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// ioGuard bounds every blocking read or write of a test client, so a bug
// fails the test instead of hanging it. It is not a timing assertion.
const ioGuard = 15 * time.Second

// testConfig is a small server on a free port.
func testConfig() Config {
	return Config{Addr: "127.0.0.1:0", NumEventLoops: 2, TickInterval: 10 * time.Millisecond}
}

// testHandler accepts ?token=good or "Authorization: Bearer good" and
// echoes every message unless onMessage is set.
type testHandler struct {
	authorize func(r *Request) (any, int, string)
	onMessage func(c *Conn, binary bool, payload []byte)

	opened chan *Conn
	closed chan closeEvent

	mu    sync.Mutex
	conns map[uint64]*Conn // open connections
}

type closeEvent struct {
	c   *Conn
	err error
}

func newTestHandler() *testHandler {
	return &testHandler{opened: make(chan *Conn, 4096), closed: make(chan closeEvent, 4096), conns: map[uint64]*Conn{}}
}

func (h *testHandler) Authorize(r *Request) (any, int, string) {
	if h.authorize != nil {
		return h.authorize(r)
	}
	if r.Query.Get("token") == "good" || r.Header.Get("Authorization") == "Bearer good" {
		return "user-1", 0, ""
	}
	return nil, http.StatusUnauthorized, "bad token"
}

func (h *testHandler) OnOpen(c *Conn) {
	h.mu.Lock()
	h.conns[c.ID()] = c
	h.mu.Unlock()
	h.opened <- c
}

func (h *testHandler) OnMessage(c *Conn, binary bool, payload []byte) {
	if h.onMessage != nil {
		h.onMessage(c, binary, payload)
		return
	}
	frame := PrepareText(payload)
	if binary {
		frame = PrepareBinary(payload)
	}
	_ = c.Send(frame)
}

func (h *testHandler) OnClose(c *Conn, err error) {
	h.mu.Lock()
	delete(h.conns, c.ID())
	h.mu.Unlock()
	h.closed <- closeEvent{c, err}
}

func (h *testHandler) openConns() []*Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Conn, 0, len(h.conns))
	for _, c := range h.conns {
		out = append(out, c)
	}
	return out
}

func (h *testHandler) waitOpened(t testing.TB) *Conn {
	t.Helper()
	select {
	case c := <-h.opened:
		return c
	case <-time.After(ioGuard):
		t.Fatal("no connection opened")
		return nil
	}
}

func (h *testHandler) waitClosed(t testing.TB) closeEvent {
	t.Helper()
	select {
	case ev := <-h.closed:
		return ev
	case <-time.After(ioGuard):
		t.Fatal("no connection closed")
		return closeEvent{}
	}
}

func startServer(t testing.TB, cfg Config, h Handler) *Server {
	t.Helper()
	s, err := NewServer(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioGuard)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return s
}

// rawClient speaks WebSocket by hand over TCP, for the cases a real
// client library will not produce.
type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioGuard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(ioGuard))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// request sends raw and reads the HTTP response (body included).
func (c *rawClient) request(raw string) (*http.Response, string) {
	c.t.Helper()
	c.write([]byte(raw))
	_ = c.conn.SetReadDeadline(time.Now().Add(ioGuard))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		c.t.Fatalf("reading handshake response: %v", err)
	}
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ = io.ReadAll(resp.Body)
	}
	return resp, string(body)
}

// upgradeRaw dials and completes a handshake that the test handler accepts.
func upgradeRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	resp, body := c.request(upgradeRequest("/v1/ws?token=good"))
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade refused: %s %s", resp.Status, body)
	}
	return c
}

// readFrame reads one server frame.
func (c *rawClient) readFrame() (op byte, payload []byte, err error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(ioGuard))
	var h [2]byte
	if _, err := io.ReadFull(c.r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return 0, nil, fmt.Errorf("bad server frame header %x", h)
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.r, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0F, payload, nil
}

// expectFrame reads the next frame, skipping pings, and checks it.
func (c *rawClient) expectFrame(op byte, payload []byte) {
	c.t.Helper()
	for {
		gotOp, got, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("reading frame: %v", err)
		}
		if gotOp == opPing && op != opPing {
			continue
		}
		if gotOp != op || !bytes.Equal(got, payload) {
			c.t.Fatalf("got frame op %d %q, want op %d %q", gotOp, trim(got), op, trim(payload))
		}
		return
	}
}

// expectClose reads frames until a close frame and checks its code; it
// returns the reason.
func (c *rawClient) expectClose(code uint16) string {
	c.t.Helper()
	for {
		op, payload, err := c.readFrame()
		if err != nil {
			c.t.Fatalf("waiting for close %d: %v", code, err)
		}
		if op != opClose {
			continue
		}
		if len(payload) < 2 {
			c.t.Fatalf("close frame without code, want %d", code)
		}
		if got := binary.BigEndian.Uint16(payload); got != code {
			c.t.Fatalf("close code %d (%q), want %d", got, payload[2:], code)
		}
		return string(payload[2:])
	}
}

// expectEOF checks that the server closes the socket.
func (c *rawClient) expectEOF() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(ioGuard))
	b, err := io.ReadAll(c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("server did not close the socket (read %d bytes)", len(b))
	}
}

func trim(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%q... (%d bytes)", b[:64], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// gwsClient is a github.com/lxzan/gws client whose events go to channels.
type gwsClient struct {
	gws.BuiltinEventHandler
	conn   *gws.Conn
	msgs   chan gwsMsg
	closed chan error
}

type gwsMsg struct {
	op      gws.Opcode
	payload []byte
}

func (g *gwsClient) OnMessage(_ *gws.Conn, m *gws.Message) {
	g.msgs <- gwsMsg{m.Opcode, bytes.Clone(m.Bytes())}
	_ = m.Close()
}

func (g *gwsClient) OnClose(_ *gws.Conn, err error) { g.closed <- err }

func dialGWS(t testing.TB, addr, query string) *gwsClient {
	t.Helper()
	g := &gwsClient{msgs: make(chan gwsMsg, 1024), closed: make(chan error, 1)}
	conn, resp, err := gws.NewClient(g, &gws.ClientOption{
		Addr:             "ws://" + addr + "/v1/ws" + query,
		HandshakeTimeout: ioGuard,
	})
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("gws dial: %v (status %d)", err, status)
	}
	g.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.NetConn().Close() })
	return g
}

func (g *gwsClient) expect(t testing.TB, op gws.Opcode, payload []byte) {
	t.Helper()
	if err := g.check(op, payload); err != nil {
		t.Fatal(err)
	}
}

// check is expect for goroutines other than the test's.
func (g *gwsClient) check(op gws.Opcode, payload []byte) error {
	select {
	case m := <-g.msgs:
		if m.op != op || !bytes.Equal(m.payload, payload) {
			return fmt.Errorf("got op %d %s, want op %d %s", m.op, trim(m.payload), op, trim(payload))
		}
		return nil
	case err := <-g.closed:
		return fmt.Errorf("closed while waiting for a message: %v", err)
	case <-time.After(ioGuard):
		return errors.New("no message")
	}
}
