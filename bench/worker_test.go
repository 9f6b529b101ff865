package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain lets the test binary serve as a worker process, as parleybench
// does: the coordinator re-executes the running binary with WorkerArg.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == WorkerArg {
		os.Exit(WorkerMain())
	}
	os.Exit(m.Run())
}

func init() {
	registry["fake"] = func() Scenario { return new(fakeScenario) }
}

// fakeScenario exercises the coordinator and the worker protocol without a
// server: shard i "opens" i+1 connections, "sends" 10*(i+1) messages and
// records latencies of i+1 ms, and fails where told to.
type fakeScenario struct {
	Shards int
	FailIn string // "", "connect" or "run": shard 1 fails there
}

type fakeShard struct {
	ID     int    `json:"id"`
	FailIn string `json:"fail_in,omitempty"`
}

func (*fakeScenario) Name() string             { return "fake" }
func (*fakeScenario) Validate() error          { return nil }
func (f *fakeScenario) Params() map[string]any { return map[string]any{"shards": f.Shards} }

func (f *fakeScenario) Plan(_ context.Context, _ *Env) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for i := range f.Shards {
		sh := fakeShard{ID: i}
		if i == 1 {
			sh.FailIn = f.FailIn
		}
		b, _ := json.Marshal(sh)
		out = append(out, b)
	}
	return out, nil
}

func (*fakeScenario) NewLoad(raw json.RawMessage) (Load, error) {
	l := &fakeLoad{}
	return l, json.Unmarshal(raw, &l.shard)
}

func (*fakeScenario) Report(rep *Report) {
	rep.AddFigure("acked", float64(rep.Result.Acked), "msg")
}

// fakeFinishes counts Finish calls of in-process fake loads.
var fakeFinishes atomic.Int64

type fakeLoad struct {
	shard fakeShard
	start time.Time
	end   time.Time
}

func (l *fakeLoad) Connect(ctx context.Context, live *Live) error {
	live.Conns.Add(int64(l.shard.ID + 1))
	if l.shard.FailIn == "connect" {
		return errors.New("fake connect failure")
	}
	return nil
}

func (l *fakeLoad) Run(ctx context.Context, start, until time.Time, live *Live) error {
	if l.shard.FailIn == "run" {
		return errors.New("fake run failure")
	}
	if !sleepCtx(ctx, time.Until(until)) {
		return ctx.Err()
	}
	n := int64(10 * (l.shard.ID + 1))
	live.Sent.Add(n)
	live.Acked.Add(n)
	l.start, l.end = start, time.Now()
	return nil
}

func (l *fakeLoad) Finish(context.Context) *Result {
	fakeFinishes.Add(1)
	n := int64(10 * (l.shard.ID + 1))
	h := NewHistogram()
	for range n {
		h.Record(time.Duration(l.shard.ID+1) * time.Millisecond)
	}
	return &Result{
		Conns: int64(l.shard.ID + 1), Sent: n, Acked: n, Delivered: n,
		Retries: map[string]int64{"busy": 1},
		Start:   l.start, End: l.end,
		Latency: map[string]*Histogram{"deliver": h},
	}
}

// fakeMetrics serves a /metrics page whose CPU counter grows per scrape.
func fakeMetrics(t *testing.T) *httptest.Server {
	var scrapes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		n := scrapes.Add(1)
		fmt.Fprintf(w, "process_resident_memory_bytes %d\nprocess_cpu_seconds_total %d\n", 1000*n, n)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func fakeOptions(t *testing.T, inProcess bool) Options {
	return Options{
		HTTP:      []string{fakeMetrics(t).URL},
		WS:        []string{"ws://127.0.0.1:1/v1/ws"}, // never dialled by the fake
		Duration:  100 * time.Millisecond,
		Settle:    time.Millisecond,
		InProcess: inProcess,
	}
}

func TestRunMergesWorkers(t *testing.T) {
	for _, inProcess := range []bool{true, false} {
		t.Run(fmt.Sprintf("inProcess=%v", inProcess), func(t *testing.T) {
			rep, err := Run(context.Background(), &fakeScenario{Shards: 3}, fakeOptions(t, inProcess))
			if err != nil {
				t.Fatal(err)
			}
			res := rep.Result
			// Shards 0, 1, 2: 1+2+3 connections, 10+20+30 messages.
			if res.Workers != 3 || res.Conns != 6 || res.Acked != 60 || res.Delivered != 60 || res.Retries["busy"] != 3 {
				t.Fatalf("merged result %+v", res)
			}
			// HDR keeps three significant digits: 3 ms reads back as 3.001 ms.
			if s := rep.Latency["deliver"]; s.Count != 60 || s.P50 != 2000 || s.Max < 3000 || s.Max > 3003 {
				t.Fatalf("merged latency %+v", s)
			}
			if len(rep.Server) != 3 || rep.Server[0].Phase != "baseline" || rep.Server[2].Phase != "loaded" ||
				rep.Server[2].CPUSeconds <= rep.Server[0].CPUSeconds {
				t.Fatalf("server samples %+v", rep.Server)
			}
			if v, ok := figure(rep, "acked"); !ok || v != 60 {
				t.Fatalf("scenario report not applied: %+v", rep.Figures)
			}
			if _, ok := figure(rep, "harness CPU during the load"); !ok || res.HarnessCPU <= 0 {
				t.Fatalf("harness CPU not measured: %v, %+v", res.HarnessCPU, rep.Figures)
			}
			if res.HarnessCPUSystem < 0 || res.HarnessCPUSystem > res.HarnessCPU {
				t.Fatalf("harness CPU in the kernel %v of %v", res.HarnessCPUSystem, res.HarnessCPU)
			}
			var text strings.Builder
			if err := rep.WriteText(&text); err != nil || !strings.Contains(text.String(), "send → deliver") {
				t.Fatalf("text report (%v):\n%s", err, text.String())
			}
			if _, err := json.Marshal(rep); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunReportsWorkerFailure(t *testing.T) {
	for _, phase := range []string{"connect", "run"} {
		for _, inProcess := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/inProcess=%v", phase, inProcess), func(t *testing.T) {
				_, err := Run(context.Background(), &fakeScenario{Shards: 2, FailIn: phase}, fakeOptions(t, inProcess))
				if err == nil || !strings.Contains(err.Error(), "worker 1") || !strings.Contains(err.Error(), "fake "+phase+" failure") {
					t.Fatalf("got %v", err)
				}
			})
		}
	}
}

func TestRunFailsWithoutServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close() // nothing listens there any more
	opts := fakeOptions(t, true)
	opts.HTTP = []string{srv.URL}
	if _, err := Run(context.Background(), &fakeScenario{Shards: 1}, opts); err == nil {
		t.Fatal("ran without a server")
	}
}

// workerPipes runs serveWorker over pipes and returns the coordinator's ends.
func workerPipes(t *testing.T) (cmds *json.Encoder, stdin io.Closer, events *json.Decoder, done <-chan error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	ch := make(chan error, 1)
	go func() {
		err := serveWorker(context.Background(), inR, outW)
		outW.Close()
		inR.Close()
		ch <- err
	}()
	t.Cleanup(func() { inW.Close(); outR.Close() })
	return json.NewEncoder(inW), inW, json.NewDecoder(outR), ch
}

// nextEvent returns the next event other than progress.
func nextEvent(t *testing.T, dec *json.Decoder) event {
	t.Helper()
	for range 1000 {
		var ev event
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("reading events: %v", err)
		}
		if ev.Ev != evProgress {
			return ev
		}
	}
	t.Fatal("only progress events")
	return event{}
}

