package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"parley/engine"
	"parley/raftlog"
)

// benchEnvInt reads a size override for the long benchmarks.
func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchClusterConfig is a node of an in-process benchmark cluster: loopback,
// port 0 everywhere, a small log tail so that a wiped node needs a snapshot.
func benchClusterConfig(dir, id string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = dir
	cfg.HTTPAddr, cfg.WSAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Bootstrap = false
	cfg.TrailingLogs = 64
	cfg.Argon2 = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}
	cfg.ClusterKey = []byte("bench-cluster-key-0123456789") // one key for the whole cluster
	return cfg
}

// BenchmarkRestartAndCatchUp fills a three-node cluster with 1,000,000
// messages in 10,000 conversations (override with PARLEY_BENCH_MESSAGES and
// PARLEY_BENCH_CONVS), then measures:
//
//   - restart-s: a follower closed cleanly and opened again on its data, until
//     it has applied the leader's commit index (Pebble open, raft log replay
//     of the tail, indexes rebuilt);
//   - catchup-s: a follower wiped and opened empty, until it has applied the
//     leader's commit index (snapshot install: the leader's state checkpoint
//     streamed over the internal link, then the log tail).
//
// Run it alone, once: go test -run '^$' -bench RestartAndCatchUp -benchtime 1x ./node
func BenchmarkRestartAndCatchUp(b *testing.B) {
	msgs := benchEnvInt("PARLEY_BENCH_MESSAGES", 1_000_000)
	convs := benchEnvInt("PARLEY_BENCH_CONVS", 10_000)
	root := b.TempDir()

	nodes := make([]*Node, 3)
	raftAddrs := make([]string, 3) // kept across restarts: the configuration records them
	open := func(i int) {
		b.Helper()
		cfg := benchClusterConfig(filepath.Join(root, fmt.Sprint("n", i)), fmt.Sprint("n", i))
		if raftAddrs[i] != "" {
			cfg.RaftAddr = raftAddrs[i]
		}
		n, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		nodes[i] = n
		raftAddrs[i] = n.raft.Addr()
	}
	for i := range nodes {
		open(i)
	}
	defer func() {
		for _, n := range nodes {
			if n != nil {
				n.Close()
			}
		}
	}()
	var servers []raftlog.Server
	for i, n := range nodes {
		servers = append(servers, raftlog.Server{ID: fmt.Sprint("n", i), Addr: n.raft.Addr()})
	}
	if err := nodes[0].raft.Bootstrap(servers); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := nodes[0].WaitLeader(ctx); err != nil {
		b.Fatal(err)
	}
	leader := nodes[0]
	for _, n := range nodes {
		if n.raft.IsLeader() {
			leader = n
		}
	}

	start := time.Now()
	fill(b, leader, msgs, convs)
	b.Logf("filled %d messages in %d conversations in %v (%.0f msg/s)", msgs, convs, time.Since(start), float64(msgs)/time.Since(start).Seconds())
	if err := leader.Snapshot(); err != nil {
		b.Fatal(err)
	}

	// A follower to restart and then wipe.
	fi := 0
	for i, n := range nodes {
		if n != leader {
			fi = i
			break
		}
	}
	caughtUp := func() {
		b.Helper()
		commit := leader.raft.Stats().CommitIndex
		for nodes[fi].raft.Stats().AppliedIndex < commit {
			if ctx.Err() != nil {
				b.Fatal("follower did not catch up")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	caughtUp()

	b.ResetTimer()
	var restart, catchUp time.Duration
	for range b.N {
		if err := nodes[fi].Close(); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		open(fi)
		caughtUp()
		restart += time.Since(t0)

		if err := nodes[fi].Close(); err != nil {
			b.Fatal(err)
		}
		dir := filepath.Join(root, fmt.Sprint("n", fi))
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		open(fi)
		caughtUp()
		catchUp += time.Since(t0)
		if nodes[fi].raft.Status().LastSnapshotIndex == 0 {
			b.Fatal("the wiped follower caught up without a snapshot: the benchmark measures log replay")
		}
	}
	b.StopTimer()
	b.ReportMetric(restart.Seconds()/float64(b.N), "restart-s")
	b.ReportMetric(catchUp.Seconds()/float64(b.N), "catchup-s")
}

// fill creates convs groups of two users and sends msgs messages round robin
// over them, through n's Submit with a bounded number in flight.
func fill(b *testing.B, n *Node, msgs, convs int) {
	b.Helper()
	const users = 100
	propose := func(c *engine.Command) *engine.Result {
		cmd, err := engine.EncodeCommand(c)
		if err != nil {
			b.Fatal(err)
		}
		res, _, err := n.raft.Propose(context.Background(), cmd)
		if err != nil {
			b.Fatal(err)
		}
		r := res.(*engine.Result)
		if r.Err != "" {
			b.Fatalf("%v: %s %s", c.Op, r.Err, r.Message)
		}
		return r
	}
	ids := make([]uint64, users)
	devs := make(map[uint64]uint64, users) // user -> its one device
	for i := range ids {
		ids[i] = propose(&engine.Command{Op: engine.OpRegister, Username: fmt.Sprintf("user%03d", i), PasswordHash: []byte("x")}).User
		devs[ids[i]] = propose(&engine.Command{Op: engine.OpAddDevice, User: ids[i], DeviceName: "bench"}).Device
	}
	conv := make([]uint64, convs)
	creator := make([]uint64, convs)
	var wg sync.WaitGroup
	var failed atomic.Value
	sem := make(chan struct{}, 4096)
	submit := func(c *engine.Command, done func(*engine.Result)) {
		cmd, err := engine.EncodeCommand(c)
		if err != nil {
			b.Fatal(err)
		}
		for {
			sem <- struct{}{}
			wg.Add(1)
			err := n.raft.Submit(cmd, func(res any, _ uint64, err error) {
				defer wg.Done()
				defer func() { <-sem }()
				if err != nil {
					failed.Store(err)
					return
				}
				r := res.(*engine.Result)
				if r.Err != "" {
					failed.Store(fmt.Errorf("%v: %s %s", c.Op, r.Err, r.Message))
					return
				}
				if done != nil {
					done(r)
				}
			})
			if err == nil {
				return
			}
			wg.Done()
			<-sem
			if err != raftlog.ErrBusy {
				b.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for i := range conv {
		creator[i] = ids[i%users]
		members := []uint64{ids[(i+1)%users]}
		submit(&engine.Command{Op: engine.OpCreateGroup, User: creator[i], Name: "g", Members: members}, func(r *engine.Result) { conv[i] = r.Conv })
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	body := strings.Repeat("x", 100)
	for i := range msgs {
		c := i % convs
		submit(&engine.Command{Op: engine.OpSend, User: creator[c], Device: devs[creator[c]], Conv: conv[c], ClientMsgID: strconv.Itoa(i), Body: body}, nil)
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}
