package node_test

import (
	"testing"

	"parley/internal/testwait"
	"parley/wire"
)

// TestSignalsDoNotWaitForReadWorkers: with every read worker busy and
// their queue full, a read is answered busy at once, and typing and
// receipts are still answered ok: they are handled where they arrive.
func TestSignalsDoNotWaitForReadWorkers(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.QueryWorkers, cfg.QueryQueue = 1, 1
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	a, _ := dialConn(t, n, login(t, n, alice, "phone"))
	rep := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", rep)
	dm := rep.Info.ID
	sent := a.do(t, map[string]any{"t": "send", "conv": dm, "cmid": "m", "body": "hi"})
	wantOK(t, "send", sent)

	release := n.StallQueryWorkersForTest()
	defer release()
	wantCode(t, "history while the workers are stalled", a.do(t, map[string]any{"t": "history", "conv": dm}), wire.CodeBusy)
	wantOK(t, "typing", a.do(t, map[string]any{"t": "typing", "conv": dm, "on": true}))
	wantOK(t, "receipt", a.do(t, map[string]any{"t": "receipt", "conv": dm, "read": sent.Seq}))
	release()
	// The workers drain what was queued, then reads are served again.
	testwait.Eventually(t, "history once the workers are free", func() bool {
		return a.do(t, map[string]any{"t": "history", "conv": dm}).Type == wire.TypeOK
	})
}
