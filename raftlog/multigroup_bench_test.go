package raftlog

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"parley/internal/testwait"
)

// Several independent Raft groups in one process: the evidence behind the
// multi-Raft design of docs/SCALING.md (not yet the product). Each group is
// three real Nodes (proposer, Pebble log store with fsync, TCP transport
// with the cluster-key handshake), each Node on its own directory, port
// and state machine, and each group with its own cluster key, so that no
// connection can cross from one group to another. One process stands for
// what, in a deployment, is one replica of each group on each of three
// machines (or many more machines, each hosting some groups).

// multiGroupInflight is the number of blocking submitters per group in
// BenchmarkMultiGroupCommit: commands in flight at each group's leader,
// which its proposer packs into entries (group commit) with up to
// MaxInflightEntries entries pipelined.
var multiGroupInflight = flag.Int("multigroup.inflight", 256, "BenchmarkMultiGroupCommit: blocking submitters per group")

// mgSM is a StateMachine for these tests: it counts the commands it
// applies and, when record is set, keeps them in order with their index.
type mgSM struct {
	record  bool
	applied atomic.Uint64
	count   atomic.Uint64

	mu   sync.Mutex // guards cmds
	cmds []appliedCmd
}

var _ StateMachine = (*mgSM)(nil)

func (m *mgSM) Apply(index uint64, ts int64, cmds [][]byte) []any {
	if index <= m.applied.Load() {
		return nil // replay of an entry already applied
	}
	results := make([]any, len(cmds))
	if m.record {
		m.mu.Lock()
		for i, c := range cmds {
			m.cmds = append(m.cmds, appliedCmd{Index: index, TS: ts, Cmd: string(c)})
			results[i] = index
		}
		m.mu.Unlock()
	}
	m.count.Add(uint64(len(cmds)))
	m.applied.Store(index)
	return results
}

func (m *mgSM) AppliedIndex() uint64 { return m.applied.Load() }

func (m *mgSM) Snapshot() (Snapshot, error) {
	return &memSnapshot{Applied: m.applied.Load()}, nil
}

func (m *mgSM) Restore(r io.Reader) error {
	return errors.New("mgSM: restore is not used by the multi-group tests")
}

func (m *mgSM) list() []appliedCmd {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]appliedCmd(nil), m.cmds...)
}

// mgGroup is one Raft group of three replicas.
type mgGroup struct {
	id     int
	nodes  []*Node
	sms    []*mgSM
	leader *Node
	term   uint64
}

// mgClusterKey is group g's own cluster key.
func mgClusterKey(g int) []byte {
	return []byte(fmt.Sprintf("multigroup-%03d-key-0123456789abcdef", g))
}

