package raftlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"parley/internal/testwait"
)

// Three (or more) real nodes in one process, on 127.0.0.1, each with its
// own directory and in-memory state machine (which stands for the
// persistent engine: it survives Close and Open, and a wipe replaces it).

const testSubmitTimeout = 2 * time.Second

type testNode struct {
	id   string
	dir  string
	addr string // fixed after the first Open, so a restart keeps it
	sm   *memSM
	n    *Node // nil while down
}

type testCluster struct {
	t     *testing.T
	nodes []*testNode
}

// testClusterKey is shared by every node of the test clusters: their
// connections all run the handshake (handshake.go).
var testClusterKey = []byte("raftlog-test-cluster-key-0123456789")

func clusterNodeConfig(t *testing.T, id, dir, bind string) Config {
	w := &lockedWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return Config{
		ID:       id,
		Dir:      dir,
		BindAddr: bind,
		Logger:   hclog.New(&hclog.LoggerOptions{Name: id, Level: hclog.Warn, Output: w}),
		// Fast failover for tests; a spurious election under -race is
		// harmless, the checks hold through leader changes.
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		SubmitTimeout:      testSubmitTimeout,
		ReportInterval:     50 * time.Millisecond,
		TransportTimeout:   2 * time.Second,
		ClusterKey:         testClusterKey,
	}
}

// newCluster starts size nodes with empty state and bootstraps them from
// the first one.
func newCluster(t *testing.T, size int, tweak func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	t.Cleanup(c.closeAll)
	var servers []Server
	for i := range size {
		tn := &testNode{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), addr: "127.0.0.1:0", sm: newMemSM()}
		c.nodes = append(c.nodes, tn)
		c.start(tn, tweak)
		servers = append(servers, Server{ID: tn.id, Addr: tn.addr})
	}
	if err := c.nodes[0].n.Bootstrap(servers); err != nil {
		t.Fatal(err)
	}
	for _, tn := range c.nodes {
		waitLeader(t, tn.n)
	}
	return c
}

// start opens tn on its directory and address.
func (c *testCluster) start(tn *testNode, tweak func(*Config)) {
	c.t.Helper()
	cfg := clusterNodeConfig(c.t, tn.id, tn.dir, tn.addr)
	if tweak != nil {
		tweak(&cfg)
	}
	n, err := Open(cfg, tn.sm)
	if err != nil {
		c.t.Fatal(err)
	}
	tn.n, tn.addr = n, n.Addr()
}

// crash stops tn abruptly: its links are cut before it shuts down, so
// nothing more leaves it, as with kill -9.
func (c *testCluster) crash(tn *testNode) {
	tn.n.mux.isolate(true)
	tn.n.Close()
	tn.n = nil
}

func (c *testCluster) closeAll() {
	for _, tn := range c.nodes {
		if tn.n != nil {
			tn.n.Close()
			tn.n = nil
		}
	}
}

func (c *testCluster) live() []*testNode {
	var live []*testNode
	for _, tn := range c.nodes {
		if tn.n != nil {
			live = append(live, tn)
		}
	}
	return live
}

// leader polls until one of the given nodes leads.
func (c *testCluster) leader(among ...*testNode) *testNode {
	c.t.Helper()
	if len(among) == 0 {
		among = c.live()
	}
	var l *testNode
	testwait.Eventually(c.t, "a leader", func() bool {
		for _, tn := range among {
			if tn.n.IsLeader() {
				l = tn
				return true
			}
		}
		return false
	})
	return l
}

func waitLeader(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
}

// model records every command submitted in a test and checks the history
// against the replicas: nothing acknowledged is missing or duplicated.
type model struct {
	t    *testing.T
	mu   sync.Mutex
	cmds map[string]*cmdRecord
	seq  atomic.Int64
}

type cmdRecord struct {
	node    string
	refused error // Submit's own error: the command was never queued
	calls   int
	err     error
	result  any
	index   uint64
}

