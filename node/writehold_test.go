package node_test

import (
	"fmt"
	"testing"

	"parley/internal/testwait"
	"parley/wire"
)

// TestAckAndEchoLeaveInOneWrite: the reply to a send and the echo of the
// message to the same connection leave in one socket write (writehold.go).
// Each send below is three frames (alice's ack and echo, bob's event); the
// hold saves one write per send, so frames minus writes grows by at least
// one per send. Without the hold the ack leaves as soon as the callback
// queues it, before the fan-out stage queues the echo.
func TestAckAndEchoLeaveInOneWrite(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	ctx := ctxT(t)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	const sends = 20
	before := n.WSStatsForTest()
	for i := range sends {
		ack, err := ca.Send(ctx, dm.ID, fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatal(err)
		}
		collect(t, cb, "bob receives", func(evs []wire.Event) bool {
			return len(evs) > 0 && evs[len(evs)-1].Seq == ack.Seq
		})
		collect(t, ca, "alice's echo", func(evs []wire.Event) bool {
			return len(evs) > 0 && evs[len(evs)-1].Seq == ack.Seq
		})
	}
	// The loops count a write after it returns, which may be after the
	// client read it: wait for the 3 frames of each send to be counted.
	testwait.Eventually(t, "frames counted", func() bool {
		return n.WSStatsForTest().FramesOut-before.FramesOut >= 3*sends
	})
	after := n.WSStatsForTest()
	frames, writes := after.FramesOut-before.FramesOut, after.FrameWrites-before.FrameWrites
	if saved := frames - writes; saved < sends {
		t.Fatalf("%d sends: %d frames in %d writes; want at least one write saved per send", sends, frames, writes)
	}
}
