package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestGroupSplit(t *testing.T) {
	for _, tc := range []struct{ members, senders, per int }{
		{10, 1, 6}, {1000, 1, 5000}, {10_000, 1, 5000}, {2, 9, 10}, {5, 5, 6}, {100, 3, 7},
	} {
		sizes := groupSplit(tc.members, tc.senders, tc.per)
		sum := 0
		for i, n := range sizes {
			conns := n
			if i == 0 {
				conns += tc.senders
			}
			if n < 0 || conns > tc.per {
				t.Fatalf("%+v: shard %d of %v holds %d connections", tc, i, sizes, conns)
			}
			sum += n
		}
		if sum != tc.members {
			t.Fatalf("%+v: %v holds %d members", tc, sizes, sum)
		}
	}
}

// The fan-out of a message is complete when the workers' receipts add up
// to every reading member, and its latency is the slowest worker's.
func TestFanoutAcrossWorkers(t *testing.T) {
	const first = 10
	sent := time.Unix(1_700_000_000, 0)
	at := func(ms int) time.Time { return sent.Add(time.Duration(ms) * time.Millisecond) }
	var w0, w1 fanout
	// Message seq 10: two receipts in worker 0 (latest +5 ms), one in
	// worker 1 (+9 ms): complete for 3 receivers.
	w0.record(0, sent, at(3))
	w0.record(0, sent, at(5))
	w1.record(0, sent, at(9))
	// Message seq 11: one receipt in worker 0 only: incomplete.
	w0.record(1, sent, at(1))
	// Message seq 5000 (another chunk): complete at +2 s.
	w0.record(4990, sent, at(2000))
	w1.record(4990, sent, at(1000))
	w1.record(4990, sent, at(1500))
	if w0.record(maxFanoutChunks*fanoutChunk, sent, at(1)) {
		t.Fatal("recorded past the limit")
	}

	var c0, c1 counterSet
	c0.add("other", 7)
	w0.export(&c0, 0, first)
	w1.export(&c1, 1, first)
	merged := new(Result)
	merged.Merge(&Result{Counters: c0.snapshot()})
	merged.Merge(&Result{Counters: c1.snapshot()})

	h, messages, incomplete := collectFanout(merged.Counters, 3)
	if messages != 3 || incomplete != 1 || h.Count() != 2 {
		t.Fatalf("%d messages, %d incomplete, %d timed", messages, incomplete, h.Count())
	}
	if got := h.Quantile(0); got < 8990*time.Microsecond || got > 9010*time.Microsecond {
		t.Fatalf("fastest complete fan-out %v, want 9ms", got)
	}
	if got := h.Summary().Max; got < 1_998_000 || got > 2_002_000 {
		t.Fatalf("slowest fan-out %dµs, want 2s", got)
	}
	if len(merged.Counters) != 1 || merged.Counters["other"] != 7 {
		t.Fatalf("counters left: %v", merged.Counters)
	}
}

func TestStampBody(t *testing.T) {
	stamp := time.Unix(1_700_000_000, 42)
	body := stampBody(stamp, strings.Repeat("x", 100))
	got, ok := parseStamp(body)
	if len(body) != 100 || !ok || !got.Equal(stamp) {
		t.Fatalf("body %q: %v %v", body, got, ok)
	}
}

func TestGroupValidate(t *testing.T) {
	if err := (&Group{}).Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, g := range []Group{
		{Members: -1}, {Senders: maxGroupSenders + 1}, {Members: maxGroupMembers}, {Rate: -1},
		{BodyBytes: 10}, {Slow: 1.5}, {Members: 4, Slow: 1}, {Warmup: -time.Second},
	} {
		if err := g.Validate(); err == nil {
			t.Errorf("%+v: no error", g)
		}
	}
}

// A group over two workers, with slow members in each: every message
// reaches every reading member, the fan-out is timed across workers, and
// the server drops the slow ones.
func TestEndToEndGroup(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	node := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Members 4 and 9 (one in each worker) are slow. Two senders at 60
	// messages/s of 16 KB for 3 s send each member about 2.9 MB, on a
	// schedule that does not depend on how fast the machine is (a window
	// of 200 covers any ack delay short of 3 s). A slow member reads
	// nothing once the load starts, so the server must hold all of it:
	// more than its 1 MiB queue plus the 256 KiB socket send buffer and
	// the member's 8 KiB receive buffer, so it is dropped. A reading
	// member's 4 MiB receive buffer holds all of it, so the kernel takes
	// every byte whether or not the member's process gets the CPU: it
	// is never dropped, however loaded the machine.
	sc := &Group{Members: 12, Senders: 2, Rate: 60, Window: 200, BodyBytes: 16000, Slow: 0.2,
		Drain: 30 * time.Second, ReceiveBuffer: 4 << 20}
	rep, err := Run(ctx, sc, Options{
		HTTP: []string{node.http}, WS: []string{node.ws},
		Settle: 100 * time.Millisecond, Duration: 3 * time.Second,
		ConnsPerWorker: 7, // the senders and members 0-4, then members 5-11
	})
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Result
	if rep.Failed() || res.Workers != 2 || res.Conns != 14 || res.Acked == 0 {
		t.Fatalf("failures %q, result %+v", rep.Failures, res)
	}
	const readers = 10
	if res.Delivered != readers*res.Acked || res.Undelivered != 0 {
		t.Fatalf("%d delivered, want %d × %d acked", res.Delivered, readers, res.Acked)
	}
	if n := rep.Latency["deliver"].Count; n != res.Delivered {
		t.Fatalf("%d delivery latencies for %d deliveries", n, res.Delivered)
	}
	if f := rep.Latency[latFanout]; f.Count != res.Acked || f.Max < f.P50 || f.P50 <= 0 {
		t.Fatalf("fan-out latency %+v for %d messages", f, res.Acked)
	}
	if d, ok := figure(rep, "deliveries per second (window)"); !ok || d <= 0 {
		t.Fatalf("figures %+v", rep.Figures)
	}
	if got := res.Counters[cntSlowDisconnected]; got != 2 {
		t.Fatalf("%d slow members disconnected, want 2; counters %v", got, res.Counters)
	}
	for k := range res.Counters {
		if strings.HasPrefix(k, cntFanoutPrefix) {
			t.Fatalf("fan-out counter %q left in the report", k)
		}
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil || strings.Contains(text.String(), cntFanoutPrefix) {
		t.Fatalf("text report (%v):\n%s", err, text.String())
	}
}
