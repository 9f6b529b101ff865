package netpoll

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Connection caps. A connection takes slots as it goes (a pending
// handshake when it is accepted; a server slot and a per-address slot
// when its request is complete; a per-key slot once Authorize named a
// key) and Conn.held records which. Every slot is given back exactly once:
// the pending one at the upgrade, all others in onClose, which gnet runs
// exactly once per socket whether it was upgraded, refused or abandoned.

// slot is one kind of capacity a connection holds.
type slot uint8

const (
	slotPending slot = 1 << iota // Server.pending: accepted, not yet upgraded
	slotConn                     // Server.conns: Config.MaxConnections
	slotIP                       // Server.perIP[Conn.ipKey]: Config.MaxConnectionsPerIP
	slotKey                      // Server.perKey[Conn.limitKey]: Config.MaxConnectionsPerKey
)

// Refusal reasons sent in the body of 503 and 429 refusals.
const (
	reasonServerFull  = "server at connection limit, retry later"
	reasonIPFull      = "too many connections from this address, retry later"
	reasonKeyFull     = "too many connections for this account, retry later"
	reasonPendingFull = "too many connections being set up, retry later"
	reasonNoFD        = "server out of descriptors, retry later"
)

// acquireCount takes one of limit slots of n (no limit when limit <= 0).
func acquireCount(n *atomic.Int64, limit int) bool {
	for {
		v := n.Load()
		if limit > 0 && v >= int64(limit) {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// keyCounter counts connections per key, for the per-address and per-key
// caps; event loops share it, so it is sharded to keep them apart.
type keyCounter struct {
	shards [32]keyShard
}

type keyShard struct {
	mu sync.Mutex
	m  map[uint64]int32
	_  [48]byte // one shard per cache line
}

func (k *keyCounter) shard(key uint64) *keyShard {
	return &k.shards[(key*0x9E3779B97F4A7C15)>>59]
}

// acquire counts one more connection for key unless it has limit already.
func (k *keyCounter) acquire(key uint64, limit int) bool {
	sh := k.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := sh.m[key]
	if int(n) >= limit {
		return false
	}
	if sh.m == nil {
		sh.m = make(map[uint64]int32)
	}
	sh.m[key] = n + 1
	return true
}

func (k *keyCounter) release(key uint64) {
	sh := k.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if n := sh.m[key] - 1; n > 0 {
		sh.m[key] = n
	} else {
		delete(sh.m, key)
	}
}

// total is the number of connections holding any key (tests).
func (k *keyCounter) total() int {
	n := 0
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		for _, v := range sh.m {
			n += int(v)
		}
		sh.mu.Unlock()
	}
	return n
}

// ipKey maps a client address to its per-address key: an IPv4 address
// (IPv4-mapped IPv6 included) or the /64 of an IPv6 one, since one IPv6
// host commonly holds a whole /64. IPv4 keys carry ffff:ffff in their top
// half, a multicast prefix no TCP peer has, so the two never collide.
func ipKey(a net.Addr) uint64 {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if a != nil {
			if ap, err := netip.ParseAddrPort(a.String()); err == nil {
				ip = ap.Addr()
			}
		}
	}
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return 0xFFFF_FFFF_0000_0000 | uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	}
	b := ip.As16() // zero for an invalid address: such peers share one key
	var k uint64
	for _, x := range b[:8] {
		k = k<<8 | uint64(x)
	}
	return k
}

// admitUpgrade takes the server and per-address slots for a complete
// upgrade request, or says why not. Called on the event loop.
func (c *Conn) admitUpgrade() *handshakeError {
	s := c.srv
	if !acquireCount(&s.conns, s.cfg.MaxConnections) {
		s.refusedConnLimit.Add(1)
		return &handshakeError{status: http.StatusServiceUnavailable, reason: reasonServerFull}
	}
	c.held |= slotConn
	if limit := s.cfg.MaxConnectionsPerIP; limit > 0 {
		if !s.perIP.acquire(c.ipKey, limit) {
			s.refusedIPLimit.Add(1)
			return &handshakeError{status: http.StatusTooManyRequests, reason: reasonIPFull}
		}
		c.held |= slotIP
	}
	return nil
}

// admitKey takes the per-key slot for the key Authorize set.
func (c *Conn) admitKey(key uint64) *handshakeError {
	s := c.srv
	limit := s.cfg.MaxConnectionsPerKey
	if key == 0 || limit <= 0 {
		return nil
	}
	if !s.perKey.acquire(key, limit) {
		s.refusedKeyLimit.Add(1)
		return &handshakeError{status: http.StatusTooManyRequests, reason: reasonKeyFull}
	}
	c.limitKey = key
	c.held |= slotKey
	return nil
}

// release gives back the slots in which that c holds.
func (c *Conn) release(which slot) {
	which &= c.held
	c.held &^= which
	s := c.srv
	if which&slotPending != 0 {
		s.pending.Add(-1)
	}
	if which&slotConn != 0 {
		s.conns.Add(-1)
	}
	if which&slotIP != 0 {
		s.perIP.release(c.ipKey)
	}
	if which&slotKey != 0 {
		s.perKey.release(c.limitKey)
	}
}

// retryAfterHeader is the Retry-After line of 503 and 429 refusals.
func retryAfterHeader(d time.Duration) string {
	secs := max(1, int64((d+time.Second-1)/time.Second))
	return "Retry-After: " + strconv.FormatInt(secs, 10) + "\r\n"
}

// wantsRetryAfter: the statuses that tell a client to come back later.
func wantsRetryAfter(status int) bool {
	return status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests
}
