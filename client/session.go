package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"parley/wire"
)

// session is one WebSocket connection to one node. connect creates it; it
// lives until the connection drops and is never reused: the supervisor
// replaces it with a new one.
//
// Goroutines: the gws read loop (one per session) calls the gws.Event
// methods below. It decodes frames, hands replies to their waiters and queues
// events for the dispatcher; it never waits on the app or on the dispatcher,
// so replies keep flowing while Events() is full. Any goroutine may call
// roundTrip and close.
type session struct {
	c      *Client
	url    string
	urlIdx int
	conn   *gws.Conn // set before the read loop starts, never changed

	helloCh chan struct{} // closed by the reader when the hello frame arrives
	hello   wire.Hello    // written by the reader before helloCh closes; read-only after
	done    chan struct{} // closed once the connection is gone
	err     error         // why it is gone; written before done closes

	// Owned by the reader goroutine.
	idle        time.Duration // read deadline once hello arrived; 0 = the server does not ping
	deadlineSet time.Time     // when the read deadline was last pushed forward

	// wmu serialises writes so each runs under its own write deadline. (gws
	// serialises frames itself, but with a shared deadline every new writer
	// would extend the deadline of a write stuck on a dead peer.) It guards
	// wdeadline, the write deadline last set.
	wmu       sync.Mutex
	wdeadline time.Time

	// synced is set by the dispatcher once a sync from the cursor finished
	// on this session: the app has every event up to the cursor.
	synced atomic.Bool

	mu      sync.Mutex // guards pending, closed and sweeping
	pending map[uint64]waiter
	closed  bool
	// sweeping: sweep is armed, because Go's requests are pending. One
	// timer per session times them out, rather than one per request.
	sweeping bool
	sweep    *time.Timer
}

// waiter is what waits for the reply to one request: Request's goroutine
// on ch, or Go's done. Whoever removes it from pending (the reader with the
// reply, the sweep, a failed write, fail) completes it, so it completes
// once.
type waiter struct {
	ch       chan *wire.Reply         // Request: buffered, the reader never blocks on it
	done     func(*wire.Reply, error) // Go
	deadline time.Time                // Go: when the sweep times it out
}

// sweepPeriod is how often the sweep looks for Go's requests past their
// deadline: a request times out between RequestTimeout and 9/8 of it.
func (s *session) sweepPeriod() time.Duration { return max(s.c.cfg.RequestTimeout/8, time.Millisecond) }

// connect opens a session to URL number idx: TCP, optional TLS, the
// WebSocket handshake with the bearer token, then the server's hello, all
// within DialTimeout. A 401 from the handshake is ErrUnauthorized.
func (c *Client) connect(ctx context.Context, idx int) (*session, error) {
	raw := c.cfg.URLs[idx]
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	tlsOn := u.Scheme == "wss"
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if tlsOn {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}

	dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	dial := c.cfg.NetDial
	if dial == nil {
		var dialer net.Dialer
		dial = dialer.DialContext
	}
	nc, err := dial(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", raw, err)
	}
	if tlsOn {
		tc := c.cfg.TLS.Clone()
		if tc == nil {
			tc = &tls.Config{}
		}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		nc = tls.Client(nc, tc)
	}
	// Closing the socket when dctx ends bounds the handshake and the wait for
	// hello by both DialTimeout and the caller's ctx.
	stop := context.AfterFunc(dctx, func() { _ = nc.Close() })

	s := &session{
		c:       c,
		url:     raw,
		urlIdx:  idx,
		helloCh: make(chan struct{}),
		done:    make(chan struct{}),
		pending: make(map[uint64]waiter),
	}
	header := http.Header{}
	header.Set("Authorization", "Bearer "+c.cfg.Token)
	conn, resp, err := gws.NewClientFromConn(s, &gws.ClientOption{
		Addr:             raw,
		RequestHeader:    header,
		HandshakeTimeout: c.cfg.DialTimeout,
	}, nc)
	if err != nil {
		stop()
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, ErrUnauthorized
		}
		if dctx.Err() != nil {
			err = dctx.Err()
		}
		return nil, fmt.Errorf("client: handshake %s: %w", raw, err)
	}
	s.conn = conn
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		conn.ReadLoop()
	}()

	select {
	case <-s.helloCh:
	case <-s.done:
	}
	if !stop() {
		// dctx ended and closed the socket, maybe just after hello arrived.
		s.close()
		return nil, fmt.Errorf("client: waiting for hello from %s: %w", raw, dctx.Err())
	}
	select {
	case <-s.done:
		return nil, fmt.Errorf("client: %s closed before hello: %w", raw, s.err)
	default:
	}
	if s.hello.Protocol != 1 {
		c.log.Warn("parley client: unexpected protocol version", "url", raw, "v", s.hello.Protocol)
	}
	return s, nil
}