// openGroups starts n groups of three replicas and waits until each has a
// leader. tweak, when not nil, adjusts every node's config.
func openGroups(tb testing.TB, n int, record bool, tweak func(*Config)) []*mgGroup {
	tb.Helper()
	groups := make([]*mgGroup, n)
	for g := range n {
		grp := &mgGroup{id: g}
		var servers []Server
		for r := range 3 {
			sm := &mgSM{record: record}
			cfg := Config{
				ID:         fmt.Sprintf("g%d-n%d", g, r+1),
				Dir:        tb.TempDir(),
				BindAddr:   "127.0.0.1:0",
				LogOutput:  io.Discard,
				ClusterKey: mgClusterKey(g),
			}
			if tweak != nil {
				tweak(&cfg)
			}
			node, err := Open(cfg, sm)
			if err != nil {
				tb.Fatal(err)
			}
			tb.Cleanup(func() { node.Close() })
			grp.nodes = append(grp.nodes, node)
			grp.sms = append(grp.sms, sm)
			servers = append(servers, Server{ID: node.ID(), Addr: node.Addr()})
		}
		if err := grp.nodes[0].Bootstrap(servers); err != nil {
			tb.Fatal(err)
		}
		groups[g] = grp
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, grp := range groups {
		for _, node := range grp.nodes {
			if err := node.WaitLeader(ctx); err != nil {
				tb.Fatalf("group %d: %v", grp.id, err)
			}
		}
		testwait.Eventually(tb, fmt.Sprintf("a leader in group %d", grp.id), func() bool {
			for _, node := range grp.nodes {
				if node.IsLeader() {
					grp.leader = node
					return true
				}
			}
			return false
		})
		grp.term = grp.leader.Stats().Term
	}
	return groups
}

// TestMultiGroupIndependent: four groups in one process commit
// independently. Each replica's state machine holds exactly its own
// group's commands, each once, every submitter's in the order it submitted
// them, identical on the three replicas; and a group that loses its quorum
// stops committing while the others go on.
func TestMultiGroupIndependent(t *testing.T) {
	const (
		nGroups    = 4
		submitters = 4 // per group, one on each replica and one more on the first
		perSub     = 40
	)
	groups := openGroups(t, nGroups, true, func(cfg *Config) {
		w := &lockedWriter{t: t}
		t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
		cfg.LogOutput = nil
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: cfg.ID, Level: hclog.Warn, Output: w})
		cfg.SubmitTimeout = 5 * time.Second
		cfg.TransportTimeout = 2 * time.Second
	})

	// Every group at once, from every replica (followers forward to their
	// own group's leader). acked[g][cmd] is the index Propose returned.
	acked := make([]map[string]uint64, nGroups)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g, grp := range groups {
		acked[g] = make(map[string]uint64)
		for s := range submitters {
			node := grp.nodes[s%3]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range perSub {
					cmd := fmt.Sprintf("g%d/s%d/%d", g, s, k)
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					res, idx, err := node.Propose(ctx, []byte(cmd))
					cancel()
					if err != nil {
						t.Errorf("group %d: Propose(%q): %v", g, cmd, err)
						return
					}
					if res != idx {
						t.Errorf("group %d: %q: result %v, index %d", g, cmd, res, idx)
					}
					mu.Lock()
					acked[g][cmd] = idx
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	const total = submitters * perSub
	for g, grp := range groups {
		testwait.Eventually(t, fmt.Sprintf("group %d applied everywhere", g), func() bool {
			for _, sm := range grp.sms {
				if sm.count.Load() < total {
					return false
				}
			}
			return true
		})
		first := grp.sms[0].list()
		for r, sm := range grp.sms {
			got := sm.list()
			if len(got) != total {
				t.Fatalf("group %d replica %d: %d commands applied, want %d", g, r, len(got), total)
			}
			next := make([]int, submitters) // next k expected per submitter
			var lastIndex uint64
			for i, c := range got {
				if c != first[i] {
					t.Fatalf("group %d: replica %d applied %+v at position %d, replica 0 %+v", g, r, c, i, first[i])
				}
				if c.Index < lastIndex {
					t.Fatalf("group %d replica %d: index %d after %d", g, r, c.Index, lastIndex)
				}
				lastIndex = c.Index
				var cg, s, k int
				if _, err := fmt.Sscanf(c.Cmd, "g%d/s%d/%d", &cg, &s, &k); err != nil || cg != g {
					t.Fatalf("group %d replica %d applied a foreign command %q", g, r, c.Cmd)
				}
				if k != next[s] {
					t.Fatalf("group %d replica %d: %q applied, want g%d/s%d/%d next (order or duplicate)", g, r, c.Cmd, g, s, next[s])
				}
				next[s]++
				if idx := acked[g][c.Cmd]; idx != c.Index {
					t.Fatalf("group %d: %q acknowledged at index %d, applied at %d", g, c.Cmd, idx, c.Index)
				}
			}
		}
		if len(acked[g]) != total {
			t.Fatalf("group %d: %d commands acknowledged, want %d", g, len(acked[g]), total)
		}
	}

	// Group 0 loses two replicas, so its quorum: it commits nothing more,
	// while the other groups still commit.
	lost := groups[0]
	lost.nodes[0].Close()
	lost.nodes[1].Close()
	survivor := lost.nodes[2]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, _, err := survivor.Propose(ctx, []byte("g0/after-loss"))
	cancel()
	if err == nil {
		t.Fatal("group 0 committed a command with one replica of three")
	}
	for _, grp := range groups[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _, err := grp.nodes[0].Propose(ctx, []byte(fmt.Sprintf("g%d/s0/%d", grp.id, perSub)))
		cancel()
		if err != nil {
			t.Fatalf("group %d stopped committing when group 0 lost its quorum: %v", grp.id, err)
		}
	}
	if n := lost.sms[0].count.Load() + lost.sms[1].count.Load() + lost.sms[2].count.Load(); n != 3*total {
		t.Fatalf("group 0 applied %d commands over its replicas after losing its quorum, want %d", n, 3*total)
	}
}

// cpuSeconds is the CPU time (user + system) this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// hostBusySeconds is the CPU time the whole machine has spent busy (not
// idle, not waiting for I/O), summed over its cores, from /proc/stat; 0
// where there is none. Against cpuSeconds it shows what other processes
// took from a shared machine during a run.
func hostBusySeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0
		}
		if i == 3 || i == 4 || i >= 7 { // idle, iowait; steal, guest (counted in user)
			continue
		}
		busy += n
	}
	return float64(busy) / 100 // USER_HZ
}

