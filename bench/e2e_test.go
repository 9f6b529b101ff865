package bench

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testNode is a real node: the parley binary, built from this tree, on a
// temporary data directory and ports chosen by the kernel.
type testNode struct {
	http, ws string
}

// syncBuffer collects the node's log for failure messages.
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

// startNode builds and starts a node. extra flags follow the defaults
// below, so they override them (the last of a repeated flag wins).
func startNode(t *testing.T, extra ...string) *testNode {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "parley")
	if out, err := exec.Command("go", "build", "-o", bin, "parley/cmd/parley").CombinedOutput(); err != nil {
		t.Fatalf("building the node: %v\n%s", err, out)
	}
	args := append([]string{"-data", filepath.Join(dir, "data"),
		"-http", "127.0.0.1:0", "-ws", "127.0.0.1:0", "-raft", "127.0.0.1:0",
		"-argon2-time", "1", "-argon2-memory", "64", "-auth-throttle=false", "-log-level", "warn"}, extra...)
	cmd := exec.Command(bin, args...)
	logs := new(syncBuffer)
	cmd.Stderr = logs
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	})

	// The node prints its URLs once it is up ("  HTTP API   http://…").
	urls := make(chan *testNode, 1)
	go func() {
		defer func() { _ = cmd.Wait(); close(exited) }()
		out := urls // nil once sent; the scanner keeps draining stdout
		n := new(testNode)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "HTTP" && f[1] == "API":
				n.http = f[2]
			case len(f) == 2 && f[0] == "WebSocket":
				n.ws = f[1]
			}
			if n.http != "" && n.ws != "" && out != nil {
				out <- n
				out = nil
			}
		}
	}()
	select {
	case n := <-urls:
		return n
	case <-exited:
		t.Fatalf("the node exited:\n%s", logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("the node did not print its URLs:\n%s", logs.String())
	}
	return nil
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	node := startNode(t)
	opts := Options{
		HTTP:     []string{node.http},
		WS:       []string{node.ws},
		Settle:   100 * time.Millisecond,
		Duration: 2 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("direct", func(t *testing.T) {
		rep, err := Run(ctx, &Direct{Senders: 4, Drain: 30 * time.Second}, opts)
		if err != nil {
			t.Fatal(err)
		}
		res := rep.Result
		if rep.Failed() || res.Conns != 8 || res.Acked == 0 || res.Sent != res.Acked || res.Delivered != res.Acked {
			t.Fatalf("failures %q, result %+v", rep.Failures, res)
		}
		if n := rep.Latency["deliver"].Count; n != res.Delivered {
			t.Fatalf("%d delivery latencies for %d deliveries", n, res.Delivered)
		}
		if s := rep.Latency["ack"]; s.Count != res.Acked || s.P50 <= 0 || s.Max < s.P99 {
			t.Fatalf("ack latency %+v", s)
		}
		conn, _ := rep.Sample("connected")
		loaded, _ := rep.Sample("loaded")
		if conn.Connections != 8 || loaded.Commands-conn.Commands < float64(res.Acked) || loaded.RSSBytes == 0 {
			t.Fatalf("server samples %+v", rep.Server)
		}
	})

	t.Run("idle", func(t *testing.T) {
		o := opts
		o.Duration = time.Second
		o.ConnsPerWorker = 25 // two worker processes
		rep, err := Run(ctx, &Idle{Conns: 50}, o)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Failed() || rep.Result.Conns != 50 || rep.Result.Workers != 2 {
			t.Fatalf("failures %q, result %+v", rep.Failures, rep.Result)
		}
		conn, _ := rep.Sample("connected")
		if conn.Connections != 50 || rep.Latency["connect"].Count != 50 {
			t.Fatalf("node counts %v connections; latency %+v", conn.Connections, rep.Latency)
		}
		if _, ok := figure(rep, "server RSS per connection"); !ok {
			t.Fatalf("figures %+v", rep.Figures)
		}
	})
}
