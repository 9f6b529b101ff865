package bench

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"parley/client"
	"parley/wire"
)

// Result is what one worker measured; the coordinator merges the workers'
// results into one. Every field merges by addition except Start and End
// (the earliest and latest) and Errors (concatenated, bounded). A scenario
// fills the fields that apply to it and leaves the rest zero.
type Result struct {
	Workers int `json:"workers"`

	Conns        int64 `json:"conns"`         // connections established
	ConnFailures int64 `json:"conn_failures"` // connections that could not be established
	Dropped      int64 `json:"dropped"`       // connections lost before the harness closed them
	Pings        int64 `json:"pings"`         // server pings answered

	Sent        int64 `json:"sent"`        // messages handed to the server (first attempt)
	Acked       int64 `json:"acked"`       // messages acknowledged (committed)
	Duplicates  int64 `json:"duplicates"`  // acks with dup=true: a retry of a stored message
	Delivered   int64 `json:"delivered"`   // messages received by their receiver
	Undelivered int64 `json:"undelivered"` // acked but not delivered when the drain ended
	Missed      int64 `json:"missed"`      // fixed rate: scheduled sends not issued before the end
	BadBodies   int64 `json:"bad_bodies"`  // deliveries without a readable send stamp

	// Retries counts retried attempts by error code; Failed counts messages
	// given up (never acked) by their last error code.
	Retries map[string]int64 `json:"retries,omitempty"`
	Failed  map[string]int64 `json:"failed,omitempty"`

	// HarnessCPU is the CPU time the worker processes used during Run: on
	// a machine shared with the node, the harness's share of the cores.
	// In-process workers each count the whole process.
	HarnessCPU float64 `json:"harness_cpu_seconds"`
	// HarnessCPUSystem is the part of HarnessCPU spent in the kernel.
	HarnessCPUSystem float64 `json:"harness_cpu_system_seconds,omitempty"`

	// Start and End bound the load: from the scheduled start to the last
	// ack (direct), or the hold (idle).
	Start time.Time `json:"start,omitzero"`
	End   time.Time `json:"end,omitzero"`

	// Latency holds the histograms by name (see the scenario for names).
	Latency map[string]*Histogram `json:"latency,omitempty"`

	// Counters are a scenario's own counts by name (see the scenario for
	// names); they merge by addition like the fields above.
	Counters map[string]int64 `json:"counters,omitempty"`

	// Errors are the first few distinct failure messages, for the report.
	Errors []string `json:"errors,omitempty"`
}

// maxErrors bounds Result.Errors.
const maxErrors = 20

// Merge adds o into r.
func (r *Result) Merge(o *Result) {
	r.Workers += o.Workers
	r.Conns += o.Conns
	r.ConnFailures += o.ConnFailures
	r.Dropped += o.Dropped
	r.Pings += o.Pings
	r.Sent += o.Sent
	r.Acked += o.Acked
	r.Duplicates += o.Duplicates
	r.Delivered += o.Delivered
	r.Undelivered += o.Undelivered
	r.Missed += o.Missed
	r.BadBodies += o.BadBodies
	r.HarnessCPU += o.HarnessCPU
	r.HarnessCPUSystem += o.HarnessCPUSystem
	r.Retries = mergeCounts(r.Retries, o.Retries)
	r.Failed = mergeCounts(r.Failed, o.Failed)
	r.Counters = mergeCounts(r.Counters, o.Counters)
	if !o.Start.IsZero() && (r.Start.IsZero() || o.Start.Before(r.Start)) {
		r.Start = o.Start
	}
	if o.End.After(r.End) {
		r.End = o.End
	}
	for name, h := range o.Latency {
		if r.Latency == nil {
			r.Latency = make(map[string]*Histogram)
		}
		if r.Latency[name] == nil {
			r.Latency[name] = NewHistogram()
		}
		r.Latency[name].Merge(h)
	}
	for _, e := range o.Errors {
		r.addError(e)
	}
}

