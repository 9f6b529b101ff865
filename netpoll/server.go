package netpoll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Handler is what the server calls. Every method runs on the connection's
// event loop, which serves thousands of connections: none may block, and
// none may panic.
type Handler interface {
	// Authorize runs during the handshake, before the 101, once the request
	// passed the server and per-address caps. Return session data and
	// status 0 to accept, or an HTTP error status (401, 403, 400, ...) and
	// a reason to refuse: the refusal is written as an HTTP response (with
	// Retry-After for 503 and 429) and the socket closed. A status outside
	// 400-599 refuses with 500. Setting r.LimitKey subjects the upgrade to
	// Config.MaxConnectionsPerKey.
	Authorize(r *Request) (session any, status int, reason string)
	// OnOpen runs once the 101 is written.
	OnOpen(c *Conn)
	// OnMessage gets each complete (reassembled) text or binary message.
	// payload is valid only during the call (it points into the loop's read
	// buffer); copy what you keep.
	OnMessage(c *Conn, binary bool, payload []byte)
	// OnClose runs exactly once per opened connection. err is a *CloseError
	// when a close code was exchanged (sent by either side),
	// ErrServerStopped when Stop closed it without one, or the transport
	// error (io.ErrUnexpectedEOF when the peer vanished).
	OnClose(c *Conn, err error)
}

// Stats are cumulative counters, except OpenConnections.
type Stats struct {
	OpenConnections    int64 // upgraded and not yet closed
	HandshakesAccepted int64
	HandshakesRefused  int64 // bad requests and Authorize refusals
	HandshakeTimeouts  int64
	IdleTimeouts       int64
	FramesIn           int64
	FramesOut          int64
	FrameWrites        int64 // system calls that wrote queued frames (FramesOut/FrameWrites: frames per write)
	BytesIn            int64 // all bytes read, handshakes included
	BytesOut           int64 // all bytes handed to the socket, handshakes included
	QueueOverflows     int64 // connections closed as slow consumers
	ProtocolErrors     int64 // connections failed for breaking RFC 6455

	// Refusals for the caps (also counted in HandshakesRefused, except the
	// sockets refused unread).
	RefusedConnLimit  int64 // 503: MaxConnections reached
	RefusedIPLimit    int64 // 429: MaxConnectionsPerIP reached
	RefusedKeyLimit   int64 // 429: MaxConnectionsPerKey reached
	RefusedPending    int64 // 503 at accept, unread: MaxPendingHandshakes reached
	RefusedNoFD       int64 // sockets shed at accept because the process was out of descriptors
	AcceptErrors      int64 // failed accepts (EMFILE, ENFILE, ENOBUFS, ...), each followed by a retry
	PendingHandshakes int64 // sockets accepted and not yet upgraded or refused, now
}

// Server is a WebSocket server on a gnet event loop. Handshake, framing,
// heartbeats and write queues all run on the loops: there is no goroutine
// per connection.
//
// Goroutines: gnet runs one goroutine per event loop (each owns its
// connections, their decoders and its timing wheel) and a ticker that calls
// OnTick; the server's own accept loop hands sockets to the loops
// (accept.go); senders call Conn.Send and Conn.Close from anywhere.
type Server struct {
	cfg     Config
	handler Handler
	clock   func() time.Time // time.Now; tests replace it
	epoch   time.Time

	queueOverflows atomic.Int64 // counted by senders, so not per loop
	stopping       atomic.Bool  // refuse new sockets
	holds          atomic.Int64 // Hold calls not yet Released

	// Caps (limits.go): slots held, taken and given back on the loops.
	pending, conns atomic.Int64
	perIP, perKey  keyCounter
	retryAfter     string // the Retry-After header line

	refusedConnLimit, refusedIPLimit, refusedKeyLimit atomic.Int64
	refusedPending, refusedNoFD, acceptErrors         atomic.Int64

	acceptErr      atomic.Pointer[acceptFailure] // the last failed accept; nil after a success
	acceptErrFresh time.Duration                 // Ready: how long a failed accept (not EMFILE) counts
	lastTick       atomic.Int64                  // wall clock (UnixNano) of the last OnTick
	tickStaleAfter time.Duration                 // Alive: ticks stopped this long means the loops stopped

	loopOf sync.Map // gnet.EventLoop -> *loop; written under mu

	mu    sync.Mutex // guards loops, state
	loops []*loop    // append-only
	state serverState

	// Set before Start returns, read-only afterwards.
	ln         net.Listener
	cli        *gnet.Client // the event loops, with no listener of their own
	addr       string
	stopCh     chan struct{} // closed by Stop
	acceptDone chan struct{} // closed when the accept loop returns
	acceptExit error         // why it returned; written before acceptDone is closed
	stopLoops  sync.Once
	runDone    chan struct{}
	runErr     error // written before runDone is closed

	reserve *os.File    // a spare descriptor, owned by the accept loop (accept.go)
	fdShort atomic.Bool // the last hand-off failed for want of a descriptor; written by the accept loop, read by Ready

	wrapListener func(net.Listener) net.Listener // tests inject accept errors
}