// roundTrip sends r with a fresh id on this session and waits for its
// reply. An "error" reply becomes a *wire.Error; a connection lost before
// the reply is ErrDisconnected; ctx ending returns ctx.Err().
func (s *session) roundTrip(ctx context.Context, r *wire.Request) (*wire.Reply, error) {
	b, err := s.encode(r)
	if err != nil {
		return nil, err
	}
	ch := make(chan *wire.Reply, 1) // buffered: the reader never blocks on a waiter that gave up
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrDisconnected
	}
	s.pending[r.ID] = waiter{ch: ch}
	s.mu.Unlock()

	if err := s.write(gws.OpcodeBinary, b); err != nil {
		// gws closes the connection after a failed write; the reader
		// notices and the supervisor reconnects.
		s.forget(r.ID)
		return nil, ErrDisconnected
	}
	select {
	case rep := <-ch:
		return replyResult(rep)
	case <-s.done:
		select {
		case rep := <-ch:
			return replyResult(rep)
		default:
			return nil, ErrDisconnected
		}
	case <-ctx.Done():
		s.forget(r.ID)
		return nil, ctx.Err()
	}
}

// encode gives r a fresh id and the client's min_idx, and encodes it.
func (s *session) encode(r *wire.Request) ([]byte, error) {
	r.ID = s.c.nextID.Add(1)
	if m := s.c.seen.Load(); m > r.MinIndex {
		r.MinIndex = m // read what this client has seen, on any node
	}
	b, err := marshalRequest(r)
	if err != nil {
		return nil, fmt.Errorf("client: encode %s: %w", r.Type, err)
	}
	if len(b) > wire.MaxFrameBytes {
		return nil, wire.Errorf(wire.CodeTooLarge, "client: request frame over limit")
	}
	return b, nil
}

// start sends r with a fresh id on this session and returns; done gets the
// reply or the error (as Request returns them) from the reader, the
// session's sweep, or this goroutine when the request cannot go out.
func (s *session) start(r *wire.Request, done func(*wire.Reply, error)) {
	b, err := s.encode(r)
	if err != nil {
		done(nil, err)
		return
	}
	id := r.ID
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		done(nil, s.c.lost(ErrDisconnected))
		return
	}
	s.pending[id] = waiter{done: done, deadline: time.Now().Add(s.c.cfg.RequestTimeout)}
	if !s.sweeping {
		s.sweeping = true
		if s.sweep == nil {
			s.sweep = time.AfterFunc(s.sweepPeriod(), s.sweepExpired)
		} else {
			s.sweep.Reset(s.sweepPeriod())
		}
	}
	s.mu.Unlock()
	if err := s.write(gws.OpcodeBinary, b); err != nil {
		if _, ok := s.take(id); ok { // fail may have taken it first
			done(nil, s.c.lost(ErrDisconnected))
		}
	}
}

