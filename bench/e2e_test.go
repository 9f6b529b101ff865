package bench

import (
	"context"
	"testing"
	"time"

	"parley/internal/nodeproc"
)

// testNode is a real node: the parley binary, built from this tree, on a
// temporary data directory and ports chosen by the kernel.
type testNode struct {
	http, ws string
}

// startNode starts a node (internal/nodeproc) without the auth throttle
// and the HTTP per-address cap: the harness registers many accounts from
// one address, 64 at a time. extra flags come last, so they override these
// (the last of a repeated flag wins).
func startNode(t *testing.T, extra ...string) *testNode {
	t.Helper()
	p := nodeproc.Start(t, nodeproc.Options{Args: append([]string{"-auth-throttle=false", "-http-max-conns-per-ip", "-1"}, extra...)})
	return &testNode{http: p.HTTP, ws: p.WS}
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
