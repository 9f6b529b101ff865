package engine

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// A failed write is told from a broken database by its system error: only
// the former ends the process with ExitStorageFailure.
func TestIsSystemError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{syscall.ENOSPC, true},
		{fmt.Errorf("pebble: wal: %w", syscall.EIO), true},
		{errors.New("pebble: corruption"), false},
		{nil, false},
	} {
		if got := isSystemError(tc.err); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
