package node

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestNotifierPublishedBy: where a catch-up starts reading: the last mark
// at or before the close, or the durable progress before the first mark.
func TestNotifierPublishedBy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	nt := &notifier{reported: 7, marks: []publishMark{
		{at: t0, index: 10},
		{at: t0.Add(time.Second), index: 20},
		{at: t0.Add(2 * time.Second), index: 30},
	}}
	for _, c := range []struct {
		at   time.Time
		want uint64
	}{
		{t0.Add(-time.Millisecond), 7},
		{t0, 10},
		{t0.Add(999 * time.Millisecond), 10},
		{t0.Add(time.Second), 20},
		{t0.Add(time.Hour), 30},
	} {
		if got := nt.publishedByLocked(c.at); got != c.want {
			t.Errorf("published by %v: %d, want %d", c.at.Sub(t0), got, c.want)
		}
	}
}

// TestNotifierOfflineBacklogBounded: users waiting for a catch-up are at
// most maxOfflineBacklog; past that a new one is dropped and counted, and
// one already waiting keeps the later close.
func TestNotifierOfflineBacklogBounded(t *testing.T) {
	nt := &notifier{
		active: true, offline: make(map[uint64]int64), wake: make(chan struct{}, 1),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped"}, []string{"reason"}),
	}
	off := make(map[uint64]wentOffline, maxOfflineBacklog+10)
	for u := range uint64(maxOfflineBacklog + 10) {
		off[u+1] = wentOffline{at: 2000, closed: 1000}
	}
	nt.wentOffline(off)
	if n := len(nt.offline); n != maxOfflineBacklog {
		t.Fatalf("%d users waiting, want the bound %d", n, maxOfflineBacklog)
	}
	if n := counterValue(t, nt.dropped.WithLabelValues("queue_full")); n != 10 {
		t.Fatalf("%v dropped, want 10", n)
	}
	var waiting uint64
	for u := range nt.offline {
		waiting = u
		break
	}
	nt.wentOffline(map[uint64]wentOffline{waiting: {at: 4000, closed: 3000}})
	if nt.offline[waiting] != 3000 || len(nt.offline) != maxOfflineBacklog {
		t.Fatalf("a waiting user's later close: %d (%d waiting)", nt.offline[waiting], len(nt.offline))
	}
	if n := counterValue(t, nt.dropped.WithLabelValues("queue_full")); n != 10 {
		t.Fatalf("a waiting user counted as dropped: %v", n)
	}
}
