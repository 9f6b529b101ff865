package node_test

import (
	"testing"
	"time"

	"parley/internal/testwait"
)

// TestSendRetention: the leader forgets a send's client_msg_id after the
// retention, and not before: a retry within it is a duplicate, a retry after
// it a new message.
func TestSendRetention(t *testing.T) {
	clk := &fakeClock{now: time.Now()}
	cfg := testConfig(t.TempDir())
	cfg.Clock = clk.Now
	cfg.SignalTick = 5 * time.Millisecond
	cfg.SendRetention = 2 * time.Hour
	cfg.ExpireSendsEvery = time.Millisecond
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	ctx := ctxT(t)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	first, err := ca.SendWithID(ctx, dm.ID, "cmid-1", "hello")
	if err != nil {
		t.Fatal(err)
	}

	// Within the retention (the sweeps run meanwhile): a duplicate.
	// The sweeps follow the node's clock: one runs after each move of it.
	sweeps := metricValue(t, n, "parley_send_expiry_sweeps_total")
	clk.Advance(time.Hour)
	testwait.Eventually(t, "a sweep at the new time", func() bool {
		return metricValue(t, n, "parley_send_expiry_sweeps_total") >= sweeps+1
	})
	if v := metricValue(t, n, "parley_sends_expired_total"); v != 0 {
		t.Fatalf("%v records expired within the retention", v)
	}
	again, err := ca.SendWithID(ctx, dm.ID, "cmid-1", "hello")
	if err != nil || !again.Duplicate || again.Seq != first.Seq {
		t.Fatalf("retry within the retention: %+v, %v; want a duplicate of seq %d", again, err, first.Seq)
	}

	// After it: the record is swept, and the same cmid is a new message.
	clk.Advance(2 * time.Hour)
	testwait.Eventually(t, "the record to expire", func() bool { return metricValue(t, n, "parley_sends_expired_total") >= 1 })
	later, err := ca.SendWithID(ctx, dm.ID, "cmid-1", "hello")
	if err != nil || later.Duplicate || later.Seq <= first.Seq {
		t.Fatalf("retry after the retention: %+v, %v; want a new message", later, err)
	}
}