func (r *Result) addError(msg string) {
	if len(r.Errors) < maxErrors && !slices.Contains(r.Errors, msg) {
		r.Errors = append(r.Errors, msg)
	}
}

func mergeCounts(dst, src map[string]int64) map[string]int64 {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = make(map[string]int64, len(src))
	}
	for k, v := range src {
		dst[k] += v
	}
	return dst
}

// Elapsed is the length of the load.
func (r *Result) Elapsed() time.Duration {
	if r.Start.IsZero() || r.End.Before(r.Start) {
		return 0
	}
	return r.End.Sub(r.Start)
}

// Live are the counters a worker reports while it runs, for the progress
// display. Loads update them with atomic adds from any goroutine.
type Live struct {
	Conns, Sent, Acked, Delivered atomic.Int64
}

// LiveCounts is a snapshot of Live, as sent to the coordinator.
type LiveCounts struct {
	Conns     int64 `json:"conns"`
	Sent      int64 `json:"sent"`
	Acked     int64 `json:"acked"`
	Delivered int64 `json:"delivered"`
}

func (l *Live) snapshot() LiveCounts {
	return LiveCounts{Conns: l.Conns.Load(), Sent: l.Sent.Load(), Acked: l.Acked.Load(), Delivered: l.Delivered.Load()}
}

func (c *LiveCounts) add(o LiveCounts) {
	c.Conns += o.Conns
	c.Sent += o.Sent
	c.Acked += o.Acked
	c.Delivered += o.Delivered
}

// tally is the part of a Result that many goroutines of one load update
// (per-code counts and error messages). It is separate from Result so that
// Result stays a plain value.
type tally struct {
	mu      sync.Mutex // guards the fields below
	retries map[string]int64
	failed  map[string]int64
	errors  []string
}

func (t *tally) retry(code string) {
	t.mu.Lock()
	if t.retries == nil {
		t.retries = make(map[string]int64)
	}
	t.retries[code]++
	t.mu.Unlock()
}

func (t *tally) fail(code string, err error) {
	t.mu.Lock()
	if t.failed == nil {
		t.failed = make(map[string]int64)
	}
	t.failed[code]++
	t.mu.Unlock()
	t.error(err)
}

func (t *tally) error(err error) {
	msg := err.Error()
	t.mu.Lock()
	if len(t.errors) < maxErrors && !slices.Contains(t.errors, msg) {
		t.errors = append(t.errors, msg)
	}
	t.mu.Unlock()
}

// fill copies the tally into r.
func (t *tally) fill(r *Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.Retries = maps.Clone(t.retries)
	r.Failed = maps.Clone(t.failed)
	for _, e := range t.errors {
		r.addError(e)
	}
}

// errorCode names err for the per-code counts: the protocol's code when
// there is one, else a short class.
func errorCode(err error) string {
	var we *wire.Error
	switch {
	case errors.As(err, &we):
		return string(we.Code)
	case errors.Is(err, client.ErrClosed):
		return "closed"
	case errors.Is(err, client.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	default:
		return "other"
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

// counterSet is a set of named counters that many goroutines add to: a
// counter is made on its first add and then counts without a lock (a
// group's members count every delivery).
type counterSet struct {
	m sync.Map // name → *atomic.Int64
}

func (s *counterSet) add(name string, n int64) {
	c, ok := s.m.Load(name)
	if !ok {
		c, _ = s.m.LoadOrStore(name, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(n)
}

// snapshot returns a copy of the counters, or nil when there are none.
func (s *counterSet) snapshot() map[string]int64 {
	var out map[string]int64
	s.m.Range(func(k, v any) bool {
		if out == nil {
			out = make(map[string]int64)
		}
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// sumCounts adds up the counts of m.
func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func atomicMax(v *atomic.Uint64, x uint64) {
	for {
		cur := v.Load()
		if x <= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}
