package node

import (
	"slices"
	"sync"
	"time"
)

// presenceTracker knows who is online in the cluster and who on this node
// watches whom. Like typingTracker it is pure state driven by the times it
// is given; the node sends what it decides.
//
// A user is online on this node from their first connection here until
// grace after the last one closed, so a reconnect blip causes no
// offline/online flap. The peers report their own users the same way over
// the peer channel (peers.go): a full set when their link to this node
// comes up, then deltas. A user is online if online anywhere, and watchers
// hear only of those global transitions: a user moving from one node to
// another (online on the new one before the old one's grace ends) never
// flaps. When the link from a peer is lost, its users stay online for one
// more grace, then those online only there go offline.
type presenceTracker struct {
	grace time.Duration
	// remoteSlack: how late after their grace a peer may report a user
	// offline (its signal tick); see wentOffline.closed.
	remoteSlack time.Duration

	mu sync.Mutex // guards everything below

	online map[uint64]bool      // users online on this node, grace included
	offAt  map[uint64]time.Time // users whose last session here closed: when they go offline here

	peers  map[string]*peerPresence // what each peer reported
	remote map[uint64]int           // user -> number of peers reporting them online

	// ver counts changes of this node's online set; messages to the peers
	// carry it so that they skip deltas older than the full set they have.
	// pending holds the changes not yet sent: user -> online here.
	ver     uint64
	pending map[uint64]bool
	// wentOffline: users who went offline cluster-wide, until the
	// last_seen writer takes them.
	wentOffline map[uint64]wentOffline
	// seen: the latest cluster-wide offline time this node observed per
	// user, kept until the durable last_seen reaches it (seenAtLeast), so
	// that user.get here never reports less than a presence frame sent
	// from here (at most maxSeenObserved users).
	seen map[uint64]int64

	watchers map[uint64]map[*session]struct{}
	watching map[*session][]uint64
}

// peerPresence is one peer's online set as it reported it.
type peerPresence struct {
	users  map[uint64]struct{}
	ver    uint64    // the peer's version of the latest message applied
	dropAt time.Time // the link from the peer is down: forget the set then
}

// wentOffline is a user's cluster-wide offline transition, for last_seen
// and the notifier's catch-up.
type wentOffline struct {
	at int64 // when (Unix ms): last_seen
	// closed is when their last connection closed (Unix ms): exact for a
	// session here (the grace's end less the grace), and for a peer's
	// report its time less the grace and remoteSlack, so at or before the
	// close.
	closed int64
}

// presenceChange is a cluster-wide transition, for the watchers.
type presenceChange struct {
	user     uint64
	online   bool
	lastSeen int64 // offline: when the user was last seen (Unix ms)
}

func newPresenceTracker(grace time.Duration) *presenceTracker {
	return &presenceTracker{
		grace:       grace,
		online:      make(map[uint64]bool),
		offAt:       make(map[uint64]time.Time),
		peers:       make(map[string]*peerPresence),
		remote:      make(map[uint64]int),
		pending:     make(map[uint64]bool),
		wentOffline: make(map[uint64]wentOffline),
		seen:        make(map[uint64]int64),
		watchers:    make(map[uint64]map[*session]struct{}),
		watching:    make(map[*session][]uint64),
	}
}

// connected records a user's first session on this node; it reports
// whether the user came online cluster-wide (false when it ends a grace
// period or the user is online on a peer).
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
	p.localChangeLocked(user, true)
	return p.remote[user] == 0
}

// disconnected records that a user's last session on this node closed at
// now.
func (p *presenceTracker) disconnected(user uint64, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.online[user] {
		p.offAt[user] = now.Add(p.grace)
	}
}

// sweep ends the grace periods that are over by now, here and of the peers
// whose link is down, and returns the users who went offline cluster-wide.
func (p *presenceTracker) sweep(now time.Time) []presenceChange {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []presenceChange
	ts := now.UnixMilli()
	for u, at := range p.offAt {
		if now.Before(at) {
			continue
		}
		delete(p.offAt, u)
		delete(p.online, u)
		p.localChangeLocked(u, false)
		if p.remote[u] == 0 {
			out = p.offlineLocked(out, u, ts, at.Add(-p.grace).UnixMilli())
		}
	}
	for id, pp := range p.peers {
		if pp.dropAt.IsZero() || now.Before(pp.dropAt) {
			continue
		}
		delete(p.peers, id)
		for u := range pp.users {
			out = p.removeRemoteLocked(out, u, ts)
		}
	}
	return out
}

func (p *presenceTracker) localChangeLocked(user uint64, online bool) {
	p.ver++
	p.pending[user] = online
}

