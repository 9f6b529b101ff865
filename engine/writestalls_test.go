package engine

import (
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// TestWriteStallsCounted: the engine's Pebble hooks count each stall and
// the time of those that ended.
func TestWriteStallsCounted(t *testing.T) {
	e, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	l := e.stalls.listener()
	if n, d := e.WriteStalls(); n != 0 || d != 0 {
		t.Fatalf("a new engine has %d stalls (%v)", n, d)
	}
	l.WriteStallBegin(pebble.WriteStallBeginInfo{Reason: "L0 file count limit exceeded"})
	if n, d := e.WriteStalls(); n != 1 || d != 0 {
		t.Fatalf("during the first stall: %d stalls, %v; want 1, 0", n, d)
	}
	l.WriteStallEnd()
	l.WriteStallEnd() // unmatched: counts nothing
	if n, d := e.WriteStalls(); n != 1 || d < 0 || e.stalls.began.Load() != 0 {
		t.Fatalf("after the first stall: %d stalls, %v, one in progress since %d; want 1 ended", n, d, e.stalls.began.Load())
	}
	var nilStalls *writeStalls
	if nilStalls.listener() != nil {
		t.Fatal("no counter, yet a listener")
	}
}
