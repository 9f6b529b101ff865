package node

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// AuthLimits throttle password guessing and account creation on one node
// (each node keeps its own tables: a client spreading over the nodes of a
// cluster gets each node's budget). Each budget is a token bucket: Burst
// attempts at once, then one more every Every. Zero fields take the
// defaults of DefaultAuthLimits.
type AuthLimits struct {
	// Disabled turns the throttle off (load tests that create thousands
	// of accounts from one address).
	Disabled bool

	// Failed logins per username, whoever sends them: 10, then 5 a minute.
	// A successful login gives back what it took, so only failures count.
	UserFailures     int
	UserFailureEvery time.Duration
	// Failed logins per client address (an IPv6 client by its /64): 100,
	// then 20 a minute. Higher than per username, since many users may
	// share an address (NAT), and it stops one address from trying one
	// password on many names.
	IPFailures     int
	IPFailureEvery time.Duration
	// Registrations per client address: 20, then one a minute.
	IPRegisters     int
	IPRegisterEvery time.Duration

	// TableSize bounds each table (usernames, addresses for logins,
	// addresses for registrations): beyond it the entry touched least
	// recently is dropped. Entries whose bucket has refilled are dropped
	// as they are met, since they hold nothing a new entry would not.
	TableSize int

	// TrustedProxies are the addresses of reverse proxies whose
	// X-Forwarded-For header names the client. Without them (the default)
	// the client is the TCP peer, and the header is ignored.
	TrustedProxies []netip.Prefix
}

// DefaultAuthLimits are the production budgets.
var DefaultAuthLimits = AuthLimits{
	UserFailures: 10, UserFailureEvery: 12 * time.Second,
	IPFailures: 100, IPFailureEvery: 3 * time.Second,
	IPRegisters: 20, IPRegisterEvery: time.Minute,
	TableSize: 50_000,
}

func (l AuthLimits) withDefaults() AuthLimits {
	d := DefaultAuthLimits
	for _, f := range []struct {
		dst *int
		v   int
	}{{&l.UserFailures, d.UserFailures}, {&l.IPFailures, d.IPFailures}, {&l.IPRegisters, d.IPRegisters}, {&l.TableSize, d.TableSize}} {
		if *f.dst == 0 {
			*f.dst = f.v
		}
	}
	for _, f := range []struct {
		dst *time.Duration
		v   time.Duration
	}{{&l.UserFailureEvery, d.UserFailureEvery}, {&l.IPFailureEvery, d.IPFailureEvery}, {&l.IPRegisterEvery, d.IPRegisterEvery}} {
		if *f.dst == 0 {
			*f.dst = f.v
		}
	}
	return l
}

func (l AuthLimits) validate(bad func(string, ...any)) {
	if l.UserFailures < 1 || l.IPFailures < 1 || l.IPRegisters < 1 {
		bad("auth limits: bursts %d, %d, %d must be at least 1", l.UserFailures, l.IPFailures, l.IPRegisters)
	}
	if l.UserFailureEvery <= 0 || l.IPFailureEvery <= 0 || l.IPRegisterEvery <= 0 {
		bad("auth limits: refill intervals must be positive")
	}
	if l.TableSize < 1 {
		bad("auth limits: table size %d must be at least 1", l.TableSize)
	}
	for _, p := range l.TrustedProxies {
		if !p.IsValid() {
			bad("auth limits: trusted proxy %v is not a prefix", p)
		}
	}
}

// ParseTrustedProxies reads a comma-separated list of addresses and CIDR
// prefixes (the -trusted-proxies flag).
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR prefix", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// authThrottle holds the three tables. One mutex: logins are few (each
// costs an argon2id verification), so it is never contended for long.
type authThrottle struct {
	limits AuthLimits
	now    func() time.Time

	mu                             sync.Mutex
	users, ipFailures, ipRegisters *bucketTable
}

func newAuthThrottle(l AuthLimits, now func() time.Time) *authThrottle {
	return &authThrottle{
		limits:      l,
		now:         now,
		users:       newBucketTable(l.UserFailures, l.UserFailureEvery, l.TableSize),
		ipFailures:  newBucketTable(l.IPFailures, l.IPFailureEvery, l.TableSize),
		ipRegisters: newBucketTable(l.IPRegisters, l.IPRegisterEvery, l.TableSize),
	}
}

// charge names one token of one table.
type charge struct {
	t   *bucketTable
	key string
}

// loginCharges: a login attempt spends from its username's budget and its
// address's.
func (a *authThrottle) loginCharges(username, ip string) []charge {
	return []charge{{a.users, username}, {a.ipFailures, ip}}
}