// walSyncs returns how many times the node's log store has synced its WAL
// and the time those syncs took, in seconds, from Pebble's own histogram.
// The histogram's sample is read through reflection so that this test does
// not import prometheus/client_model (an indirect dependency).
func walSyncs(tb testing.TB, n *Node) (count uint64, secs float64) {
	db, err := n.logs.acquire()
	if err != nil {
		tb.Fatal(err)
	}
	h := db.Metrics().LogWriter.FsyncLatency
	n.logs.closeMu.RUnlock()
	ch := make(chan prometheus.Metric, 1)
	h.Collect(ch)
	write := reflect.ValueOf((<-ch).Write)
	m := reflect.New(write.Type().In(0).Elem()) // a *dto.Metric
	if err, _ := write.Call([]reflect.Value{m})[0].Interface().(error); err != nil {
		tb.Fatal(err)
	}
	hist := m.MethodByName("GetHistogram").Call(nil)[0]
	count = hist.MethodByName("GetSampleCount").Call(nil)[0].Uint()
	sum := hist.MethodByName("GetSampleSum").Call(nil)[0].Float() // nanoseconds
	return count, sum / 1e9
}

// groupSyncs sums walSyncs over every replica of the groups.
func groupSyncs(tb testing.TB, groups []*mgGroup) (count uint64, secs float64) {
	for _, grp := range groups {
		for _, n := range grp.nodes {
			c, s := walSyncs(tb, n)
			count += c
			secs += s
		}
	}
	return count, secs
}

