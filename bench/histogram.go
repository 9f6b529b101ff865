package bench

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// The latency histograms record microseconds with three significant digits
// (0.1% resolution) from 1 µs to 10 minutes: about 160 KiB of counters each,
// so a worker keeps a few sharded ones, never one per connection.
const (
	histLowestMicros  = 1
	histHighestMicros = int64(10 * time.Minute / time.Microsecond)
	histSigFigs       = 3
)

// Histogram is an HDR latency histogram. It is not safe for concurrent use:
// recorders shard it behind mutexes (see recorder), and results merge
// finished ones.
type Histogram struct {
	h *hdr.Histogram
	// clamped counts values above the range, recorded as the highest
	// trackable value so they still weigh on the percentiles and the max.
	clamped int64
	// timeline is the same values by the second they were measured in, for
	// charts; nil when not kept (see recorder).
	timeline *Timeline
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdr.New(histLowestMicros, histHighestMicros, histSigFigs)}
}

// Record adds one latency. Negative durations (clock steps between the
// stamping and the measuring goroutine) count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := max(d.Microseconds(), 0)
	if us > histHighestMicros {
		us = histHighestMicros
		h.clamped++
	}
	// In range by construction, so RecordValue cannot fail.
	_ = h.h.RecordValue(us)
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil {
		return
	}
	h.h.Merge(o.h) // same geometry: nothing is dropped
	h.clamped += o.clamped
	if o.timeline != nil {
		if h.timeline == nil {
			h.timeline = newTimeline()
		}
		h.timeline.Merge(o.timeline)
	}
}

// Timeline returns the values by the time they were measured, or nil when
// the histogram kept none.
func (h *Histogram) Timeline() *Timeline { return h.timeline }

// Count is the number of values recorded.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Quantile returns the value at quantile q (0 to 100), with the
// histogram's 0.1% resolution.
func (h *Histogram) Quantile(q float64) time.Duration {
	return time.Duration(h.h.ValueAtQuantile(q)) * time.Microsecond
}

// Summary is the reported shape of a histogram: the count, the usual
// percentiles and the maximum, in microseconds.
type Summary struct {
	Count   int64 `json:"count"`
	P50     int64 `json:"p50_us"`
	P90     int64 `json:"p90_us"`
	P99     int64 `json:"p99_us"`
	P999    int64 `json:"p99_9_us"`
	Max     int64 `json:"max_us"`
	Clamped int64 `json:"clamped,omitempty"` // values above 10 minutes, counted as 10 minutes
}

// Summary returns the percentiles of h.
func (h *Histogram) Summary() Summary {
	if h.Count() == 0 {
		return Summary{}
	}
	return Summary{
		Count:   h.Count(),
		P50:     h.h.ValueAtQuantile(50),
		P90:     h.h.ValueAtQuantile(90),
		P99:     h.h.ValueAtQuantile(99),
		P999:    h.h.ValueAtQuantile(99.9),
		Max:     h.h.Max(),
		Clamped: h.clamped,
	}
}

// histogramJSON is how a histogram travels from a worker to the
// coordinator: the standard compressed HDR encoding (base64), which any HDR
// tool reads, plus the clamped count.
type histogramJSON struct {
	HDR      string    `json:"hdr"`
	Clamped  int64     `json:"clamped,omitempty"`
	Timeline *Timeline `json:"timeline,omitempty"`
}

// MarshalJSON encodes h losslessly.
func (h *Histogram) MarshalJSON() ([]byte, error) {
	enc, err := h.h.Encode(hdr.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, fmt.Errorf("bench: encode histogram: %w", err)
	}
	return json.Marshal(histogramJSON{HDR: string(enc), Clamped: h.clamped, Timeline: h.timeline})
}

// UnmarshalJSON decodes what MarshalJSON wrote. A histogram of another
// geometry is refused: merging it would silently lose precision.
func (h *Histogram) UnmarshalJSON(b []byte) error {
	var j histogramJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	d, err := hdr.Decode([]byte(j.HDR))
	if err != nil {
		return fmt.Errorf("bench: decode histogram: %w", err)
	}
	if d.LowestTrackableValue() != histLowestMicros || d.HighestTrackableValue() < histHighestMicros ||
		d.SignificantFigures() != histSigFigs {
		return fmt.Errorf("bench: histogram geometry %d..%d/%d is not this harness's",
			d.LowestTrackableValue(), d.HighestTrackableValue(), d.SignificantFigures())
	}
	h.h, h.clamped, h.timeline = d, j.Clamped, j.Timeline
	return nil
}

// recorder is a histogram that many goroutines record into: a few shards,
// each behind its own mutex, so receivers on different connections rarely
// contend. Callers pick a shard by any stable number of theirs. It also
// keeps the values' Timeline, behind one mutex of its own: a record there
// is a few tens of nanoseconds, far from the cost of what is measured.
type recorder struct {
	shards [recorderShards]struct {
		mu sync.Mutex // guards h
		h  *Histogram
		_  [40]byte // keep shards on separate cache lines
	}
	tmu      sync.Mutex // guards timeline
	timeline *Timeline
}

const recorderShards = 8

func newRecorder() *recorder {
	r := new(recorder)
	for i := range r.shards {
		r.shards[i].h = NewHistogram()
	}
	r.timeline = newTimeline()
	return r
}

func (r *recorder) record(key int, d time.Duration) {
	s := &r.shards[uint(key)%recorderShards]
	s.mu.Lock()
	s.h.Record(d)
	s.mu.Unlock()
	now := time.Now()
	r.tmu.Lock()
	r.timeline.Record(now, d)
	r.tmu.Unlock()
}

// merged returns the union of the shards as a new histogram, with a copy
// of the timeline.
func (r *recorder) merged() *Histogram {
	out := NewHistogram()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		out.Merge(s.h)
		s.mu.Unlock()
	}
	r.tmu.Lock()
	out.timeline = r.timeline.clone()
	r.tmu.Unlock()
	return out
}

// mergeRecorders merges each recorder of a load's fixed set.
func mergeRecorders(rs map[string]*recorder) map[string]*Histogram {
	out := make(map[string]*Histogram, len(rs))
	for name, r := range rs {
		out[name] = r.merged()
	}
	return out
}