// sweepExpired runs on the sweep timer: it times out Go's requests past
// their deadline, and comes back while others are pending.
func (s *session) sweepExpired() {
	now := time.Now()
	var expired []waiter
	s.mu.Lock()
	left := false
	for id, w := range s.pending {
		if w.done == nil {
			continue
		}
		if now.Before(w.deadline) {
			left = true
			continue
		}
		expired = append(expired, w)
		delete(s.pending, id)
	}
	s.sweeping = left && !s.closed
	if s.sweeping {
		s.sweep.Reset(s.sweepPeriod())
	}
	s.mu.Unlock()
	for _, w := range expired {
		w.done(nil, s.c.lost(ErrRequestTimeout))
	}
}

// take removes and returns the waiter of request id, if it is still there.
func (s *session) take(id uint64) (waiter, bool) {
	s.mu.Lock()
	w, ok := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	return w, ok
}

func replyResult(rep *wire.Reply) (*wire.Reply, error) {
	if rep.Type == wire.TypeError {
		return nil, &wire.Error{Code: rep.Code, Message: rep.Message, RetryMS: rep.RetryMS}
	}
	return rep, nil
}

func (s *session) forget(id uint64) {
	s.mu.Lock()
	delete(s.pending, id)
	s.mu.Unlock()
}

// write sends one WebSocket message under a write deadline of at most
// RequestTimeout, and at least three quarters of it, so a peer that stopped
// reading cannot hold a writer (or the reader answering a ping) for longer
// than that. The deadline is moved only when less than three quarters are
// left: setting it costs about as much as the write itself.
func (s *session) write(op gws.Opcode, b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	now := time.Now()
	if timeout := s.c.cfg.RequestTimeout; s.wdeadline.Sub(now) < timeout-timeout/4 {
		s.wdeadline = now.Add(timeout)
		_ = s.conn.SetWriteDeadline(s.wdeadline)
	}
	return s.conn.WriteMessage(op, b)
}

// close sends a normal close frame (bounded by a short write deadline) and
// closes the socket; the reader then exits and fails the pending requests.
func (s *session) close() { s.shutdown(1000, "") }

func (s *session) shutdown(code uint16, reason string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.wdeadline = time.Now().Add(time.Second)
	_ = s.conn.SetWriteDeadline(s.wdeadline)
	_ = s.conn.WriteClose(code, []byte(reason))
}

// fail marks the session gone and wakes every waiter. Only the first call
// counts.
func (s *session) fail(err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.err = err
	pending := s.pending
	s.pending = nil
	if s.sweeping {
		s.sweep.Stop()
		s.sweeping = false
	}
	s.mu.Unlock()
	close(s.done)
	for _, w := range pending { // Request's waiters see done
		if w.done != nil {
			w.done(nil, s.c.lost(ErrDisconnected))
		}
	}
}

func (s *session) isDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// The gws.Event methods below run on the session's read loop goroutine.

func (s *session) OnOpen(*gws.Conn) {}

func (s *session) OnClose(_ *gws.Conn, err error) {
	if err == nil || err.Error() == "" {
		err = errors.New("connection closed")
	}
	s.fail(err)
}

func (s *session) OnPing(_ *gws.Conn, payload []byte) {
	s.touch()
	_ = s.write(gws.OpcodePong, payload)
}

func (s *session) OnPong(*gws.Conn, []byte) { s.touch() }

func (s *session) OnMessage(_ *gws.Conn, msg *gws.Message) {
	defer msg.Close() // the buffer is pooled by gws: decode copies what we keep
	s.touch()
	if msg.Opcode != gws.OpcodeBinary {
		s.c.log.Warn("parley client: ignoring a non-binary message", "url", s.url)
		return
	}
	if err := s.handle(msg.Bytes()); err != nil {
		// A frame we cannot decode may be a reply whose waiter would hang:
		// drop the connection and resync on a fresh one.
		s.c.log.Error("parley client: bad frame from server, reconnecting", "url", s.url, "err", err)
		s.shutdown(1002, "bad frame")
	}
}