type serverState uint8

const (
	stateNew serverState = iota
	stateStarted
	stateStopped
)

// nextConnID numbers connections across all servers of the process.
var nextConnID atomic.Uint64

// NewServer checks cfg and returns a server that is not yet listening.
func NewServer(cfg Config, h Handler) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("netpoll: nil Handler")
	}
	cfg = cfg.WithDefaults()
	return &Server{
		cfg: cfg, handler: h, clock: time.Now,
		retryAfter:     retryAfterHeader(cfg.RetryAfter),
		tickStaleAfter: max(30*cfg.TickInterval, 30*time.Second),
		acceptErrFresh: 2 * acceptBackoffMax,
	}, nil
}

// Start listens and starts the event loops; it returns once the socket
// is listening.
func (s *Server) Start() error {
	s.mu.Lock()
	if s.state != stateNew {
		s.mu.Unlock()
		return errors.New("netpoll: Start called twice")
	}
	s.state = stateStarted
	s.mu.Unlock()

	err := s.start()
	if err != nil {
		s.mu.Lock()
		s.state = stateStopped // nothing runs; Stop has nothing to do
		s.mu.Unlock()
	}
	return err
}

func (s *Server) start() error {
	s.epoch = s.clock()
	lc := net.ListenConfig{
		KeepAlive: -1, // the WebSocket pings find dead peers
		Control: func(_, _ string, rc syscall.RawConn) error {
			if s.cfg.SocketSendBuffer <= 0 {
				return nil
			}
			// Set on the listener; accepted sockets inherit it.
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, s.cfg.SocketSendBuffer)
			})
			return errors.Join(err, serr)
		},
	}
	ln, err := lc.Listen(context.Background(), "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("netpoll: start: %w", err)
	}
	opts := []gnet.Option{
		gnet.WithTicker(true),
		gnet.WithLogger(gnetLogger{s.cfg.Logger}),
	}
	if n := s.cfg.NumEventLoops; n > 0 {
		opts = append(opts, gnet.WithNumEventLoop(n))
	} else {
		opts = append(opts, gnet.WithMulticore(true))
	}
	s.lastTick.Store(time.Now().UnixNano())
	cli, err := gnet.NewClient(&engineHandler{s: s}, opts...)
	if err == nil {
		err = cli.Start()
	}
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("netpoll: start: %w", err)
	}
	s.addr = ln.Addr().String()
	if s.wrapListener != nil {
		ln = s.wrapListener(ln)
	}
	s.ln, s.cli = ln, cli
	s.stopCh, s.acceptDone, s.runDone = make(chan struct{}), make(chan struct{}), make(chan struct{})
	s.reserve, _ = os.Open(os.DevNull) // nil (no reserve) if even that fails
	go s.acceptLoop()
	return nil
}

// Addr is the address the server listens on (with the real port when the
// configured one was 0). Valid after Start.
func (s *Server) Addr() string { return s.addr }

