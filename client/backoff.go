package client

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff returns the delay before retry number attempt (0-based): an
// exponential step from lo doubling up to hi, with "equal jitter" (a random
// point in the upper half of the step) so that many clients cut off by the
// same failure do not come back in lockstep.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := hi
	if attempt < 32 && lo<<attempt > 0 && lo<<attempt < hi {
		d = lo << attempt
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// sleep waits for d or until ctx ends; it reports whether the full wait
// elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
