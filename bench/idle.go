package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"golang.org/x/sync/errgroup"

	"parley/wire"
)

// Idle is the connection-cost scenario: Conns authenticated connections
// that say nothing for Duration. It reports the node's resident memory per
// connection (RSS after the hold minus RSS before any connection, over
// Conns) and the CPU the node spends on idle connections.
//
// Its connections are minimal clients rather than the SDK: a gws
// connection and its read loop, which authenticates with the bearer token,
// waits for hello and answers pings, so that the harness's own cost per
// connection stays small and many fit in one worker process.
type Idle struct {
	Conns int // connections to hold; default 1000
}

const (
	maxIdleConns     = 1_000_000
	idleDialers      = 32 // connections opened at once per worker
	idleDialAttempts = 3
	idleDialTimeout  = 10 * time.Second // TCP, handshake and hello
	idleWriteTimeout = 5 * time.Second  // a pong or the close frame
	idleReadBuffer   = 1024             // hello and pings are small
)

func (i Idle) withDefaults() Idle {
	if i.Conns == 0 {
		i.Conns = 1000
	}
	return i
}

func (*Idle) Name() string { return "idle" }

func (i *Idle) Validate() error {
	if c := i.withDefaults(); c.Conns < 1 || c.Conns > maxIdleConns {
		return fmt.Errorf("bench: idle: conns %d out of range [1, %d]", c.Conns, maxIdleConns)
	}
	return nil
}

func (i *Idle) Params() map[string]any {
	return map[string]any{"conns": i.withDefaults().Conns}
}

type idleShard struct {
	WS       []string  `json:"ws"`
	First    int       `json:"first"` // global index of Accounts[0]
	Accounts []Account `json:"accounts"`
}

func (i *Idle) Plan(ctx context.Context, env *Env) ([]json.RawMessage, error) {
	c := i.withDefaults()
	accounts, err := env.CreateAccounts(ctx, c.Conns)
	if err != nil {
		return nil, err
	}
	return planShards(splitSizes(c.Conns, env.ConnsPerWorker()), func(_, first, n int) any {
		return idleShard{WS: env.WS(), First: first, Accounts: accounts[first : first+n]}
	})
}

func (*Idle) NewLoad(raw json.RawMessage) (Load, error) {
	var sh idleShard
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	if len(sh.WS) == 0 || len(sh.Accounts) == 0 {
		return nil, errors.New("no WebSocket URL or no accounts")
	}
	return &idleLoad{shard: sh, conns: make([]*idleConn, len(sh.Accounts)), connect: newRecorder()}, nil
}

// idleLoad is a worker's share of Idle.
//
// Goroutines: Connect dials from a bounded group; every connection then has
// its gws read loop, which runs the idleConn event methods. conns[i] is
// written by the goroutine that dialed it, before Connect returns; start
// and end by Run; Finish reads them all after both.
type idleLoad struct {
	shard   idleShard
	live    *Live
	conns   []*idleConn
	connect *recorder
	tally   tally

	closing    atomic.Bool // set by Finish: closes from now on are ours
	dropped    atomic.Int64
	pings      atomic.Int64
	unexpected atomic.Int64   // frames other than hello: an idle connection gets none
	readers    sync.WaitGroup // gws read loops

	start, end time.Time
}

// A connection's life, in idleConn.state.
const (
	connDialing int32 = iota
	connOpen
	connEnded
)

// idleConn is one connection; its gws.Event methods run on its read loop.
type idleConn struct {
	l     *idleLoad
	conn  *gws.Conn
	hello chan struct{} // closed by the read loop when hello arrives
	gone  chan struct{} // closed by the read loop when the connection ends
	state atomic.Int32  // connDialing → connOpen (dialer) → connEnded (read loop)

	// Owned by the read loop.
	gotHello bool
	closeErr error // why it ended; written before gone closes
}

func (l *idleLoad) Connect(ctx context.Context, live *Live) error {
	l.live = live
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(idleDialers)
	for i := range l.shard.Accounts {
		g.Go(func() error { return l.dial(gctx, i) })
	}
	return g.Wait()
}

// dial opens connection i, retrying a failed attempt a few times: holding
// every connection is the point, so the last failure fails the run.
func (l *idleLoad) dial(ctx context.Context, i int) error {
	var err error
	delay := 100 * time.Millisecond
	for attempt := 1; attempt <= idleDialAttempts; attempt++ {
		var c *idleConn
		if c, err = l.dialOnce(ctx, i); err == nil {
			l.conns[i] = c
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, errTokenRefused) {
			break
		}
		if !sleepCtx(ctx, delay) {
			break
		}
		delay *= 2
	}
	l.tally.error(err)
	return fmt.Errorf("bench: connection %d (%s): %w", l.shard.First+i, l.shard.Accounts[i].Name, err)
}

var errTokenRefused = errors.New("token refused (HTTP 401)")