func newModel(t *testing.T) *model { return &model{t: t, cmds: make(map[string]*cmdRecord)} }

// name makes a command name unique within the test.
func (m *model) name(prefix string) string {
	return fmt.Sprintf("%s-%06d", prefix, m.seq.Add(1))
}

// submit submits cmd on tn; done (optional) runs after the outcome is
// recorded. It returns Submit's own error.
func (m *model) submit(tn *testNode, cmd string, done func(error)) error {
	return m.submitOn(tn.id, tn.n, tn.sm, cmd, done)
}

// submitOn submits cmd on n, whose state machine is sm; traffic goroutines
// hold on to a node that may be crashed and replaced meanwhile.
func (m *model) submitOn(id string, n *Node, sm *memSM, cmd string, done func(error)) error {
	rec := &cmdRecord{node: id}
	m.mu.Lock()
	if m.cmds[cmd] != nil {
		m.mu.Unlock()
		m.t.Fatalf("command %s submitted twice", cmd)
	}
	m.cmds[cmd] = rec
	m.mu.Unlock()
	err := n.Submit([]byte(cmd), func(result any, index uint64, err error) {
		if err == nil {
			// Guarantee 8: acknowledged only once applied here.
			if got := sm.at(result); got.Cmd != cmd || got.Index != index {
				m.t.Errorf("%s acknowledged on %s as position %v index %d, but the state machine holds %+v there",
					cmd, rec.node, result, index, got)
			}
		}
		m.mu.Lock()
		rec.calls++
		rec.err, rec.result, rec.index = err, result, index
		m.mu.Unlock()
		if done != nil {
			done(err)
		}
	})
	if err != nil {
		m.mu.Lock()
		rec.refused = err
		m.mu.Unlock()
	}
	return err
}

// propose submits cmd on tn and waits for its outcome.
func (m *model) propose(tn *testNode, cmd string) error {
	return m.proposeOn(tn.id, tn.n, tn.sm, cmd)
}

func (m *model) proposeOn(id string, n *Node, sm *memSM, cmd string) error {
	ch := make(chan error, 1)
	if err := m.submitOn(id, n, sm, cmd, func(err error) { ch <- err }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-time.After(testSubmitTimeout + 20*time.Second):
		m.t.Errorf("%s on %s: no outcome long after SubmitTimeout", cmd, id)
		return ErrTimeout
	}
}

// proposeUntilOK proposes fresh commands on tn until one succeeds.
func (m *model) proposeUntilOK(tn *testNode, prefix string) {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := m.propose(tn, m.name(prefix))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("no write succeeded on %s: %v", tn.id, err)
		}
		time.Sleep(10 * time.Millisecond) // pacing while an election runs
	}
}

// successes counts the successful commands submitted on node.
func (m *model) successes(node string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := 0
	for _, r := range m.cmds {
		if r.node == node && r.calls == 1 && r.err == nil {
			k++
		}
	}
	return k
}

// barrier commits a command on the leader and waits until every given
// node has applied it; it returns the command's position. Every command
// acknowledged before the barrier lies before it on every replica.
func (m *model) barrier(c *testCluster, nodes ...*testNode) int {
	m.t.Helper()
	var pos int
	testwait.Eventually(m.t, "a barrier to commit", func() bool {
		l := c.leader(nodes...)
		cmd := m.name("barrier")
		if err := m.propose(l, cmd); err != nil {
			return false
		}
		m.mu.Lock()
		pos = m.cmds[cmd].result.(int)
		m.mu.Unlock()
		return true
	})
	testwait.Eventually(m.t, "every replica to apply the barrier", func() bool {
		for _, tn := range nodes {
			if cmds, _, _ := tn.sm.state(); len(cmds) < pos {
				return false
			}
		}
		return true
	})
	return pos
}

