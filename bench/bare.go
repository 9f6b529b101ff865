package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lxzan/gws"
	"golang.org/x/sync/errgroup"

	"parley/wire"
)

// Bare connections: where the SDK would cost more than what is measured
// (thousands of members, idle holders, attackers), the loads speak the
// protocol themselves over gws (bareConn).
const (
	bareDialTimeout  = 10 * time.Second // one attempt: TCP, handshake and hello
	bareWriteTimeout = 5 * time.Second
	bareReadBuffer   = 1024 // gws's buffer: hello, pings and small events

	cntDialErrorPrefix = "dial error: " // + connErrorKind: failed attempts by kind
)

// connErrorKind classifies a failed connection attempt for the counts by
// kind: a few stable words rather than the error's text.
func connErrorKind(err error) string {
	var ce *gws.CloseError
	var ne net.Error
	var hs errHTTPStatus
	switch {
	case errors.Is(err, errTokenRefused):
		return "unauthorized"
	case errors.As(err, &hs):
		return fmt.Sprintf("http %d", hs.code)
	case errors.Is(err, errNoHello):
		return "no hello in time"
	case errors.As(err, &ce):
		return fmt.Sprintf("closed %d", ce.Code)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, net.ErrClosed):
		return "closed"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	default:
		return "other"
	}
}

// errHTTPStatus is a handshake refused with an HTTP status other than 101
// and 401.
type errHTTPStatus struct{ code int }

func (e errHTTPStatus) Error() string { return fmt.Sprintf("handshake refused: HTTP %d", e.code) }

var (
	errNoHello      = errors.New("no hello within the dial timeout")
	errTokenRefused = errors.New("token refused (HTTP 401)")
)

// bareConn is a minimal client connection: a gws connection over a socket
// the harness dials itself (a gatedConn, so that its reads can be paused),
// which authenticates with the bearer token, waits for hello, answers
// pings, matches replies to its requests and hands every other frame to
// OnEvent. It costs a goroutine (the gws read loop) and a few KiB, where
// the SDK's client costs three goroutines and its event buffers.
type bareConn struct {
	opts bareOptions
	conn *gws.Conn
	sock *gatedConn

	helloCh chan struct{} // closed by the read loop when hello arrives
	hello   wire.Hello    // written before helloCh closes
	helloAt time.Time     // written before helloCh closes
	gone    chan struct{} // closed by the read loop when the connection ends
	goneAt  time.Time     // written before gone closes
	// closeErr is why the connection ended, written before gone closes.
	closeErr error
	state    atomic.Int32 // connDialing → connOpen (dialBare) → connEnded (read loop)

	nextID  atomic.Uint64
	wmu     sync.Mutex // serialises writes, each under its own deadline
	mu      sync.Mutex // guards pending and ended
	pending map[uint64]chan []byte
	ended   bool
}

// A bare connection's life, in bareConn.state: only a connection that
// dialBare returned is open, so only its end is OnClose's business.
const (
	connDialing int32 = iota
	connOpen
	connEnded
)

// bareOptions configures dialBare. URL, Token and Timeout are required.
type bareOptions struct {
	URL     string
	Token   string
	Timeout time.Duration // TCP connect, handshake and hello
	// SocketReadBuffer, when positive, is the socket's SO_RCVBUF, set
	// before it connects (on Unix; elsewhere ignored).
	SocketReadBuffer int
	// OnEvent receives every frame after hello that is not a reply to a
	// request of this connection, with the time it was read; it runs on
	// the read loop, so it must not block.
	OnEvent func(f *bareFrame, now time.Time)
	// OnClose runs on the read loop when a connection that dialBare
	// returned ends, after gone is closed.
	OnClose func(c *bareConn)
	// Pings, when set, counts the server's pings answered.
	Pings *atomic.Int64
	// LocalIP, when set, is the socket's source address (the abuse
	// scenario's attackers come from another loopback address).
	LocalIP net.IP
}

