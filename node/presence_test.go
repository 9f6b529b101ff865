package node

import (
	"testing"
	"time"
)

func TestPresenceGraceAndWatches(t *testing.T) {
	p := newPresenceTracker(5 * time.Second)
	t0 := time.Unix(1000, 0)
	if !p.connected(1) {
		t.Fatal("first connection must bring the user online")
	}
	if p.connected(1) {
		t.Fatal("already online")
	}
	// A blip: disconnect and reconnect inside the grace period: no change.
	p.disconnected(1, t0)
	if off := p.sweep(t0.Add(4 * time.Second)); len(off) != 0 {
		t.Fatalf("offline inside grace: %v", off)
	}
	if p.connected(1) || !p.isOnline(1) {
		t.Fatal("reconnect in grace must not flap")
	}
	// A real departure: offline once grace ends, exactly once.
	p.disconnected(1, t0.Add(10*time.Second))
	if !p.isOnline(1) {
		t.Fatal("offline before grace ended")
	}
	if off := p.sweep(t0.Add(15 * time.Second)); len(off) != 1 || off[0].user != 1 || off[0].online {
		t.Fatalf("sweep after grace: %v", off)
	}
	if p.isOnline(1) || len(p.sweep(t0.Add(20*time.Second))) != 0 {
		t.Fatal("offline must be reported once")
	}
	if !p.connected(1) {
		t.Fatal("coming back after going offline is an online transition")
	}

	a, b := &session{user: 10}, &session{user: 11}
	p.watch(a, []uint64{1, 2})
	p.watch(b, []uint64{2})
	if len(p.watchersOf(2)) != 2 || len(p.watchersOf(1)) != 1 {
		t.Fatal("watchers")
	}
	p.watch(a, []uint64{3}) // replaces
	if len(p.watchersOf(1)) != 0 || len(p.watchersOf(2)) != 1 || len(p.watchersOf(3)) != 1 {
		t.Fatal("watch must replace the previous list")
	}
	p.forget(a)
	p.forget(b)
	if len(p.watchers) != 0 || len(p.watching) != 0 {
		t.Fatal("forget leaks")
	}
}