// check verifies, once all outcomes are in and the replicas applied a
// barrier at position pos:
//   - every accepted command's callback ran exactly once, a refused one's
//     never;
//   - the replicas are identical up to the barrier;
//   - no command is in any replica twice, and none refused by Submit is in
//     any;
//   - every success is in every replica, at the position and index its
//     callback reported.
func (m *model) check(pos int, nodes ...*testNode) (ok, failed int) {
	m.t.Helper()
	var ref []appliedCmd
	where := make([]map[string]int, len(nodes))
	for i, tn := range nodes {
		cmds, _, _ := tn.sm.state()
		if len(cmds) < pos {
			m.t.Fatalf("%s holds %d commands, before the barrier at %d", tn.id, len(cmds), pos)
		}
		if i == 0 {
			ref = cmds[:pos]
		}
		for j := range pos {
			if cmds[j] != ref[j] {
				m.t.Fatalf("replicas differ at position %d: %s has %+v, %s has %+v", j+1, nodes[0].id, ref[j], tn.id, cmds[j])
			}
		}
		where[i] = make(map[string]int, len(cmds))
		for j, c := range cmds {
			if _, dup := where[i][c.Cmd]; dup {
				m.t.Fatalf("%s holds %s twice", tn.id, c.Cmd)
			}
			where[i][c.Cmd] = j + 1
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for cmd, r := range m.cmds {
		switch {
		case r.refused != nil:
			if r.calls != 0 {
				m.t.Fatalf("%s: refused by Submit (%v) but its callback ran", cmd, r.refused)
			}
			for i := range nodes {
				if _, in := where[i][cmd]; in {
					m.t.Fatalf("%s: refused by Submit (%v) but applied on %s", cmd, r.refused, nodes[i].id)
				}
			}
		case r.calls != 1:
			m.t.Fatalf("%s: callback ran %d times", cmd, r.calls)
		case r.err != nil:
			failed++
			if failed <= 5 {
				m.t.Logf("%s on %s failed: %v", cmd, r.node, r.err)
			}
		default:
			ok++
			p, _ := r.result.(int)
			if p < 1 || p > pos || ref[p-1].Cmd != cmd || ref[p-1].Index != r.index {
				m.t.Fatalf("%s acknowledged at position %v index %d, but is not there on the replicas", cmd, r.result, r.index)
			}
		}
	}
	return ok, failed
}

// at returns the command at 1-based position pos (a result of Apply).
func (m *memSM) at(pos any) appliedCmd {
	p, _ := pos.(int)
	m.mu.Lock()
	defer m.mu.Unlock()
	if p < 1 || p > len(m.cmds) {
		return appliedCmd{}
	}
	return m.cmds[p-1]
}

// traffic runs blocking writers on nodes until stop is closed.
func (m *model) traffic(nodes []*testNode, perNode int, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	for _, tn := range nodes {
		id, n, sm := tn.id, tn.n, tn.sm
		for g := range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := m.proposeOn(id, n, sm, m.name(fmt.Sprintf("%s-g%d", id, g))); err != nil {
						time.Sleep(5 * time.Millisecond) // pacing while unavailable
					}
				}
			}()
		}
	}
	return wg.Wait
}