func (l *idleLoad) dialOnce(ctx context.Context, i int) (*idleConn, error) {
	acct := l.shard.Accounts[i]
	t0 := time.Now()
	c := &idleConn{l: l, hello: make(chan struct{}), gone: make(chan struct{})}
	header := http.Header{}
	header.Set("Authorization", "Bearer "+acct.Token)
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr:             l.shard.WS[(l.shard.First+i)%len(l.shard.WS)],
		RequestHeader:    header,
		HandshakeTimeout: idleDialTimeout,
		ReadBufferSize:   idleReadBuffer,
		NewDialer: func() (gws.Dialer, error) {
			return &net.Dialer{Timeout: idleDialTimeout}, nil
		},
	})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return nil, errTokenRefused
		}
		return nil, err
	}
	c.conn = conn
	l.readers.Go(conn.ReadLoop)

	timer := time.NewTimer(idleDialTimeout)
	defer timer.Stop()
	select {
	case <-c.hello:
	case <-c.gone:
		return nil, fmt.Errorf("closed before hello: %w", c.closeErr)
	case <-timer.C:
		c.close()
		return nil, errors.New("no hello within the dial timeout")
	case <-ctx.Done():
		c.close()
		return nil, ctx.Err()
	}
	if !c.state.CompareAndSwap(connDialing, connOpen) {
		return nil, fmt.Errorf("closed right after hello: %w", c.closeErr) // gone is closed: closeErr is set
	}
	l.connect.record(i, time.Since(t0))
	l.live.Conns.Add(1)
	return c, nil
}

// close sends a normal close frame, bounded by a write deadline, and
// closes the socket; the read loop then ends.
func (c *idleConn) close() {
	_ = c.conn.SetWriteDeadline(time.Now().Add(idleWriteTimeout))
	_ = c.conn.WriteClose(1000, nil)
}

func (c *idleConn) OnOpen(*gws.Conn) {}

func (c *idleConn) OnPing(conn *gws.Conn, payload []byte) {
	_ = conn.SetWriteDeadline(time.Now().Add(idleWriteTimeout))
	if conn.WritePong(payload) == nil {
		c.l.pings.Add(1)
	}
}

func (c *idleConn) OnPong(*gws.Conn, []byte) {}

func (c *idleConn) OnMessage(_ *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	if !c.gotHello {
		if typ, err := wire.PeekType(msg.Bytes()); err == nil && typ == wire.TypeHello {
			c.gotHello = true
			close(c.hello)
			return
		}
	}
	c.l.unexpected.Add(1)
}

func (c *idleConn) OnClose(_ *gws.Conn, err error) {
	if err == nil {
		err = errors.New("connection closed")
	}
	c.closeErr = err
	close(c.gone)
	if c.state.Swap(connEnded) == connOpen && !c.l.closing.Load() {
		c.l.dropped.Add(1)
		c.l.live.Conns.Add(-1)
		c.l.tally.error(fmt.Errorf("dropped while idle: %w", err))
	}
}

// Run holds the connections until until; they answer pings on their own.
func (l *idleLoad) Run(ctx context.Context, start, until time.Time, _ *Live) error {
	if !sleepCtx(ctx, time.Until(start)) {
		return ctx.Err()
	}
	l.start = start
	if !sleepCtx(ctx, time.Until(until)) {
		return ctx.Err()
	}
	l.end = time.Now()
	return nil
}

func (l *idleLoad) Finish(ctx context.Context) *Result {
	l.closing.Store(true)
	res := &Result{}
	var closers errgroup.Group
	closers.SetLimit(64)
	for _, c := range l.conns {
		if c != nil {
			res.Conns++
			closers.Go(func() error { c.close(); return nil })
		}
	}
	_ = closers.Wait()
	done := make(chan struct{})
	go func() { l.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// Every socket is closed, so the read loops are ending; the
		// process exits soon either way.
		l.tally.error(errors.New("read loops still running after close"))
	}

	res.Dropped, res.Pings = l.dropped.Load(), l.pings.Load()
	res.ConnFailures = int64(len(l.conns)) - res.Conns
	res.Start, res.End = l.start, l.end
	res.Latency = map[string]*Histogram{"connect": l.connect.merged()}
	if n := l.unexpected.Load(); n > 0 {
		res.addError(fmt.Sprintf("%d unexpected frames on idle connections", n))
	}
	l.tally.fill(res)
	return res
}

func (i *Idle) Report(rep *Report) {
	c := i.withDefaults()
	res := rep.Result
	n := float64(res.Conns)
	base, okBase := rep.Sample("baseline")
	conn, okConn := rep.Sample("connected")
	end, okEnd := rep.Sample("loaded")
	if okBase && okEnd && n > 0 {
		perConn := (end.RSSBytes - base.RSSBytes) / n
		rep.AddFigure("server RSS per connection", perConn, "bytes")
		rep.AddFigure("server heap in use per connection", (end.HeapInuseBytes-base.HeapInuseBytes)/n, "bytes")
		rep.AddFigure("server goroutines per connection", (end.Goroutines-base.Goroutines)/n, "")
		rep.AddFigure("server RSS for 1M idle connections (extrapolated)", perConn*1e6/(1<<30), "GiB")
		// The baseline holds the slack of the Go heap (garbage, unscavenged
		// spans): a delta small against it is mostly that slack moving.
		if delta := end.RSSBytes - base.RSSBytes; delta < base.RSSBytes/10 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf(
				"the RSS delta (%s) is small against the baseline (%s): hold more connections for a per-connection figure",
				formatBytes(delta), formatBytes(base.RSSBytes)))
		}
	}
	if okConn && okEnd {
		if dt := end.At.Sub(conn.At).Seconds(); dt > 0 {
			rep.AddFigure("server CPU while idle", (end.CPUSeconds-conn.CPUSeconds)/dt*100, "% of a core")
		}
		if end.Connections > 0 && end.Connections < n {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf(
				"the node counted %.0f connections at the end, the harness %d", end.Connections, res.Conns))
		}
	}
	if res.Conns < int64(c.Conns) {
		rep.Failures = append(rep.Failures, fmt.Sprintf("only %d of %d connections were opened", res.Conns, c.Conns))
	}
	if res.Dropped > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d connections were dropped while idle", res.Dropped))
	}
}
