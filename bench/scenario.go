package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Scenario is one kind of load. It has two halves that run in different
// processes:
//
//   - on the coordinator, Plan prepares the server (accounts) and splits the
//     work into shards, one per worker, each a JSON document; Report turns
//     the merged result and the server samples into figures and verdicts;
//   - in each worker, NewLoad rebuilds a Load from its shard and drives it
//     through Connect, Run and Finish (see Load).
//
// A worker finds the scenario by Name in the registry, so the worker half
// must not depend on fields set on the coordinator: everything it needs
// travels in the shard.
type Scenario interface {
	// Name is the command-line name: "direct", "idle", "storm".
	Name() string
	// Validate reports every problem with the scenario's parameters.
	Validate() error
	// Params describes the parameters for the report.
	Params() map[string]any
	// Plan runs on the coordinator before any connection is opened.
	Plan(ctx context.Context, env *Env) ([]json.RawMessage, error)
	// NewLoad runs in a worker, on a zero Scenario, with one shard of Plan.
	NewLoad(shard json.RawMessage) (Load, error)
	// Report fills rep.Figures, rep.Failures and rep.Warnings from
	// rep.Result and rep.Server.
	Report(rep *Report)
}

// Load is one worker's share of a scenario. The worker calls Connect, then
// Run, then Finish, each once and from one goroutine; Finish is also called
// after a failed Connect or Run, to close whatever was opened.
type Load interface {
	// Connect opens the connections and prepares them (conversations),
	// counting them in live.Conns. No load is applied yet: the coordinator
	// samples the server between Connect and Run.
	Connect(ctx context.Context, live *Live) error
	// Run applies the load from start until until (wall clock, the same for
	// every worker), then drains (waits for what is in flight). The
	// connections stay open: the coordinator samples the server again
	// before Finish.
	Run(ctx context.Context, start, until time.Time, live *Live) error
	// Finish closes every connection and returns the measurements.
	Finish(ctx context.Context) *Result
}

// Windowed is a Scenario that measures only part of the load: the window
// from MeasureAfter into the load to its end, after a warmup that lets the
// load reach a steady state. The coordinator then also samples the nodes at
// the window's edges (phases "window-start" and "window-end"), so that the
// server's figures cover the same window as the workers' counts.
// MeasureAfter must be shorter than Options.Duration.
type Windowed interface {
	Scenario
	MeasureAfter() time.Duration
}

// setDefault sets *v to def when it is the zero value: a scenario's zero
// parameters, and the zero Options, take their defaults so.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// problems collects every problem with a scenario's parameters, each
// "bench: SCENARIO: ...", so that Validate reports them all at once.
type problems struct {
	scenario string
	errs     []error
}

func (p *problems) add(format string, a ...any) {
	p.errs = append(p.errs, fmt.Errorf("bench: "+p.scenario+": "+format, a...))
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// measureWindow is a Windowed load's measured window in Unix nanoseconds,
// both 0 until the load sets it, when nothing counts. Safe for concurrent
// use.
type measureWindow struct {
	from, until atomic.Int64
}

// setWindow sets the window to [from, until).
func (w *measureWindow) setWindow(from, until time.Time) {
	w.from.Store(from.UnixNano())
	w.until.Store(until.UnixNano())
}

// inWindow reports whether t falls in the measured window.
func (w *measureWindow) inWindow(t time.Time) bool {
	from := w.from.Load()
	ns := t.UnixNano()
	return from != 0 && ns >= from && ns < w.until.Load()
}

// registry maps scenario names to constructors of zero scenarios, for
// workers and for the command line.
var registry = map[string]func() Scenario{
	"abuse":     func() Scenario { return new(Abuse) },
	"connect":   func() Scenario { return new(Connect) },
	"direct":    func() Scenario { return new(Direct) },
	"group":     func() Scenario { return new(Group) },
	"idle":      func() Scenario { return new(Idle) },
	"mixed":     func() Scenario { return new(Mixed) },
	"reconnect": func() Scenario { return new(Reconnect) },
	"storm":     func() Scenario { return new(Storm) },
}

// ScenarioNames lists the registered scenarios.
func ScenarioNames() []string {
	names := make([]string, 0, len(registry))
	for name := range registry {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func newScenario(name string) (Scenario, error) {
	mk, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("bench: unknown scenario %q (have %s)", name, strings.Join(ScenarioNames(), ", "))
	}
	return mk(), nil
}

// Env is what Plan may use on the coordinator.
type Env struct {
	opts     *Options
	progress Progress
	accounts *accountMaker
}

// WS returns the nodes' WebSocket URLs.
func (e *Env) WS() []string { return slices.Clone(e.opts.WS) }

// ConnsPerWorker is the most connections one worker process may hold.
func (e *Env) ConnsPerWorker() int { return e.opts.ConnsPerWorker }

// CreateAccounts registers and logs in n fresh users, showing progress.
func (e *Env) CreateAccounts(ctx context.Context, n int) ([]Account, error) {
	e.progress.Phase("accounts", int64(n))
	defer e.progress.Finish()
	// The callback runs on many goroutines: Progress is safe for that.
	return e.accounts.create(ctx, n, func() { e.progress.Add(1) })
}
