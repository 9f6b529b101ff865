package bench

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

func TestTimelineBuckets(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	tl := newTimeline()
	// Second 0: 1 ms ×99 and 50 ms once; second 2: 5 ms; second 1 empty.
	for range 99 {
		tl.Record(base.Add(100*time.Millisecond), time.Millisecond)
	}
	tl.Record(base.Add(900*time.Millisecond), 50*time.Millisecond)
	tl.Record(base.Add(2500*time.Millisecond), 5*time.Millisecond)

	pts := tl.Points(base.Add(-time.Second)) // the load started a second before
	if len(pts) != 2 {
		t.Fatalf("points %+v", pts)
	}
	p := pts[0]
	if p.At != 1 || p.Width != 1 || p.Count != 100 || !near(p.P50, 1000) || !near(p.P99, 1000) || !near(p.Max, 50_000) {
		t.Fatalf("first bucket %+v", p)
	}
	if q := pts[1]; q.At != 3 || q.Count != 1 || !near(q.P50, 5000) {
		t.Fatalf("second bucket %+v", q)
	}
	// A zero origin times from the first bucket.
	if pts := tl.Points(time.Time{}); pts[0].At != 0 || pts[1].At != 2 {
		t.Fatalf("from the first bucket: %+v", pts)
	}
}

// near reports whether got is within the timeline's 1% of want.
func near(got, want int64) bool {
	d := got - want
	return max(d, -d) <= max(1, want/100)
}

func TestTimelineBounded(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	tl := newTimeline()
	const secs = 1000 // far more seconds than buckets
	for s := range secs {
		tl.Record(base.Add(time.Duration(s)*time.Second), time.Duration(s+1)*time.Millisecond)
	}
	if tl.Len() > maxTimelineBuckets || tl.Width() != 8*time.Second {
		t.Fatalf("%d buckets of %v after %d seconds", tl.Len(), tl.Width(), secs)
	}
	var total int64
	pts := tl.Points(base)
	for i, p := range pts {
		total += p.Count
		if p.Width != 8 || (i > 0 && p.At != pts[i-1].At+8) {
			t.Fatalf("bucket %d: %+v after %+v", i, p, pts[i-1])
		}
	}
	if total != secs || !near(pts[len(pts)-1].Max, secs*1000) {
		t.Fatalf("%d values kept of %d; last bucket %+v", total, secs, pts[len(pts)-1])
	}
}

func TestTimelineMergeAndJSON(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	a, b := newTimeline(), newTimeline()
	a.Record(base, time.Millisecond)
	a.Record(base.Add(time.Second), time.Millisecond)
	for s := range 3 * maxTimelineBuckets / 2 { // b coarsens to 2 s
		b.Record(base.Add(time.Duration(s)*time.Second), 3*time.Millisecond)
	}
	if b.Width() != 2*time.Second {
		t.Fatalf("b width %v", b.Width())
	}
	a.Merge(b)
	pts := a.Points(base)
	if a.Width() != 2*time.Second || pts[0].Count != 4 || !near(pts[0].Max, 3000) || !near(pts[0].P50, 1000) {
		t.Fatalf("merged: width %v, first %+v", a.Width(), pts[0])
	}

	// The timeline travels inside its histogram, and survives a worker's
	// trip to the coordinator and a Result merge.
	h := NewHistogram()
	h.Record(time.Millisecond)
	h.timeline = a
	raw, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var back Histogram
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.Timeline() == nil || back.Timeline().Len() != a.Len() || back.Timeline().Width() != a.Width() {
		t.Fatalf("decoded timeline %+v", back.Timeline())
	}
	res := new(Result)
	res.Merge(&Result{Latency: map[string]*Histogram{"deliver": &back}})
	res.Merge(&Result{Latency: map[string]*Histogram{"deliver": &back}})
	if got := res.Latency["deliver"].Timeline().Points(base); got[0].Count != 2*pts[0].Count {
		t.Fatalf("after two merges: %+v", got[0])
	}

	for _, bad := range []string{
		`{"width_s":3,"buckets":[]}`,
		`{"width_s":2,"buckets":[{"t":1,"hdr":""}]}`,
		`{"width_s":1,"buckets":[{"t":1,"hdr":"not hdr"}]}`,
	} {
		if err := json.Unmarshal([]byte(bad), new(Timeline)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	// A full-precision histogram is not a timeline bucket.
	full := NewHistogram()
	enc, _ := full.h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err := json.Unmarshal([]byte(`{"width_s":1,"buckets":[{"t":1,"hdr":"`+string(enc)+`"}]}`), new(Timeline)); err == nil ||
		!strings.Contains(err.Error(), "geometry") {
		t.Errorf("a 3-digit histogram as a bucket: %v", err)
	}
}

func TestRecorderKeepsTimeline(t *testing.T) {
	r := newRecorder()
	for i := range 50 {
		r.record(i, time.Duration(i+1)*time.Millisecond)
	}
	h := r.merged()
	tl := h.Timeline()
	if tl == nil || tl.Len() < 1 || tl.Len() > 2 { // the values may straddle a second
		t.Fatalf("timeline %+v", tl)
	}
	var n int64
	for _, p := range tl.Points(time.Time{}) {
		n += p.Count
	}
	if n != 50 || h.Count() != 50 {
		t.Fatalf("%d values in the timeline, %d in the histogram", n, h.Count())
	}
	r.record(0, time.Millisecond) // merged is a copy
	n = 0
	for _, p := range h.Timeline().Points(time.Time{}) {
		n += p.Count
	}
	if n != 50 {
		t.Fatalf("recording after merged changed the copy: %d values", n)
	}
}
