package node

import (
	"sync"
	"time"
)

// typingTracker throttles and expires typing indicators. It is pure state
// driven by the times it is given, so its rules are tested without sleeps;
// the node fans out what it decides.
//
// Rules: a start is forwarded at most once per throttle per (user, conv),
// even across stops (start/stop floods cost at most two events per window);
// renewals inside the window only extend the expiry. A stop is forwarded
// only while the indicator is on. An indicator not renewed for ttl expires,
// and the expiry is forwarded as a stop, so watchers never see a stuck
// indicator even when the typist vanishes.
type typingTracker struct {
	throttle, ttl time.Duration

	mu     sync.Mutex // guards active
	active map[typingKey]*typingState
}

type typingKey struct{ user, conv uint64 }

type typingState struct {
	on       bool
	lastSent time.Time // when a start was last forwarded
	expires  time.Time // on: when the indicator lapses; off: when the entry may go
}

func newTypingTracker(throttle, ttl time.Duration) *typingTracker {
	return &typingTracker{throttle: throttle, ttl: ttl, active: make(map[typingKey]*typingState)}
}

// start records a start at now and reports whether to forward it.
func (t *typingTracker) start(user, conv uint64, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := typingKey{user, conv}
	st := t.active[k]
	if st == nil {
		st = &typingState{}
		t.active[k] = st
	}
	if !st.lastSent.IsZero() && now.Sub(st.lastSent) < t.throttle {
		if st.on {
			st.expires = now.Add(t.ttl)
		}
		return false
	}
	st.on, st.lastSent, st.expires = true, now, now.Add(t.ttl)
	return true
}

// stop records a stop and reports whether to forward it.
func (t *typingTracker) stop(user, conv uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.active[typingKey{user, conv}]
	if st == nil || !st.on {
		return false
	}
	st.on = false
	st.expires = st.lastSent.Add(t.throttle) // keep the throttle memory until then
	return true
}

// expire returns the indicators whose ttl passed by now (to forward as
// stops) and forgets entries that no longer throttle anything.
func (t *typingTracker) expire(now time.Time) []typingKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []typingKey
	for k, st := range t.active {
		if now.Before(st.expires) {
			continue
		}
		if st.on {
			out = append(out, k)
		}
		if now.Sub(st.lastSent) >= t.throttle {
			delete(t.active, k)
		} else {
			st.on, st.expires = false, st.lastSent.Add(t.throttle)
		}
	}
	return out
}
