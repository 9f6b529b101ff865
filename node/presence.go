package node

import (
	"sync"
	"time"
)

// presenceTracker knows which users are online on this node and who watches
// whom. A user is online from their first connection until grace after the
// last one closed, so a reconnect blip causes no offline/online flap. Like
// typingTracker it is driven by the times it is given.
type presenceTracker struct {
	grace time.Duration

	mu       sync.Mutex // guards everything below
	online   map[uint64]bool
	offAt    map[uint64]time.Time // users whose last session closed: when they go offline
	watchers map[uint64]map[*session]struct{}
	watching map[*session][]uint64
}

func newPresenceTracker(grace time.Duration) *presenceTracker {
	return &presenceTracker{
		grace:    grace,
		online:   make(map[uint64]bool),
		offAt:    make(map[uint64]time.Time),
		watchers: make(map[uint64]map[*session]struct{}),
		watching: make(map[*session][]uint64),
	}
}

// connected records a user's first session on this node; it reports whether
// the user came online (false when it ends a grace period).
func (p *presenceTracker) connected(user uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, inGrace := p.offAt[user]; inGrace {
		delete(p.offAt, user)
		return false
	}
	if p.online[user] {
		return false
	}
	p.online[user] = true
	return true
}

// disconnected records that a user's last session closed at now.
func (p *presenceTracker) disconnected(user uint64, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.online[user] {
		p.offAt[user] = now.Add(p.grace)
	}
}

// sweep returns the users whose grace ended by now: they are offline.
func (p *presenceTracker) sweep(now time.Time) []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var off []uint64
	for u, at := range p.offAt {
		if !now.Before(at) {
			delete(p.offAt, u)
			delete(p.online, u)
			off = append(off, u)
		}
	}
	return off
}

func (p *presenceTracker) isOnline(user uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.online[user]
}

// watch replaces the list of users s watches.
func (p *presenceTracker) watch(s *session, users []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unwatchLocked(s)
	if len(users) == 0 {
		return
	}
	p.watching[s] = users
	for _, u := range users {
		ws := p.watchers[u]
		if ws == nil {
			ws = make(map[*session]struct{})
			p.watchers[u] = ws
		}
		ws[s] = struct{}{}
	}
}

// forget drops every watch of a closed session.
func (p *presenceTracker) forget(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unwatchLocked(s)
}

func (p *presenceTracker) unwatchLocked(s *session) {
	for _, u := range p.watching[s] {
		if ws := p.watchers[u]; ws != nil {
			delete(ws, s)
			if len(ws) == 0 {
				delete(p.watchers, u)
			}
		}
	}
	delete(p.watching, s)
}

// watchersOf returns the sessions watching user (a copy).
func (p *presenceTracker) watchersOf(user uint64) []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	ws := p.watchers[user]
	if len(ws) == 0 {
		return nil
	}
	out := make([]*session, 0, len(ws))
	for s := range ws {
		out = append(out, s)
	}
	return out
}
