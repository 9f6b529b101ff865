package client

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"parley/wire"
)

// Client is a connection to a Parley cluster that survives node failures.
// It is safe for concurrent use. See the package documentation for the
// goroutines it runs.
type Client struct {
	cfg Config
	log *slog.Logger

	// ctx lives as long as the client; its cause says why it ended
	// (ErrClosed or ErrUnauthorized).
	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup // the supervisor, the dispatcher and every session's reader

	nextID  atomic.Uint64 // request ids, shared by all sessions
	cursor  atomic.Uint64 // written by the dispatcher only
	seen    atomic.Uint64 // the highest idx seen in replies and events: min_idx of requests
	syncs   atomic.Uint64 // syncs completed; written by the dispatcher only
	inbox   inbox
	gate    writeGate       // holds writes after a busy refusal with retry_ms
	events  chan wire.Event // sent on by the dispatcher only; closed when it exits
	signals chan Signal     // ephemeral typing and presence frames; never closed

	mu          sync.Mutex    // guards sess and sessChanged
	sess        *session      // the session requests use; nil while reconnecting
	sessChanged chan struct{} // closed and replaced whenever sess changes

	initOnce sync.Once
	initDone chan struct{} // closed once the first sync is delivered, failed, or blocked on the app
	initErr  error         // written before initDone closes

	// Owned by the dispatcher goroutine.
	delivered map[uint64]uint64 // conversation → highest seq sent on events
}

// Dial connects to the first URL that answers (trying each once, in order),
// waits for the server's hello, runs the initial sync from cfg.Cursor and
// returns. The initial sync's events are on Events() when Dial returns (if
// they fit in EventBuffer; beyond that Dial returns once the buffer is full
// and the rest follows as the app drains it). A 401 returns ErrUnauthorized
// at once. After Dial, connection losses are handled in the background.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	events := cfg.EventBuffer
	if cfg.NoEvents || cfg.OnEvent != nil {
		// Nothing is sent on Events(): a buffer would only be memory for
		// the garbage collector to scan (EventBuffer events each).
		events = 0
	}
	c := &Client{
		cfg:         cfg,
		log:         cfg.Logger,
		events:      make(chan wire.Event, events),
		signals:     make(chan Signal, cfg.EventBuffer),
		sessChanged: make(chan struct{}),
		initDone:    make(chan struct{}),
		delivered:   make(map[uint64]uint64),
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.gate.start = c.goNow
	c.cursor.Store(cfg.Cursor)
	c.seen.Store(cfg.MinIndex)
	c.inbox.init(cfg.EventBuffer)

	s, err := c.connectRound(ctx, 0)
	if err != nil {
		c.cancel(ErrClosed)
		c.wg.Wait()
		return nil, err
	}
	c.setSession(s)
	c.log.Info("parley client: connected", "url", s.url, "node", s.hello.Node)
	if cfg.NoEvents {
		c.finishInit(nil)
	} else {
		c.inbox.requestResync()
	}
	c.wg.Add(2)
	go c.supervise(s)
	go c.dispatch()

	select {
	case <-c.initDone:
		if c.initErr == nil {
			return c, nil
		}
		err = c.initErr
	case <-ctx.Done():
		err = ctx.Err()
	case <-c.ctx.Done():
		err = context.Cause(c.ctx)
	}
	_ = c.Close()
	return nil, err
}

