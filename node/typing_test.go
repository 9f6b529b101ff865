package node

import (
	"testing"
	"time"
)

func TestTypingThrottleAndExpiry(t *testing.T) {
	tr := newTypingTracker(3*time.Second, 6*time.Second)
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	if !tr.start(1, 9, at(0)) {
		t.Fatal("first start not forwarded")
	}
	if tr.start(1, 9, at(time.Second)) || tr.start(1, 9, at(2999*time.Millisecond)) {
		t.Fatal("start forwarded inside the throttle window")
	}
	if !tr.start(2, 9, at(time.Second)) || !tr.start(1, 8, at(time.Second)) {
		t.Fatal("throttle leaks across users or conversations")
	}
	if !tr.start(1, 9, at(3*time.Second)) {
		t.Fatal("start after the window not forwarded")
	}
	// Renewals extend the expiry: the last renewal at 5s expires at 11s.
	tr.start(1, 9, at(5*time.Second))
	if got := tr.expire(at(10 * time.Second)); len(got) != 2 { // (2,9) and (1,8) started at 1s
		t.Fatalf("expired at 10s: %v", got)
	}
	if got := tr.expire(at(11 * time.Second)); len(got) != 1 || got[0] != (typingKey{1, 9}) {
		t.Fatalf("expired at 11s: %v", got)
	}
	if tr.stop(1, 9) {
		t.Fatal("stop forwarded for an expired indicator")
	}
	tr.start(1, 9, at(20*time.Second))
	if !tr.stop(1, 9) || tr.stop(1, 9) {
		t.Fatal("stop must be forwarded exactly once")
	}
	// A start/stop flood: at most one start and one stop per window.
	forwarded := 0
	for i := range 100 {
		now := at(20*time.Second + time.Duration(i)*10*time.Millisecond)
		if tr.start(1, 9, now) {
			forwarded++
		}
		if tr.stop(1, 9) {
			forwarded++
		}
	}
	if forwarded != 0 {
		t.Fatalf("flood inside the window forwarded %d events", forwarded)
	}
	if !tr.start(1, 9, at(23*time.Second)) {
		t.Fatal("start after the window not forwarded")
	}
	// Stopped indicators are forgotten once they throttle nothing.
	tr.stop(1, 9)
	tr.expire(at(40 * time.Second))
	if len(tr.active) != 0 {
		t.Fatalf("entries left: %d", len(tr.active))
	}
}
