package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// restartableNode is a real node that comes back, on the same addresses and
// data, each time its process exits (at most maxNodeRestarts times): the
// test's stand-in for an operator restarting a node. Its current pid is in
// pidFile.
type restartableNode struct {
	http, ws string // URLs
	pidFile  string

	bin, dir string
	addrs    []string // -http, -ws, -raft of every start after the first
	logs     *syncBuffer

	mu       sync.Mutex // guards cmd and stopping
	cmd      *exec.Cmd
	stopping bool
	done     chan struct{} // closed when the supervisor has ended
}

const maxNodeRestarts = 3

func startRestartableNode(t *testing.T) *restartableNode {
	t.Helper()
	n := &restartableNode{dir: t.TempDir(), logs: new(syncBuffer), done: make(chan struct{})}
	n.bin = filepath.Join(n.dir, "parley")
	n.pidFile = filepath.Join(n.dir, "node.pid")
	if out, err := exec.Command("go", "build", "-o", n.bin, "parley/cmd/parley").CombinedOutput(); err != nil {
		t.Fatalf("building the node: %v\n%s", err, out)
	}
	exited, err := n.start([]string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("%v\n%s", err, n.logs.String())
	}
	go n.supervise(exited)
	t.Cleanup(func() {
		n.mu.Lock()
		n.stopping = true
		cmd := n.cmd
		n.mu.Unlock()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(30 * time.Second):
			n.mu.Lock()
			_ = n.cmd.Process.Kill()
			n.mu.Unlock()
			<-n.done
		}
		if t.Failed() {
			t.Logf("node log:\n%s", n.logs.String())
		}
	})
	return n
}

// start runs the node on addrs (-http, -ws, -raft) and waits for it to
// print its addresses; the returned channel closes when it exits.
func (n *restartableNode) start(addrs []string) (<-chan struct{}, error) {
	cmd := exec.Command(n.bin, "-data", filepath.Join(n.dir, "data"),
		"-http", addrs[0], "-ws", addrs[1], "-raft", addrs[2],
		"-argon2-time", "1", "-argon2-memory", "64", "-auth-throttle=false", "-log-level", "warn")
	cmd.Stderr = n.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.cmd = cmd
	n.mu.Unlock()
	exited := make(chan struct{})
	up := make(chan [3]string, 1)
	go func() {
		defer func() { _ = cmd.Wait(); close(exited) }()
		var got [3]string // HTTP, WebSocket, Raft
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "HTTP" && f[1] == "API":
				got[0] = f[2]
			case len(f) == 2 && f[0] == "WebSocket":
				got[1] = f[1]
			case len(f) == 2 && f[0] == "Raft":
				got[2] = f[1]
				up <- got // printed last of the three
			}
		}
	}()
	select {
	case got := <-up:
		n.http, n.ws = got[0], got[1]
		host := func(u string) string {
			u = u[strings.Index(u, "://")+3:]
			h, _, _ := strings.Cut(u, "/")
			return h
		}
		n.addrs = []string{host(got[0]), host(got[1]), got[2]}
		if err := os.WriteFile(n.pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			return nil, err
		}
		return exited, nil
	case <-exited:
		return nil, errNodeExited
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		return nil, errNodeExited
	}
}

var errNodeExited = os.ErrProcessDone

// supervise restarts the node each time it exits, unless the test is
// stopping it.
func (n *restartableNode) supervise(exited <-chan struct{}) {
	defer close(n.done)
	for range maxNodeRestarts {
		<-exited
		n.mu.Lock()
		stopping := n.stopping
		n.mu.Unlock()
		if stopping {
			return
		}
		var err error
		if exited, err = n.start(n.addrs); err != nil {
			return // the test fails on the clients' side, with the log
		}
	}
	<-exited
}

// terminate sends SIGTERM to the node's current process.
func (n *restartableNode) terminate() {
	n.mu.Lock()
	defer n.mu.Unlock()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
}

func (n *restartableNode) pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

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