// TestClusterSubmitEverywhere: commands submitted concurrently on every
// node, some fired without waiting and some one at a time, are each
// acknowledged exactly once, by the node they were submitted to, after it
// applied them; all replicas end identical.
func TestClusterSubmitEverywhere(t *testing.T) {
	c := newCluster(t, 3, nil)
	m := newModel(t)
	term := c.leader().n.Stats().Term

	const perGoroutine = 150
	var pending sync.WaitGroup
	var wg sync.WaitGroup
	for _, tn := range c.nodes {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perGoroutine {
					cmd := fmt.Sprintf("%s-g%d-%05d", tn.id, g, i)
					if g < 2 {
						pending.Add(1)
						if err := m.submit(tn, cmd, func(error) { pending.Done() }); err != nil {
							pending.Done()
						}
						continue
					}
					m.propose(tn, cmd)
				}
			}()
		}
	}
	wg.Wait()
	allDone := make(chan struct{})
	go func() { pending.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(testSubmitTimeout + 30*time.Second):
		t.Fatal("callbacks did not all run")
	}
	pos := m.barrier(c, c.nodes...)
	ok, failed := m.check(pos, c.nodes...)
	t.Logf("%d succeeded, %d failed", ok, failed)
	stable := true
	for _, tn := range c.nodes {
		stable = stable && tn.n.Stats().Term == term
	}
	if stable && failed > 0 {
		t.Fatalf("%d commands failed without a leader change", failed)
	}
	for _, tn := range c.nodes {
		if m.successes(tn.id) == 0 {
			t.Fatalf("nothing succeeded on %s", tn.id)
		}
		st := tn.n.Stats()
		// With one leader throughout, each follower forwarded its own
		// commands. (A leader that stepped down on a loaded machine
		// forwarded nothing, and rightly so.)
		if stable && !tn.n.IsLeader() && st.CommandsForwarded == 0 {
			t.Fatalf("follower %s forwarded nothing: %+v", tn.id, st)
		}
		if st.Waiting != 0 {
			t.Fatalf("%s: %d commands still waiting", tn.id, st.Waiting)
		}
		// Every link ran the cluster-key handshake (clusterNodeConfig); none
		// failed.
		if st.HandshakeFailures != 0 {
			t.Fatalf("%s: %d failed handshakes between nodes sharing the key", tn.id, st.HandshakeFailures)
		}
	}
	if stable {
		// One goroutine's commands, one at a time, land in order.
		cmds, _, _ := c.nodes[0].sm.state()
		last := map[string]string{}
		for _, a := range cmds {
			if len(a.Cmd) < 6 || a.Cmd[:2] == "ba" {
				continue
			}
			g := a.Cmd[:6]
			if prev, ok := last[g]; ok && prev >= a.Cmd {
				t.Fatalf("%s applied after %s", a.Cmd, prev)
			}
			last[g] = a.Cmd
		}
	}
}

// TestClusterLeaderFailover: under traffic on every node, the leader
// crashes; a new one is elected, writes go on through the survivors, every
// command in flight gets an outcome and no acknowledged one is lost. The
// old leader restarts and catches up.
func TestClusterLeaderFailover(t *testing.T) {
	c := newCluster(t, 3, nil)
	m := newModel(t)
	stop := make(chan struct{})
	wait := m.traffic(c.nodes, 2, stop)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
			wait()
		}
	}()
	testwait.Eventually(t, "traffic on every node", func() bool {
		for _, tn := range c.nodes {
			if m.successes(tn.id) < 20 {
				return false
			}
		}
		return true
	})

	old := c.leader()
	var survivors []*testNode
	for _, tn := range c.nodes {
		if tn != old {
			survivors = append(survivors, tn)
		}
	}
	before := map[string]int{}
	for _, tn := range survivors {
		before[tn.id] = m.successes(tn.id)
	}
	c.crash(old)
	start := time.Now()
	newLeader := c.leader(survivors...)
	t.Logf("%s crashed, %s leads after %v", old.id, newLeader.id, time.Since(start))
	testwait.Eventually(t, "writes through both survivors", func() bool {
		for _, tn := range survivors {
			if m.successes(tn.id) < before[tn.id]+20 {
				return false
			}
		}
		return true
	})

	// The old leader restarts on its directory and address and catches up
	// while traffic goes on.
	c.start(old, nil)
	m.proposeUntilOK(old, old.id+"-back")
	close(stop)
	wait()
	stopped = true
	pos := m.barrier(c, c.nodes...)
	ok, failed := m.check(pos, c.nodes...)
	t.Logf("%d succeeded, %d failed", ok, failed)
}

