package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"parley/backup"
	"parley/client"
	"parley/internal/nodeproc"
	"parley/raftlog"
	"parley/wire"
)

// TestBackupRestoreNewCluster: a backup taken from a follower while
// writes go on; then the whole cluster is lost (kill -9, data
// directories deleted) and a new three-node cluster is seeded from the
// backup file. Every message acknowledged at or below the backup's index
// is there, none after it; a device token issued before the backup still
// connects; the new cluster takes writes after the backup's index.
func TestBackupRestoreNewCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six node processes")
	}
	c := startCluster(t)
	ctx := ctxFor(t, 3*time.Minute)
	alice, bob := c.newUser(t, "alice", 0), c.newUser(t, "bobby", 1)
	defer alice.cl.Close()
	defer bob.cl.Close()
	dm, err := alice.cl.OpenDirect(ctx, bob.id)
	if err != nil {
		t.Fatal(err)
	}
	type sent struct {
		seq, idx uint64
		body     string
	}
	var before []sent
	for i := range 10 {
		ack, err := alice.cl.Send(ctx, dm.ID, fmt.Sprintf("before %d", i))
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, sent{ack.Seq, ack.Index, fmt.Sprintf("before %d", i)})
	}

	// Back up through a follower, as parleyctl backup save does.
	lead := c.leader(t, c.nodes...)
	from := without(c.nodes, lead)[0]
	tmp, err := os.CreateTemp(t.TempDir(), "state")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.admin(from).Backup(ctx, tmp)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "parley.backup")
	out, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := backup.Write(out, backup.Meta{AppliedIndex: info.AppliedIndex, CreatedAt: time.Now().UnixMilli(), Node: info.Node, StateSHA256: info.SHA256}, tmp); err != nil {
		t.Fatal(err)
	}
	out.Close()
	t.Logf("backup of %s at index %d: %d bytes", from.name, info.AppliedIndex, info.Bytes)
	var after []sent
	for i := range 3 {
		ack, err := alice.cl.Send(ctx, dm.ID, fmt.Sprintf("after %d", i))
		if err != nil {
			t.Fatal(err)
		}
		after = append(after, sent{ack.Seq, ack.Index, ""})
	}

	// The cluster is lost.
	for _, d := range c.nodes {
		d.Kill9()
		if err := os.RemoveAll(d.Dir()); err != nil {
			t.Fatal(err)
		}
	}
	alice.cl.Close()
	bob.cl.Close()

	// A new cluster from the file: restore every member, then start them.
	root := t.TempDir()
	var proxies []*linkProxy
	var servers []raftlog.Server
	for i := range 3 {
		p := newLinkProxy(t)
		proxies = append(proxies, p)
		servers = append(servers, raftlog.Server{ID: fmt.Sprintf("r%d", i+1), Addr: p.addr()})
	}
	if _, err := backup.Restore(file+".missing", filepath.Join(root, "x"), servers); err == nil {
		t.Fatal("restored from a missing file")
	}
	var nodes []*nodeproc.Node
	for i, s := range servers {
		dir := filepath.Join(root, s.ID)
		meta, err := backup.Restore(file, dir, servers)
		if err != nil {
			t.Fatal(err)
		}
		if meta.AppliedIndex != info.AppliedIndex {
			t.Fatalf("restored index %d, backed up %d", meta.AppliedIndex, info.AppliedIndex)
		}
		if _, err := backup.Restore(file, dir, servers); err == nil {
			t.Fatal("restored over a restored directory")
		}
		n := nodeproc.Start(t, nodeproc.Options{
			Bin: parleyBin, Dir: dir, Name: s.ID,
			Args: []string{"-id", s.ID, "-advertise", s.Addr, "-bootstrap=false",
				"-admin-token-file", filepath.Join(filepath.Dir(c.nodes[0].Dir()), "admin.token"),
				"-cluster-key-file", filepath.Join(filepath.Dir(c.nodes[0].Dir()), "cluster.key")},
			NotReady: true,
		})
		proxies[i].setTarget(n.RaftBind)
		nodes = append(nodes, n)
		t.Cleanup(n.Kill9)
	}
	for _, n := range nodes {
		if err := n.WaitReady(); err != nil {
			t.Fatalf("a restored member: %v\n%s", err, n.Logs())
		}
	}

	// bob's token from before the backup connects to the new cluster.
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.WS)
	}
	cl, err := client.Dial(ctx, client.Config{URLs: urls, Token: bob.token, RequestTimeout: 5 * time.Second, ReconnectMax: 300 * time.Millisecond})
	if err != nil {
		t.Fatalf("bob's old token on the new cluster: %v", err)
	}
	defer cl.Close()
	evs, _, err := cl.History(ctx, dm.ID, wire.DirAfter, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	have := map[uint64]string{}
	for _, ev := range evs {
		have[ev.Seq] = ev.Body
	}
	for _, s := range before {
		if s.idx <= info.AppliedIndex && have[s.seq] != s.body {
			t.Errorf("message %d (index %d, at or below the backup's %d) lost: %q", s.seq, s.idx, info.AppliedIndex, have[s.seq])
		}
	}
	for _, s := range after {
		if _, ok := have[s.seq]; ok && s.idx > info.AppliedIndex {
			t.Errorf("message %d, acknowledged after the backup (index %d > %d), is in the restored cluster", s.seq, s.idx, info.AppliedIndex)
		}
	}
	ack, err := cl.Send(ctx, dm.ID, "on the new cluster")
	if err != nil {
		t.Fatal(err)
	}
	if ack.Index <= info.AppliedIndex {
		t.Fatalf("a new write at index %d, not after the backup's %d", ack.Index, info.AppliedIndex)
	}
	t.Logf("%d messages restored, the first new write at index %d", len(evs), ack.Index)
}
