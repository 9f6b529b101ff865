package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"parley/wire"
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

// retryDelay is the wait before retry number attempt after err: the
// backoff, or longer when the server asked for a delay (busy's retry_ms),
// then that delay with up to half of it again as jitter, so that the
// clients it refused together do not come back together.
func retryDelay(err error, attempt int, lo, hi time.Duration) time.Duration {
	d := backoff(attempt, lo, hi)
	if ask := RetryAfter(err); ask > d {
		d = ask + rand.N(ask/2+1)
	}
	return d
}

// RetryAfter is the delay the server asked for before a retry (busy's
// retry_ms), or 0.
func RetryAfter(err error) time.Duration {
	var we *wire.Error
	if errors.As(err, &we) && we.RetryMS > 0 {
		return time.Duration(we.RetryMS) * time.Millisecond
	}
	return 0
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
