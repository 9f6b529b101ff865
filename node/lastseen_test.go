package node

import (
	"testing"
	"time"
)

func TestLastSeenThrottle(t *testing.T) {
	l := newLastSeenThrottle(time.Minute)
	t0 := time.Unix(1000, 0)
	if !l.offer(1, 100, t0) {
		t.Fatal("first value not written")
	}
	if l.offer(1, 200, t0.Add(10*time.Second)) || l.offer(1, 300, t0.Add(20*time.Second)) {
		t.Fatal("written twice inside a minute")
	}
	if got := l.due(t0.Add(59 * time.Second)); len(got) != 0 {
		t.Fatalf("due early: %v", got)
	}
	if got := l.due(t0.Add(time.Minute)); got[1] != 300 || len(got) != 1 {
		t.Fatalf("due after a minute: %v (want the newest value, 300)", got)
	}
	if got := l.due(t0.Add(2 * time.Minute)); len(got) != 0 {
		t.Fatalf("nothing pending: %v", got)
	}
	if len(l.written) != 0 {
		t.Fatal("idle users not forgotten")
	}
	if !l.offer(1, 400, t0.Add(3*time.Minute)) {
		t.Fatal("a write after a quiet minute goes at once")
	}
}