func TestWorkerProtocol(t *testing.T) {
	cmds, _, events, done := workerPipes(t)
	shard, _ := json.Marshal(fakeShard{ID: 4})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cmds.Encode(command{Op: opLoad, Scenario: "fake", Shard: shard}))
	if ev := nextEvent(t, events); ev.Ev != evReady {
		t.Fatalf("after load: %+v", ev)
	}
	now := time.Now()
	must(cmds.Encode(command{Op: opRun, Start: now, Until: now.Add(10 * time.Millisecond)}))
	if ev := nextEvent(t, events); ev.Ev != evLoaded {
		t.Fatalf("after run: %+v", ev)
	}
	must(cmds.Encode(command{Op: opFinish}))
	ev := nextEvent(t, events)
	if ev.Ev != evResult || ev.Result == nil || ev.Result.Workers != 1 || ev.Result.Acked != 50 ||
		ev.Result.Latency["deliver"].Count() != 50 {
		t.Fatalf("result: %+v", ev)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWorkerRefusesOutOfOrderCommand(t *testing.T) {
	cmds, _, events, done := workerPipes(t)
	if err := cmds.Encode(command{Op: opRun}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events); ev.Ev != evError || !strings.Contains(ev.Error, `want "load"`) {
		t.Fatalf("got %+v", ev)
	}
	if err := <-done; err == nil {
		t.Fatal("worker accepted run before load")
	}
}

func TestWorkerUnknownScenario(t *testing.T) {
	cmds, _, events, done := workerPipes(t)
	if err := cmds.Encode(command{Op: opLoad, Scenario: "nope"}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events); ev.Ev != evError || !strings.Contains(ev.Error, "unknown scenario") {
		t.Fatalf("got %+v", ev)
	}
	<-done
}

// End of input means the coordinator is gone: the worker must close its
// load (Finish) and return.
func TestWorkerStopsAtEndOfInput(t *testing.T) {
	cmds, stdin, events, done := workerPipes(t)
	shard, _ := json.Marshal(fakeShard{ID: 0})
	before := fakeFinishes.Load()
	if err := cmds.Encode(command{Op: opLoad, Scenario: "fake", Shard: shard}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, events); ev.Ev != evReady {
		t.Fatalf("after load: %+v", ev)
	}
	stdin.Close()
	go func() { // the worker may still write its error line
		for {
			var ev event
			if events.Decode(&ev) != nil {
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errCoordinatorGone) {
			t.Fatalf("worker returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker still running after its input ended")
	}
	if fakeFinishes.Load() != before+1 {
		t.Fatal("the load was not finished")
	}
}

// Each worker process writes a CPU profile of its load: worker 0 to the
// file named, worker i to FILE.i.
func TestRunWritesWorkerProfiles(t *testing.T) {
	opts := fakeOptions(t, false)
	opts.CPUProfile = filepath.Join(t.TempDir(), "cpu.pprof")
	if _, err := Run(context.Background(), &fakeScenario{Shards: 2}, opts); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{opts.CPUProfile, opts.CPUProfile + ".1"} {
		if st, err := os.Stat(name); err != nil || st.Size() == 0 {
			t.Errorf("profile %s: %v", name, err)
		}
	}
	if _, err := os.Stat(opts.CPUProfile + ".2"); err == nil {
		t.Error("a profile for a third worker")
	}
}
