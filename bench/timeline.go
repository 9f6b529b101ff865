package bench

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Timeline is latency over time: one coarse HDR histogram per bucket of
// wall-clock time, keyed by the bucket's start in Unix seconds (a multiple
// of its width). Buckets sit on the Unix clock rather than on a run's
// start, so the timelines of workers that started a moment apart still
// merge bucket by bucket, exactly.
//
// A value is filed under the time it was measured (a delivery's arrival,
// an ack's return), so a stall shows as a gap followed by a bucket of long
// latencies.
//
// Memory is bounded: a bucket costs about 24 KiB (two significant digits,
// 1% resolution, enough for a chart); past maxTimelineBuckets the width
// doubles and neighbouring buckets merge, so a run of an hour keeps
// 16-second buckets. Not safe for concurrent use: recorder locks it.
type Timeline struct {
	width   int64                    // seconds per bucket: 1, 2, 4, …
	buckets map[int64]*hdr.Histogram // bucket start, Unix seconds → values in µs
}

const (
	timelineSigFigs    = 2
	maxTimelineBuckets = 180 // 3 minutes at 1 s; ~4.3 MiB at most
)

func newTimeline() *Timeline {
	return &Timeline{width: 1, buckets: make(map[int64]*hdr.Histogram)}
}

func newTimelineHist() *hdr.Histogram {
	return hdr.New(histLowestMicros, histHighestMicros, timelineSigFigs)
}

// Record files latency d under the bucket of at, clamped like Histogram.
func (t *Timeline) Record(at time.Time, d time.Duration) {
	us := min(max(d.Microseconds(), 0), histHighestMicros)
	key := floorTo(at.Unix(), t.width)
	h := t.buckets[key]
	if h == nil {
		if len(t.buckets) >= maxTimelineBuckets {
			t.coarsen(2 * t.width)
			key = floorTo(at.Unix(), t.width)
			h = t.buckets[key]
		}
		if h == nil {
			h = newTimelineHist()
			t.buckets[key] = h
		}
	}
	_ = h.RecordValue(us) // in range by construction
}

// floorTo rounds sec down to a multiple of width (also for negative sec).
func floorTo(sec, width int64) int64 {
	r := sec % width
	if r < 0 {
		r += width
	}
	return sec - r
}

// coarsen widens the buckets to width (a multiple of the current one),
// merging neighbours, until at most maxTimelineBuckets remain.
func (t *Timeline) coarsen(width int64) {
	for {
		if width > t.width {
			old := t.buckets
			t.buckets = make(map[int64]*hdr.Histogram, len(old))
			for key, h := range old {
				nk := floorTo(key, width)
				if dst := t.buckets[nk]; dst != nil {
					dst.Merge(h)
				} else {
					t.buckets[nk] = h
				}
			}
			t.width = width
		}
		if len(t.buckets) < maxTimelineBuckets {
			return
		}
		width *= 2
	}
}

// Width is the length of a bucket.
func (t *Timeline) Width() time.Duration { return time.Duration(t.width) * time.Second }

// Len is the number of non-empty buckets.
func (t *Timeline) Len() int { return len(t.buckets) }

// Merge adds o's values to t, widening the buckets of either to the wider.
func (t *Timeline) Merge(o *Timeline) {
	if o == nil || len(o.buckets) == 0 {
		return
	}
	if o.width > t.width {
		t.coarsen(o.width)
	}
	for key, h := range o.buckets {
		nk := floorTo(key, t.width)
		dst := t.buckets[nk]
		if dst == nil {
			dst = newTimelineHist()
			t.buckets[nk] = dst
		}
		dst.Merge(h)
	}
	if len(t.buckets) >= maxTimelineBuckets {
		t.coarsen(2 * t.width)
	}
}

func (t *Timeline) clone() *Timeline {
	c := newTimeline()
	c.Merge(t)
	return c
}

// TimelinePoint is one bucket of a timeline, as reported: its start in
// seconds from the run's start (negative for what was measured before the
// load, such as connection setup), its width, and the count, percentiles
// and maximum of its values in microseconds.
type TimelinePoint struct {
	At    float64 `json:"t_s"`
	Width float64 `json:"width_s"`
	Count int64   `json:"count"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P99   int64   `json:"p99_us"`
	Max   int64   `json:"max_us"`
}

// Points returns the buckets in time order, timed from origin (a zero
// origin: from the first bucket).
func (t *Timeline) Points(origin time.Time) []TimelinePoint {
	keys := slices.Sorted(maps.Keys(t.buckets))
	if origin.IsZero() && len(keys) > 0 {
		origin = time.Unix(keys[0], 0)
	}
	out := make([]TimelinePoint, 0, len(keys))
	for _, k := range keys {
		h := t.buckets[k]
		out = append(out, TimelinePoint{
			At:    time.Unix(k, 0).Sub(origin).Seconds(),
			Width: float64(t.width),
			Count: h.TotalCount(),
			P50:   h.ValueAtQuantile(50),
			P90:   h.ValueAtQuantile(90),
			P99:   h.ValueAtQuantile(99),
			Max:   h.Max(),
		})
	}
	return out
}

// timelineJSON is how a timeline travels from a worker: its width and each
// bucket in the compressed HDR encoding.
type timelineJSON struct {
	Width   int64 `json:"width_s"`
	Buckets []struct {
		At  int64  `json:"t"`
		HDR string `json:"hdr"`
	} `json:"buckets"`
}

func (t *Timeline) MarshalJSON() ([]byte, error) {
	j := timelineJSON{Width: t.width}
	for _, k := range slices.Sorted(maps.Keys(t.buckets)) {
		enc, err := t.buckets[k].Encode(hdr.V2CompressedEncodingCookieBase)
		if err != nil {
			return nil, fmt.Errorf("bench: encode timeline: %w", err)
		}
		j.Buckets = append(j.Buckets, struct {
			At  int64  `json:"t"`
			HDR string `json:"hdr"`
		}{k, string(enc)})
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes what MarshalJSON wrote, refusing other geometries
// and misaligned buckets.
func (t *Timeline) UnmarshalJSON(b []byte) error {
	var j timelineJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	if j.Width < 1 || j.Width&(j.Width-1) != 0 {
		return fmt.Errorf("bench: timeline width %d is not a power of two", j.Width)
	}
	out := &Timeline{width: j.Width, buckets: make(map[int64]*hdr.Histogram, len(j.Buckets))}
	for _, bk := range j.Buckets {
		if floorTo(bk.At, j.Width) != bk.At || out.buckets[bk.At] != nil {
			return fmt.Errorf("bench: timeline bucket %d is misaligned or repeated", bk.At)
		}
		h, err := hdr.Decode([]byte(bk.HDR))
		if err != nil {
			return fmt.Errorf("bench: decode timeline: %w", err)
		}
		if h.LowestTrackableValue() != histLowestMicros || h.HighestTrackableValue() < histHighestMicros ||
			h.SignificantFigures() != timelineSigFigs {
			return fmt.Errorf("bench: timeline geometry %d..%d/%d is not this harness's",
				h.LowestTrackableValue(), h.HighestTrackableValue(), h.SignificantFigures())
		}
		out.buckets[bk.At] = h
	}
	if len(out.buckets) >= maxTimelineBuckets {
		out.coarsen(2 * out.width)
	}
	*t = *out
	return nil
}
