package client

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"parley/wire"
)

// TestRetryDelayHonoursRetryMS: a busy reply's retry_ms is a floor for the
// wait, with jitter of up to half of it; without it the backoff applies.
func TestRetryDelayHonoursRetryMS(t *testing.T) {
	busy := fmt.Errorf("send: %w", &wire.Error{Code: wire.CodeBusy, RetryMS: 100})
	if got := RetryAfter(busy); got != 100*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want 100ms", got)
	}
	for range 1000 {
		d := retryDelay(busy, 0, 5*time.Millisecond, 10*time.Second)
		if d < 100*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("delay %v outside [100ms, 150ms]", d)
		}
		// A backoff already longer than the hint is kept.
		if d := retryDelay(busy, 20, 5*time.Millisecond, 10*time.Second); d < 5*time.Second {
			t.Fatalf("late attempt waited %v, under the backoff's lower half", d)
		}
		plain := retryDelay(errors.New("x"), 0, 5*time.Millisecond, 10*time.Second)
		if plain > 5*time.Millisecond {
			t.Fatalf("delay %v without a hint, want the first backoff step", plain)
		}
	}
}
