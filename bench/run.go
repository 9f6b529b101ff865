package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"strconv"
	"time"
)

// Options configures a run; the scenario's own parameters live in the
// Scenario. Zero fields take the defaults named in their comments.
type Options struct {
	// HTTP are the nodes' HTTP API base URLs. Accounts are created on the
	// first; every node's /metrics is sampled.
	HTTP []string
	// WS are the nodes' WebSocket URLs; connection i uses WS[i mod len]
	// first.
	WS []string

	// Duration of the load (direct: sending; idle: holding). Default 10s.
	Duration time.Duration
	// Settle is the pause before each server sample, so the node has
	// absorbed the previous phase. Default 2s.
	Settle time.Duration
	// ConnectTimeout bounds the phase in which workers open their
	// connections. Default 3 minutes.
	ConnectTimeout time.Duration
	// DrainTimeout is how long after Duration the coordinator waits for the
	// workers to drain. Default 2 minutes: a send issued at the end of the
	// load may take a request timeout (10 s) to fail, be retried for
	// directSendTimeout (30 s) with a last attempt that takes another, and
	// be followed by the scenario's drain (10 s). With 1 minute, three
	// nodes offered 8× what they commit outran it and the run reported
	// nothing.
	DrainTimeout time.Duration

	// ConnsPerWorker is the most connections one worker process holds (a
	// process may open at most 20,000 files here). Default 5000.
	ConnsPerWorker int
	// AccountParallel is the number of account requests in flight.
	// Default 64.
	AccountParallel int

	// InProcess runs workers as goroutines instead of child processes: the
	// same protocol, for tests and debugging.
	InProcess bool
	// WorkerCommand makes the command of a worker process; nil re-executes
	// this binary with WorkerArg.
	WorkerCommand func() (*exec.Cmd, error)

	// CPUProfile, when set, makes every worker write a CPU profile of its
	// Run (the load and the drain) in pprof format: worker 0 to CPUProfile,
	// worker i to CPUProfile.i. The coordinator is not profiled: its CPU
	// is not the harness CPU the report shows either.
	CPUProfile string

	// Progress shows the phases; nil shows nothing.
	Progress Progress
}

func (o Options) withDefaults() Options {
	setDefault(&o.Duration, 10*time.Second)
	setDefault(&o.Settle, 2*time.Second)
	setDefault(&o.ConnectTimeout, 3*time.Minute)
	setDefault(&o.DrainTimeout, 2*time.Minute)
	setDefault(&o.ConnsPerWorker, 5000)
	setDefault(&o.AccountParallel, 64)
	if o.Progress == nil {
		o.Progress = NoProgress{}
	}
	return o
}

// maxDuration bounds a run's load phase: the harness is for short runs.
const maxDuration = time.Hour

// Validate reports every problem with o at once.
func (o *Options) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("bench: "+format, a...)) }
	checkURLs := func(name string, urls []string, schemes ...string) {
		if len(urls) == 0 {
			bad("no %s URL", name)
		}
		for _, raw := range urls {
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" || (u.Scheme != schemes[0] && u.Scheme != schemes[1]) {
				bad("%s URL %q: want %s://host:port", name, raw, schemes[0])
			}
		}
	}
	checkURLs("HTTP", o.HTTP, "http", "https")
	checkURLs("WebSocket", o.WS, "ws", "wss")
	if o.Duration < 0 || o.Duration > maxDuration {
		bad("duration %v out of range (0, %v]", o.Duration, maxDuration)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"settle", o.Settle}, {"connect timeout", o.ConnectTimeout}, {"drain timeout", o.DrainTimeout}} {
		if d.v < 0 {
			bad("%s is negative", d.name)
		}
	}
	if o.ConnsPerWorker < 0 || o.ConnsPerWorker > 19000 {
		bad("conns per worker %d out of range [1, 19000]", o.ConnsPerWorker)
	}
	if o.AccountParallel < 0 || o.AccountParallel > 1024 {
		bad("account parallelism %d out of range [1, 1024]", o.AccountParallel)
	}
	return errors.Join(errs...)
}

