package faults

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"parley/internal/nodeproc"
	"parley/internal/testwait"
)

// TestCheckerCatchesBrokenServer proves that the fault tests can fail: the
// same short scenario runs on three node processes built as usual, where
// the checker must find nothing, and built with -tags faultinject, where
// Apply skips the dedup of retried sends (engine/faultinject_on.go) and the
// checker must report the retried message stored twice.
//
// The scenario: two users on different nodes and a 1:1; the first sends
// five messages, all acknowledged; its node is killed with -9; its client
// fails over to another node and sends the last message again with the
// same client_msg_id, as a client does when the connection died before the
// ack arrived; then one more message; the node restarts and catches up;
// every replica's history and what each client saw go to the checker. The
// retry is driven by the test, not left to a lost ack, so the outcome does
// not depend on timing.
func TestCheckerCatchesBrokenServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a node binary and runs two three-node clusters")
	}
	broken := filepath.Join(t.TempDir(), "parley-faultinject")
	if err := nodeproc.BuildTo(broken, "-tags", "faultinject"); err != nil {
		t.Fatalf("-tags faultinject: %v", err)
	}
	for _, tc := range []struct {
		name   string
		bin    string
		broken bool
	}{
		{"correct server", parleyBin, false},
		{"server without send dedup", broken, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// startCluster runs parleyBin: point it at this binary for the
			// subtest (the faults tests do not run in parallel).
			saved := parleyBin
			parleyBin = tc.bin
			t.Cleanup(func() { parleyBin = saved })

			violations := retryAcrossKill(t)
			for _, v := range violations {
				t.Logf("checker: %s", v)
			}
			if !tc.broken {
				if len(violations) > 0 {
					t.Fatalf("the checker found %d violations on a correct server", len(violations))
				}
				return
			}
			for _, v := range violations {
				if v.Rule == "durability" && strings.Contains(v.Detail, "cmid alice-4 stored twice") {
					return
				}
			}
			t.Fatalf("the checker did not catch the server that stores a retried send twice (%d violations)", len(violations))
		})
	}
}

// retryAcrossKill runs the scenario of TestCheckerCatchesBrokenServer and
// returns what the checker finds.
func retryAcrossKill(t *testing.T) []Violation {
	c := startCluster(t)
	lead := c.leader(t, c.nodes...)
	var home, other int // alice on a follower, which is killed; bob on another node
	for i, d := range c.nodes {
		if d != lead {
			home = i
			break
		}
	}
	other = (home + 1) % len(c.nodes)
	alice := c.newUser(t, "alice-1", home)
	bob := c.newUser(t, "bobby-1", other)
	ctx := ctxFor(t, 2*time.Minute)
	dm, err := alice.cl.OpenDirect(ctx, bob.id)
	if err != nil {
		t.Fatal(err)
	}
	alice.convs = append(alice.convs, dm.ID)
	bob.convs = append(bob.convs, dm.ID)

	var acks []Ack
	send := func(i int) {
		t.Helper()
		cmid := fmt.Sprintf("alice-%d", i)
		body := "m " + cmid
		rep, err := alice.cl.SendWithID(ctx, dm.ID, cmid, body)
		if err != nil {
			t.Fatalf("send %s: %v", cmid, err)
		}
		acks = append(acks, Ack{Conv: dm.ID, Seq: rep.Seq, CMID: cmid, Body: body})
		t.Logf("send %s: seq %d duplicate=%v", cmid, rep.Seq, rep.Duplicate)
	}
	for i := range 5 {
		send(i)
	}
	// alice's node dies; her client reconnects to the next node, where she
	// sends alice-4 again.
	killed := c.nodes[home]
	t.Logf("kill -9 %s (alice's node)", killed.name)
	killed.Kill9()
	send(4)
	send(5)
	killed.restart(t)
	c.converged(t, 60*time.Second)

	rec := Record{
		Acks:     acks,
		Replicas: make(map[string]map[uint64][]Stored),
		Seen:     make(map[string]map[uint64][]uint64),
		Deduped:  true,
	}
	for _, d := range c.nodes {
		rec.Replicas[d.name] = map[uint64][]Stored{dm.ID: readHistory(t, pinned(t, d, alice.token), dm.ID)}
	}
	last := uint64(len(rec.Replicas[c.nodes[0].name][dm.ID]))
	for _, u := range []*user{alice, bob} {
		testwait.Eventually(t, fmt.Sprintf("%s to see up to seq %d", u.name, last), func() bool {
			return u.maxSeen(dm.ID) >= last
		})
		u.cl.Close()
		u.eventsWG.Wait()
		rec.Seen[u.name] = u.seen
	}
	return Check(rec)
}
