package node

import (
	"testing"
	"time"
)

// The last_seen a node reports is never older than the one its offline
// presence frame carried: the observation stands in until the stored value
// (written by the leader, throttled) reaches it, then it is dropped.
func TestSeenAtLeastThePresenceFrame(t *testing.T) {
	p := newPresenceTracker(time.Second)
	t0 := time.Unix(1000, 0)
	p.connected(7)
	p.disconnected(7, t0)
	off := p.sweep(t0.Add(time.Second))
	if len(off) != 1 || off[0].user != 7 {
		t.Fatalf("went offline: %+v", off)
	}
	frame := off[0].lastSeen // what the presence frame carries
	if got := p.seenAtLeast(7, 0); got != frame {
		t.Fatalf("with nothing stored yet: %d, want the frame's %d", got, frame)
	}
	if got := p.seenAtLeast(7, frame-5000); got != frame {
		t.Fatalf("with an older stored value: %d, want the frame's %d", got, frame)
	}
	if got := p.seenAtLeast(7, frame+10); got != frame+10 {
		t.Fatalf("once stored past it: %d, want the stored %d", got, frame+10)
	}
	if _, kept := p.seen[7]; kept {
		t.Fatal("the observation is kept after the stored value caught up")
	}
	if got := p.seenAtLeast(8, 42); got != 42 {
		t.Fatalf("a user never seen here: %d, want the stored 42", got)
	}
}
