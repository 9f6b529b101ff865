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
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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
	if err := BuildTo(bin); err != nil {
		t.Fatalf("nodeproc: %v", err)
	}
	return bin
}

// BuildTo builds cmd/parley to the path bin, with extra go build flags
// (e.g. "-tags", "faultinject"). It needs no test, so a TestMain can build
// one binary for all of a package's tests.
func BuildTo(bin string, buildFlags ...string) error {
	args := append(append([]string{"build"}, buildFlags...), "-o", bin, "parley/cmd/parley")
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("building the node: %v\n%s", err, out)
	}
	return nil
}

// Options configure Start. The zero value is a fresh single node.
type Options struct {
	Bin  string   // the binary; empty: Build
	Dir  string   // the data directory; empty: a new temporary one
	Args []string // flags after DefaultArgs and the addresses
	Name string   // names the node in failure messages, e.g. "n1"
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
	// RaftBind is where the Raft listener is bound: RaftAddr, unless
	// Args has -advertise, when RaftAddr is the advertised address and
	// RaftBind is read from the process's sockets (Linux /proc).
	RaftBind string

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
			t.Logf("node %s log:\n%s", n.opts.Name, n.logs.String())
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
	if err := n.start(n.HTTPAddr, n.WSAddr, n.RaftBind); err != nil {
		return fmt.Errorf("nodeproc: restart: %w", err)
	}
	return nil
}

// RestartWith is Restart on another binary: an upgrade (or a downgrade)
// of the node, on its data and addresses.
func (n *Node) RestartWith(bin string) error {
	n.opts.Bin = bin
	return n.Restart()
}

// ExitCode is the exit status of the node's last life, -1 while it runs
// (or if a signal ended it).
func (n *Node) ExitCode() int {
	n.mu.Lock()
	cmd, exited := n.cmd, n.exited
	n.mu.Unlock()
	select {
	case <-exited:
		return cmd.ProcessState.ExitCode()
	default:
		return -1
	}
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
		n.RaftBind = n.RaftAddr
		if advertises(n.opts.Args) {
			// Every listener is bound before the node prints: the one
			// that is neither HTTP nor WebSocket is Raft's.
			bind, err := otherListener(cmd.Process.Pid, n.HTTPAddr, n.WSAddr)
			if err != nil {
				_ = cmd.Process.Kill()
				<-exited
				return fmt.Errorf("the Raft listener: %w", err)
			}
			n.RaftBind = bind
		}
		return nil
	case <-exited:
		return errExited
	case <-time.After(Guard):
		_ = cmd.Process.Kill()
		<-exited
		return errors.New("the node did not print its addresses")
	}
}

// advertises reports whether args set -advertise.
func advertises(args []string) bool {
	for _, a := range args {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "advertise" {
			return true
		}
	}
	return false
}

// otherListener is the one IPv4 TCP listener of process pid that is
// neither of the given addresses. Options.Command must exec the binary (as
// a wrapper that ends in exec does), so that pid is the node's.
func otherListener(pid int, not ...string) (string, error) {
	inodes := make(map[string]bool)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return "", err
	}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	table, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return "", err
	}
	var found []string
	for _, line := range strings.Split(string(table), "\n")[1:] {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
			continue
		}
		addr, err := decodeAddr(f[1])
		if err != nil {
			return "", err
		}
		if !slices.Contains(not, addr) {
			found = append(found, addr)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("process %d listens on %v besides %v, want one address", pid, found, not)
	}
	return found[0], nil
}

// decodeAddr turns /proc/net/tcp's "0100007F:9C41" into "127.0.0.1:40001":
// the IPv4 address in host (little-endian) order, the port big-endian.
func decodeAddr(s string) (string, error) {
	ip, port, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(ip, 16, 32)
	p, err2 := strconv.ParseUint(port, 16, 16)
	if !ok || len(ip) != 8 || err1 != nil || err2 != nil {
		return "", fmt.Errorf("bad address %q in /proc/net/tcp", s)
	}
	v := netip.AddrFrom4([4]byte{byte(a), byte(a >> 8), byte(a >> 16), byte(a >> 24)})
	return netip.AddrPortFrom(v, uint16(p)).String(), nil
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

// Dir is the node's data directory. A test may remove it between Kill9
// and Restart: the node then comes back empty on the same addresses.
func (n *Node) Dir() string { return n.opts.Dir }

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
