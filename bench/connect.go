package bench

import (
	"context"
	"encoding/json"
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

// Connect is the connection-storm scenario: Conns authenticated
// connections opened from the start of the load, spread over the nodes
// (connection i goes to node i mod len) and the workers, at Rate per second
// over all workers (connection i is due at start + i/Rate) or, with Rate 0,
// all at once. It measures each connection's latency from its due time to
// the server's hello (retries included, so a server that falls behind is
// charged for the wait: no coordinated omission) and from the start of its
// successful attempt's TCP dial to hello; the failed attempts by kind; the
// time until every connection had its hello; and, holding them all until
// the end of Duration, the nodes' memory and CPU per connection.
//
// The connections are opened in Run rather than in Connect, so that every
// worker starts on the same instant: the workers' processes start at
// different times. They are bare connections (see bareConn), so that the
// harness's own cost per connection stays small.
type Connect struct {
	Conns    int     // connections; default 1000
	Rate     float64 // new connections per second over all workers; 0 is all at once
	Attempts int     // attempts per connection before it counts as failed; default 3
}

const (
	maxConnectConns    = 1_000_000
	maxConnectAttempts = 10
	connectDialTimeout = 10 * time.Second // one attempt: TCP, handshake and hello
	connectRetryMin    = 100 * time.Millisecond
	bareWriteTimeout   = 5 * time.Second
	bareReadBuffer     = 1024 // gws's buffer: hello, pings and small events
)

// Connect's histograms and counters.
const (
	latConnect          = "connect"           // start of the successful attempt → hello
	latConnectScheduled = "connect-scheduled" // due time → hello, retries included
	cntDialErrorPrefix  = "dial error: "      // + connErrorKind: failed attempts by kind
)

func init() {
	latencyTitles[latConnectScheduled] = "due → hello (retries incl.)"
}

func (c Connect) withDefaults() Connect {
	if c.Conns == 0 {
		c.Conns = 1000
	}
	if c.Attempts == 0 {
		c.Attempts = 3
	}
	return c
}

func (*Connect) Name() string { return "connect" }

func (c *Connect) Validate() error {
	d := c.withDefaults()
	var errs []error
	if d.Conns < 1 || d.Conns > maxConnectConns {
		errs = append(errs, fmt.Errorf("bench: connect: conns %d out of range [1, %d]", d.Conns, maxConnectConns))
	}
	if !(d.Rate >= 0) { // also refuses NaN
		errs = append(errs, fmt.Errorf("bench: connect: rate %v is negative", d.Rate))
	}
	if d.Attempts < 1 || d.Attempts > maxConnectAttempts {
		errs = append(errs, fmt.Errorf("bench: connect: attempts %d out of range [1, %d]", d.Attempts, maxConnectAttempts))
	}
	return errors.Join(errs...)
}

func (c *Connect) Params() map[string]any {
	d := c.withDefaults()
	rate := "all at once"
	if d.Rate > 0 {
		rate = fmt.Sprintf("%g/s", d.Rate)
	}
	return map[string]any{"conns": d.Conns, "rate": rate, "attempts": d.Attempts}
}

// RampDuration is how long the schedule takes to make every connection due.
func (c *Connect) RampDuration() time.Duration {
	d := c.withDefaults()
	if d.Rate <= 0 {
		return 0
	}
	return time.Duration(float64(d.Conns) / d.Rate * float64(time.Second))
}

type connectShard struct {
	WS       []string  `json:"ws"`
	Rate     float64   `json:"rate"`
	Attempts int       `json:"attempts"`
	First    int       `json:"first"` // global index of Accounts[0]
	Accounts []Account `json:"accounts"`
}

func (c *Connect) Plan(ctx context.Context, env *Env) ([]json.RawMessage, error) {
	d := c.withDefaults()
	accounts, err := env.CreateAccounts(ctx, d.Conns)
	if err != nil {
		return nil, err
	}
	return planShards(splitSizes(d.Conns, env.ConnsPerWorker()), func(_, first, n int) any {
		return connectShard{WS: env.WS(), Rate: d.Rate, Attempts: d.Attempts, First: first, Accounts: accounts[first : first+n]}
	})
}

func (*Connect) NewLoad(raw json.RawMessage) (Load, error) {
	var sh connectShard
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	if err := (&Connect{Conns: len(sh.Accounts), Rate: sh.Rate, Attempts: sh.Attempts}).Validate(); err != nil {
		return nil, err
	}
	if len(sh.WS) == 0 {
		return nil, errors.New("no WebSocket URL")
	}
	return &connectLoad{
		shard:     sh,
		conns:     make([]*bareConn, len(sh.Accounts)),
		connect:   newRecorder(),
		scheduled: newRecorder(),
	}, nil
}

// connectLoad is a worker's share of Connect.
//
// Goroutines: Run's goroutine follows the schedule and starts one goroutine
// per connection, which dials (with retries) and writes conns[i]; each open
// connection then has its gws read loop. Run waits for every dialer before
// it holds; Finish reads conns after Run. lastHello is written by the
// dialers under mu.
type connectLoad struct {
	shard     connectShard
	live      *Live
	conns     []*bareConn
	connect   *recorder
	scheduled *recorder
	tally     tally
	counters  counterSet

	closing atomic.Bool // set by Finish: closes from now on are ours
	dropped atomic.Int64
	pings   atomic.Int64

	mu        sync.Mutex // guards lastHello
	lastHello time.Time

	start, end time.Time // written by Run
}

func (l *connectLoad) Connect(_ context.Context, live *Live) error {
	l.live = live
	return nil // the connections are the load: Run opens them
}

func (l *connectLoad) Run(ctx context.Context, start, until time.Time, _ *Live) error {
	if !sleepCtx(ctx, time.Until(start)) {
		return ctx.Err()
	}
	l.start = start
	var dialers sync.WaitGroup
	for i := range l.shard.Accounts {
		due := start
		if l.shard.Rate > 0 {
			due = start.Add(time.Duration(float64(l.shard.First+i) / l.shard.Rate * float64(time.Second)))
			if !sleepCtx(ctx, time.Until(due)) {
				break
			}
		}
		dialers.Go(func() { l.open(ctx, i, due) })
	}
	dialers.Wait()
	l.mu.Lock()
	l.end = l.lastHello
	l.mu.Unlock()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// Hold the connections to the end of the load: the coordinator samples
	// the nodes with all of them open.
	if !sleepCtx(ctx, time.Until(until)) {
		return ctx.Err()
	}
	return nil
}

// open makes connection i, due at due, retrying a failed attempt with
// backoff up to Attempts times.
func (l *connectLoad) open(ctx context.Context, i int, due time.Time) {
	acct := l.shard.Accounts[i]
	url := l.shard.WS[(l.shard.First+i)%len(l.shard.WS)]
	delay := connectRetryMin
	var err error
	for attempt := 1; attempt <= l.shard.Attempts; attempt++ {
		t0 := time.Now()
		var c *bareConn
		c, err = dialBare(ctx, bareOptions{
			URL: url, Token: acct.Token, Timeout: connectDialTimeout, Pings: &l.pings,
			OnClose: func(*bareConn) {
				if !l.closing.Load() {
					l.dropped.Add(1)
					l.live.Conns.Add(-1)
				}
			},
		})
		if err == nil {
			l.conns[i] = c
			l.live.Conns.Add(1)
			l.connect.record(i, c.helloAt.Sub(t0))
			l.scheduled.record(i, c.helloAt.Sub(due))
			l.mu.Lock()
			if c.helloAt.After(l.lastHello) {
				l.lastHello = c.helloAt
			}
			l.mu.Unlock()
			return
		}
		l.counters.add(cntDialErrorPrefix+connErrorKind(err), 1)
		if ctx.Err() != nil || errors.Is(err, errTokenRefused) || attempt == l.shard.Attempts {
			break
		}
		// Equal jitter, so that refused connections do not come back together.
		if !sleepCtx(ctx, delay/2+rand.N(delay/2+1)) {
			break
		}
		delay *= 2
	}
	l.tally.error(fmt.Errorf("connection %d (%s): %w", l.shard.First+i, acct.Name, err))
}

func (l *connectLoad) Finish(ctx context.Context) *Result {
	l.closing.Store(true)
	res := &Result{Start: l.start, End: l.end}
	closeBare(ctx, l.conns, &l.tally)
	for _, c := range l.conns {
		if c != nil {
			res.Conns++
		}
	}
	res.ConnFailures = int64(len(l.conns)) - res.Conns
	res.Dropped, res.Pings = l.dropped.Load(), l.pings.Load()
	res.Latency = map[string]*Histogram{latConnect: l.connect.merged(), latConnectScheduled: l.scheduled.merged()}
	res.Counters = l.counters.snapshot()
	l.tally.fill(res)
	return res
}

func (c *Connect) Report(rep *Report) {
	d := c.withDefaults()
	res := rep.Result
	n := float64(res.Conns)
	if secs := res.Elapsed().Seconds(); secs > 0 && res.Conns > 0 {
		rep.AddFigure("time until all connected", secs, "s")
		rep.AddFigure("connections opened per second", n/secs, "/s")
	}
	if base, end, ok := phaseDelta(rep, "baseline", "loaded"); ok && n > 0 {
		perConn := (end.RSSBytes - base.RSSBytes) / n
		rep.AddFigure("server RSS per connection", perConn, "bytes")
		rep.AddFigure("server heap in use per connection", (end.HeapInuseBytes-base.HeapInuseBytes)/n, "bytes")
		rep.AddFigure("server goroutines per connection", (end.Goroutines-base.Goroutines)/n, "")
		if delta := end.RSSBytes - base.RSSBytes; delta < base.RSSBytes/10 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf(
				"the RSS delta (%s) is small against the baseline (%s): open more connections for a per-connection figure",
				formatBytes(delta), formatBytes(base.RSSBytes)))
		}
	}
	if conn, end, ok := phaseDelta(rep, "connected", "loaded"); ok && n > 0 {
		// "connected" is sampled before the storm (Connect opens nothing):
		// the CPU between the samples is the storm and the hold.
		rep.AddFigure("server CPU per connection (accept, upgrade, auth, hold)", (end.CPUSeconds-conn.CPUSeconds)/n*1e6, "µs")
		if end.Connections != n {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf(
				"the nodes counted %.0f connections at the end of the hold, the harness %d", end.Connections, res.Conns))
		}
	}
	if res.ConnFailures > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d of %d connections failed after %d attempts each (%s)",
			res.ConnFailures, d.Conns, d.Attempts, formatCounts(prefixed(res.Counters, cntDialErrorPrefix))))
	} else if n := sumCounts(prefixed(res.Counters, cntDialErrorPrefix)); n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d attempts failed and were retried (%s)",
			n, formatCounts(prefixed(res.Counters, cntDialErrorPrefix))))
	}
	if res.Dropped > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d connections were dropped while held", res.Dropped))
	}
	if !res.End.IsZero() && res.End.After(res.Start.Add(time.Duration(rep.Duration*float64(time.Second)))) {
		rep.Warnings = append(rep.Warnings, "connecting outlasted -duration: the connections were not held after the last one opened")
	}
}

