package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// serverSampler samples every node's /metrics at a fixed interval on the
// coordinator, for the server's memory over time: a scenario starts it in
// Plan and collects it in Report. Its goroutine ends on stop, when ctx
// ends, after maxServerPoints samples or when the run must be over (a run
// that failed never calls Report), whichever comes first.
type serverSampler struct {
	stopCh chan struct{}
	done   chan struct{}
	once   sync.Once

	mu     sync.Mutex // guards points
	points []serverPoint
}

// serverPoint is one sample, summed over the nodes (a tick at which a node
// did not answer is skipped).
type serverPoint struct {
	At           time.Time
	RSSBytes     float64
	Overflows    float64
	IdleTimeouts float64
	Connections  float64
}

const maxServerPoints = 10_000

// samplerInterval picks the sampling interval for a load of duration d:
// about forty samples, between 250 ms and 5 s apart.
func samplerInterval(d time.Duration) time.Duration {
	return min(max(d/40, 250*time.Millisecond), 5*time.Second)
}

// startServerSampler starts sampling the nodes of opts, for a run of
// opts.Duration (options with their defaults).
func startServerSampler(ctx context.Context, opts *Options) *serverSampler {
	s := &serverSampler{stopCh: make(chan struct{}), done: make(chan struct{})}
	httpBases, every := opts.HTTP, samplerInterval(opts.Duration)
	// Past every phase's timeout, the run is over one way or another.
	life := opts.ConnectTimeout + opts.Duration + opts.DrainTimeout + 4*opts.Settle + 2*finishTimeout + time.Minute
	ctx, cancel := context.WithTimeout(ctx, life)
	scrapers := make([]*scraper, len(httpBases))
	for i, b := range httpBases {
		scrapers[i] = newScraper(b)
	}
	go func() {
		defer close(s.done)
		defer cancel()
		t := time.NewTicker(every)
		defer t.Stop()
		for range maxServerPoints {
			p := serverPoint{At: time.Now()}
			ok := true
			for _, sc := range scrapers {
				m, err := sc.scrape(ctx)
				if err != nil {
					ok = false // restarting or overloaded: try again next tick
					break
				}
				sample := NewServerSample("", sc.base, p.At, m)
				p.RSSBytes += sample.RSSBytes
				p.Overflows += sample.Overflows
				p.IdleTimeouts += sample.IdleTimeouts
				p.Connections += sample.Connections
			}
			if ok {
				s.mu.Lock()
				s.points = append(s.points, p)
				s.mu.Unlock()
			}
			select {
			case <-t.C:
			case <-s.stopCh:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the samples. Safe to call more than
// once, and on nil (no sampler).
func (s *serverSampler) stop() []serverPoint {
	if s == nil {
		return nil
	}
	s.once.Do(func() { close(s.stopCh) })
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.points
}

// reportServerSeries adds the server's memory over the load: the peak, and
// the RSS at up to serverSeriesPoints instants from the start of the load
// to the last sample (all nodes summed).
func reportServerSeries(rep *Report, points []serverPoint) {
	start := rep.Result.Start
	if start.IsZero() || len(points) == 0 {
		return
	}
	var during []serverPoint
	for _, p := range points {
		if !p.At.Before(start) {
			during = append(during, p)
		}
	}
	if len(during) == 0 {
		return
	}
	peak := during[0]
	for _, p := range during {
		if p.RSSBytes > peak.RSSBytes {
			peak = p
		}
	}
	rep.AddFigure(fmt.Sprintf("server RSS peak (at +%.1fs)", peak.At.Sub(start).Seconds()), peak.RSSBytes/(1<<20), "MiB")
	step := max(len(during)/serverSeriesPoints, 1)
	for i := 0; i < len(during); i += step {
		p := during[i]
		if i+step >= len(during) {
			p = during[len(during)-1] // always show the last
		}
		rep.AddFigure(fmt.Sprintf("server RSS at +%.1fs", p.At.Sub(start).Seconds()), p.RSSBytes/(1<<20), "MiB")
	}
}

const serverSeriesPoints = 6

// phaseDelta returns the samples of two phases summed over the nodes.
func phaseDelta(rep *Report, from, to string) (ServerSample, ServerSample, bool) {
	a, okA := sumPhase(rep, from)
	b, okB := sumPhase(rep, to)
	return a, b, okA && okB
}

// sumPhase adds up the nodes' samples of one phase; At is the latest.
func sumPhase(rep *Report, phase string) (ServerSample, bool) {
	var sum ServerSample
	found := false
	for _, s := range rep.Server {
		if s.Phase != phase {
			continue
		}
		found = true
		sum.Phase = phase
		if s.At.After(sum.At) {
			sum.At = s.At
		}
		sum.add(s)
	}
	return sum, found
}

// reportWindowServer adds the nodes' CPU over the measured window (and per
// perWhat when there were n > 0 of them), their RSS at the window's end
// and per user, of users (storm, mixed).
func reportWindowServer(rep *Report, users int, perWhat string, n int64) {
	w0, ok0 := rep.Sample(phaseWindowStart)
	w1, ok1 := rep.Sample(phaseWindowEnd)
	if !ok0 || !ok1 {
		return
	}
	if dt := w1.At.Sub(w0.At).Seconds(); dt > 0 {
		cpu := w1.CPUSeconds - w0.CPUSeconds
		rep.AddFigure("server CPU in the window", cpu/dt*100, "% of a core")
		if n > 0 {
			rep.AddFigure("server CPU per "+perWhat, cpu/float64(n)*1e6, "µs")
		}
	}
	rep.AddFigure("server RSS at the end of the window", w1.RSSBytes/(1<<20), "MiB")
	if base, ok := rep.Sample("baseline"); ok && rep.Result.Conns > 0 {
		rep.AddFigure("server RSS per connected user", (w1.RSSBytes-base.RSSBytes)/float64(users), "bytes")
	}
}

// loadDelta returns the first node's samples before and after the load.
func loadDelta(rep *Report) (connected, loaded ServerSample, ok bool) {
	c, okC := rep.Sample("connected")
	e, okE := rep.Sample("loaded")
	return c, e, okC && okE
}

// reportOverflows warns of the connections the nodes closed during the
// load because their send queue overflowed.
func reportOverflows(rep *Report) {
	if c, e, ok := loadDelta(rep); ok {
		if n := e.Overflows - c.Overflows; n > 0 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("the server closed %.0f connections whose send queue overflowed", n))
		}
	}
}