// take spends one token of each charge, or none: when one of them has no
// token left it returns false and how long until it has one. A refused
// attempt spends nothing, so a client that waits as told gets through.
func (a *authThrottle) take(charges ...charge) (bool, time.Duration) {
	if a.limits.Disabled {
		return true, 0
	}
	now := a.now().UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	var wait int64
	for _, c := range charges {
		wait = max(wait, c.t.wait(c.key, now))
	}
	if wait > 0 {
		return false, time.Duration(wait)
	}
	for _, c := range charges {
		c.t.spend(c.key, now)
	}
	return true, 0
}

// refund gives back what take spent, for an attempt that turned out not to
// count (a successful login, an outcome left unknown).
func (a *authThrottle) refund(charges ...charge) {
	if a.limits.Disabled {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range charges {
		c.t.refund(c.key)
	}
}

// clientKey is the address a request is charged to: the TCP peer, or, when
// the peer is a trusted proxy, the nearest address in X-Forwarded-For that
// is not one. IPv6 clients are keyed by their /64, which one host usually
// has whole.
func (a *authThrottle) clientKey(r *http.Request) string {
	addr := peerAddr(r.RemoteAddr)
	if len(a.limits.TrustedProxies) != 0 && a.trusted(addr) {
		// The rightmost entries were added by our own proxies; the first
		// one that is not a trusted proxy is the client as far as we can
		// tell (what is left of it may be forged).
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break
			}
			addr = hop.Unmap()
			if !a.trusted(addr) {
				break
			}
		}
	}
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

func (a *authThrottle) trusted(addr netip.Addr) bool {
	for _, p := range a.limits.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// peerAddr parses http.Request.RemoteAddr ("ip:port").
func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	addr, _ := netip.ParseAddr(host) // the zero Addr if it is not one: one shared key
	return addr.Unmap()
}

// bucketTable is a bounded map from a key to a token bucket, in least
// recently touched order (a doubly linked list through the entries).
// Times are unix nanoseconds. Not safe for concurrent use: authThrottle
// locks.
type bucketTable struct {
	burst   float64
	every   int64 // nanoseconds per token
	max     int
	entries map[string]*bucket
	head    bucket // sentinel: head.next is the most recent, head.prev the least
}

type bucket struct {
	key        string
	tokens     float64 // as of at
	at         int64
	prev, next *bucket
}

func newBucketTable(burst int, every time.Duration, max int) *bucketTable {
	t := &bucketTable{burst: float64(burst), every: int64(every), max: max, entries: make(map[string]*bucket)}
	t.head.prev, t.head.next = &t.head, &t.head
	return t
}

// level is b's tokens at now.
func (t *bucketTable) level(b *bucket, now int64) float64 {
	if now <= b.at {
		return b.tokens
	}
	return min(t.burst, b.tokens+float64(now-b.at)/float64(t.every))
}

// wait is how long until key has a token (0: it has one now).
func (t *bucketTable) wait(key string, now int64) int64 {
	b := t.entries[key]
	if b == nil {
		return 0
	}
	if l := t.level(b, now); l < 1 {
		return int64((1 - l) * float64(t.every))
	}
	return 0
}

// spend takes one token from key's bucket, making it if needed.
func (t *bucketTable) spend(key string, now int64) {
	t.dropFull(now, 2)
	b := t.entries[key]
	if b == nil {
		if len(t.entries) >= t.max {
			t.remove(t.head.prev)
		}
		b = &bucket{key: key, tokens: t.burst, at: now}
		t.entries[key] = b
	} else {
		b.tokens, b.at = t.level(b, now), max(b.at, now)
		t.unlink(b)
	}
	b.tokens--
	t.pushFront(b)
}

// refund gives key one token back, if it is still tracked.
func (t *bucketTable) refund(key string) {
	if b := t.entries[key]; b != nil {
		b.tokens = min(t.burst, b.tokens+1)
	}
}

// dropFull removes up to n of the least recently touched entries whose
// buckets are full again: they hold nothing a new entry would not, so
// the table shrinks back after a burst of distinct keys.
func (t *bucketTable) dropFull(now int64, n int) {
	for ; n > 0; n-- {
		b := t.head.prev
		if b == &t.head || t.level(b, now) < t.burst {
			return
		}
		t.remove(b)
	}
}

func (t *bucketTable) remove(b *bucket) {
	t.unlink(b)
	delete(t.entries, b.key)
}

func (t *bucketTable) unlink(b *bucket) {
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
}

func (t *bucketTable) pushFront(b *bucket) {
	b.prev, b.next = &t.head, t.head.next
	t.head.next.prev = b
	t.head.next = b
}

func (t *bucketTable) len() int { return len(t.entries) }