// TestClusterIsolatedFollower: a follower cut off from the others fails
// its writes with an error, never a false success, while the majority goes
// on; once its links are back it catches up and writes again.
func TestClusterIsolatedFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	m := newModel(t)
	l := c.leader()
	var f, other *testNode
	for _, tn := range c.nodes {
		if tn != l {
			if f == nil {
				f = tn
			} else {
				other = tn
			}
		}
	}
	m.proposeUntilOK(f, "before")

	f.n.mux.isolate(true)
	for i := range 10 {
		err := m.propose(f, m.name("isolated"))
		if err == nil {
			t.Fatalf("write %d on the isolated follower succeeded", i)
		}
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrTimeout) {
			t.Fatalf("write on the isolated follower: %v, want ErrNotLeader or ErrTimeout", err)
		}
	}
	// The majority goes on.
	majority := []*testNode{l, other}
	for _, tn := range majority {
		m.proposeUntilOK(tn, "majority")
	}
	mpos := m.barrier(c, majority...)
	// Once the follower gives up on the leader, it refuses writes at once.
	testwait.Eventually(t, "the isolated follower to lose the leader", func() bool { return f.n.LeaderAddr() == "" })
	if err := m.propose(f, m.name("isolated")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("write on a follower without a leader: %v, want ErrNotLeader", err)
	}

	f.n.mux.isolate(false)
	testwait.Eventually(t, "the follower to catch up", func() bool {
		cmds, _, _ := f.sm.state()
		return len(cmds) >= mpos
	})
	m.proposeUntilOK(f, "healed")
	pos := m.barrier(c, c.nodes...)
	ok, failed := m.check(pos, c.nodes...)
	t.Logf("%d succeeded, %d failed", ok, failed)
}

// TestClusterWipedFollowerRejoins: a follower that lost its directory
// while the leader compacted its log rejoins by snapshot install through
// the transport.
func TestClusterWipedFollowerRejoins(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.TrailingLogs = 8
		cfg.SnapshotThreshold = 1 << 30 // only explicit snapshots
	})
	m := newModel(t)
	for i := range 30 {
		m.proposeUntilOK(c.nodes[i%3], "early")
	}
	l := c.leader()
	var f *testNode
	for _, tn := range c.nodes {
		if tn != l {
			f = tn
			break
		}
	}
	if err := f.n.Close(); err != nil {
		t.Fatal(err)
	}
	f.n = nil
	for i := range 30 {
		m.proposeUntilOK(l, fmt.Sprintf("while-down-%d", i))
	}
	if err := l.n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first, err := l.n.logs.FirstIndex(); err != nil || first <= 30 {
		t.Fatalf("leader's first log index %d, %v: not compacted", first, err)
	}

	if err := os.RemoveAll(f.dir); err != nil {
		t.Fatal(err)
	}
	f.sm = newMemSM()
	c.start(f, func(cfg *Config) { cfg.TrailingLogs = 8 })
	m.proposeUntilOK(f, "rejoined")
	pos := m.barrier(c, c.nodes...)
	m.check(pos, c.nodes...)
	if _, _, restores := f.sm.state(); restores != 1 {
		t.Fatalf("wiped follower restored %d snapshots, want 1", restores)
	}
	if st := f.n.Status(); st.LastSnapshotIndex == 0 {
		t.Fatalf("status after install: %+v", st)
	}
}