// bareFrame is the part of a server frame the bare connections read: the
// routing fields and, for events, what the loads measure.
type bareFrame struct {
	Type string `msgpack:"t"`
	ID   uint64 `msgpack:"id"`
	Conv uint64 `msgpack:"conv"`
	Seq  uint64 `msgpack:"seq"`
	Kind string `msgpack:"kind"`
	From uint64 `msgpack:"from"`
	Body string `msgpack:"body"`
	Code string `msgpack:"code"` // error replies
}

// dialBareRetrying dials o up to attempts times, doubling the pause from
// dialRetry with equal jitter, so that refused connections do not come
// back together; a 401 or the end of ctx stops at once. Each failed
// attempt counts in kinds (if not nil) as cntDialErrorPrefix and its
// connErrorKind. It returns the connection and when its successful attempt
// began, or the last attempt's error.
func dialBareRetrying(ctx context.Context, o bareOptions, attempts int, kinds *counterSet) (*bareConn, time.Time, error) {
	delay := dialRetry
	for attempt := 1; ; attempt++ {
		t0 := time.Now()
		c, err := dialBare(ctx, o)
		if err == nil {
			return c, t0, nil
		}
		if kinds != nil {
			kinds.add(cntDialErrorPrefix+connErrorKind(err), 1)
		}
		if attempt >= attempts || ctx.Err() != nil || errors.Is(err, errTokenRefused) ||
			!sleepCtx(ctx, delay/2+rand.N(delay/2+1)) {
			return nil, time.Time{}, err
		}
		delay *= 2
	}
}

// dialBare opens a bare connection and waits for its hello, all within
// o.Timeout and ctx. A 401 is errTokenRefused, another refused handshake
// an errHTTPStatus.
func dialBare(ctx context.Context, o bareOptions) (*bareConn, error) {
	dctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	host, err := wsHostPort(o.URL)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	if o.SocketReadBuffer > 0 {
		d.Control = receiveBufferControl(o.SocketReadBuffer)
	}
	if o.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: o.LocalIP}
	}
	nc, err := d.DialContext(dctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	c := &bareConn{
		opts:    o,
		sock:    newGatedConn(nc),
		helloCh: make(chan struct{}),
		gone:    make(chan struct{}),
		pending: make(map[uint64]chan []byte),
	}
	// Closing the socket when dctx ends bounds the handshake and the wait
	// for hello by both the timeout and ctx.
	stop := context.AfterFunc(dctx, func() { _ = c.sock.Close() })
	header := http.Header{}
	header.Set("Authorization", "Bearer "+o.Token)
	conn, resp, err := gws.NewClientFromConn(c, &gws.ClientOption{
		Addr:             o.URL,
		RequestHeader:    header,
		HandshakeTimeout: o.Timeout,
		ReadBufferSize:   bareReadBuffer,
	}, c.sock)
	if err != nil {
		stop()
		switch {
		case resp != nil && resp.StatusCode == http.StatusUnauthorized:
			return nil, errTokenRefused
		case resp != nil && resp.StatusCode != http.StatusSwitchingProtocols:
			return nil, errHTTPStatus{resp.StatusCode}
		case dctx.Err() != nil && ctx.Err() == nil:
			return nil, fmt.Errorf("handshake: %w", context.DeadlineExceeded)
		}
		return nil, err
	}
	c.conn = conn
	go conn.ReadLoop()
	select {
	case <-c.helloCh:
	case <-c.gone:
	}
	if !stop() {
		// dctx ended and closed the socket, maybe just after hello.
		<-c.gone
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errNoHello
	}
	if !c.state.CompareAndSwap(connDialing, connOpen) {
		return nil, fmt.Errorf("closed before hello: %w", c.closeErr) // gone is closed: closeErr is set
	}
	return c, nil
}

// wsHostPort returns the host:port to dial for a ws:// URL.
func wsHostPort(raw string) (string, error) {
	rest, ok := strings.CutPrefix(raw, "ws://")
	if !ok {
		return "", fmt.Errorf("bench: %q is not a ws:// URL", raw)
	}
	host, _, _ := strings.Cut(rest, "/")
	if _, _, err := net.SplitHostPort(host); err != nil {
		return net.JoinHostPort(host, "80"), nil
	}
	return host, nil
}

