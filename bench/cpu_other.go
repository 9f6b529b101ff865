//go:build !unix

package bench

import "time"

// processCPU is not measured on this platform.
func processCPU() (total, system time.Duration) { return 0, 0 }