// offlineLocked records that user went offline cluster-wide at ts.
func (p *presenceTracker) offlineLocked(out []presenceChange, user uint64, ts, closed int64) []presenceChange {
	p.wentOffline[user] = wentOffline{at: ts, closed: closed}
	if _, ok := p.seen[user]; ok || len(p.seen) < maxSeenObserved {
		p.seen[user] = max(p.seen[user], ts)
	}
	return append(out, presenceChange{user: user, lastSeen: ts})
}

// maxSeenObserved bounds presenceTracker.seen.
const maxSeenObserved = 1 << 17

// seenAtLeast is durable (the user's stored last_seen) or, if later, the
// offline time this node observed and announced in presence frames; once
// the stored value has caught up the observation is dropped.
func (p *presenceTracker) seenAtLeast(user uint64, durable int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	obs, ok := p.seen[user]
	if !ok {
		return durable
	}
	if durable >= obs {
		delete(p.seen, user)
		return durable
	}
	return obs
}

func (p *presenceTracker) addRemoteLocked(out []presenceChange, user uint64) []presenceChange {
	p.remote[user]++
	if p.remote[user] == 1 && !p.online[user] {
		out = append(out, presenceChange{user: user, online: true})
	}
	return out
}

func (p *presenceTracker) removeRemoteLocked(out []presenceChange, user uint64, ts int64) []presenceChange {
	if p.remote[user] <= 1 {
		delete(p.remote, user)
		if !p.online[user] {
			out = p.offlineLocked(out, user, ts, ts-(p.grace+p.remoteSlack).Milliseconds())
		}
		return out
	}
	p.remote[user]--
	return out
}

// localSet returns this node's online users and the version of that set,
// for a peer whose link just came up.
func (p *presenceTracker) localSet() (ver uint64, users []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	users = make([]uint64, 0, len(p.online))
	for u := range p.online {
		users = append(users, u)
	}
	slices.Sort(users) // small, stable messages; sorted ids pack well
	return p.ver, users
}

// takeChanges returns the changes of this node's online set since the last
// call, and the version they bring the set to; ok is false when there are
// none.
func (p *presenceTracker) takeChanges() (ver uint64, on, off []uint64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) == 0 {
		return 0, nil, nil, false
	}
	for u, online := range p.pending {
		if online {
			on = append(on, u)
		} else {
			off = append(off, u)
		}
	}
	clear(p.pending)
	slices.Sort(on)
	slices.Sort(off)
	return p.ver, on, off, true
}

// peerSet replaces what peer reported with its full online set at version
// ver; users it no longer lists went offline there at ts.
func (p *presenceTracker) peerSet(peer string, ver uint64, users []uint64, ts int64) []presenceChange {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.peerLocked(peer)
	pp.ver = ver
	pp.dropAt = time.Time{}
	var out []presenceChange
	next := make(map[uint64]struct{}, len(users))
	for _, u := range users {
		if _, dup := next[u]; dup {
			continue
		}
		next[u] = struct{}{}
		if _, had := pp.users[u]; !had {
			out = p.addRemoteLocked(out, u)
		}
	}
	for u := range pp.users {
		if _, still := next[u]; !still {
			out = p.removeRemoteLocked(out, u, ts)
		}
	}
	pp.users = next
	return out
}

// peerDelta applies the changes peer made up to version ver; users in off
// went offline there at ts. Changes the peer's full set already covered
// (ver not above it) are skipped.
func (p *presenceTracker) peerDelta(peer string, ver uint64, on, off []uint64, ts int64) []presenceChange {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.peerLocked(peer)
	if ver <= pp.ver {
		return nil
	}
	pp.ver = ver
	pp.dropAt = time.Time{}
	var out []presenceChange
	for _, u := range on {
		if _, had := pp.users[u]; !had {
			pp.users[u] = struct{}{}
			out = p.addRemoteLocked(out, u)
		}
	}
	for _, u := range off {
		if _, had := pp.users[u]; had {
			delete(pp.users, u)
			out = p.removeRemoteLocked(out, u, ts)
		}
	}
	return out
}

func (p *presenceTracker) peerLocked(peer string) *peerPresence {
	pp := p.peers[peer]
	if pp == nil {
		pp = &peerPresence{users: make(map[uint64]struct{})}
		p.peers[peer] = pp
	}
	return pp
}

// peerDown records that the link from peer was lost at now: its users stay
// online for one more grace, unless its link comes back with a full set.
func (p *presenceTracker) peerDown(peer string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pp := p.peers[peer]; pp != nil && pp.dropAt.IsZero() {
		pp.dropAt = now.Add(p.grace)
	}
}

// takeWentOffline returns the users who went offline cluster-wide since
// the last call.
func (p *presenceTracker) takeWentOffline() map[uint64]wentOffline {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.wentOffline) == 0 {
		return nil
	}
	out := p.wentOffline
	p.wentOffline = make(map[uint64]wentOffline)
	return out
}

// isOnline reports whether user is online anywhere in the cluster.
func (p *presenceTracker) isOnline(user uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.online[user] || p.remote[user] > 0
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
