package node_test

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"parley/node"
	"parley/wire"
)

// metricValue reads one unlabelled (or exactly labelled) series from /metrics.
func metricValue(t *testing.T, n *node.Node, series string) float64 {
	t.Helper()
	resp, err := http.Get(n.HTTPURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("series %s not in /metrics", series)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A device offline while hundreds of its conversations changed catches up in
// bounded pages, and gets every conversation.
func TestSyncAfterLongAbsenceIsPaged(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	bobTok := login(t, n, bob, "phone")
	const convs = 230 // over two full pages of 100
	for i := range convs {
		g, err := ca.CreateGroup(ctx, fmt.Sprintf("g%d", i), []uint64{bob.user})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ca.Send(ctx, g.ID, fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	syncsBefore := metricValue(t, n, `parley_requests_total{type="sync"}`)
	cb := dial(t, []string{n.WSURL()}, bobTok, 0)
	got := collect(t, cb, "catch up", func(evs []wire.Event) bool { return len(messages(evs)) == convs })
	checkOrder(t, got)
	seen := map[uint64]bool{}
	for _, e := range messages(got) {
		seen[e.Conv] = true
	}
	if len(seen) != convs {
		t.Fatalf("messages from %d conversations, want %d", len(seen), convs)
	}
	if pages := metricValue(t, n, `parley_requests_total{type="sync"}`) - syncsBefore; pages < 3 {
		t.Fatalf("%v sync pages for %d conversations; want >= 3 pages of at most %d", pages, convs, wire.MaxSyncConvs)
	}
}

// After a snapshot (which truncates the Raft log) and a clean restart, the
// node has all its state and rebuilt its in-memory indexes: membership is
// enforced, seqs continue, and delivery reaches the members.
func TestRestartAfterSnapshotRebuildsState(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	ctx := ctxT(t)
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	aliceTok, bobTok, carolTok := login(t, n, alice, "phone"), login(t, n, bob, "phone"), login(t, n, carol, "phone")
	ca := dial(t, []string{n.WSURL()}, aliceTok, 0)
	g, err := ca.CreateGroup(ctx, "team", []uint64{bob.user})
	if err != nil {
		t.Fatal(err)
	}
	var last *wire.Reply
	for i := range 20 {
		if last, err = ca.Send(ctx, g.ID, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	ca.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2 := startNode(t, dir)
	ca = dial(t, []string{n2.WSURL()}, aliceTok, 0) // tokens survive: the key is persisted
	cb := dial(t, []string{n2.WSURL()}, bobTok, 0)
	cc := dial(t, []string{n2.WSURL()}, carolTok, 0)
	next, err := ca.Send(ctx, g.ID, "after restart")
	if err != nil {
		t.Fatal(err)
	}
	if next.Seq != last.Seq+1 {
		t.Fatalf("seq after restart %d, want %d", next.Seq, last.Seq+1)
	}
	if _, err := cc.Send(ctx, g.ID, "intruder"); !isCode(err, wire.CodeNotMember) {
		t.Fatalf("non-member after restart: %v", err)
	}
	got := collect(t, cb, "bob after restart", func(evs []wire.Event) bool {
		for _, e := range evs {
			if e.Seq == next.Seq {
				return true
			}
		}
		return false
	})
	checkOrder(t, got)
	if len(messages(got)) != 21 {
		t.Fatalf("bob has %d messages, want 21", len(messages(got)))
	}
}

// A node that cannot start (here: its WebSocket port is taken) fails cleanly
// and releases what it opened, so the data directory can be opened again.
func TestOpenFailureReleasesResources(t *testing.T) {
	dir := t.TempDir()
	first := startNode(t, t.TempDir())
	cfg := testConfig(dir)
	cfg.WSAddr = strings.TrimPrefix(first.WSURL(), "ws://")
	cfg.WSAddr = strings.TrimSuffix(cfg.WSAddr, "/v1/ws")
	if n, err := node.Open(cfg); err == nil {
		n.Close()
		t.Fatal("opened on a taken port")
	}
	startNode(t, dir) // the state and log DBs were closed: this opens them again
}
