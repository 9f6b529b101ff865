// Package nodeproc runs real parley node processes for tests: the binary
// built from this tree, a temporary data directory, ports chosen by the
// kernel and read back from what the node prints, and restarts on the same
// data and the same ports (kill -9 included).
//
// A test that needs a node it can kill uses this package rather than
// node.Open; tests of the node's own internals use node.Open.
package nodeproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Guard bounds waits that only stop a hang (a node that never prints its
// addresses or never exits); it is not a verdict on speed.
const Guard = 2 * time.Minute

// DefaultArgs come before Options.Args (a repeated flag: the last wins):
// cheap password hashing and quiet logs.
var DefaultArgs = []string{"-argon2-time", "1", "-argon2-memory", "64", "-log-level", "warn"}

// Build builds cmd/parley into a temporary directory of t and returns the
// binary's path. The go build cache makes a second build cheap.
func Build(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "parley")
	if out, err := exec.Command("go", "build", "-o", bin, "parley/cmd/parley").CombinedOutput(); err != nil {
		t.Fatalf("nodeproc: building the node: %v\n%s", err, out)
	}
	return bin
}

// Options configure Start. The zero value is a fresh single node.
type Options struct {
	Bin  string   // the binary; empty: Build
	Dir  string   // the data directory; empty: a new temporary one
	Args []string // flags after DefaultArgs and the addresses
	// Command makes the command that runs bin with args, e.g. under a
	// lowered descriptor limit; nil runs bin itself.
	Command func(bin string, args ...string) *exec.Cmd
	// NotReady returns from Start once the node has printed its
	// addresses, without waiting for /readyz (a member that waits for
	// cluster init is never ready on its own).
	NotReady bool
}

// Node is a running (or stopped) node process.
type Node struct {
	t    testing.TB
	opts Options

	// As the node printed them: URLs for clients, host:port for binding.
	HTTP, WS                   string // "http://127.0.0.1:p", "ws://127.0.0.1:p/v1/ws"
	HTTPAddr, WSAddr, RaftAddr string

	logs *syncBuffer // stderr of every life of the process

	mu     sync.Mutex // guards cmd and exited, replaced by each start
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts a node and waits until it has printed its addresses. The
// node is stopped (SIGTERM, then SIGKILL after Guard) when the test ends,
// and its log is printed if the test failed.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	if o.Bin == "" {
		o.Bin = Build(t)
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(t.TempDir(), "data")
	}
	if o.Command == nil {
		o.Command = exec.Command
	}
	n := &Node{t: t, opts: o, logs: new(syncBuffer)}
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("node log:\n%s", n.logs.String())
		}
	})
	if err := n.start("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatalf("nodeproc: %v\n%s", err, n.logs.String())
	}
	if !o.NotReady {
		if err := n.WaitReady(); err != nil {
			t.Fatalf("nodeproc: %v\n%s", err, n.logs.String())
		}
	}
	return n
}

// WaitReady polls /readyz until it answers 200 (a leader, the signing key,
// a live listener), the process ends, or Guard passes.
func (n *Node) WaitReady() error {
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(Guard)
	for {
		resp, err := c.Get(n.HTTP + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !n.Running() {
			return errors.New("the node exited before it was ready")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the node was not ready within %v: %v", Guard, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart starts the node again on its data directory and the addresses of
// its previous life, once that life has ended (Kill9, Stop, or the process
// ended by itself). It may run on any goroutine: it reports, it does not
// fail the test.
func (n *Node) Restart() error {
	if n.Running() {
		return errors.New("nodeproc: restart of a running node")
	}
	if err := n.start(n.HTTPAddr, n.WSAddr, n.RaftAddr); err != nil {
		return fmt.Errorf("nodeproc: restart: %w", err)
	}
	return nil
}

var errExited = errors.New("the node exited before printing its addresses")

func (n *Node) start(http, ws, raft string) error {
	args := append([]string{"-data", n.opts.Dir, "-http", http, "-ws", ws, "-raft", raft}, DefaultArgs...)
	cmd := n.opts.Command(n.opts.Bin, append(args, n.opts.Args...)...)
	cmd.Stderr = n.logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	n.mu.Lock()
	n.cmd, n.exited = cmd, exited
	n.mu.Unlock()

	// The node prints "  HTTP API   http://…", "  WebSocket  ws://…" and
	// "  Raft       host:port", in that order.
	printed := make(chan [3]string, 1)
	go func() {
		defer func() { _ = cmd.Wait(); close(exited) }()
		var got [3]string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() { // drains stdout for the node's whole life
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "HTTP" && f[1] == "API":
				got[0] = f[2]
			case len(f) == 2 && f[0] == "WebSocket":
				got[1] = f[1]
			case len(f) == 2 && f[0] == "Raft" && got[0] != "" && got[1] != "":
				got[2] = f[1]
				printed <- got
			}
		}
	}()
	select {
	case got := <-printed:
		n.HTTP, n.WS, n.RaftAddr = got[0], got[1], got[2]
		n.HTTPAddr, n.WSAddr = hostPort(got[0]), hostPort(got[1])
		return nil
	case <-exited:
		return errExited
	case <-time.After(Guard):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("the node did not print its addresses")
	}
}

// hostPort is the host:port of a URL.
func hostPort(u string) string {
	_, rest, _ := strings.Cut(u, "://")
	h, _, _ := strings.Cut(rest, "/")
	return h
}

// Running reports whether the current life of the process has not ended.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Exited is closed when the current life of the process ends.
func (n *Node) Exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exited
}

// Pid is the current process's id.
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd.Process.Pid
}

// Kill9 kills the process with SIGKILL and waits for it to end.
func (n *Node) Kill9() {
	n.signal(syscall.SIGKILL)
}

// Stop ends the process with SIGTERM (SIGKILL after Guard) and waits.
func (n *Node) Stop() {
	n.signal(syscall.SIGTERM)
}

func (n *Node) signal(sig syscall.Signal) {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(Guard):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Logs is what the process wrote to stderr, over all its lives.
func (n *Node) Logs() string { return n.logs.String() }

// syncBuffer collects the log for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
