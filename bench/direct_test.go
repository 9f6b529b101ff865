package bench

import (
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestDirectBodyStamp(t *testing.T) {
	stamp := time.Unix(1_700_000_000, 123456789)
	body := stampBody(stamp, strings.Repeat("x", 100))
	if len(body) != 100 {
		t.Fatalf("body is %d bytes", len(body))
	}
	got, ok := parseStamp(body)
	if !ok || !got.Equal(stamp) {
		t.Fatalf("parsed %v %v", got, ok)
	}
	for _, bad := range []string{"", "hello", " 123", "12x 3"} {
		if _, ok := parseStamp(bad); ok {
			t.Errorf("parsed a stamp from %q", bad)
		}
	}
}

// The windows below are a second long so that a scheduler that starts
// late on a loaded machine still finds the load going.

func TestScheduleFixedRate(t *testing.T) {
	const interval = 50 * time.Millisecond
	first := time.Now().Add(5 * time.Millisecond)
	until := first.Add(time.Second) // 20 sends due
	var mu sync.Mutex
	var got []time.Time
	missed := schedule(t.Context(), first, until, interval, 2, func(intended time.Time) {
		mu.Lock()
		got = append(got, intended)
		mu.Unlock()
	})
	// A late scheduler may find the load over before the last sends: those
	// count as missed, never lost.
	if int64(len(got))+missed != 20 || len(got) == 0 {
		t.Fatalf("%d sent + %d missed, want 20", len(got), missed)
	}
	slices.SortFunc(got, func(a, b time.Time) int { return a.Compare(b) })
	for i, at := range got {
		if want := first.Add(time.Duration(i) * interval); !at.Equal(want) {
			t.Fatalf("send %d intended at %v, want the schedule's %v", i, at.Sub(first), want.Sub(first))
		}
	}
}

// A stalled server must not thin out the schedule (coordinated omission):
// sends due while every lane is stuck keep their intended times, and those
// that never went out are counted.
func TestScheduleStall(t *testing.T) {
	const interval = 50 * time.Millisecond
	first := time.Now()
	until := first.Add(time.Second)
	var sends atomic.Int64
	missed := schedule(t.Context(), first, until, interval, 1, func(intended time.Time) {
		if sends.Add(1) == 1 {
			// The only lane stalls well past the end, so that the
			// scheduler has seen the end before a lane is free again.
			time.Sleep(time.Until(until.Add(time.Second)))
		}
	})
	if sends.Load() != 1 || missed != 19 {
		t.Fatalf("%d sent, %d missed; want 1 and 19", sends.Load(), missed)
	}
}

func TestScheduleFlatOut(t *testing.T) {
	var sends, zero atomic.Int64
	missed := schedule(t.Context(), time.Now(), time.Now().Add(50*time.Millisecond), 0, 3, func(intended time.Time) {
		sends.Add(1)
		if intended.IsZero() {
			zero.Add(1)
		}
		time.Sleep(time.Millisecond)
	})
	if missed != 0 || sends.Load() == 0 || zero.Load() != sends.Load() {
		t.Fatalf("flat out: %d sends, %d with the zero time, %d missed", sends.Load(), zero.Load(), missed)
	}
}

// Direct and Group report their shared parameters the same way, with
// their defaults.
func TestSendParams(t *testing.T) {
	for _, c := range []struct {
		sc   Scenario
		want map[string]any
	}{
		{&Direct{Senders: 3, Rate: 100, Slow: 0.5}, map[string]any{
			"senders": 3, "rate": "100/s", "window": 64, "body_bytes": 100, "drain": "10s", "slow": 0.5}},
		{&Direct{}, map[string]any{"senders": 1, "rate": "flat-out", "window": 1, "body_bytes": 100, "drain": "10s"}},
		{&Group{ReceiveBuffer: 1 << 20, Warmup: time.Second}, map[string]any{
			"members": 1000, "senders": 1, "rate": "flat-out", "window": 1, "body_bytes": 100, "warmup": "1s",
			"drain": "10s", "receive_buffer": 1 << 20}},
	} {
		if got := c.sc.Params(); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s params %v, want %v", c.sc.Name(), got, c.want)
		}
	}
	// NaN is no rate, for either.
	for _, sc := range []Scenario{&Direct{Rate: math.NaN()}, &Group{Rate: math.NaN()}} {
		if err := sc.Validate(); err == nil {
			t.Errorf("%s: a NaN rate is valid", sc.Name())
		}
	}
}

func BenchmarkStampBody(b *testing.B) {
	padding := strings.Repeat("x", 100)
	stamp := time.Unix(1_700_000_000, 123456789)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := parseStamp(stampBody(stamp, padding)); !ok {
			b.Fatal("no stamp")
		}
	}
}

