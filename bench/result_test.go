package bench

import (
	"fmt"
	"testing"
	"time"
)

func TestResultMerge(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lat := func(d time.Duration, n int) map[string]*Histogram {
		h := NewHistogram()
		for range n {
			h.Record(d)
		}
		return map[string]*Histogram{"deliver": h}
	}
	a := &Result{
		Workers: 1, Conns: 10, Sent: 100, Acked: 90, Delivered: 89, Undelivered: 1,
		Retries: map[string]int64{"busy": 2},
		Start:   t0.Add(time.Second), End: t0.Add(5 * time.Second),
		Latency: lat(time.Millisecond, 89),
		Errors:  []string{"x"},
	}
	b := &Result{
		Workers: 1, Conns: 5, ConnFailures: 1, Dropped: 2, Pings: 3, Sent: 50, Acked: 50, Delivered: 50,
		Duplicates: 4, Missed: 6, BadBodies: 7,
		Retries: map[string]int64{"busy": 1, "rate_limited": 5},
		Failed:  map[string]int64{"timeout": 1},
		Start:   t0, End: t0.Add(4 * time.Second),
		Latency: map[string]*Histogram{"deliver": lat(3*time.Millisecond, 50)["deliver"], "ack": NewHistogram()},
		Errors:  []string{"x", "y"},
	}
	var m Result
	m.Merge(a)
	m.Merge(b)
	want := Result{
		Workers: 2, Conns: 15, ConnFailures: 1, Dropped: 2, Pings: 3, Sent: 150, Acked: 140, Duplicates: 4,
		Delivered: 139, Undelivered: 1, Missed: 6, BadBodies: 7,
	}
	got := m
	got.Retries, got.Failed, got.Latency, got.Errors, got.Start, got.End = nil, nil, nil, nil, time.Time{}, time.Time{}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counts:\n got %+v\nwant %+v", got, want)
	}
	if m.Retries["busy"] != 3 || m.Retries["rate_limited"] != 5 || m.Failed["timeout"] != 1 {
		t.Fatalf("per-code counts: %v %v", m.Retries, m.Failed)
	}
	if !m.Start.Equal(t0) || !m.End.Equal(t0.Add(5*time.Second)) || m.Elapsed() != 5*time.Second {
		t.Fatalf("window %v..%v", m.Start, m.End)
	}
	if d := m.Latency["deliver"]; d.Count() != 139 || !within(d.Summary().P90, 3000) {
		t.Fatalf("deliver histogram %+v", d.Summary())
	}
	if m.Latency["ack"] == nil {
		t.Fatal("a histogram only one side has was lost")
	}
	if len(m.Errors) != 2 {
		t.Fatalf("errors not deduplicated: %q", m.Errors)
	}
	// Merging must not alias the inputs' maps.
	m.Retries["busy"]++
	if a.Retries["busy"] != 2 || b.Retries["busy"] != 1 {
		t.Fatal("merge aliased an input's map")
	}
}

func TestResultErrorsBounded(t *testing.T) {
	var r Result
	for i := range 3 * maxErrors {
		r.Merge(&Result{Errors: []string{fmt.Sprint("error ", i)}})
	}
	if len(r.Errors) != maxErrors {
		t.Fatalf("%d errors kept", len(r.Errors))
	}
}

func TestResultElapsedWithoutWindow(t *testing.T) {
	if (&Result{}).Elapsed() != 0 {
		t.Fatal("empty result has a duration")
	}
}

func TestSplitSizes(t *testing.T) {
	cases := []struct {
		n, per int
		want   string
	}{
		{0, 5, "[]"}, {1, 5, "[1]"}, {5, 5, "[5]"}, {6, 5, "[3 3]"}, {15000, 5000, "[5000 5000 5000]"}, {15001, 5000, "[3751 3750 3750 3750]"},
	}
	for _, c := range cases {
		if got := fmt.Sprint(splitSizes(c.n, c.per)); got != c.want {
			t.Errorf("splitSizes(%d, %d) = %s, want %s", c.n, c.per, got, c.want)
		}
	}
	if got := fmt.Sprint(rotate([]string{"a", "b", "c"}, 4)); got != "[b c a]" {
		t.Errorf("rotate = %s", got)
	}
}
