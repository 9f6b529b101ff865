package faults

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"parley/internal/nodeproc"
	"parley/node"
)

// TestRollingUpgrade rehearses docs/OPERATIONS.md's upgrade of a
// three-node cluster, one node at a time, under traffic, from the old
// build to a new one whose Raft entry format is newer (this tree built
// with a rehearsal entry version, raftlog/entry.go): both followers first,
// then the leadership moves to an upgraded node, then the old leader is
// upgraded. Between the last two steps the old leader follows a new one
// and stops, with one clear line and exit status 76, at the first entry
// in the new format; upgraded, it catches up. Every acknowledged send is
// stored once, in order, on every replica (the fault checker).
func TestRollingUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a second binary and runs three node processes")
	}
	newBin := filepath.Join(t.TempDir(), "parley-new")
	if err := nodeproc.BuildTo(newBin, "-ldflags", "-X parley/raftlog.rehearsalEntryVersion=3"); err != nil {
		t.Fatal(err)
	}
	c := startCluster(t)
	ctx := ctxFor(t, 5*time.Minute)
	var users []*user
	for i, name := range []string{"alice", "bobby", "carol"} {
		users = append(users, c.newUser(t, name, i))
	}
	dm, err := users[0].cl.OpenDirect(ctx, users[1].id)
	if err != nil {
		t.Fatal(err)
	}
	group, err := users[2].cl.CreateGroup(ctx, "all", []uint64{users[0].id, users[1].id})
	if err != nil {
		t.Fatal(err)
	}
	users[0].convs = []uint64{dm.ID, group.ID}
	users[1].convs = []uint64{dm.ID, group.ID}
	users[2].convs = []uint64{group.ID}
	tr, stopTraffic := startTraffic(t, users)
	defer stopTraffic()
	tr.waitProgress(t, "traffic on the old build", 30, 0, 1, 2)

	upgrade := func(d *daemon) {
		t.Helper()
		d.Stop()
		if err := d.RestartWith(newBin); err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		waitHealthy(t, d)
		if err := d.WaitReady(); err != nil {
			t.Fatalf("%s on the new build: %v", d.name, err)
		}
	}
	lead := c.leader(t, c.nodes...)
	followers := without(c.nodes, lead)
	for _, f := range followers {
		t.Logf("upgrade the follower %s", f.name)
		upgrade(f)
		tr.waitProgress(t, "traffic after upgrading "+f.name, 30, 0, 1, 2)
	}
	t.Logf("move the leadership from %s to %s", lead.name, followers[0].name)
	if err := c.admin(lead).TransferLeader(ctx, followers[0].name); err != nil {
		// The old leader may stop (below) before it answers: the
		// transfer is judged by what follows.
		t.Logf("transfer leadership: %v", err)
	}
	// The new leader writes the new format; the old build stops at it.
	select {
	case <-lead.Exited():
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s on the old build went on past entries of the new format", lead.name)
	}
	if code := lead.ExitCode(); code != node.ExitNewerVersion {
		t.Fatalf("%s exited with %d, want %d\n%s", lead.name, code, node.ExitNewerVersion, lead.Logs())
	}
	if !strings.Contains(lead.Logs(), "a newer version of Parley wrote it") {
		t.Fatalf("%s stopped without saying why:\n%s", lead.name, lead.Logs())
	}
	tr.waitProgress(t, "traffic while the old leader is down", 30, 0, 1, 2)
	t.Logf("upgrade the former leader %s", lead.name)
	if err := lead.RestartWith(newBin); err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, lead)
	if err := lead.WaitReady(); err != nil {
		t.Fatalf("%s on the new build: %v", lead.name, err)
	}
	tr.waitProgress(t, "traffic on the new build", 30, 0, 1, 2)

	stopTraffic()
	c.converged(t, 60*time.Second)
	rec := Record{Acks: tr.acks, Replicas: make(map[string]map[uint64][]Stored)}
	for _, d := range c.nodes {
		rec.Replicas[d.name] = map[uint64][]Stored{
			dm.ID:    readHistory(t, pinned(t, d, users[0].token), dm.ID),
			group.ID: readHistory(t, pinned(t, d, users[2].token), group.ID),
		}
	}
	violations := Check(rec)
	for _, v := range violations {
		t.Error(v)
	}
	t.Logf("%d acknowledged sends through the upgrade, %d violations", len(rec.Acks), len(violations))
}
