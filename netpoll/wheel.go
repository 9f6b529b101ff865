package netpoll

import "time"

// wheel is a hashed timing wheel: one timer per connection for the whole
// server, swept once per tick, with O(1) schedule and cancel. gnet has no
// per-connection timers, and a runtime timer per connection would cost
// memory and wakeups at 100k connections.
//
// Time is a time.Duration since an epoch chosen by the owner; the wheel
// never reads a clock, so tests drive it with any sequence of instants.
// A timer fires on the first advance whose instant is at or past its
// deadline rounded up to a whole tick, so it fires up to one tick late and
// never early.
//
// A wheel is owned by one goroutine (its event loop); it has no locks.
type wheel[T any] struct {
	tick  time.Duration
	slots []timerList[T]
	mask  int64
	cur   int64 // last tick processed
	n     int   // scheduled timers
}

// timer is embedded in its owner (a connection), so scheduling allocates
// nothing.
type timer[T any] struct {
	prev, next *timer[T]
	list       *timerList[T] // nil when not scheduled
	when       int64         // deadline in ticks
	owner      T
}

type timerList[T any] struct {
	head, tail *timer[T]
}

// newWheel makes a wheel of tick granularity with enough slots that timers
// up to horizon away are placed without wrapping around.
func newWheel[T any](tick, horizon time.Duration, now time.Duration) *wheel[T] {
	size := int64(16)
	for size < int64(horizon/tick)+2 && size < 1<<16 {
		size <<= 1
	}
	return &wheel[T]{
		tick:  tick,
		slots: make([]timerList[T], size),
		mask:  size - 1,
		cur:   int64(now / tick),
	}
}

// schedule (re)arms t to fire at the instant at.
func (w *wheel[T]) schedule(t *timer[T], at time.Duration) {
	w.cancel(t)
	when := int64((at + w.tick - 1) / w.tick)
	if when <= w.cur {
		when = w.cur + 1
	}
	t.when = when
	w.slots[when&w.mask].push(t)
	w.n++
}

// cancel disarms t; it is a no-op for a timer that is not scheduled.
func (w *wheel[T]) cancel(t *timer[T]) {
	if t.list != nil {
		t.list.remove(t)
		w.n--
	}
}

// len reports the number of scheduled timers.
func (w *wheel[T]) len() int { return w.n }

// advance fires, in deadline order tick by tick, every timer due at or
// before now. fire may schedule or cancel any timer, including the one it
// was called for.
func (w *wheel[T]) advance(now time.Duration, fire func(T)) {
	target := int64(now / w.tick)
	if span := int64(len(w.slots)); target-w.cur > span {
		// Every slot will be visited anyway; visiting each once, in the last
		// span ticks, finds every due timer.
		w.cur = target - span
	}
	var due timerList[T]
	for w.cur < target {
		w.cur++
		slot := &w.slots[w.cur&w.mask]
		for t := slot.head; t != nil; {
			next := t.next
			if t.when <= w.cur {
				slot.remove(t)
				due.push(t)
			}
			t = next
		}
		// Pop one at a time: fire may cancel another due timer.
		for t := due.head; t != nil; t = due.head {
			due.remove(t)
			w.n--
			fire(t.owner)
		}
	}
}

// each calls f for every scheduled timer's owner; f must not schedule or
// cancel timers (collect the owners first if it needs to).
func (w *wheel[T]) each(f func(T)) {
	for i := range w.slots {
		for t := w.slots[i].head; t != nil; t = t.next {
			f(t.owner)
		}
	}
}

func (l *timerList[T]) push(t *timer[T]) {
	t.list, t.prev, t.next = l, l.tail, nil
	if l.tail != nil {
		l.tail.next = t
	} else {
		l.head = t
	}
	l.tail = t
}

func (l *timerList[T]) remove(t *timer[T]) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		l.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		l.tail = t.prev
	}
	t.prev, t.next, t.list = nil, nil, nil
}
