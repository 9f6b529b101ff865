package node

import (
	"testing"
	"time"
)

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