// prefixed returns the counters whose names start with prefix, without it.
func prefixed(m map[string]int64, prefix string) map[string]int64 {
	out := make(map[string]int64)
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out[rest] = v
		}
	}
	return out
}

// counterSet is a set of named counters that many goroutines add to.
type counterSet struct {
	mu sync.Mutex // guards m
	m  map[string]int64
}

func (s *counterSet) add(name string, n int64) {
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[string]int64)
	}
	s.m[name] += n
	s.mu.Unlock()
}

// snapshot returns a copy of the counters, or nil when there are none.
func (s *counterSet) snapshot() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) == 0 {
		return nil
	}
	out := make(map[string]int64, len(s.m))
	for k, v := range s.m {
		out[k] = v
	}
	return out
}

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

var errNoHello = errors.New("no hello within the dial timeout")

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

	nextID  atomic.Uint64
	wmu     sync.Mutex // serialises writes, each under its own deadline
	mu      sync.Mutex // guards pending and ended
	pending map[uint64]chan []byte
	ended   bool
}

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
	// OnClose runs on the read loop when a connection that had its hello
	// ends, after gone is closed.
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
	select {
	case <-c.gone:
		return nil, fmt.Errorf("closed before hello: %w", c.closeErr)
	default:
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
	select {
	case <-c.helloCh:
		if c.opts.OnClose != nil {
			c.opts.OnClose(c)
		}
	default:
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
