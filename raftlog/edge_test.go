package raftlog

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"parley/internal/testwait"
)

// watchCandidacy counts the times n's raft becomes a candidate.
func watchCandidacy(n *Node, count *atomic.Int64) {
	n.raft.RegisterObserver(raft.NewObserver(make(chan raft.Observation, 1), false, func(o *raft.Observation) bool {
		if s, ok := o.Data.(raft.RaftState); ok && s == raft.Candidate {
			count.Add(1)
		}
		return false
	}))
}

// TestClusterEdges: three voters and two edges. An edge joins as a
// nonvoter (by itself, and added from a voter), catches up by snapshot,
// takes writes, shows in the leader's Status with its region and lag, and
// is never promoted: not by Promote, AddVoter or a transfer, not after a
// restart without the edge flag, not after a leader change. Cut off, it
// refuses writes and catches up once healed. It never
// becomes a candidate, and the quorum stays the voters': with two of the
// three voters down, nothing commits, even with both edges up.
func TestClusterEdges(t *testing.T) {
	compact := func(cfg *Config) {
		cfg.TrailingLogs = 8
		cfg.SnapshotThreshold = 1 << 30 // only explicit snapshots
	}
	c := newCluster(t, 3, compact)
	m := newModel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 30 {
		m.proposeUntilOK(c.nodes[i%3], "early")
	}
	l := c.leader()
	if err := l.n.Snapshot(); err != nil {
		t.Fatal(err)
	}

	var candidacies atomic.Int64
	edge := func(id, region string) *testNode {
		tn := &testNode{id: id, dir: t.TempDir(), addr: "127.0.0.1:0", sm: newMemSM()}
		c.nodes = append(c.nodes, tn)
		c.start(tn, func(cfg *Config) {
			compact(cfg)
			cfg.Edge, cfg.Region = true, region
		})
		watchCandidacy(tn.n, &candidacies)
		return tn
	}
	e1, e2 := edge("e1", "eu"), edge("e2", "us")
	if !e1.n.IsEdge() || e1.n.Region() != "eu" {
		t.Fatalf("e1: edge %v region %q", e1.n.IsEdge(), e1.n.Region())
	}
	if err := e1.n.Bootstrap([]Server{{ID: "e1", Addr: e1.addr}}); err == nil {
		t.Fatal("an edge bootstrapped a cluster")
	}
	// e1 joins by itself through a voter (Join sees it is an edge); e2 is
	// added from a voter. Both twice: harmless.
	for range 2 {
		if err := e1.n.Join(ctx, c.nodes[1].addr); err != nil {
			t.Fatalf("edge join: %v", err)
		}
		if err := c.nodes[2].n.AddEdge(ctx, "e2", e2.addr); err != nil {
			t.Fatalf("add edge: %v", err)
		}
	}
	voters := c.nodes[:3]
	all := map[string]string{"n1": "voter", "n2": "voter", "n3": "voter", "e1": "nonvoter", "e2": "nonvoter"}
	requireServers(t, e2.n, all)

	// A server started without the edge role is refused as an edge and
	// stays a nonvoter until removed.
	plain := &testNode{id: "p1", dir: t.TempDir(), addr: "127.0.0.1:0", sm: newMemSM()}
	c.start(plain, nil)
	if err := c.nodes[0].n.AddEdge(ctx, "p1", plain.addr); !errors.Is(err, ErrNotEdge) {
		t.Fatalf("adding a plain server as an edge: %v, want ErrNotEdge", err)
	}
	if err := c.nodes[0].n.RemoveServer(ctx, "p1"); err != nil {
		t.Fatal(err)
	}
	plain.n.Close()

	// Both edges caught up by snapshot (the leader's log starts after the
	// early writes), take writes, and apply everyone's.
	for _, e := range []*testNode{e1, e2} {
		m.proposeUntilOK(e, e.id)
		if _, _, restores := e.sm.state(); restores != 1 {
			t.Fatalf("%s restored %d snapshots, want 1", e.id, restores)
		}
	}
	m.barrier(c, c.nodes[0], c.nodes[1], c.nodes[2], e1, e2)

	// The leader's Status shows the edges, their regions and progress.
	testwait.Eventually(t, "edges in the leader's status", func() bool {
		st, err := e1.n.LeaderStatus(ctx)
		if err != nil {
			return false
		}
		edges := 0
		for _, s := range st.Servers {
			if s.Edge && s.Suffrage == "nonvoter" && s.HasProgress && s.Lag <= 2 &&
				((s.ID == "e1" && s.Region == "eu") || (s.ID == "e2" && s.Region == "us")) {
				edges++
			}
			if !s.Edge && s.ID[0] == 'e' {
				return false
			}
		}
		return edges == 2
	})

	// Never promoted: Promote, AddVoter (a plain join), a transfer.
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrEdge) {
			t.Fatalf("%s: %v, want ErrEdge", what, err)
		}
	}
	refused("promote e1", c.nodes[0].n.Promote(ctx, "e1"))
	refused("add e2 as a voter", e1.n.AddVoter(ctx, "e2", e2.addr))
	refused("transfer to e1", c.nodes[1].n.TransferLeadership(ctx, "e1"))

	// Restarted without the flag (and with Bootstrap), e1 is still an edge.
	e1.n.Close()
	e1.n = nil
	c.start(e1, func(cfg *Config) {
		compact(cfg)
		cfg.Bootstrap = true
	})
	watchCandidacy(e1.n, &candidacies)
	if !e1.n.IsEdge() {
		t.Fatal("e1 restarted without the flag is no longer an edge")
	}
	m.proposeUntilOK(e1, "e1-restarted")
	refused("promote e1 after its restart", c.nodes[2].n.Promote(ctx, "e1"))

	// After a leader change too.
	old := c.leader(voters...)
	if err := e2.n.TransferLeadership(ctx, ""); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, "another leader", func() bool { return c.leader(voters...) != old })
	m.proposeUntilOK(e2, "after-transfer")
	refused("promote e2 under the new leader", e1.n.Promote(ctx, "e2"))
	requireServers(t, e1.n, all)
	pos := m.barrier(c, c.nodes[0], c.nodes[1], c.nodes[2], e1, e2)
	m.check(pos, c.nodes[0], c.nodes[1], c.nodes[2], e1, e2)

	// An edge cut off (its region's link down, both ways) refuses writes
	// at once: its forwarder cannot reach the leader. The core goes on,
	// and the edge catches up when the link returns.
	e2.n.mux.isolate(true)
	for i := range 3 {
		if err := m.propose(e2, m.name("cut-off")); !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrTimeout) {
			t.Fatalf("write %d on a cut-off edge: %v, want ErrNotLeader or ErrTimeout", i, err)
		}
	}
	for range 20 {
		m.proposeUntilOK(c.nodes[0], "while-cut")
	}
	e2.n.mux.isolate(false)
	m.proposeUntilOK(e2, "healed")
	pos = m.barrier(c, c.nodes[0], c.nodes[1], c.nodes[2], e1, e2)
	m.check(pos, c.nodes[0], c.nodes[1], c.nodes[2], e1, e2)

	// The quorum is the voters': with two of three down nothing commits,
	// although three of the five servers are up.
	lead := c.leader(voters...)
	var survivor *testNode
	for _, v := range voters {
		if v != lead && survivor == nil {
			survivor = v
			continue
		}
		c.crash(v)
	}
	for _, e := range []*testNode{e1, e2} {
		testwait.Eventually(t, e.id+" to lose the leader", func() bool { return e.n.LeaderAddr() == "" })
	}
	testwait.Eventually(t, "the surviving voter to lose the leader", func() bool { return survivor.n.LeaderAddr() == "" })
	before := survivor.n.Status().CommitIndex
	for _, tn := range []*testNode{e1, e2, survivor} {
		if err := m.propose(tn, m.name("no-quorum")); err == nil {
			t.Fatalf("a write on %s committed with one voter of three", tn.id)
		}
	}
	if st := survivor.n.Status(); st.CommitIndex != before || st.State == "Leader" {
		t.Fatalf("survivor: state %s, commit %d -> %d", st.State, before, st.CommitIndex)
	}
	for _, e := range []*testNode{e1, e2} {
		if st := e.n.Status(); st.State != "Follower" {
			t.Fatalf("%s is %s", e.id, st.State)
		}
	}
	if n := candidacies.Load(); n != 0 {
		t.Fatalf("edges became candidates %d times", n)
	}
}

func TestMemberFrame(t *testing.T) {
	for _, m := range []memberFrame{{}, {flags: memberFlagEdge}, {flags: memberFlagEdge, region: "eu-west"}, {region: "us"}, {flags: 6}} {
		buf := appendMember(nil, m)
		got, err := decodeMember(buf[frameHeader:])
		if err != nil || got != m {
			t.Fatalf("%+v: decoded %+v, %v", m, got, err)
		}
	}
	for _, p := range [][]byte{nil, {0}, {0, 3, 'a'}, {0x80}} {
		if _, err := decodeMember(p); err == nil {
			t.Fatalf("decoded %v", p)
		}
	}
}

// FuzzDecodeMember: the member frame a follower sends its leader; a valid
// one re-encodes to the same bytes, anything else is refused without a
// panic.
func FuzzDecodeMember(f *testing.F) {
	f.Add(appendMember(nil, memberFrame{flags: memberFlagEdge, region: "eu-west"})[frameHeader:])
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := decodeMember(p)
		if err != nil {
			return
		}
		if re := appendMember(nil, m)[frameHeader:]; !bytes.Equal(re, p) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", p, re)
		}
	})
}