// TestClusterMembership: join through a follower, status with per-node
// progress, transfer leadership (to a node and to any), remove, add a
// nonvoter and promote it, and the errors of each.
func TestClusterMembership(t *testing.T) {
	c := newCluster(t, 3, nil)
	m := newModel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Bootstrap again: harmless with the same servers, refused otherwise.
	var servers []Server
	for _, tn := range c.nodes {
		servers = append(servers, Server{ID: tn.id, Addr: tn.addr})
	}
	if err := c.nodes[0].n.Bootstrap(servers); err != nil {
		t.Fatalf("repeated bootstrap: %v", err)
	}
	if err := c.nodes[0].n.Bootstrap(servers[:1]); !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("bootstrap with other servers: %v", err)
	}

	// n4 joins through a follower, which redirects it to the leader.
	l := c.leader()
	var f *testNode
	for _, tn := range c.nodes {
		if tn != l {
			f = tn
			break
		}
	}
	m.proposeUntilOK(l, "before-join")
	n4 := &testNode{id: "n4", dir: t.TempDir(), addr: "127.0.0.1:0", sm: newMemSM()}
	c.nodes = append(c.nodes, n4)
	c.start(n4, nil)
	if err := n4.n.Join(ctx, f.addr); err != nil {
		t.Fatal(err)
	}
	if err := n4.n.Join(ctx, f.addr); err != nil {
		t.Fatalf("joining again: %v", err)
	}
	requireServers(t, n4.n, map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "n4": "voter"})
	// The membership change is newer than the last command: raft cannot
	// snapshot it yet, which is "nothing to snapshot" until the next write.
	if err := c.leader().n.Snapshot(); !errors.Is(err, ErrNothingToSnapshot) {
		t.Fatalf("snapshot right after a membership change: %v, want ErrNothingToSnapshot", err)
	}
	m.proposeUntilOK(n4, "n4")
	// Status, asked on the newcomer, comes from the leader and shows every
	// member's progress.
	testwait.Eventually(t, "progress of every member", func() bool {
		st, err := n4.n.LeaderStatus(ctx)
		if err != nil || len(st.Servers) != 4 {
			return false
		}
		for _, s := range st.Servers {
			if !s.HasProgress || s.Lag > 2 || s.AppliedIndex == 0 || s.ReportAge > time.Second {
				return false
			}
		}
		return st.Term > 0 && st.CommitIndex > 0 && st.LeaderID != ""
	})

	// Transfer leadership to n4, asked on a node that is not the leader.
	asker := f
	if asker.n.IsLeader() {
		asker = c.nodes[2]
	}
	if err := asker.n.TransferLeadership(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, "n4 to lead", func() bool { return n4.n.IsLeader() })
	if err := f.n.TransferLeadership(ctx, "nobody"); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("transfer to an unknown server: %v", err)
	}

	// Remove n1 (asked on n2); its raft shuts down.
	n1 := c.nodes[0]
	if err := c.nodes[1].n.RemoveServer(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[1].n.RemoveServer(ctx, "n1"); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("removing twice: %v", err)
	}
	requireServers(t, n4.n, map[string]string{"n2": "voter", "n3": "voter", "n4": "voter"})
	n1.n.Close()
	n1.n = nil

	// n5 as a nonvoter, then promoted.
	n5 := &testNode{id: "n5", dir: t.TempDir(), addr: "127.0.0.1:0", sm: newMemSM()}
	c.nodes = append(c.nodes, n5)
	c.start(n5, nil)
	if err := c.nodes[2].n.AddNonvoter(ctx, "n5", n5.addr); err != nil {
		t.Fatal(err)
	}
	requireServers(t, n4.n, map[string]string{"n2": "voter", "n3": "voter", "n4": "voter", "n5": "nonvoter"})
	m.proposeUntilOK(n5, "n5-nonvoter") // a nonvoter takes writes too
	if err := n5.n.Promote(ctx, "n5"); err != nil {
		t.Fatal(err)
	}
	requireServers(t, n4.n, map[string]string{"n2": "voter", "n3": "voter", "n4": "voter", "n5": "voter"})

	// A server that never catches up is not promoted.
	if err := n5.n.AddNonvoter(ctx, "ghost", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	err := n5.n.Promote(short, "ghost")
	cancelShort()
	if !errors.Is(err, ErrNotCaughtUp) {
		t.Fatalf("promoting a dead server: %v", err)
	}
	if err := n5.n.RemoveServer(ctx, "ghost"); err != nil {
		t.Fatal(err)
	}
	if err := n5.n.Promote(ctx, "ghost"); !errors.Is(err, ErrUnknownServer) {
		t.Fatalf("promoting a removed server: %v", err)
	}

	// Transfer to any voter.
	if err := n5.n.TransferLeadership(ctx, ""); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, "a new leader", func() bool {
		l := c.leader()
		return l != n4
	})
	for _, tn := range c.live() {
		m.proposeUntilOK(tn, "end")
	}
	pos := m.barrier(c, c.live()...)
	m.check(pos, c.live()...)
}

