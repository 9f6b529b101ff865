//go:build unix

package node

import (
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// newCPUSystem exports parley_process_cpu_system_seconds_total, the part
// of process_cpu_seconds_total the node spent in the kernel: its system
// calls, which for a chat node are mostly socket reads and writes and the
// Raft log's fsyncs. Measured on a VM here, a small write and its read over
// loopback cost about 11 µs in the kernel, and a 1:1 message takes at least
// three, so this share tells how much of a node's CPU no code change in it
// can remove (docs/BENCHMARKS.md, "The budget").
func newCPUSystem() prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "parley_process_cpu_system_seconds_total",
		Help: "CPU time this process spent in the kernel (system calls: socket I/O, fsync); part of process_cpu_seconds_total.",
	}, func() float64 {
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
			return 0 // cannot fail for this process
		}
		return float64(ru.Stime.Nano()) / 1e9
	})
}
