package raftlog

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Edge benchmarks (docs/BENCHMARKS.md, "Edge nodes"): three voters on
// loopback, fsync on, default raft timing, and edges.
//
//	go test ./raftlog/ -run '^$' -bench 'BenchmarkEdge' -benchtime 2000x
//
// BenchmarkEdgeCommit: the cost of edges to the commit path, with 0, 1 and
// 2 edges attached (each one more replication stream from the leader).
// BenchmarkEdgeWAN: one edge behind a simulated WAN link (every byte
// between the edge and anyone else delayed by -wan one way): what its
// clients pay for a send and for a delivery, and what happens when its
// link is cut.

// benchSM is a state machine that calls onApply, when set, with each
// applied command.
type benchSM struct {
	countingSM
	onApply atomic.Pointer[func(cmd []byte)]
}

func (s *benchSM) Apply(index uint64, ts int64, cmds [][]byte) []any {
	if f := s.onApply.Load(); f != nil {
		for _, c := range cmds {
			(*f)(c)
		}
	}
	return s.countingSM.Apply(index, ts, cmds)
}

type benchCluster struct {
	voters []*Node
	edges  []*Node
	sms    map[*Node]*benchSM
	leader *Node
}

// newBenchCluster starts three voters and the given edges; wrap, when not
// nil, wraps every connection of each edge (set before it joins).
func newBenchCluster(b *testing.B, edges int, wrap func(net.Conn) net.Conn, tweak ...func(*Config)) *benchCluster {
	b.Helper()
	c := &benchCluster{sms: make(map[*Node]*benchSM)}
	open := func(id string, edge bool) *Node {
		sm := &benchSM{}
		cfg := Config{
			ID: id, Dir: b.TempDir(), BindAddr: "127.0.0.1:0", LogOutput: io.Discard,
			ClusterKey: testClusterKey, Edge: edge,
		}
		for _, f := range tweak {
			f(&cfg)
		}
		n, err := Open(cfg, sm)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { n.Close() })
		c.sms[n] = sm
		return n
	}
	var servers []Server
	for i := range 3 {
		n := open(fmt.Sprintf("v%d", i), false)
		c.voters = append(c.voters, n)
		servers = append(servers, Server{ID: n.ID(), Addr: n.Addr()})
	}
	if err := c.voters[0].Bootstrap(servers); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range edges {
		n := open(fmt.Sprintf("e%d", i), true)
		if wrap != nil {
			n.mux.wrapForTest.Store(&wrap)
		}
		if err := n.Join(ctx, c.voters[0].Addr()); err != nil {
			b.Fatal(err)
		}
		c.edges = append(c.edges, n)
	}
	for _, n := range append(slices.Clone(c.voters), c.edges...) {
		if err := n.WaitLeader(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range c.voters {
		if n.IsLeader() {
			c.leader = n
		}
	}
	if c.leader == nil {
		b.Fatal("no leader")
	}
	// Every edge applied the configuration: it is caught up.
	for _, e := range c.edges {
		if _, _, err := e.Propose(ctx, []byte("warm-up")); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// follower is a voter that does not lead.
func (c *benchCluster) follower() *Node {
	for _, n := range c.voters {
		if n != c.leader {
			return n
		}
	}
	return nil
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*99/100]
}

func reportLatency(b *testing.B, ds []time.Duration) {
	p50, p99 := percentiles(ds)
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

// BenchmarkEdgeCommit: commands submitted on the leader, 200 bytes each;
// with one submitter the time per command is the commit latency, with 64
// the throughput. The leader's cost per edge is one more replication
// stream: the same entries sent once more, from its log cache.
func BenchmarkEdgeCommit(b *testing.B) {
	type run struct{ edges, submitters, inFlight int }
	var runs []run
	for _, edges := range []int{0, 1, 2} {
		for _, submitters := range []int{1, 64} {
			runs = append(runs, run{edges, submitters, 0})
		}
	}
	// The setting for far edges, on a LAN: does it cost the voters?
	runs = append(runs, run{2, 1, 16}, run{2, 64, 16})
	for _, r := range runs {
		edges, submitters := r.edges, r.submitters
		name := fmt.Sprintf("edges=%d/submitters=%d", edges, submitters)
		if r.inFlight != 0 {
			name += fmt.Sprintf("/rpcs_in_flight=%d", r.inFlight)
		}
		{
			b.Run(name, func(b *testing.B) {
				c := newBenchCluster(b, edges, nil, func(cfg *Config) { cfg.MaxRPCsInFlight = r.inFlight })
				term := c.leader.Stats().Term
				cmd := make([]byte, 200)
				var left atomic.Int64
				left.Store(int64(b.N))
				var mu sync.Mutex
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				var wg sync.WaitGroup
				for range submitters {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for left.Add(-1) >= 0 {
							start := time.Now()
							if _, _, err := c.leader.Propose(context.Background(), cmd); err != nil {
								b.Error(err)
								return
							}
							d := time.Since(start)
							mu.Lock()
							lat = append(lat, d)
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				if c.leader.Stats().Term != term {
					b.Errorf("leader changed under load")
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmds/s")
				reportLatency(b, lat)
			})
		}
	}
}

// wanLink wraps a connection so that every byte it carries, either way,
// arrives oneWay later (unlimited bandwidth, order kept): with the wrap
// on the edge's end of each of its connections, a link of round trip
// 2*oneWay between the edge and every other node.
func wanLink(oneWay time.Duration) func(net.Conn) net.Conn {
	return func(raw net.Conn) net.Conn {
		inner, outer := net.Pipe()
		go delayPump(raw, outer, oneWay) // arriving
		go delayPump(outer, raw, oneWay) // leaving
		return &wanConn{Conn: inner, raw: raw}
	}
}

type wanConn struct {
	net.Conn // the pipe end the node uses
	raw      net.Conn
}

func (w *wanConn) LocalAddr() net.Addr  { return w.raw.LocalAddr() }
func (w *wanConn) RemoteAddr() net.Addr { return w.raw.RemoteAddr() }
func (w *wanConn) Close() error {
	w.Conn.Close()
	return w.raw.Close()
}

// delayPump copies src to dst, each chunk oneWay after it was read.
func delayPump(src, dst net.Conn, oneWay time.Duration) {
	type chunk struct {
		due time.Time
		b   []byte
	}
	q := make(chan chunk, 4096)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{time.Now().Add(oneWay), buf[:n]}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q {
		if w := time.Until(ch.due); w > 0 {
			time.Sleep(w)
		}
		if _, err := dst.Write(ch.b); err != nil {
			break
		}
	}
	src.Close()
	dst.Close()
	for range q {
	}
}

// BenchmarkEdgeWAN: one edge 50 ms away one way (100 ms round trip) from
// three voters on loopback, and what its clients pay:
//   - send_from_edge: a command submitted on the edge, until the edge
//     applied it (forward to the leader, commit on the voters, replicate
//     back): the ack a client of the edge waits for;
//   - send_from_voter: the same on a follower voter, for comparison;
//   - delivery_to_edge: a command submitted on the leader, until the edge
//     applied it: when a client of the edge receives a message sent in
//     the core region;
//
// each with raft's CommitTimeout at its default (50 ms: an idle follower
// learns that an entry committed from the next append, or after 50-100
// ms) and at 5 ms, and with MaxRPCsInFlight at raft's default (2: to a
// follower 100 ms away, two requests per round trip, and an entry waits
// behind the commit notices in flight) and at 16; and
//   - cut_off: the edge's link is cut while the leader takes writes; the
//     time until a write on the edge is refused (it fails fast: no leader
//     reachable), and after healing the time until the edge applied
//     everything committed meanwhile (-cut-writes entries).
func BenchmarkEdgeWAN(b *testing.B) {
	const oneWay = 50 * time.Millisecond
	for _, tc := range []struct {
		commitTimeout time.Duration
		inFlight      int
	}{{DefaultCommitTimeout, 2}, {5 * time.Millisecond, 2}, {5 * time.Millisecond, 16}} {
		b.Run(fmt.Sprintf("commit_timeout=%v,rpcs_in_flight=%d", tc.commitTimeout, tc.inFlight), func(b *testing.B) {
			benchWANLatency(b, oneWay, func(cfg *Config) {
				cfg.CommitTimeout, cfg.MaxRPCsInFlight = tc.commitTimeout, tc.inFlight
			})
		})
	}
	b.Run("cut_off", func(b *testing.B) {
		benchWANCutOff(b, oneWay)
	})
}

func benchWANLatency(b *testing.B, oneWay time.Duration, tweak func(*Config)) {
	cmd := make([]byte, 200)
	b.Run("send_from_edge", func(b *testing.B) {
		c := newBenchCluster(b, 1, wanLink(oneWay), tweak)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, _, err := c.edges[0].Propose(context.Background(), cmd); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
	b.Run("send_from_voter", func(b *testing.B) {
		c := newBenchCluster(b, 1, wanLink(oneWay), tweak)
		f := c.follower()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, _, err := f.Propose(context.Background(), cmd); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
	b.Run("delivery_to_edge", func(b *testing.B) {
		c := newBenchCluster(b, 1, wanLink(oneWay), tweak)
		arrived := make(chan uint64, 1)
		watch := func(cmd []byte) {
			if len(cmd) == 8 {
				arrived <- binary.BigEndian.Uint64(cmd)
			}
		}
		c.sms[c.edges[0]].onApply.Store(&watch)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := range b.N {
			start := time.Now()
			if _, _, err := c.leader.Propose(context.Background(), binary.BigEndian.AppendUint64(nil, uint64(i))); err != nil {
				b.Fatal(err)
			}
			for got := <-arrived; got != uint64(i); got = <-arrived {
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
}

func benchWANCutOff(b *testing.B, oneWay time.Duration) {
	cmd := make([]byte, 200)
	{
		const cutWrites = 2000
		var refused, caughtUp []time.Duration
		for range b.N {
			b.StopTimer()
			c := newBenchCluster(b, 1, wanLink(oneWay))
			edge := c.edges[0]
			b.StartTimer()
			cut := time.Now()
			edge.mux.isolate(true)
			for {
				_, _, err := edge.Propose(context.Background(), cmd)
				if err != nil {
					break
				}
			}
			refused = append(refused, time.Since(cut))
			// The core goes on meanwhile.
			var wg sync.WaitGroup
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range cutWrites / 64 {
						if _, _, err := c.leader.Propose(context.Background(), cmd); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			target := c.leader.Status().CommitIndex
			heal := time.Now()
			edge.mux.isolate(false)
			for edge.Status().AppliedIndex < target {
				time.Sleep(time.Millisecond)
			}
			caughtUp = append(caughtUp, time.Since(heal))
			b.StopTimer()
			for _, n := range append(c.voters, c.edges...) {
				n.Close()
			}
			b.StartTimer()
		}
		p50, _ := percentiles(refused)
		b.ReportMetric(float64(p50.Microseconds())/1000, "refused-after-ms")
		p50, _ = percentiles(caughtUp)
		b.ReportMetric(float64(p50.Microseconds())/1000, "caught-up-after-ms")
	}
}