// BenchmarkMultiGroupCommit: aggregate committed commands per second of
// 1, 2, 4 and 8 independent three-replica groups in one process, fsync on
// (every replica's log store syncs each append), 200-byte commands,
// -multigroup.inflight blocking submitters per group on the group's leader
// (256 by default), all drawing from one shared count of b.N commands, so
// a faster group takes more. The state machine only counts: this measures
// the replicated log, not the chat engine's Apply. Default raft timing; the
// run fails if a group's term moves under load.
//
// Reported: commits/s (all groups), commits/s/group, cmds/entry (group
// commit), entries/s (raft entries committed, all groups), commit-ms (mean
// time from raft.Apply to the entry applied on its leader), cpu-cores (the
// process's CPU time over the run: servers, 3 replicas each, and
// submitters), host-busy-cores (the whole machine's, from /proc/stat: the
// difference is other processes), fsyncs/s and µs/fsync (WAL syncs of every replica's log
// store, from Pebble's metrics), and min-share (the slowest group's share of the commands
// times the number of groups: 1 is an even split).
func BenchmarkMultiGroupCommit(b *testing.B) {
	inflight := *multiGroupInflight
	for _, nGroups := range []int{1, 2, 4, 8} {
		b.Run("groups="+strconv.Itoa(nGroups), func(b *testing.B) {
			groups := openGroups(b, nGroups, false, nil)
			before := make([]Stats, nGroups)
			for g, grp := range groups {
				before[g] = grp.leader.Stats()
			}
			cmd := make([]byte, 200)
			var left atomic.Int64
			left.Store(int64(b.N))
			done := make([]atomic.Int64, nGroups)
			var failed atomic.Bool
			syncs0, syncSecs0 := groupSyncs(b, groups)
			cpu0, host0 := cpuSeconds(), hostBusySeconds()
			b.ResetTimer()
			var wg sync.WaitGroup
			for g, grp := range groups {
				for range inflight {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for left.Add(-1) >= 0 {
							if _, _, err := grp.leader.Propose(context.Background(), cmd); err != nil {
								if !failed.Swap(true) {
									b.Errorf("group %d: %v", g, err)
								}
								return
							}
							done[g].Add(1)
						}
					}()
				}
			}
			wg.Wait()
			b.StopTimer()
			cpu, host := cpuSeconds()-cpu0, hostBusySeconds()-host0
			secs := b.Elapsed().Seconds()
			syncs1, syncSecs1 := groupSyncs(b, groups)
			syncs, syncSecs := syncs1-syncs0, syncSecs1-syncSecs0

			var entries, cmds, applied, latCount uint64
			var latSum float64
			minDone := int64(b.N)
			for g, grp := range groups {
				for r, n := range grp.nodes {
					if n == grp.leader {
						applied += grp.sms[r].count.Load()
					}
				}
				after := grp.leader.Stats()
				if after.Term != grp.term || !grp.leader.IsLeader() {
					b.Errorf("group %d: leader changed under load: term %d -> %d", g, grp.term, after.Term)
				}
				entries += after.EntriesCommitted - before[g].EntriesCommitted
				cmds += after.CommandsProposed - before[g].CommandsProposed
				latCount += after.CommitLatency.Count - before[g].CommitLatency.Count
				latSum += after.CommitLatency.Sum - before[g].CommitLatency.Sum
				minDone = min(minDone, done[g].Load())
			}
			if !failed.Load() && applied != uint64(b.N) {
				b.Errorf("the leaders' state machines applied %d commands, want %d", applied, b.N)
			}
			b.ReportMetric(float64(b.N)/secs, "commits/s")
			b.ReportMetric(float64(b.N)/secs/float64(nGroups), "commits/s/group")
			b.ReportMetric(float64(entries)/secs, "entries/s")
			if entries > 0 {
				b.ReportMetric(float64(cmds)/float64(entries), "cmds/entry")
			}
			if latCount > 0 {
				b.ReportMetric(latSum/float64(latCount)*1e3, "commit-ms")
			}
			b.ReportMetric(cpu/secs, "cpu-cores")
			if host > 0 {
				b.ReportMetric(host/secs, "host-busy-cores")
			}
			b.ReportMetric(float64(syncs)/secs, "fsyncs/s")
			if syncs > 0 {
				b.ReportMetric(syncSecs/float64(syncs)*1e6, "µs/fsync")
			}
			if b.N >= nGroups {
				b.ReportMetric(float64(minDone)*float64(nGroups)/float64(b.N), "min-share")
			}
		})
	}
}

// BenchmarkLogStoreParallelSync: the disk's ceiling under the groups of
// BenchmarkMultiGroupCommit, without raft: 1 to 24 log stores (a group has
// three, so 24 is eight groups), each appended to by its own goroutine,
// one 800-byte entry (four 200-byte commands) per StoreLogs, each StoreLogs
// one fsynced Pebble batch. Reports appends/s over all stores and the
// mean time of one append.
func BenchmarkLogStoreParallelSync(b *testing.B) {
	for _, nStores := range []int{1, 3, 6, 12, 24} {
		b.Run("stores="+strconv.Itoa(nStores), func(b *testing.B) {
			stores := make([]*LogStore, nStores)
			for i := range stores {
				s, err := OpenLogStore(b.TempDir(), nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				stores[i] = s
			}
			data := make([]byte, 800)
			var left atomic.Int64
			left.Store(int64(b.N))
			cpu0 := cpuSeconds()
			b.ResetTimer()
			var wg sync.WaitGroup
			for _, s := range stores {
				wg.Add(1)
				go func() {
					defer wg.Done()
					l := &raft.Log{Type: raft.LogCommand, Term: 1, Data: data}
					for left.Add(-1) >= 0 {
						l.Index++
						if err := s.StoreLogs([]*raft.Log{l}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N)/secs, "appends/s")
			b.ReportMetric(secs*float64(nStores)/float64(b.N)*1e6, "µs/append")
			b.ReportMetric((cpuSeconds()-cpu0)/secs, "cpu-cores")
		})
	}
}