// handle routes one server frame.
func (s *session) handle(b []byte) error {
	// An ack or a message event, as the server writes them ("t" first),
	// skips PeekType's walk over the frame: the fast decoder reads every
	// key, and its type stands if it is the first "t" as well as the last.
	switch typ, _ := firstType(b); typ {
	case wire.TypeOK, wire.TypeError:
		if rep := new(wire.Reply); fastReply(b, rep) && rep.Type == typ {
			s.onReply(rep)
			return nil
		}
	case wire.TypeEvent:
		var ev wire.Event
		if scanEvent(b, &ev, !s.c.cfg.NoEvents) && ev.Type == typ {
			s.onEvent(&ev)
			return nil
		}
	}
	typ, err := wire.PeekType(b)
	if err != nil {
		return err
	}
	switch typ {
	case wire.TypeOK, wire.TypeError:
		rep := new(wire.Reply)
		if err := decodeReply(b, rep); err != nil {
			return err
		}
		s.onReply(rep)
	case wire.TypeEvent:
		var ev wire.Event
		if err := decodeEvent(b, &ev); err != nil {
			return err
		}
		s.onEvent(&ev)
	case wire.TypeTypingEvent, wire.TypePresenceEvent, wire.TypeReceiptEvent, wire.TypeReadCountsEvent:
		var sig Signal
		var v any
		switch typ {
		case wire.TypeTypingEvent:
			sig.Typing = new(wire.Typing)
			v = sig.Typing
		case wire.TypePresenceEvent:
			sig.Presence = new(wire.Presence)
			v = sig.Presence
		case wire.TypeReceiptEvent:
			sig.Receipt = new(wire.Receipt)
			v = sig.Receipt
		default:
			sig.ReadCounts = new(wire.ReadCounts)
			v = sig.ReadCounts
		}
		if err := wire.Unmarshal(b, v); err != nil {
			return err
		}
		s.c.signal(sig)
	case wire.TypeHello:
		select {
		case <-s.helloCh:
			s.c.log.Warn("parley client: ignoring a second hello", "url", s.url)
			return nil
		default:
		}
		if err := wire.Unmarshal(b, &s.hello); err != nil {
			return err
		}
		if s.hello.PingMS > 0 {
			// The server pings at least every PingMS: three missed pings
			// mean the peer or the path is dead.
			s.idle = max(3*time.Duration(s.hello.PingMS)*time.Millisecond, time.Second)
			s.touch()
		}
		close(s.helloCh)
	default:
		// A frame type from a newer server: nothing waits for it.
		s.c.log.Debug("parley client: ignoring unknown frame", "url", s.url, "t", typ)
	}
	return nil
}

// onReply hands a reply to its waiter.
func (s *session) onReply(rep *wire.Reply) {
	s.c.observeReply(rep) // before the waiter sees it: its next request carries it
	if rep.Type == wire.TypeError && rep.Code == wire.CodeBusy && rep.RetryMS > 0 {
		// Before the waiter sees it too: its next write waits.
		s.c.gate.refused(time.Duration(rep.RetryMS)*time.Millisecond, s.c.cfg.RequestTimeout, time.Now())
	}
	w, ok := s.take(rep.ID)
	switch {
	case ok && w.done != nil:
		w.done(replyResult(rep))
	case ok:
		w.ch <- rep
	case rep.Type == wire.TypeError && rep.ID == 0:
		s.c.log.Warn("parley client: server error without a request id", "url", s.url, "code", rep.Code, "msg", rep.Message)
	}
	// Otherwise its request timed out and the waiter is gone.
}

// onEvent queues a live event for the dispatcher.
func (s *session) onEvent(ev *wire.Event) {
	s.c.observe(ev.Index)
	if !s.c.cfg.NoEvents {
		s.c.inbox.push(s, ev)
	}
}

// touch pushes the read deadline forward after traffic, at most once per
// quarter of the idle timeout to keep timer churn off the hot path.
func (s *session) touch() {
	if s.idle == 0 {
		return
	}
	now := time.Now()
	if now.Sub(s.deadlineSet) < s.idle/4 {
		return
	}
	s.deadlineSet = now
	_ = s.conn.SetReadDeadline(now.Add(s.idle))
}