// connectRound tries every URL once, starting at start, and returns the
// first session that reaches hello. A 401 ends the round: another node
// would refuse the same token.
func (c *Client) connectRound(ctx context.Context, start int) (*session, error) {
	var errs []error
	n := len(c.cfg.URLs)
	for i := range n {
		s, err := c.connect(ctx, (start+i)%n)
		if err == nil {
			return s, nil
		}
		if errors.Is(err, ErrUnauthorized) || ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// supervise is the supervisor goroutine, one per Client: it waits for the
// current session to die, then reconnects (next URL, backoff) and asks the
// dispatcher for a resync. It ends when the client ends, or on a 401, which
// ends the client.
func (c *Client) supervise(s *session) {
	defer c.wg.Done()
	for {
		select {
		case <-s.done:
		case <-c.ctx.Done():
			return
		}
		c.setSession(nil)
		c.log.Warn("parley client: connection lost", "url", s.url, "err", s.err)
		if s = c.reconnect((s.urlIdx + 1) % len(c.cfg.URLs)); s == nil {
			return
		}
		c.log.Info("parley client: reconnected", "url", s.url, "node", s.hello.Node)
		if !c.cfg.NoEvents {
			c.inbox.requestResync()
		}
	}
}

// reconnect tries the URLs round robin from next, with backoff before each
// attempt (the first one too, so that clients of a node that just died do
// not all land on the next node in the same instant). It returns nil when
// the client ends.
func (c *Client) reconnect(next int) *session {
	for attempt := 0; ; attempt++ {
		if !sleep(c.ctx, backoff(attempt, c.cfg.ReconnectMin, c.cfg.ReconnectMax)) {
			return nil
		}
		s, err := c.connect(c.ctx, next)
		if err == nil {
			if !c.setSession(s) {
				s.close() // Close ran meanwhile
				return nil
			}
			return s
		}
		if errors.Is(err, ErrUnauthorized) {
			c.log.Error("parley client: token refused while reconnecting", "url", c.cfg.URLs[next])
			c.cancel(ErrUnauthorized)
			return nil
		}
		if c.ctx.Err() != nil {
			return nil
		}
		c.log.Info("parley client: reconnect failed", "url", c.cfg.URLs[next], "attempt", attempt, "err", err)
		next = (next + 1) % len(c.cfg.URLs)
	}
}

// setSession publishes s (nil while reconnecting). It refuses a new session
// once the client has ended, so Close never misses one.
func (c *Client) setSession(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s != nil && c.ctx.Err() != nil {
		return false
	}
	c.sess = s
	close(c.sessChanged)
	c.sessChanged = make(chan struct{})
	return true
}

func (c *Client) current() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// waitSession returns a live session, waiting for a reconnection if needed.
func (c *Client) waitSession(ctx context.Context) (*session, error) {
	for {
		if c.ctx.Err() != nil {
			return nil, context.Cause(c.ctx)
		}
		c.mu.Lock()
		s, changed := c.sess, c.sessChanged
		c.mu.Unlock()
		if s != nil && !s.isDone() {
			return s, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.ctx.Done():
		}
	}
}

// Request sends req (a copy, with a fresh id) and waits for its reply. It
// validates req locally first (wire's rules), so a malformed request fails
// without a round trip. If the client is reconnecting it waits for the
// connection. Each call is bounded by RequestTimeout as well as by ctx.
//
// Errors: an "error" reply is a *wire.Error with its code; a connection lost
// before the reply is ErrDisconnected; no reply within RequestTimeout is
// ErrRequestTimeout (both retryable, see Retryable); ctx's own error when ctx
// ends; ErrClosed or ErrUnauthorized once the client has ended.
//
// A write (wire.IsWrite) first waits while the client holds its writes
// after a busy refusal (see Go), within the same RequestTimeout.
func (c *Client) Request(ctx context.Context, req *wire.Request) (*wire.Reply, error) {
	return c.request(ctx, req, wire.IsWrite(req.Type))
}

// request is Request; a gated write first waits for the write gate. Go's
// writes are not gated here: the gate has let them through already.
func (c *Client) request(ctx context.Context, req *wire.Request, gated bool) (*wire.Reply, error) {
	r := *req
	if e := r.Validate(); e != nil {
		return nil, e
	}
	actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var s *session
	var err error
	if gated {
		err = c.gate.wait(actx)
	}
	if err == nil {
		s, err = c.waitSession(actx)
	}
	if err == nil {
		var rep *wire.Reply
		if rep, err = s.roundTrip(actx, &r); err == nil {
			return rep, nil
		}
	}
	switch {
	case c.ctx.Err() != nil && (err == ErrDisconnected || err == actx.Err()):
		return nil, context.Cause(c.ctx)
	case err == actx.Err() && ctx.Err() != nil:
		return nil, ctx.Err()
	case err == actx.Err():
		return nil, ErrRequestTimeout
	}
	return nil, err
}

// Go sends req as Request does, without waiting: done gets the reply, or
// the error Request would return, exactly once. Go is for callers that
// keep many requests in flight on a client (a load generator) and would
// otherwise need a goroutine for each. The request times out after
// RequestTimeout (at most an eighth later: one timer per connection sweeps
// them); while the client reconnects, Go waits for the connection on a
// goroutine of its own, as Request would.
//
// A write (wire.IsWrite) made while the client holds its writes after a
// busy refusal waits in the client and goes, in order, when the wait ends
// (PROTOCOL.md section 5; see writeGate); its RequestTimeout starts then.
//
// done runs on one of the client's goroutines (the connection's reader,
// the sweep, the write gate's timer), or on the caller's before Go returns
// when req is invalid or cannot be sent. It must return promptly and must
// not call the client: replies and events wait for it.
func (c *Client) Go(req *wire.Request, done func(*wire.Reply, error)) {
	r := *req
	if e := r.Validate(); e != nil {
		done(nil, e)
		return
	}
	if wire.IsWrite(r.Type) && c.gate.hold(&r, done) {
		return // sent by the gate when it opens (see writeGate)
	}
	c.goNow(&r, done)
}

// goNow is Go for a valid request the write gate does not hold. req is
// the caller's copy: sending it sets its id.
func (c *Client) goNow(req *wire.Request, done func(*wire.Reply, error)) {
	if c.ctx.Err() != nil {
		done(nil, context.Cause(c.ctx))
		return
	}
	if s := c.current(); s != nil && !s.isDone() {
		s.start(req, done)
		return
	}
	waiting := *req // on the heap only when waiting: Go's copy stays on the stack
	go func() { done(c.request(context.Background(), &waiting, false)) }()
}

// lost is the error of a request whose connection was lost (err
// ErrDisconnected) or that timed out (ErrRequestTimeout): once the client
// has ended, why it ended instead, as Request returns.
func (c *Client) lost(err error) error {
	if c.ctx.Err() != nil {
		return context.Cause(c.ctx)
	}
	return err
}

// Events returns the channel of conversation events: every event of every
// conversation of the user, each (conv, seq) once, in seq order per
// conversation, without gaps across reconnects. A conversation's first event
// seen by this Client is its baseline; earlier ones are for History. The
// channel closes when the client ends. If the app stops reading, the client
// stops fetching events (nothing is dropped) but requests keep working.
func (c *Client) Events() <-chan wire.Event { return c.events }

// Cursor returns the resume point to persist and pass as Config.Cursor: the
// index up to which every event has been sent on Events(). Events sent before
// Cursor returned may still sit in the channel, so to persist safely read
// Cursor, then handle the len(Events()) events queued at that moment, then
// store the value read.
func (c *Client) Cursor() uint64 { return c.cursor.Load() }

// MinIndex is the highest log index the client has seen in a reply or an
// event (or was given as Config.MinIndex). Every request carries it as
// min_idx: whichever node serves a read has applied at least this far, so
// the client never sees its own writes, or anything it has seen, undone.
// Pass it to the next Client (Config.MinIndex) or to an HTTP request
// (header Parley-Min-Index) to carry the guarantee over.
func (c *Client) MinIndex() uint64 { return c.seen.Load() }

// observe raises MinIndex to idx.
func (c *Client) observe(idx uint64) {
	for {
		cur := c.seen.Load()
		if idx <= cur || c.seen.CompareAndSwap(cur, idx) {
			return
		}
	}
}

// observeReply raises MinIndex to the indexes a reply shows: a write's
// idx, and those of the events it carries.
func (c *Client) observeReply(rep *wire.Reply) {
	top := rep.Index
	for i := range rep.Events {
		top = max(top, rep.Events[i].Index)
	}
	for i := range rep.Changes {
		for j := range rep.Changes[i].Events {
			top = max(top, rep.Changes[i].Events[j].Index)
		}
	}
	if top != 0 {
		c.observe(top)
	}
}

// State describes the client's connection.
type State struct {
	Connected bool
	URL       string // the node URL in use; empty while reconnecting
	Node      string // the node's name, from its hello
	User      uint64 // the authenticated user, from hello
	Device    uint64 // this connection's device, from hello
	Err       error  // why the client ended (ErrClosed, ErrUnauthorized); nil while it runs
	// Synced: connected, and the sync from the cursor that follows every
	// (re)connection has finished, so Events() has caught up with the
	// server as of that sync. An app shows "syncing" while Connected &&
	// !Synced.
	Synced bool
	// Syncs counts the syncs completed since Dial (one per connection, or
	// more when a gap forced a resync).
	Syncs uint64
}

// State returns a snapshot of the connection state.
func (c *Client) State() State {
	var st State
	if c.ctx.Err() != nil {
		st.Err = context.Cause(c.ctx)
	}
	if s := c.current(); s != nil && !s.isDone() {
		st.Connected = true
		st.URL = s.url
		st.Node, st.User, st.Device = s.hello.Node, s.hello.User, s.hello.Device
		st.Synced = s.synced.Load()
	}
	st.Syncs = c.syncs.Load()
	return st
}

// Close ends the client: it closes the connection, fails pending requests
// with ErrClosed, stops every goroutine and closes Events(). It is safe to
// call more than once.
func (c *Client) Close() error {
	c.cancel(ErrClosed) // no-op if a 401 ended the client first
	c.gate.drop()       // fails the held writes now, not when their wait ends
	if s := c.current(); s != nil {
		s.close()
	}
	c.wg.Wait()
	return nil
}