// Run runs scenario sc against the nodes of opts and returns its report.
// The phases: sample the server (is it there?), plan (accounts), settle and
// sample "baseline", start one worker per shard and let them connect,
// settle and sample "connected", run the load for Duration and drain,
// sample "loaded" (a Windowed scenario also gets samples at the edges of
// its measured window), then finish the workers and merge their results. A
// scenario's verdicts (rep.Failures) do not make Run fail; errors of the
// harness or the server's API do.
func Run(ctx context.Context, sc Scenario, opts Options) (*Report, error) {
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if w, ok := sc.(Windowed); ok && w.MeasureAfter() >= opts.Duration {
		return nil, fmt.Errorf("bench: %s: the warmup (%v) must be shorter than the duration (%v)", sc.Name(), w.MeasureAfter(), opts.Duration)
	}
	c := &coordinator{opts: &opts, progress: opts.Progress}
	for _, base := range opts.HTTP {
		c.scrapers = append(c.scrapers, newScraper(base))
	}
	c.launch = processLauncher(opts.WorkerCommand)
	if opts.InProcess {
		c.launch = inProcessLauncher
	}
	defer c.stopWorkers()
	defer c.progress.Finish() // an error may leave a phase open
	return c.run(ctx, sc)
}

// coordinator runs one scenario. All its fields are owned by the goroutine
// that called Run; workers talk to it through inbox only.
type coordinator struct {
	opts     *Options
	progress Progress
	scrapers []*scraper
	launch   launcher

	workers []*workerHandle
	inbox   chan workerEvent
	quit    chan struct{} // closed when the coordinator stops listening to workers
	samples []ServerSample
}

func (c *coordinator) run(ctx context.Context, sc Scenario) (*Report, error) {
	rep := newReport(sc, c.opts)
	if _, err := c.scrapeAll(ctx, ""); err != nil {
		return nil, fmt.Errorf("bench: the node does not answer: %w", err)
	}
	env := &Env{opts: c.opts, progress: c.progress, accounts: newAccountMaker(c.opts.HTTP[0], c.opts.AccountParallel)}
	shards, err := sc.Plan(ctx, env)
	if err != nil {
		return nil, err
	}
	if len(shards) == 0 {
		return nil, errors.New("bench: the scenario planned no work")
	}
	if err := c.sampleAfterSettle(ctx, "baseline"); err != nil {
		return nil, err
	}

	// Connect.
	if err := c.startWorkers(len(shards)); err != nil {
		return nil, err
	}
	for i, h := range c.workers {
		if err := h.send(command{Op: opLoad, Scenario: sc.Name(), Shard: shards[i]}); err != nil {
			return nil, err
		}
	}
	c.progress.Phase("connect", int64(len(c.workers)))
	if _, err := c.await(ctx, evReady, c.opts.ConnectTimeout, c.showConnect); err != nil {
		return nil, err
	}
	c.progress.Finish()
	if err := c.sampleAfterSettle(ctx, "connected"); err != nil {
		return nil, err
	}

	// Load. Workers start together on the wall clock, a moment from now so
	// that the command reaches every one of them first.
	start := time.Now().Add(200 * time.Millisecond)
	until := start.Add(c.opts.Duration)
	for _, h := range c.workers {
		if err := h.send(command{Op: opRun, Start: start, Until: until, CPUProfile: workerProfile(c.opts.CPUProfile, h.id)}); err != nil {
			return nil, err
		}
	}
	var window <-chan windowSamples
	if w, ok := sc.(Windowed); ok {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		window = c.sampleWindow(wctx, start.Add(w.MeasureAfter()), until)
	}
	c.progress.Phase("run", c.opts.Duration.Milliseconds())
	if _, err := c.await(ctx, evLoaded, time.Until(until)+c.opts.DrainTimeout, c.showRun(start)); err != nil {
		return nil, err
	}
	c.progress.Finish()
	if window != nil {
		// The load has ended, so both samples are taken or being taken.
		ws := <-window
		if ws.err != nil {
			return nil, ws.err
		}
		c.samples = append(c.samples, ws.samples...)
	}
	if _, err := c.scrapeAll(ctx, "loaded"); err != nil {
		return nil, err
	}

	// Finish.
	for _, h := range c.workers {
		if err := h.send(command{Op: opFinish}); err != nil {
			return nil, err
		}
	}
	c.progress.Phase("close", int64(len(c.workers)))
	events, err := c.await(ctx, evResult, finishTimeout+5*time.Second, func(n int) { c.progress.Set(int64(n), "") })
	if err != nil {
		return nil, err
	}
	c.progress.Finish()
	res := new(Result)
	for _, ev := range events {
		if ev.Result == nil {
			return nil, errors.New("bench: a worker sent a result event without a result")
		}
		res.Merge(ev.Result)
	}
	if err := c.stopWorkers(); err != nil {
		return nil, err
	}
	rep.finish(res, c.samples)
	sc.Report(rep)
	rep.addHarnessFigures()
	return rep, nil
}

