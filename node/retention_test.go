package node_test

import (
	"testing"
	"time"

	"parley/internal/testwait"
)

// TestRetention: with MessageRetention set, the leader's sweep deletes the
// messages older than it: history then starts at the first kept seq, and
// the conversation says so (first_seq).
func TestRetention(t *testing.T) {
	clk := &fakeClock{now: time.Now()}
	cfg := testConfig(t.TempDir())
	cfg.Clock = clk.Now
	cfg.SignalTick = 5 * time.Millisecond
	cfg.ExpireSendsEvery = time.Millisecond
	cfg.MessageRetention = 24 * time.Hour
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	a, _ := dialConn(t, n, login(t, n, alice, "phone"))
	rep := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", rep)
	dm := rep.Info.ID
	for _, body := range []string{"one", "two"} {
		wantOK(t, "send", a.do(t, map[string]any{"t": "send", "conv": dm, "cmid": body, "body": body}))
	}
	// Entries carry the real clock; the sweep's cutoff is the fake one's
	// now less a day: a day and an hour later, both messages are old.
	clk.Advance(25 * time.Hour)
	testwait.Eventually(t, "the old messages to go", func() bool {
		h := a.do(t, map[string]any{"t": "history", "conv": dm})
		return h.Type == "ok" && len(h.Events) == 0
	})
	info := a.do(t, map[string]any{"t": "conv.get", "conv": dm}).Info
	if info == nil || info.FirstSeq != info.LastSeq+1 {
		t.Fatalf("conv.get after retention: %+v", info)
	}
}
