package netpoll

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// item is a wheel owner for tests.
type item struct {
	name  string
	timer timer[*item]
}

func newItem(name string) *item {
	it := &item{name: name}
	it.timer.owner = it
	return it
}

// advanceTo advances w to now and returns the names fired, in order.
func advanceTo(w *wheel[*item], now time.Duration) []string {
	var fired []string
	w.advance(now, func(it *item) { fired = append(fired, it.name) })
	return fired
}

const ms = time.Millisecond

func TestWheelFiresOnTheTickAtOrAfterTheDeadline(t *testing.T) {
	w := newWheel[*item](10*ms, 100*ms, 0)
	a, b, c := newItem("a"), newItem("b"), newItem("c")
	w.schedule(&a.timer, 25*ms) // rounds up to the tick at 30ms
	w.schedule(&b.timer, 30*ms)
	w.schedule(&c.timer, 31*ms) // 40ms
	steps := []struct {
		now  time.Duration
		want []string
	}{
		{9 * ms, nil},
		{20 * ms, nil},
		{29 * ms, nil},
		{30 * ms, []string{"a", "b"}},
		{39 * ms, nil},
		{40 * ms, []string{"c"}},
		{500 * ms, nil},
	}
	for _, s := range steps {
		if got := advanceTo(w, s.now); !slices.Equal(got, s.want) {
			t.Fatalf("at %v fired %v, want %v", s.now, got, s.want)
		}
	}
	if w.len() != 0 {
		t.Fatalf("%d timers left", w.len())
	}
}

func TestWheelPastDeadlineFiresNextTick(t *testing.T) {
	w := newWheel[*item](10*ms, 100*ms, 50*ms)
	a := newItem("a")
	w.schedule(&a.timer, 0)
	if got := advanceTo(w, 59*ms); got != nil {
		t.Fatalf("fired %v before the next tick", got)
	}
	if got := advanceTo(w, 60*ms); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("fired %v", got)
	}
}

func TestWheelCancelAndReschedule(t *testing.T) {
	w := newWheel[*item](10*ms, 100*ms, 0)
	a, b := newItem("a"), newItem("b")
	w.schedule(&a.timer, 20*ms)
	w.schedule(&b.timer, 20*ms)
	w.cancel(&a.timer)
	w.cancel(&a.timer) // twice is harmless
	w.schedule(&b.timer, 50*ms)
	if got := advanceTo(w, 40*ms); got != nil {
		t.Fatalf("fired %v", got)
	}
	if got := advanceTo(w, 50*ms); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("fired %v", got)
	}
}

func TestWheelBeyondOneRevolution(t *testing.T) {
	w := newWheel[*item](time.Second, 10*time.Second, 0) // 16 slots
	a := newItem("a")
	w.schedule(&a.timer, 100*time.Second) // six revolutions away
	for s := time.Duration(1); s < 100; s++ {
		if got := advanceTo(w, s*time.Second); got != nil {
			t.Fatalf("fired at %ds, deadline 100s", s)
		}
	}
	if got := advanceTo(w, 100*time.Second); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("fired %v at 100s", got)
	}
}

func TestWheelLongJumpFiresEverythingDue(t *testing.T) {
	w := newWheel[*item](time.Second, 10*time.Second, 0)
	var names []string // the i-th is due at i+1 seconds
	for i := range 40 {
		it := newItem(string(rune('A' + i)))
		names = append(names, it.name)
		w.schedule(&it.timer, time.Duration(i+1)*time.Second)
	}
	got := advanceTo(w, 30*time.Second) // the clock jumped (a stalled loop)
	slices.Sort(got)
	if !slices.Equal(got, names[:30]) {
		t.Fatalf("fired %v by 30s, want %v", got, names[:30])
	}
	got = advanceTo(w, 40*time.Second)
	slices.Sort(got)
	if !slices.Equal(got, names[30:]) {
		t.Fatalf("fired %v by 40s, want %v", got, names[30:])
	}
}

func TestWheelFireMayRescheduleAndCancel(t *testing.T) {
	w := newWheel[*item](10*ms, 100*ms, 0)
	a, b, c := newItem("a"), newItem("b"), newItem("c")
	w.schedule(&a.timer, 10*ms)
	w.schedule(&b.timer, 10*ms)
	w.schedule(&c.timer, 10*ms)
	var fired []string
	w.advance(10*ms, func(it *item) {
		fired = append(fired, it.name)
		if it == a {
			w.cancel(&b.timer)            // due in the same tick: must not fire
			w.schedule(&a.timer, 30*ms)   // again later
			w.schedule(&c.timer, 1000*ms) // moved out before it fired
		}
	})
	if !slices.Equal(fired, []string{"a"}) {
		t.Fatalf("fired %v", fired)
	}
	if got := advanceTo(w, 30*ms); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("fired %v at 30ms", got)
	}
	if w.len() != 1 {
		t.Fatalf("len %d, want 1 (c)", w.len())
	}
}

// TestWheelAgainstModel runs random schedules, cancels and advances against
// a plain map of deadlines: every timer fires exactly once, on the first
// advance at or past its deadline rounded up to a tick, never earlier.
func TestWheelAgainstModel(t *testing.T) {
	const tick = 10 * ms
	rng := rand.New(rand.NewPCG(1, 2))
	w := newWheel[*item](tick, 200*ms, 0)
	items := make([]*item, 50)
	deadline := map[*item]time.Duration{}
	for i := range items {
		items[i] = newItem(string(rune('a' + i)))
	}
	now := time.Duration(0)
	for step := range 5000 {
		it := items[rng.IntN(len(items))]
		switch op := rng.IntN(10); {
		case op < 5:
			at := now + time.Duration(rng.IntN(600))*ms - 50*ms
			w.schedule(&it.timer, at)
			due := (at + tick - 1) / tick * tick
			deadline[it] = max(due, (now/tick+1)*tick)
		case op < 6:
			w.cancel(&it.timer)
			delete(deadline, it)
		default:
			now += time.Duration(rng.IntN(40)) * ms
			w.advance(now, func(f *item) {
				d, ok := deadline[f]
				if !ok {
					t.Fatalf("step %d: %s fired but is not scheduled", step, f.name)
				}
				if d > now {
					t.Fatalf("step %d: %s fired at %v before its deadline %v", step, f.name, now, d)
				}
				delete(deadline, f)
			})
			for f, d := range deadline {
				if d <= now/tick*tick {
					t.Fatalf("step %d: %s due at %v still pending at %v", step, f.name, d, now)
				}
			}
		}
		if w.len() != len(deadline) {
			t.Fatalf("step %d: wheel holds %d timers, model %d", step, w.len(), len(deadline))
		}
	}
}