// requireServers waits until n's configuration holds exactly want (id ->
// suffrage).
func requireServers(t *testing.T, n *Node, want map[string]string) {
	t.Helper()
	var got map[string]string
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = map[string]string{}
		for _, s := range n.Status().Servers {
			got[s.ID] = s.Suffrage
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("configuration %v, want %v", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkClusterPropose: committed commands per second on three nodes,
// fsync on, with 1, 64 and 1024 blocking submitters spread evenly over the
// nodes (two thirds of the commands are forwarded). Default raft timing;
// the run fails if the term moves (a spurious election under load).
func BenchmarkClusterPropose(b *testing.B) {
	for _, submitters := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("submitters=%d", submitters), func(b *testing.B) {
			var nodes []*Node
			var servers []Server
			for i := range 3 {
				n, err := Open(Config{
					ID: fmt.Sprintf("b%d", i), Dir: b.TempDir(), BindAddr: "127.0.0.1:0", LogOutput: io.Discard,
					ClusterKey: testClusterKey, // as in production: every new connection authenticates
				}, &countingSM{})
				if err != nil {
					b.Fatal(err)
				}
				defer n.Close()
				nodes = append(nodes, n)
				servers = append(servers, Server{ID: n.ID(), Addr: n.Addr()})
			}
			if err := nodes[0].Bootstrap(servers); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var leader *Node
			for _, n := range nodes {
				if err := n.WaitLeader(ctx); err != nil {
					b.Fatal(err)
				}
				if n.IsLeader() {
					leader = n
				}
			}
			if leader == nil {
				b.Fatal("no leader")
			}
			term := leader.Stats().Term
			before := leader.Stats()
			cmd := make([]byte, 200)
			var left atomic.Int64
			left.Store(int64(b.N))
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for s := range submitters {
				n := nodes[s%3]
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						if _, _, err := n.Propose(context.Background(), cmd); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			after := leader.Stats()
			if after.Term != term || !leader.IsLeader() {
				b.Errorf("leader changed under load: term %d -> %d", term, after.Term)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmds/s")
			if e := after.EntriesCommitted - before.EntriesCommitted; e > 0 {
				b.ReportMetric(float64(after.CommandsProposed-before.CommandsProposed)/float64(e), "cmds/entry")
			}
		})
	}
}

// TestForwardedFailFastOnLeaderChange: commands a follower forwarded to a
// leader that then neither proposes nor refuses them (paused) are failed
// with ErrTimeout (outcome unknown) as soon as another leader is known,
// not after SubmitTimeout (ten minutes here): their clients retry with
// the new leader.
func TestForwardedFailFastOnLeaderChange(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.SubmitTimeout = 10 * time.Minute })
	l := c.leader()
	var f *testNode
	for _, tn := range c.nodes {
		if tn != l {
			f = tn
			break
		}
	}
	l.n.swallowForwardedForTest.Store(true)
	const count = 5
	errs := make(chan error, count)
	before := f.n.Stats().CommandsForwarded
	for i := range count {
		if err := f.n.Submit([]byte(fmt.Sprintf("paused-%d", i)), func(_ any, _ uint64, err error) { errs <- err }); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Eventually(t, "the commands forwarded to the paused leader", func() bool {
		return f.n.Stats().CommandsForwarded >= before+count
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.n.TransferLeadership(ctx, ""); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	for range count {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("a command forwarded to the paused leader: %v, want ErrTimeout", err)
			}
		case <-time.After(time.Minute):
			t.Fatal("commands forwarded to a paused leader still wait after a new leader was elected")
		}
	}
}
