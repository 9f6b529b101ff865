package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
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
)

// Connect's histograms and counters.
const (
	latConnect          = "connect"           // start of the successful attempt → hello
	latConnectScheduled = "connect-scheduled" // due time → hello, retries included
)

func init() {
	latencyTitles[latConnectScheduled] = "due → hello (retries incl.)"
}

func (c Connect) withDefaults() Connect {
	setDefault(&c.Conns, 1000)
	setDefault(&c.Attempts, 3)
	return c
}

func (*Connect) Name() string { return "connect" }

func (c *Connect) Validate() error {
	d := c.withDefaults()
	p := problems{scenario: "connect"}
	if d.Conns < 1 || d.Conns > maxConnectConns {
		p.add("conns %d out of range [1, %d]", d.Conns, maxConnectConns)
	}
	if !(d.Rate >= 0) { // also refuses NaN
		p.add("rate %v is negative", d.Rate)
	}
	if d.Attempts < 1 || d.Attempts > maxConnectAttempts {
		p.add("attempts %d out of range [1, %d]", d.Attempts, maxConnectAttempts)
	}
	return p.err()
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
	c, t0, err := dialBareRetrying(ctx, bareOptions{
		URL: l.shard.WS[(l.shard.First+i)%len(l.shard.WS)], Token: acct.Token, Timeout: bareDialTimeout, Pings: &l.pings,
		OnClose: func(*bareConn) {
			if !l.closing.Load() {
				l.dropped.Add(1)
				l.live.Conns.Add(-1)
			}
		},
	}, l.shard.Attempts, &l.counters)
	if err != nil {
		l.tally.error(fmt.Errorf("connection %d (%s): %w", l.shard.First+i, acct.Name, err))
		return
	}
	l.conns[i] = c
	l.live.Conns.Add(1)
	l.connect.record(i, c.helloAt.Sub(t0))
	l.scheduled.record(i, c.helloAt.Sub(due))
	l.mu.Lock()
	if c.helloAt.After(l.lastHello) {
		l.lastHello = c.helloAt
	}
	l.mu.Unlock()
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
