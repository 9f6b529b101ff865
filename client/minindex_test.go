package client

import (
	"testing"

	"parley/internal/testwait"
	"parley/wire"
)

// The client carries the highest idx it has seen (an ack's, an event's,
// Config.MinIndex) as min_idx on every request, across a reconnection to
// another node too: its first sync there, and its reads after.
func TestMinIndexCarriedAcrossNodes(t *testing.T) {
	cl := newCluster(t, 2)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	n1, n2 := cl.nodes[0], cl.nodes[1]
	cfg := testConfig(tok, n1.url, n2.url)
	cfg.MinIndex = 1
	c := dial(t, cfg)
	next(t, c, 1)
	if got := cl.get(func(cl *testCluster) int { return int(cl.minIdx[wire.TypeSync]) }); got < 1 {
		t.Fatalf("first sync carried min_idx %d, want at least Config.MinIndex", got)
	}
	ack, err := c.Send(testCtx(t), g, "mine")
	if err != nil {
		t.Fatal(err)
	}
	if c.MinIndex() < ack.Index {
		t.Fatalf("MinIndex %d after an ack of idx %d", c.MinIndex(), ack.Index)
	}

	n1.kill()
	testwait.Eventually(t, "reconnection to the second node, synced", func() bool {
		st := c.State()
		return st.Connected && st.URL == n2.url && st.Synced && st.Syncs == 2
	})
	if got := uint64(cl.get(func(cl *testCluster) int { return int(cl.minIdx[wire.TypeSync]) })); got < ack.Index {
		t.Fatalf("the sync on the new node carried min_idx %d, below the ack's idx %d", got, ack.Index)
	}
	if _, _, err := c.History(testCtx(t), g, wire.DirBefore, 0, 10); err != nil {
		t.Fatal(err)
	}
	if got := uint64(cl.get(func(cl *testCluster) int { return int(cl.minIdx[wire.TypeHistory]) })); got < ack.Index {
		t.Fatalf("history on the new node carried min_idx %d, below the ack's idx %d", got, ack.Index)
	}

	// An event raises it too.
	ev := cl.post(bob, g, "theirs")
	testwait.Eventually(t, "the event's idx", func() bool { return c.MinIndex() >= ev.Index })
}
