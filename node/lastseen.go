package node

import (
	"sync"
	"time"

	"parley/engine"
)

// lastSeenThrottle bounds last_seen writes through Raft to one per user per
// interval: a user who flaps writes once, and the newest value is written
// when the interval has passed.
type lastSeenThrottle struct {
	every time.Duration

	mu      sync.Mutex           // guards written and pending
	written map[uint64]time.Time // when each user's last_seen was last written
	pending map[uint64]int64     // newer values waiting for the interval to pass
}

func newLastSeenThrottle(every time.Duration) *lastSeenThrottle {
	return &lastSeenThrottle{every: every, written: make(map[uint64]time.Time), pending: make(map[uint64]int64)}
}

// offer records that user was last seen at ts (Unix ms) and reports whether
// to write it now.
func (l *lastSeenThrottle) offer(user uint64, ts int64, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if w, ok := l.written[user]; ok && now.Sub(w) < l.every {
		l.pending[user] = ts
		return false
	}
	l.written[user] = now
	delete(l.pending, user)
	return true
}

// due returns the pending values whose interval has passed, marking them
// written, and forgets users idle for a whole interval.
func (l *lastSeenThrottle) due(now time.Time) map[uint64]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out map[uint64]int64
	for u, w := range l.written {
		if now.Sub(w) < l.every {
			continue
		}
		if ts, ok := l.pending[u]; ok {
			if out == nil {
				out = make(map[uint64]int64)
			}
			out[u] = ts
			delete(l.pending, u)
			l.written[u] = now
		} else {
			delete(l.written, u)
		}
	}
	return out
}

// recordLastSeen writes that user went offline at ts, through Raft,
// throttled. Fire and forget: a lost write only leaves an older last_seen.
func (sg *signals) recordLastSeen(user uint64, ts int64) {
	if sg.lastSeen.offer(user, ts, sg.cfg.Clock()) {
		sg.writeLastSeen(user, ts)
	}
}

// flushLastSeen writes the throttled values whose interval has passed.
func (sg *signals) flushLastSeen(now time.Time) {
	for u, ts := range sg.lastSeen.due(now) {
		sg.writeLastSeen(u, ts)
	}
}

func (sg *signals) writeLastSeen(user uint64, ts int64) {
	b, err := engine.EncodeCommand(&engine.Command{Op: engine.OpLastSeen, User: user, Ts: ts})
	if err != nil {
		return
	}
	if err := sg.raft.Submit(b, func(_ any, _ uint64, err error) {
		if err != nil {
			sg.log.Debug("last_seen not written", "user", user, "err", err)
		}
	}); err != nil {
		sg.log.Debug("last_seen not written", "user", user, "err", err)
	}
}

// lastSeenHidden reports the user's privacy setting.
func (sg *signals) lastSeenHidden(user uint64) bool {
	_, hidden, _ := sg.engine.LastSeen(user)
	return hidden
}

// visibleLastSeen is the user's last_seen as others may see it (0 if hidden):
// the stored one, or the offline time this node announced in a presence
// frame if that is later (the stored value is written by the leader,
// throttled, so it lags the frames).
func (sg *signals) visibleLastSeen(user uint64) int64 {
	ts, hidden, _ := sg.engine.LastSeen(user)
	if hidden {
		return 0
	}
	return sg.presence.seenAtLeast(user, ts)
}
