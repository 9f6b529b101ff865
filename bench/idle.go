package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Idle is the connection-cost scenario: Conns authenticated connections
// that say nothing for Duration. It reports the node's resident memory per
// connection (RSS after the hold minus RSS before any connection, over
// Conns) and the CPU the node spends on idle connections.
//
// Its connections are bare connections rather than the SDK (see bareConn):
// a gws connection and its read loop, which authenticates with the bearer
// token, waits for hello and answers pings, so that the harness's own cost
// per connection stays small and many fit in one worker process.
type Idle struct {
	Conns int // connections to hold; default 1000
}

const (
	maxIdleConns     = 1_000_000
	idleDialers      = 32 // connections opened at once per worker
	idleDialAttempts = 3
)

func (i Idle) withDefaults() Idle {
	setDefault(&i.Conns, 1000)
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
	return &idleLoad{shard: sh, conns: make([]*bareConn, len(sh.Accounts)), connect: newRecorder()}, nil
}

// idleLoad is a worker's share of Idle.
//
// Goroutines: Connect dials from a bounded group; every connection then has
// its gws read loop (see bareConn), which answers pings and counts what it
// should not get. conns[i] is written by the goroutine that dialed it,
// before Connect returns; start and end by Run; Finish reads them all
// after both.
type idleLoad struct {
	shard   idleShard
	live    *Live
	conns   []*bareConn
	connect *recorder
	tally   tally

	closing    atomic.Bool // set by Finish: closes from now on are ours
	dropped    atomic.Int64
	pings      atomic.Int64
	unexpected atomic.Int64 // frames after hello: an idle connection gets none

	start, end time.Time
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
	acct := l.shard.Accounts[i]
	opts := bareOptions{
		URL:     l.shard.WS[(l.shard.First+i)%len(l.shard.WS)],
		Token:   acct.Token,
		Timeout: bareDialTimeout,
		Pings:   &l.pings,
		OnEvent: func(*bareFrame, time.Time) { l.unexpected.Add(1) },
		OnClose: func(c *bareConn) {
			if !l.closing.Load() {
				l.dropped.Add(1)
				l.live.Conns.Add(-1)
				l.tally.error(fmt.Errorf("dropped while idle: %w", c.closeErr))
			}
		},
	}
	c, t0, err := dialBareRetrying(ctx, opts, idleDialAttempts, nil)
	if err != nil {
		l.tally.error(err)
		return fmt.Errorf("bench: connection %d (%s): %w", l.shard.First+i, acct.Name, err)
	}
	l.connect.record(i, c.helloAt.Sub(t0))
	l.live.Conns.Add(1)
	l.conns[i] = c
	return nil
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
	for _, c := range l.conns {
		if c != nil {
			res.Conns++
		}
	}
	closeBare(ctx, l.conns, &l.tally)

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