// scheduleAsync keeps the schedule and the window as schedule does, with
// sends that end on other goroutines, and returns once they all have.
func TestScheduleAsync(t *testing.T) {
	const interval = 20 * time.Millisecond
	first := time.Now().Add(5 * time.Millisecond)
	until := first.Add(time.Second) // 50 sends due
	var mu sync.Mutex
	var got []time.Time
	var inFlight, most, ended atomic.Int64
	missed := scheduleAsync(t.Context(), first, until, interval, 3, func(intended time.Time, done func()) {
		mu.Lock()
		got = append(got, intended)
		mu.Unlock()
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		go func() {
			time.Sleep(30 * time.Millisecond) // longer than the interval: sends overlap
			inFlight.Add(-1)
			ended.Add(1)
			done()
		}()
	})
	if int64(len(got))+missed != 50 || len(got) == 0 {
		t.Fatalf("%d sent + %d missed, want 50", len(got), missed)
	}
	if ended.Load() != int64(len(got)) {
		t.Fatalf("returned with %d of %d sends ended", ended.Load(), len(got))
	}
	if most.Load() > 3 {
		t.Fatalf("%d sends in flight, window 3", most.Load())
	}
	slices.SortFunc(got, func(a, b time.Time) int { return a.Compare(b) })
	for i, at := range got {
		if want := first.Add(time.Duration(i) * interval); !at.Equal(want) {
			t.Fatalf("send %d intended at %v, want the schedule's %v", i, at.Sub(first), want.Sub(first))
		}
	}
}

func TestScheduleAsyncStall(t *testing.T) {
	const interval = 50 * time.Millisecond
	first := time.Now()
	until := first.Add(time.Second)
	var sends atomic.Int64
	missed := scheduleAsync(t.Context(), first, until, interval, 1, func(_ time.Time, done func()) {
		sends.Add(1)
		go func() {
			time.Sleep(time.Until(until.Add(time.Second))) // the only slot stalls past the end
			done()
		}()
	})
	if sends.Load() != 1 || missed != 19 {
		t.Fatalf("%d sent, %d missed; want 1 and 19", sends.Load(), missed)
	}
}

// runClock keeps every sender's schedule (intended times, the window) as
// pace does, from one goroutine, and returns once every send has ended.
func TestClockSchedules(t *testing.T) {
	const interval, senders, window = 40 * time.Millisecond, 5, 2
	start := time.Now().Add(5 * time.Millisecond)
	until := start.Add(time.Second) // 25 sends due per sender
	firsts := make([]time.Time, senders)
	for k := range firsts {
		firsts[k] = start.Add(interval * time.Duration(k) / senders)
	}
	var mu sync.Mutex
	got := make([][]time.Time, senders)
	inFlight := make([]int, senders)
	var ended atomic.Int64
	missed := runClock(t.Context(), firsts, until, interval, window, func(k int, intended time.Time, done func()) {
		mu.Lock()
		got[k] = append(got[k], intended)
		inFlight[k]++
		if inFlight[k] > window {
			t.Errorf("sender %d: %d sends in flight", k, inFlight[k])
		}
		mu.Unlock()
		go func() {
			if k == 0 {
				time.Sleep(3 * interval / 2) // sender 0 falls behind: its sends queue, then catch up
			}
			mu.Lock()
			inFlight[k]--
			mu.Unlock()
			ended.Add(1)
			done()
		}()
	})
	total := int64(0)
	for k := range got {
		total += int64(len(got[k]))
		for i, at := range got[k] {
			if want := firsts[k].Add(time.Duration(i) * interval); !at.Equal(want) {
				t.Fatalf("sender %d send %d intended at %v, want %v", k, i, at.Sub(start), want.Sub(start))
			}
		}
	}
	if total+missed != senders*25 || ended.Load() != total {
		t.Fatalf("%d sent + %d missed, want %d; %d ended", total, missed, senders*25, ended.Load())
	}
}

// A sender whose only slot stalls past the end misses the rest of its
// schedule; the others do not.
func TestClockStall(t *testing.T) {
	const interval = 50 * time.Millisecond
	start := time.Now()
	until := start.Add(time.Second)
	firsts := []time.Time{start, start.Add(interval / 2)}
	var sends [2]atomic.Int64
	missed := runClock(t.Context(), firsts, until, interval, 1, func(k int, _ time.Time, done func()) {
		if sends[k].Add(1) == 1 && k == 0 {
			go func() {
				time.Sleep(time.Until(until.Add(time.Second)))
				done()
			}()
			return
		}
		done()
	})
	if sends[0].Load() != 1 || sends[1].Load()+missed != 20+19 || sends[1].Load() == 0 {
		t.Fatalf("sent %d and %d, %d missed; want 1 and 20 - the late, 19 + the late", sends[0].Load(), sends[1].Load(), missed)
	}
}