// liveTotal sums the workers' latest progress.
func (c *coordinator) liveTotal() LiveCounts {
	var sum LiveCounts
	for _, h := range c.workers {
		if lc := h.live.Load(); lc != nil {
			sum.add(*lc)
		}
	}
	return sum
}

func (c *coordinator) showConnect(ready int) {
	c.progress.Set(int64(ready), fmt.Sprintf("%d conns open", c.liveTotal().Conns))
}

func (c *coordinator) showRun(start time.Time) func(int) {
	// The rate is taken over a second or more: workers report every 250 ms,
	// so a shorter window would alias.
	var lastAcked, lastDelivered int64
	var rate, deliverRate float64
	last := time.Now()
	return func(int) {
		lc := c.liveTotal()
		now := time.Now()
		if dt := now.Sub(last); dt >= time.Second {
			rate = float64(lc.Acked-lastAcked) / dt.Seconds()
			deliverRate = float64(lc.Delivered-lastDelivered) / dt.Seconds()
			lastAcked, lastDelivered, last = lc.Acked, lc.Delivered, now
		}
		detail := fmt.Sprintf("conns %d", lc.Conns)
		switch {
		case lc.Sent > 0:
			detail = fmt.Sprintf("sent %d acked %d delivered %d (%.0f/s)", lc.Sent, lc.Acked, lc.Delivered, rate)
		case lc.Delivered > 0: // a load that receives rather than sends
			detail = fmt.Sprintf("conns %d received %d (%.0f/s)", lc.Conns, lc.Delivered, deliverRate)
		}
		if now.After(start.Add(c.opts.Duration)) {
			detail = "draining: " + detail
		}
		c.progress.Set(max(now.Sub(start).Milliseconds(), 0), detail)
	}
}

// workerProfile is the CPU profile file of worker id (see
// Options.CPUProfile); "" for none.
func workerProfile(base string, id int) string {
	if base == "" || id == 0 {
		return base
	}
	return base + "." + strconv.Itoa(id)
}

func (c *coordinator) startWorkers(n int) error {
	// A worker forwards at most four events (ready, loaded, result or error,
	// exit), so the inbox never fills while the coordinator listens.
	c.inbox = make(chan workerEvent, 8*n)
	c.quit = make(chan struct{})
	for id := range n {
		h, err := c.launch(id, c.inbox, c.quit)
		if err != nil {
			return err
		}
		c.workers = append(c.workers, h)
	}
	return nil
}

// stopWorkers closes every worker's command stream and waits for them all
// to exit; those still running after workerExitWait are killed. Safe to call
// more than once.
func (c *coordinator) stopWorkers() error {
	if c.quit != nil {
		select {
		case <-c.quit:
		default:
			close(c.quit)
		}
	}
	var errs []error
	for _, h := range c.workers {
		if err := h.close(); err != nil {
			errs = append(errs, err)
		}
	}
	c.workers = nil
	return errors.Join(errs...)
}

