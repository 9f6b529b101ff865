package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The worker protocol. The coordinator runs one worker per shard, as a
// child process (its own binary re-executed with WorkerArg) or, for tests,
// as a goroutine. They talk in JSON lines: commands on the worker's stdin,
// events on its stdout; stderr is the worker's log.
//
//	coordinator                      worker
//	{"op":"load", scenario, spec} ─▶ NewLoad, Connect
//	                              ◀─ {"ev":"progress"} … {"ev":"ready"}
//	(samples the server)
//	{"op":"run", start, until}    ─▶ Run (load, then drain)
//	                              ◀─ {"ev":"progress"} … {"ev":"loaded"}
//	(samples the server)
//	{"op":"finish"}               ─▶ Finish (close connections)
//	                              ◀─ {"ev":"result", result}, then exit
//
// A worker that fails sends {"ev":"error"}, closes what it opened and exits.
// End of stdin at any point means the coordinator is gone or gave up: the
// worker cancels what it is doing, closes its connections and exits.

// WorkerArg is the argument with which the coordinator re-executes its own
// binary as a worker. A main that calls Run must check for it first, before
// parsing flags: if os.Args[1] == WorkerArg, os.Exit(WorkerMain()).
const WorkerArg = "-parleybench-worker"

const (
	opLoad   = "load"
	opRun    = "run"
	opFinish = "finish"

	evProgress = "progress"
	evReady    = "ready"
	evLoaded   = "loaded"
	evResult   = "result"
	evError    = "error"
	evExit     = "exit" // coordinator-side only: the worker's output ended
)

// command is one line on a worker's stdin.
type command struct {
	Op       string          `json:"op"`
	Scenario string          `json:"scenario,omitempty"`
	Shard    json.RawMessage `json:"shard,omitempty"`
	Start    time.Time       `json:"start,omitzero"`
	Until    time.Time       `json:"until,omitzero"`
	// CPUProfile is where the worker writes a CPU profile of its Run;
	// "" for none.
	CPUProfile string `json:"cpu_profile,omitempty"`
}

// event is one line on a worker's stdout.
type event struct {
	Ev     string      `json:"ev"`
	Live   *LiveCounts `json:"live,omitempty"`
	Result *Result     `json:"result,omitempty"`
	Error  string      `json:"error,omitempty"`
}

// Worker timing.
const (
	progressInterval = 250 * time.Millisecond
	finishTimeout    = 30 * time.Second // Finish closes connections even after a cancel
	workerExitWait   = 15 * time.Second // after stdin closes, before the coordinator kills
)

var errCoordinatorGone = errors.New("bench worker: the coordinator closed the command stream")

// WorkerMain serves the worker protocol on stdin and stdout and returns the
// process exit code.
func WorkerMain() int {
	// ^C reaches the whole process group; the coordinator leads the
	// shutdown by closing stdin, so the worker can close its connections.
	// A coordinator that died must not kill the worker through SIGPIPE on
	// its next progress line either: the write fails and the worker winds
	// down.
	signal.Ignore(os.Interrupt, syscall.SIGPIPE)
	if err := serveWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "parleybench worker:", err)
		return 1
	}
	return 0
}

// serveWorker runs one worker's side of the protocol. It owns out; in is
// read by a goroutine of its own, which cancels the worker at end of input.
func serveWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	cmds := make(chan command)
	go func() {
		dec := json.NewDecoder(in)
		for {
			var c command
			if err := dec.Decode(&c); err != nil {
				cancel(errCoordinatorGone)
				return
			}
			select {
			case cmds <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	next := func(op string) (command, error) {
		select {
		case c := <-cmds:
			if c.Op != op {
				return c, fmt.Errorf("bench worker: got command %q, want %q", c.Op, op)
			}
			return c, nil
		case <-ctx.Done():
			return command{}, context.Cause(ctx)
		}
	}

	var wmu sync.Mutex // serialises lines on out: the progress goroutine and this one write
	enc := json.NewEncoder(out)
	send := func(ev event) error {
		wmu.Lock()
		defer wmu.Unlock()
		return enc.Encode(ev)
	}
	fail := func(err error) error {
		if ctx.Err() != nil {
			err = context.Cause(ctx) // why the load was cancelled, not just that it was
		}
		_ = send(event{Ev: evError, Error: err.Error()}) // the coordinator may be gone
		return err
	}

	c, err := next(opLoad)
	if err != nil {
		return fail(err)
	}
	sc, err := newScenario(c.Scenario)
	if err != nil {
		return fail(err)
	}
	ld, err := sc.NewLoad(c.Shard)
	if err != nil {
		return fail(fmt.Errorf("bench worker: bad %s shard: %w", c.Scenario, err))
	}

	live := new(Live)
	stopProgress := make(chan struct{})
	var progressDone sync.WaitGroup
	progressDone.Go(func() {
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				lc := live.snapshot()
				_ = send(event{Ev: evProgress, Live: &lc})
			case <-stopProgress:
				return
			}
		}
	})
	finish := func() *Result {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
		defer cancel()
		res := ld.Finish(fctx)
		close(stopProgress)
		progressDone.Wait()
		res.Workers = 1
		return res
	}

	if err := ld.Connect(ctx, live); err != nil {
		finish()
		return fail(err)
	}
	if err := send(event{Ev: evReady}); err != nil {
		finish()
		return err
	}
	if c, err = next(opRun); err != nil {
		finish()
		return fail(err)
	}
	stopProfile, err := startCPUProfile(c.CPUProfile)
	if err != nil {
		finish()
		return fail(err)
	}
	cpu0, sys0 := processCPU()
	err = ld.Run(ctx, c.Start, c.Until, live)
	cpu1, sys1 := processCPU()
	if perr := stopProfile(); err == nil && perr != nil {
		err = fmt.Errorf("bench worker: cpu profile: %w", perr)
	}
	if err != nil {
		finish()
		return fail(err)
	}
	if err := send(event{Ev: evLoaded}); err != nil {
		finish()
		return err
	}
	if _, err := next(opFinish); err != nil {
		finish()
		return fail(err)
	}
	res := finish()
	res.HarnessCPU, res.HarnessCPUSystem = (cpu1 - cpu0).Seconds(), (sys1 - sys0).Seconds()
	lc := live.snapshot()
	_ = send(event{Ev: evProgress, Live: &lc})
	return send(event{Ev: evResult, Result: res})
}

