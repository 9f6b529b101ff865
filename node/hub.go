package node

import (
	"sync"
)

// hubShards spreads the registry of online devices over independent locks so
// that connects, disconnects and fan-outs on different users do not contend.
const hubShards = 64

// hub is this node's registry of online devices: user -> open sessions. It
// is derived, in-memory data; every node has its own and delivers committed
// events to its own connections.
type hub struct {
	shards [hubShards]hubShard
}

type hubShard struct {
	mu    sync.RWMutex // guards users
	users map[uint64][]*session
}

func newHub() *hub {
	h := &hub{}
	for i := range h.shards {
		h.shards[i].users = make(map[uint64][]*session)
	}
	return h
}

func (h *hub) shard(user uint64) *hubShard { return &h.shards[user%hubShards] }

// add registers s; it reports whether s is the user's first session on this node.
func (h *hub) add(s *session) bool {
	sh := h.shard(s.user)
	sh.mu.Lock()
	list := sh.users[s.user]
	sh.users[s.user] = append(list, s)
	sh.mu.Unlock()
	return len(list) == 0
}

// remove unregisters s; it reports whether the user has no session left here.
func (h *hub) remove(s *session) bool {
	sh := h.shard(s.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.users[s.user]
	for i, x := range list {
		if x == s {
			list[i] = list[len(list)-1]
			list[len(list)-1] = nil
			list = list[:len(list)-1]
			break
		}
	}
	if len(list) == 0 {
		delete(sh.users, s.user)
		return true
	}
	sh.users[s.user] = list
	return false
}

// deliver hands the same prepared frame to every session of every user in
// users and returns how many sessions took it. Sends only enqueue; a slow
// session is closed by its own queue bound and never delays the others.
func (h *hub) deliver(users []uint64, frame []byte) int {
	n := 0
	for _, u := range users {
		sh := h.shard(u)
		sh.mu.RLock()
		for _, s := range sh.users[u] {
			if s.send(frame) {
				n++
			}
		}
		sh.mu.RUnlock()
	}
	return n
}

// sessions returns the user's sessions on this node (a copy).
func (h *hub) sessions(user uint64) []*session {
	sh := h.shard(user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return append([]*session(nil), sh.users[user]...)
}

// expired returns the sessions whose token expired at or before now (Unix
// ms).
func (h *hub) expired(now int64) []*session {
	var out []*session
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, l := range sh.users {
			for _, s := range l {
				if s.expires <= now {
					out = append(out, s)
				}
			}
		}
		sh.mu.RUnlock()
	}
	return out
}

// count returns the number of online sessions.
func (h *hub) count() int {
	n := 0
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, l := range sh.users {
			n += len(l)
		}
		sh.mu.RUnlock()
	}
	return n
}