// request sends req with a fresh id and waits for its reply; an error
// reply is a *wire.Error.
func (c *bareConn) request(ctx context.Context, req *wire.Request) (*wire.Reply, error) {
	req.ID = c.nextID.Add(1)
	b, err := wire.Marshal(req)
	if err != nil {
		return nil, err
	}
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", req.Type, net.ErrClosed)
	}
	c.pending[req.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
	}()
	if err := c.write(gws.OpcodeBinary, b); err != nil {
		return nil, fmt.Errorf("%s: %w", req.Type, err)
	}
	var raw []byte
	select {
	case raw = <-ch:
	case <-c.gone:
		select {
		case raw = <-ch:
		default:
			return nil, fmt.Errorf("%s: connection lost: %w", req.Type, c.closeErr)
		}
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", req.Type, ctx.Err())
	}
	rep := new(wire.Reply)
	if err := wire.Unmarshal(raw, rep); err != nil {
		return nil, fmt.Errorf("%s: bad reply: %w", req.Type, err)
	}
	if rep.Type == wire.TypeError {
		return nil, &wire.Error{Code: rep.Code, Message: rep.Message}
	}
	return rep, nil
}

func (c *bareConn) write(op gws.Opcode, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(bareWriteTimeout))
	return c.conn.WriteMessage(op, b)
}

// close sends a normal close frame under a write deadline and closes the
// socket; the read loop then ends.
func (c *bareConn) close() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(bareWriteTimeout))
	_ = c.conn.WriteClose(1000, nil)
}

// The gws.Event methods run on the connection's read loop.

func (c *bareConn) OnOpen(*gws.Conn) {}

func (c *bareConn) OnPing(_ *gws.Conn, payload []byte) {
	if c.write(gws.OpcodePong, payload) == nil && c.opts.Pings != nil {
		c.opts.Pings.Add(1)
	}
}

func (c *bareConn) OnPong(*gws.Conn, []byte) {}

func (c *bareConn) OnMessage(_ *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	now := time.Now()
	b := msg.Bytes()
	select {
	case <-c.helloCh:
	default:
		if err := wire.Unmarshal(b, &c.hello); err != nil || c.hello.Type != wire.TypeHello {
			c.closeErr = fmt.Errorf("first frame is not hello (%v)", err)
			_ = c.sock.Close()
			return
		}
		c.helloAt = now
		close(c.helloCh)
		return
	}
	var f bareFrame
	if err := wire.Unmarshal(b, &f); err != nil {
		return // nothing of ours can be in it
	}
	if f.Type == wire.TypeOK || f.Type == wire.TypeError {
		c.mu.Lock()
		ch := c.pending[f.ID]
		c.mu.Unlock()
		if ch != nil {
			ch <- append([]byte(nil), b...) // gws reuses b
			return
		}
	}
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(&f, now)
	}
}

func (c *bareConn) OnClose(_ *gws.Conn, err error) {
	if c.closeErr == nil { // OnMessage may have set it
		c.closeErr = err
		if err == nil {
			c.closeErr = errors.New("connection closed")
		}
	}
	c.goneAt = time.Now()
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
	close(c.gone)
	if c.state.Swap(connEnded) == connOpen && c.opts.OnClose != nil {
		c.opts.OnClose(c)
	}
}

// closeBare closes every connection in conns (nil entries are skipped) and
// waits, bounded by ctx, for their read loops to end.
func closeBare(ctx context.Context, conns []*bareConn, t *tally) {
	var closers errgroup.Group
	closers.SetLimit(64)
	for _, c := range conns {
		if c != nil {
			closers.Go(func() error { c.close(); return nil })
		}
	}
	_ = closers.Wait()
	for _, c := range conns {
		if c == nil {
			continue
		}
		select {
		case <-c.gone:
		case <-ctx.Done():
			// Every socket is closed, so the read loops are ending; the
			// process exits soon either way.
			t.error(errors.New("read loops still running after close"))
			return
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
