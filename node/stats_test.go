package node_test

import (
	"os"
	"testing"
)

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

// TestCPUSystemSeries: /metrics has the node's CPU time in the kernel, a
// part of its whole CPU time.
func TestCPUSystemSeries(t *testing.T) {
	n := startNode(t, t.TempDir())
	sys := metricValue(t, n, "parley_process_cpu_system_seconds_total")
	all := metricValue(t, n, "process_cpu_seconds_total")
	if sys <= 0 || sys > all+0.05 { // read at different moments, all in clock ticks
		t.Errorf("parley_process_cpu_system_seconds_total = %v, process_cpu_seconds_total = %v", sys, all)
	}
}

// TestCPUWaitSeries: where the kernel keeps schedstat, /metrics has how
// long the node's threads waited for a CPU.
func TestCPUWaitSeries(t *testing.T) {
	if _, err := os.Stat("/proc/self/schedstat"); err != nil {
		t.Skip("no schedstat here:", err)
	}
	n := startNode(t, t.TempDir())
	if v := metricValue(t, n, "parley_process_cpu_wait_seconds_total"); v < 0 {
		t.Errorf("parley_process_cpu_wait_seconds_total = %v", v)
	}
}
