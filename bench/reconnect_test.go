package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"parley/internal/nodeproc"
)

// restartableNode is a real node that comes back, on the same addresses and
// data, each time its process exits (at most maxNodeRestarts times): the
// test's stand-in for an operator restarting a node. Its current pid is in
// pidFile.
type restartableNode struct {
	*nodeproc.Node
	http, ws string // URLs
	pidFile  string

	mu       sync.Mutex // guards stopping
	stopping bool
	done     chan struct{} // closed when the supervisor has ended
}

const maxNodeRestarts = 3

func startRestartableNode(t *testing.T) *restartableNode {
	t.Helper()
	p := nodeproc.Start(t, nodeproc.Options{Args: []string{"-auth-throttle=false", "-http-max-conns-per-ip", "-1"}})
	n := &restartableNode{Node: p, http: p.HTTP, ws: p.WS, pidFile: filepath.Join(t.TempDir(), "node.pid"), done: make(chan struct{})}
	if err := n.writePid(); err != nil {
		t.Fatal(err)
	}
	go n.supervise()
	t.Cleanup(func() { // before nodeproc's own (cleanups run last first)
		n.mu.Lock()
		n.stopping = true
		n.mu.Unlock()
		n.Stop()
		<-n.done
	})
	return n
}

func (n *restartableNode) writePid() error {
	return os.WriteFile(n.pidFile, []byte(strconv.Itoa(n.Pid())), 0o644)
}

// supervise restarts the node each time it exits, unless the test is
// stopping it.
func (n *restartableNode) supervise() {
	defer close(n.done)
	for range maxNodeRestarts {
		<-n.Exited()
		n.mu.Lock()
		stopping := n.stopping
		n.mu.Unlock()
		if stopping || n.Restart() != nil || n.writePid() != nil {
			return // a failed restart fails the test on the clients' side, with the log
		}
	}
	<-n.Exited()
}

// terminate sends SIGTERM to the node's current process.
func (n *restartableNode) terminate() {
	_ = syscall.Kill(n.Pid(), syscall.SIGTERM)
}

func (n *restartableNode) pid() int { return n.Pid() }

// progressHook calls onRun when the run phase starts: after the
// coordinator's "connected" sample.
type progressHook struct {
	NoProgress
	once  sync.Once
	onRun func()
}

func (p *progressHook) Phase(name string, _ int64) {
	if name == "run" {
		p.once.Do(p.onRun)
	}
}

func TestEndToEndReconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	node := startRestartableNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	opts := Options{
		HTTP: []string{node.http}, WS: []string{node.ws},
		Settle: 100 * time.Millisecond, Duration: time.Minute, // the deadline; the run ends once all synced
		ConnsPerWorker: 10,
	}
	const conns, backlog = 20, 3
	check := func(t *testing.T, rep *Report) {
		t.Helper()
		res := rep.Result
		if rep.Failed() || res.Workers != 2 || res.Conns != conns {
			t.Fatalf("failures %q, result %+v", rep.Failures, res)
		}
		for _, name := range []string{latResync, latRehello, latSync} {
			if s := rep.Latency[name]; s.Count != conns || s.Max < s.P50 {
				t.Fatalf("%s latency %+v", name, s)
			}
		}
		// Each client resyncs its 1:1: the creation and the backlog.
		if got := res.Counters[cntSyncEvents]; got != conns*(backlog+1) {
			t.Fatalf("%d events synced, want %d; counters %v", got, conns*(backlog+1), res.Counters)
		}
		if v, ok := figure(rep, "clients resynced"); !ok || v != conns {
			t.Fatalf("figures %+v", rep.Figures)
		}
		// Every client's drop comes after the restart (or the first drop):
		// the total covers the slowest client (within the histogram's 0.1%).
		if slowest := rep.Result.Latency[latResync].Quantile(100); res.Elapsed() <= 0 || res.Elapsed()*101/100 < slowest {
			t.Fatalf("all synced %v after the restart, but a client took %v", res.Elapsed(), slowest)
		}
	}

	t.Run("restart-cmd", func(t *testing.T) {
		sc := &Reconnect{Conns: conns, Backlog: backlog, RestartCmd: "kill -TERM $(cat " + node.pidFile + ")"}
		before := node.pid()
		rep, err := Run(ctx, sc, opts)
		if err != nil {
			t.Fatal(err)
		}
		if node.pid() == before {
			t.Fatal("the node was not restarted")
		}
		check(t, rep)
	})

	t.Run("external", func(t *testing.T) {
		// Someone else restarts the node once the load has started.
		o := opts
		o.Progress = &progressHook{onRun: node.terminate}
		rep, err := Run(ctx, &Reconnect{Conns: conns, Backlog: backlog}, o)
		if err != nil {
			t.Fatal(err)
		}
		check(t, rep)
	})
}
