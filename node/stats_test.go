package node_test

import "testing"

// TestStateWriteStallSeries: /metrics has the state database's write
// stall counters (engine.WriteStalls), zero on a fresh node.
func TestStateWriteStallSeries(t *testing.T) {
	n := startNode(t, t.TempDir())
	for _, s := range []string{"parley_state_write_stalls_total", "parley_state_write_stall_seconds_total"} {
		if v := metricValue(t, n, s); v != 0 {
			t.Errorf("%s = %v on a fresh node", s, v)
		}
	}
}