// Stop sends every open connection a 1001 close frame, closes all
// sockets and stops the event loops. It returns ctx's error if ctx ends
// first; the loops then still stop in the background.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if s.state != stateStarted {
		s.mu.Unlock()
		return nil
	}
	s.state = stateStopped
	s.mu.Unlock()
	s.stopping.Store(true)
	close(s.stopCh)
	_ = s.ln.Close()

	go func() {
		// A socket being handed to a loop must get there before the loops
		// stop (gnet would never answer the hand-off otherwise).
		<-s.acceptDone
		if s.reserve != nil {
			_ = s.reserve.Close()
		}
		s.mu.Lock()
		loops := s.loops
		s.mu.Unlock()
		done := make(chan struct{}, len(loops))
		for _, l := range loops {
			err := l.el.Execute(ctx, gnet.RunnableFunc(func(context.Context) error {
				l.goAway()
				done <- struct{}{}
				return nil
			}))
			if err != nil {
				done <- struct{}{}
			}
		}
		for goneAway := 0; goneAway < len(loops) && ctx.Err() == nil; {
			select {
			case <-done:
				goneAway++
			case <-ctx.Done():
			}
		}
		s.runErr = s.stopEventLoops()
		close(s.runDone)
	}()
	select {
	case <-s.runDone:
		return s.runErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopEventLoops stops gnet, once: the loops close their remaining
// connections (OnClose runs for each) and exit.
func (s *Server) stopEventLoops() (err error) {
	s.stopLoops.Do(func() { err = s.cli.Stop() })
	return err
}

// Stats sums the counters of all event loops.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	st := Stats{
		QueueOverflows:    s.queueOverflows.Load(),
		RefusedConnLimit:  s.refusedConnLimit.Load(),
		RefusedIPLimit:    s.refusedIPLimit.Load(),
		RefusedKeyLimit:   s.refusedKeyLimit.Load(),
		RefusedPending:    s.refusedPending.Load(),
		RefusedNoFD:       s.refusedNoFD.Load(),
		AcceptErrors:      s.acceptErrors.Load(),
		PendingHandshakes: s.pending.Load(),
	}
	for _, l := range loops {
		ls := &l.stats
		st.OpenConnections += ls.open.Load()
		st.HandshakesAccepted += ls.handshakesAccepted.Load()
		st.HandshakesRefused += ls.handshakesRefused.Load()
		st.HandshakeTimeouts += ls.handshakeTimeouts.Load()
		st.IdleTimeouts += ls.idleTimeouts.Load()
		st.FramesIn += ls.framesIn.Load()
		st.FramesOut += ls.framesOut.Load()
		st.FrameWrites += ls.frameWrites.Load()
		st.BytesIn += ls.bytesIn.Load()
		st.BytesOut += ls.bytesOut.Load()
		st.ProtocolErrors += ls.protocolErrors.Load()
	}
	return st
}

func (s *Server) since() time.Duration { return s.clock().Sub(s.epoch) }