// startCPUProfile starts a CPU profile into file ("" does nothing) and
// returns the function that stops it and closes the file. A process has
// one CPU profiler: in-process workers cannot all profile at once.
func startCPUProfile(file string) (stop func() error, err error) {
	if file == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("bench worker: cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("bench worker: cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// workerHandle is the coordinator's end of one worker.
type workerHandle struct {
	id    int
	enc   *json.Encoder // commands; used by the coordinator goroutine only
	stdin io.Closer
	live  atomic.Pointer[LiveCounts] // the latest progress, written by the reader

	readerDone chan struct{} // closed when the worker's output ended
	wait       func() error  // waits for the worker to end; call after readerDone
	kill       func()        // ends the worker by force

	closeOnce sync.Once
}

// workerEvent is an event of worker id, for the coordinator's one inbox.
type workerEvent struct {
	id int
	ev event
}

// startReader starts the goroutine that owns the worker's output: it keeps
// the latest progress and forwards every other event to inbox, then a final
// evExit. It reads to the end of the output even once quit is closed (the
// coordinator stopped listening), so the worker never blocks on a write.
func (h *workerHandle) startReader(out io.Reader, inbox chan<- workerEvent, quit <-chan struct{}) {
	h.readerDone = make(chan struct{})
	forward := func(ev event) {
		select {
		case inbox <- workerEvent{id: h.id, ev: ev}:
		case <-quit:
		}
	}
	go func() {
		defer close(h.readerDone)
		dec := json.NewDecoder(out)
		for {
			var ev event
			if err := dec.Decode(&ev); err != nil {
				msg := ""
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
					msg = err.Error()
				}
				forward(event{Ev: evExit, Error: msg})
				return
			}
			if ev.Ev == evProgress {
				if ev.Live != nil {
					h.live.Store(ev.Live)
				}
				continue
			}
			forward(ev)
		}
	}()
}

func (h *workerHandle) send(c command) error {
	if err := h.enc.Encode(c); err != nil {
		return fmt.Errorf("bench: worker %d: send %s: %w", h.id, c.Op, err)
	}
	return nil
}

// close ends the command stream, which makes the worker finish and exit,
// and waits for it; a worker still running after workerExitWait is killed.
func (h *workerHandle) close() error {
	var err error
	h.closeOnce.Do(func() {
		_ = h.stdin.Close()
		t := time.NewTimer(workerExitWait)
		defer t.Stop()
		select {
		case <-h.readerDone:
		case <-t.C:
			h.kill()
			<-h.readerDone
		}
		err = h.wait()
	})
	return err
}

// launcher starts worker number id, wiring its output to inbox until quit
// closes.
type launcher func(id int, inbox chan<- workerEvent, quit <-chan struct{}) (*workerHandle, error)

// processLauncher runs workers as child processes made by mkCmd (nil: this
// binary with WorkerArg).
func processLauncher(mkCmd func() (*exec.Cmd, error)) launcher {
	if mkCmd == nil {
		mkCmd = func() (*exec.Cmd, error) {
			exe, err := os.Executable()
			if err != nil {
				return nil, err
			}
			return exec.Command(exe, WorkerArg), nil
		}
	}
	return func(id int, inbox chan<- workerEvent, quit <-chan struct{}) (*workerHandle, error) {
		cmd, err := mkCmd()
		if err != nil {
			return nil, fmt.Errorf("bench: worker command: %w", err)
		}
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("bench: start worker %d: %w", id, err)
		}
		h := &workerHandle{id: id, enc: json.NewEncoder(stdin), stdin: stdin}
		h.startReader(stdout, inbox, quit)
		// Wait closes the pipes, so it runs only after the reader is done.
		h.wait = func() error {
			if err := cmd.Wait(); err != nil {
				return fmt.Errorf("bench: worker %d (pid %d): %w", id, cmd.Process.Pid, err)
			}
			return nil
		}
		h.kill = func() { _ = cmd.Process.Kill() }
		return h, nil
	}
}

// inProcessLauncher runs workers as goroutines over pipes: the same
// protocol, without the per-process file limit's relief. For tests.
func inProcessLauncher(id int, inbox chan<- workerEvent, quit <-chan struct{}) (*workerHandle, error) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := serveWorker(context.Background(), inR, outW)
		_ = outW.Close()
		_ = inR.Close() // unblocks serveWorker's command reader
		done <- err
	}()
	h := &workerHandle{id: id, enc: json.NewEncoder(inW), stdin: inW}
	h.startReader(outR, inbox, quit)
	var waitErr error
	var waitOnce sync.Once
	h.wait = func() error {
		waitOnce.Do(func() {
			if err := <-done; err != nil {
				waitErr = fmt.Errorf("bench: worker %d: %w", id, err)
			}
		})
		return waitErr
	}
	// A goroutine cannot be killed; closing its input has already cancelled
	// it, and an unread output must not block it.
	h.kill = func() { _ = outR.Close() }
	return h, nil
}