// awaitTick is how often await refreshes the progress display.
const awaitTick = 200 * time.Millisecond

// await waits until every worker has sent event want and returns those
// events by worker id. Any worker's error or exit, the timeout or ctx ends
// the wait with an error. tick runs every awaitTick with the number of
// workers done so far.
func (c *coordinator) await(ctx context.Context, want string, timeout time.Duration, tick func(done int)) ([]event, error) {
	got := make([]event, len(c.workers))
	seen := make([]bool, len(c.workers))
	done := 0
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	ticker := time.NewTicker(awaitTick)
	defer ticker.Stop()
	for done < len(c.workers) {
		select {
		case we := <-c.inbox:
			switch {
			case we.ev.Ev == want && !seen[we.id]:
				seen[we.id], got[we.id] = true, we.ev
				done++
			case we.ev.Ev == evExit && want == evResult && seen[we.id]:
				// A worker exits once it has sent its result.
			case we.ev.Ev == evError:
				return nil, fmt.Errorf("bench: worker %d: %s", we.id, we.ev.Error)
			case we.ev.Ev == evExit:
				msg := "exited"
				if we.ev.Error != "" {
					msg += ": " + we.ev.Error
				}
				return nil, fmt.Errorf("bench: worker %d %s while waiting for %q", we.id, msg, want)
			default:
				return nil, fmt.Errorf("bench: worker %d sent %q while waiting for %q", we.id, we.ev.Ev, want)
			}
		case <-ticker.C:
			tick(done)
		case <-deadline.C:
			return nil, fmt.Errorf("bench: %d of %d workers not %s after %v", len(c.workers)-done, len(c.workers), want, timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	tick(done)
	return got, nil
}

func (c *coordinator) sampleAfterSettle(ctx context.Context, phase string) error {
	if !sleepCtx(ctx, c.opts.Settle) {
		return ctx.Err()
	}
	_, err := c.scrapeAll(ctx, phase)
	return err
}

// scrapeAll samples every node; a non-empty phase records the samples.
func (c *coordinator) scrapeAll(ctx context.Context, phase string) ([]ServerSample, error) {
	out, err := c.scrapeNodes(ctx, phase)
	if err != nil {
		return nil, err
	}
	if phase != "" {
		c.samples = append(c.samples, out...)
	}
	return out, nil
}

// scrapeNodes samples every node without recording the samples. It reads
// only c.scrapers, which never change during a run, so any goroutine may
// call it.
func (c *coordinator) scrapeNodes(ctx context.Context, phase string) ([]ServerSample, error) {
	var out []ServerSample
	for _, s := range c.scrapers {
		m, err := s.scrape(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, NewServerSample(phase, s.base, time.Now(), m))
	}
	return out, nil
}

// Phases of the samples taken at the edges of a Windowed scenario's
// measured window.
const (
	phaseWindowStart = "window-start"
	phaseWindowEnd   = "window-end"
)

type windowSamples struct {
	samples []ServerSample
	err     error
}

// sampleWindow starts a goroutine that samples the nodes at from
// (phaseWindowStart) and at until (phaseWindowEnd) and then sends the
// samples, or the first error, on the returned channel. The channel is
// buffered: the goroutine never waits for a reader. It ends early, with
// ctx's error, when ctx ends.
func (c *coordinator) sampleWindow(ctx context.Context, from, until time.Time) <-chan windowSamples {
	out := make(chan windowSamples, 1)
	go func() {
		var ws windowSamples
		for _, edge := range []struct {
			phase string
			at    time.Time
		}{{phaseWindowStart, from}, {phaseWindowEnd, until}} {
			if !sleepCtx(ctx, time.Until(edge.at)) {
				ws.err = ctx.Err()
				break
			}
			s, err := c.scrapeNodes(ctx, edge.phase)
			if err != nil {
				ws.err = err
				break
			}
			ws.samples = append(ws.samples, s...)
		}
		out <- ws
	}()
	return out
}