// loopFor returns the state of gnet event loop el, creating it on the
// loop's first connection (gnet does not list its loops).
func (s *Server) loopFor(el gnet.EventLoop) *loop {
	if l, ok := s.loopOf.Load(el); ok {
		return l.(*loop)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.loopOf.Load(el); ok {
		return l.(*loop)
	}
	cfg := &s.cfg
	horizon := max(cfg.IdleTimeout, cfg.HandshakeTimeout, cfg.CloseTimeout)
	now := s.since()
	l := &loop{srv: s, el: el, now: now, wheel: newWheel[*Conn](cfg.TickInterval, horizon, now)}
	l.flushTask = gnet.RunnableFunc(l.runFlush)
	l.sweepTask = gnet.RunnableFunc(l.runSweep)
	s.loops = append(s.loops, l)
	s.loopOf.Store(el, l)
	return l
}

// loop is the server's state for one gnet event loop.
type loop struct {
	srv       *Server
	el        gnet.EventLoop
	flushTask gnet.Runnable
	sweepTask gnet.Runnable

	// Owned by the event loop goroutine.
	wheel *wheel[*Conn]
	now   time.Duration // refreshed on every read, open and sweep
	spare []*Conn       // the dirty list being flushed, kept for reuse
	iov   []unix.Iovec  // writev scratch (writev.go)

	_ [64]byte // keep senders' lock off the loop's cache lines

	// mu guards dirty and flushQueued; senders take it on any goroutine,
	// always after the connection's own mu.
	mu          sync.Mutex
	dirty       []*Conn // connections with queued frames or a close request
	flushQueued bool    // a flush task is queued on the loop, or held (wakeHeld)

	wakeHeld atomic.Bool // a wake waits for the server's last Release

	_ [64]byte

	stats loopStats
}

// loopStats are written by one loop and read by Stats.
type loopStats struct {
	open, handshakesAccepted, handshakesRefused, handshakeTimeouts, idleTimeouts atomic.Int64
	framesIn, framesOut, bytesIn, bytesOut, protocolErrors                       atomic.Int64
	frameWrites                                                                  atomic.Int64
}

// addDirty adds c to the dirty list; it reports whether the caller must
// wake the loop (no flush task is queued yet). Called with c.mu held.
func (l *loop) addDirty(c *Conn) (wake bool) {
	l.mu.Lock()
	l.dirty = append(l.dirty, c)
	wake = !l.flushQueued
	l.flushQueued = true
	l.mu.Unlock()
	return wake
}

// wake queues a flush task on the loop (an eventfd write), or, while the
// server is held (Hold), leaves that to the last Release; call it with no
// lock held.
//
// wake and Release each write their side (wakeHeld, holds) before reading
// the other's, and Go's atomics are sequentially consistent, so at least
// one of them sees both and the Swap lets exactly one queue the task.
func (l *loop) wake() {
	l.wakeHeld.Store(true)
	if l.srv.holds.Load() > 0 {
		return
	}
	if l.wakeHeld.Swap(false) {
		l.execute()
	}
}

// execute queues the flush task.
func (l *loop) execute() {
	if err := l.el.Execute(context.Background(), l.flushTask); err != nil {
		// Only after the engine stopped, when every socket is closed.
		l.srv.cfg.Logger.Debug("netpoll: flush not scheduled", "err", err)
	}
}

// Hold defers the loop wake-ups that Send and Close would make until the
// matching Release, so that frames queued for one connection by several
// goroutines within a short span leave in one write. Holds nest and may be
// released on another goroutine than the one that took them; every Hold
// needs one Release, soon: while any hold is taken no loop is woken to
// write (a loop that runs for another reason, a read or its ticker, does
// not flush either). The last Release wakes every loop a Send asked for.
func (s *Server) Hold() { s.holds.Add(1) }

// Release ends one Hold; see Hold.
func (s *Server) Release() {
	n := s.holds.Add(-1)
	if n > 0 {
		return
	}
	if n < 0 {
		panic("netpoll: Release without Hold")
	}
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	for _, l := range loops {
		if l.wakeHeld.Swap(false) {
			l.execute()
		}
	}
}

// runFlush writes the queues of all dirty connections: one task per loop
// wakeup however many connections a broadcast touched.
func (l *loop) runFlush(context.Context) error {
	l.mu.Lock()
	batch := l.dirty
	l.dirty = l.spare[:0]
	l.flushQueued = false
	l.mu.Unlock()
	for _, c := range batch {
		c.flush()
	}
	clear(batch)
	l.spare = batch[:0]
	return nil
}

// runSweep advances the timing wheel; the ticker queues it every
// TickInterval.
func (l *loop) runSweep(context.Context) error {
	l.now = l.srv.since()
	l.wheel.advance(l.now, (*Conn).onTimer)
	return nil
}

// goAway closes every connection of the loop for Stop.
func (l *loop) goAway() {
	conns := make([]*Conn, 0, l.wheel.len())
	l.wheel.each(func(c *Conn) { conns = append(conns, c) })
	for _, c := range conns {
		if c.phase == phaseOpen {
			c.closeErr = &CloseError{Code: CloseGoingAway, Reason: "server shutdown"}
			c.write(closeFrame(CloseGoingAway, "server shutdown"))
		}
		c.closeSocket()
	}
}

// engineHandler adapts the server to gnet's callbacks, keeping them off
// Server's public method set.
type engineHandler struct {
	gnet.BuiltinEventEngine
	s *Server
}

// OnOpen runs on the loop for each socket the accept loop hands over.
func (h *engineHandler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	s := h.s
	if s.stopping.Load() {
		return nil, gnet.Close
	}
	l := s.loopFor(gc.EventLoop())
	l.now = s.since()
	c := &Conn{id: nextConnID.Add(1), srv: s, loop: l, gc: gc, lastRecv: l.now}
	if ra := gc.RemoteAddr(); ra != nil {
		c.remote = ra.String()
		c.ipKey = ipKey(ra)
	}
	c.timer.owner = c
	c.held = slotPending
	s.pending.Add(1)
	gc.SetContext(c)
	l.wheel.schedule(&c.timer, l.now+s.cfg.HandshakeTimeout)
	return nil, gnet.None
}

func (h *engineHandler) OnTraffic(gc gnet.Conn) gnet.Action {
	c, _ := gc.Context().(*Conn)
	if c == nil {
		return gnet.Close
	}
	// Next(-1) takes every buffered byte, so gnet's own inbound buffer
	// stays empty and the bytes are the loop's read buffer.
	data, _ := gc.Next(-1)
	c.loop.now = h.s.since()
	return c.onTraffic(data)
}

func (h *engineHandler) OnClose(gc gnet.Conn, err error) gnet.Action {
	if c, _ := gc.Context().(*Conn); c != nil {
		c.onClose(err)
	}
	return gnet.None
}

func (h *engineHandler) OnTick() (time.Duration, gnet.Action) {
	s := h.s
	s.lastTick.Store(time.Now().UnixNano())
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	for _, l := range loops {
		_ = l.el.Execute(context.Background(), l.sweepTask)
	}
	return s.cfg.TickInterval, gnet.None
}

// gnetLogger sends gnet's log lines to slog.
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Infof(format string, args ...any)  { g.l.Debug(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.l.Warn(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Errorf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
func (g gnetLogger) Fatalf(format string, args ...any) { g.l.Error(fmt.Sprintf(format, args...)) }
