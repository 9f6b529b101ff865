package node

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestAuthThrottleBuckets(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	a := newAuthThrottle(AuthLimits{UserFailures: 3, UserFailureEvery: 10 * time.Second,
		IPFailures: 5, IPFailureEvery: time.Hour, IPRegisters: 1, IPRegisterEvery: time.Minute, TableSize: 100}, clock.now)
	alice := a.loginCharges("alice", "192.0.2.1")
	for i := range 3 {
		if ok, _ := a.take(alice...); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	ok, wait := a.take(alice...)
	if ok || wait != 10*time.Second {
		t.Fatalf("4th attempt: %v, wait %v; want refused for 10s", ok, wait)
	}
	// A refused attempt spends nothing; a refund gives one back.
	clock.advance(5 * time.Second)
	if ok, wait := a.take(alice...); ok || wait != 5*time.Second {
		t.Fatalf("half way: %v, wait %v; want refused for 5s", ok, wait)
	}
	clock.advance(5 * time.Second)
	if ok, _ := a.take(alice...); !ok {
		t.Fatal("refused after the refill")
	}
	a.refund(alice...)
	if ok, _ := a.take(alice...); !ok {
		t.Fatal("the refunded token is missing")
	}
	// The address has spent 4 of 5: another name gets one attempt.
	bob := a.loginCharges("bob", "192.0.2.1")
	if ok, _ := a.take(bob...); !ok {
		t.Fatal("bob refused before the address's budget is spent")
	}
	if ok, wait := a.take(bob...); ok || wait <= 0 {
		t.Fatalf("bob after the address's budget: %v, wait %v", ok, wait)
	}
	if ok, _ := a.take(a.loginCharges("bob", "192.0.2.2")...); !ok {
		t.Fatal("bob refused from another address")
	}
	// Disabled: nothing is counted.
	off := newAuthThrottle(AuthLimits{Disabled: true, UserFailures: 1, UserFailureEvery: time.Hour,
		IPFailures: 1, IPFailureEvery: time.Hour, IPRegisters: 1, IPRegisterEvery: time.Hour, TableSize: 1}, clock.now)
	for range 10 {
		if ok, _ := off.take(off.loginCharges("alice", "192.0.2.1")...); !ok {
			t.Fatal("disabled throttle refused")
		}
	}
}

// TestAuthThrottleTableBounded: an attacker cycling through many usernames
// (or addresses) never grows a table beyond its size, and once their
// buckets have refilled the entries go.
func TestAuthThrottleTableBounded(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	const size = 1000
	a := newAuthThrottle(DefaultAuthLimits, clock.now)
	a.limits.TableSize = size
	a.users = newBucketTable(a.limits.UserFailures, a.limits.UserFailureEvery, size)
	a.ipFailures = newBucketTable(a.limits.IPFailures, a.limits.IPFailureEvery, size)
	for i := range 200_000 {
		// Every name from its own address, so that neither budget stops
		// the flood before the tables fill.
		a.take(a.loginCharges(fmt.Sprintf("user%06d", i), netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String())...)
		if a.users.len() > size || a.ipFailures.len() > size {
			t.Fatalf("after %d names: %d users, %d addresses tracked; bound %d", i+1, a.users.len(), a.ipFailures.len(), size)
		}
	}
	if a.users.len() != size {
		t.Fatalf("%d users tracked, want the table full (%d)", a.users.len(), size)
	}
	// An hour later every bucket is full again: each new attempt drops
	// two idle entries, so the table shrinks back.
	clock.advance(time.Hour)
	for i := range size {
		a.take(a.loginCharges(fmt.Sprintf("later%06d", i), "192.0.2.1")...)
		a.refund(a.loginCharges(fmt.Sprintf("later%06d", i), "192.0.2.1")...)
	}
	if got := a.users.len(); got > size/2+2 {
		t.Fatalf("%d users tracked after the flood went idle; want about %d", got, size/2)
	}
}

func TestAuthThrottleClientKey(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.7,2001:db8:ffff::/48")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8,proxy.example"); err == nil {
		t.Fatal("a host name was accepted as a trusted proxy")
	}
	plain := newAuthThrottle(DefaultAuthLimits, time.Now)
	behind := newAuthThrottle(AuthLimits{TrustedProxies: trusted}.withDefaults(), time.Now)
	for _, tc := range []struct {
		name   string
		a      *authThrottle
		remote string
		xff    []string
		want   string
	}{
		{"v4 peer", plain, "198.51.100.4:5555", nil, "198.51.100.4"},
		{"header ignored without trusted proxies", plain, "198.51.100.4:5555", []string{"203.0.113.9"}, "198.51.100.4"},
		{"v6 peer by /64", plain, "[2001:db8:1:2:aaaa::1]:5555", nil, "2001:db8:1:2::/64"},
		{"v4-mapped v6", plain, "[::ffff:198.51.100.4]:5555", nil, "198.51.100.4"},
		{"untrusted peer's header ignored", behind, "198.51.100.4:5555", []string{"203.0.113.9"}, "198.51.100.4"},
		{"trusted proxy", behind, "10.1.2.3:5555", []string{"203.0.113.9"}, "203.0.113.9"},
		{"chain of proxies: nearest untrusted hop", behind, "10.1.2.3:5555", []string{"6.6.6.6, 203.0.113.9", "192.0.2.7"}, "203.0.113.9"},
		{"v6 client behind a proxy", behind, "[2001:db8:ffff::1]:443", []string{"2001:db8:5:6:7::8"}, "2001:db8:5:6::/64"},
		{"garbage hop stops the walk", behind, "10.1.2.3:5555", []string{"203.0.113.9, not-an-ip"}, "10.1.2.3"},
		{"all hops trusted", behind, "10.1.2.3:5555", []string{"10.9.9.9"}, "10.9.9.9"},
		{"trusted proxy without header", behind, "10.1.2.3:5555", nil, "10.1.2.3"},
	} {
		r, _ := http.NewRequest(http.MethodPost, "/v1/login", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tc.a.clientKey(r); got != tc.want {
			t.Errorf("%s: key %q, want %q", tc.name, got, tc.want)
		}
	}
}
