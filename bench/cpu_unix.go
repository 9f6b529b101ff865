//go:build unix

package bench

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time this process has used in all (user and
// system) and in the kernel alone (system: its system calls, which for a
// load generator are mostly socket reads and writes).
func processCPU() (total, system time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	system = time.Duration(ru.Stime.Nano())
	return time.Duration(ru.Utime.Nano()) + system, system
}
