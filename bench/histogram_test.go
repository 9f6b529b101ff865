package bench

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// within reports whether got is within the histogram's 0.1% of want.
func within(got, want int64) bool {
	return math.Abs(float64(got-want)) <= math.Max(1, float64(want)/1000)
}

func TestHistogramPercentiles(t *testing.T) {
	h := NewHistogram()
	// 1..10000 µs once each: the q-th percentile is q*100 µs.
	for us := 1; us <= 10000; us++ {
		h.Record(time.Duration(us) * time.Microsecond)
	}
	s := h.Summary()
	want := Summary{Count: 10000, P50: 5000, P90: 9000, P99: 9900, P999: 9990, Max: 10000}
	if s.Count != want.Count || !within(s.P50, want.P50) || !within(s.P90, want.P90) ||
		!within(s.P99, want.P99) || !within(s.P999, want.P999) || !within(s.Max, want.Max) {
		t.Fatalf("got %+v, want about %+v", s, want)
	}
	if q := h.Quantile(50); q < 4995*time.Microsecond || q > 5005*time.Microsecond {
		t.Fatalf("Quantile(50) = %v", q)
	}
}

func TestHistogramTail(t *testing.T) {
	// 999 fast values and one slow: p99 stays fast, p99.9 and max see it.
	h := NewHistogram()
	for range 999 {
		h.Record(time.Millisecond)
	}
	h.Record(2 * time.Second)
	s := h.Summary()
	if !within(s.P99, 1000) || !within(s.P999, 1000) || !within(s.Max, 2_000_000) {
		t.Fatalf("got %+v", s)
	}
	h.Record(2 * time.Second) // now 2 of 1001 are slow: above p99.9
	if s := h.Summary(); !within(s.P999, 2_000_000) {
		t.Fatalf("p99.9 with two slow values: %+v", s)
	}
}

func TestHistogramEmptyAndEdges(t *testing.T) {
	h := NewHistogram()
	if s := h.Summary(); s != (Summary{}) {
		t.Fatalf("empty: %+v", s)
	}
	h.Record(-time.Second) // a clock step: counted as zero
	h.Record(time.Hour)    // above the range: clamped
	s := h.Summary()
	if s.Count != 2 || s.Clamped != 1 || !within(s.Max, histHighestMicros) {
		t.Fatalf("got %+v", s)
	}
}

func TestHistogramMergeAndJSON(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	for range 100 {
		a.Record(time.Millisecond)
		a.Record(time.Millisecond)
		b.Record(3 * time.Millisecond)
	}
	b.Record(time.Hour)
	raw, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Histogram
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if back.Summary() != b.Summary() {
		t.Fatalf("round trip: %+v, want %+v", back.Summary(), b.Summary())
	}
	a.Merge(&back)
	a.Merge(nil)
	s := a.Summary()
	if s.Count != 301 || s.Clamped != 1 || !within(s.P50, 1000) || !within(s.P90, 3000) {
		t.Fatalf("merged: %+v", s)
	}
}

func TestHistogramRefusesForeignGeometry(t *testing.T) {
	enc, err := hdr.New(1, 1000, 2).Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(histogramJSON{HDR: string(enc)})
	var h Histogram
	if err := json.Unmarshal(raw, &h); err == nil || !strings.Contains(err.Error(), "geometry") {
		t.Fatalf("got %v", err)
	}
	if err := json.Unmarshal([]byte(`{"hdr":"not base64!"}`), &h); err == nil {
		t.Fatal("decoded garbage")
	}
}

func TestRecorderShards(t *testing.T) {
	r := newRecorder()
	for i := range 800 {
		r.record(i, time.Duration(i%8+1)*time.Millisecond)
	}
	m := r.merged()
	if m.Count() != 800 || !within(m.Summary().Max, 8000) {
		t.Fatalf("merged %+v", m.Summary())
	}
}

func BenchmarkRecorder(b *testing.B) {
	r := newRecorder()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			r.record(i, time.Duration(i)*time.Microsecond)
			i++
		}
	})
}
