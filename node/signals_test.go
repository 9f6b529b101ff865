package node_test

import (
	"sync"
	"testing"
	"time"

	"parley/client"
	"parley/node"
	"parley/wire"
)

// fakeClock is the node's controllable clock: signal timers fire when the
// test moves it, not when real time passes.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func startClockedNode(t *testing.T) (*node.Node, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Now().Add(-time.Hour)} // behind the leader: the engine caps last_seen at the entry time
	cfg := testConfig(t.TempDir())
	cfg.Clock = clk.Now
	cfg.SignalTick = 5 * time.Millisecond // real ticks; expiries follow the fake clock
	return startNodeWith(t, cfg), clk
}

// nextSignal waits for a signal matching pred, skipping others.
func nextSignal(t *testing.T, c *client.Client, what string, pred func(client.Signal) bool) client.Signal {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-c.Signals():
			if pred(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("%s: no signal", what)
		}
	}
}

// noSignal fails if a signal matching pred arrives within a short wait.
func noSignal(t *testing.T, c *client.Client, what string, pred func(client.Signal) bool) {
	t.Helper()
	deadline := time.After(200 * time.Millisecond)
	for {
		select {
		case s := <-c.Signals():
			if pred(s) {
				t.Fatalf("%s: unexpected signal %+v %+v", what, s.Typing, s.Presence)
			}
		case <-deadline:
			return
		}
	}
}

func isTyping(user uint64, on bool) func(client.Signal) bool {
	return func(s client.Signal) bool { return s.Typing != nil && s.Typing.User == user && s.Typing.On == on }
}

func TestTypingThrottledAndExpiring(t *testing.T) {
	n, clk := startClockedNode(t)
	ctx := ctxT(t)
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	cc := dial(t, []string{n.WSURL()}, login(t, n, carol, "phone"), 0)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}

	if err := ca.Typing(ctx, dm.ID, true); err != nil {
		t.Fatal(err)
	}
	s := nextSignal(t, cb, "first start", isTyping(alice.user, true))
	if s.Typing.Conv != dm.ID || s.Typing.TTLms != 6000 {
		t.Fatalf("typing frame %+v", s.Typing)
	}
	// Renewals inside 3s are not forwarded.
	for range 5 {
		clk.Advance(500 * time.Millisecond)
		if err := ca.Typing(ctx, dm.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	noSignal(t, cb, "throttled renewals", isTyping(alice.user, true))
	clk.Advance(600 * time.Millisecond) // 3.1s after the first start
	if err := ca.Typing(ctx, dm.ID, true); err != nil {
		t.Fatal(err)
	}
	nextSignal(t, cb, "start after the window", isTyping(alice.user, true))
	// No renewal: the indicator expires after 6s and bob gets a stop.
	clk.Advance(5 * time.Second)
	noSignal(t, cb, "before expiry", isTyping(alice.user, false))
	clk.Advance(1100 * time.Millisecond)
	nextSignal(t, cb, "expiry", isTyping(alice.user, false))
	// The typist's own devices and non-members get nothing; a non-member may not type.
	noSignal(t, ca, "typist's own device", func(s client.Signal) bool { return s.Typing != nil })
	noSignal(t, cc, "non-member", func(s client.Signal) bool { return s.Typing != nil })
	if err := cc.Typing(ctx, dm.ID, true); !isCode(err, wire.CodeNotMember) {
		t.Fatalf("non-member typing: %v", err)
	}
	// An explicit stop is forwarded once.
	clk.Advance(4 * time.Second)
	ca.Typing(ctx, dm.ID, true)
	nextSignal(t, cb, "start", isTyping(alice.user, true))
	ca.Typing(ctx, dm.ID, false)
	ca.Typing(ctx, dm.ID, false)
	nextSignal(t, cb, "stop", isTyping(alice.user, false))
	noSignal(t, cb, "second stop", isTyping(alice.user, false))
}

func TestTypingSuppressedInLargeGroups(t *testing.T) {
	clk := &fakeClock{now: time.Now().Add(-time.Hour)} // behind the leader: the engine caps last_seen at the entry time
	cfg := testConfig(t.TempDir())
	cfg.Clock = clk.Now
	cfg.TypingMaxMembers = 2
	n := startNodeWith(t, cfg)
	ctx := ctxT(t)
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	g, err := ca.CreateGroup(ctx, "three", []uint64{bob.user, carol.user})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Typing(ctx, g.ID, true); err != nil {
		t.Fatal(err)
	}
	noSignal(t, cb, "typing in a group over the limit", func(s client.Signal) bool { return s.Typing != nil })
}

func isPresence(user uint64, online bool) func(client.Signal) bool {
	return func(s client.Signal) bool {
		return s.Presence != nil && s.Presence.User == user && s.Presence.Online == online
	}
}

func TestPresenceTwoDevicesGraceAndLastSeen(t *testing.T) {
	n, clk := startClockedNode(t)
	ctx := ctxT(t)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	bobPhone, bobLaptop := login(t, n, bob, "phone"), login(t, n, bob, "laptop")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)

	states, err := ca.WatchPresence(ctx, []uint64{bob.user})
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 1 || states[0].Online || states[0].LastSeen != 0 {
		t.Fatalf("initial state %+v", states)
	}
	p1 := dial(t, []string{n.WSURL()}, bobPhone, 0)
	nextSignal(t, ca, "bob online", isPresence(bob.user, true))
	p2 := dial(t, []string{n.WSURL()}, bobLaptop, 0)
	p1.Close()
	clk.Advance(time.Minute)
	noSignal(t, ca, "offline while the laptop is connected", isPresence(bob.user, false))

	// Last device gone, back within the grace period: no flap.
	p2.Close()
	waitOnline(t, n, 0)
	clk.Advance(3 * time.Second)
	p3 := dial(t, []string{n.WSURL()}, bobPhone, 0)
	clk.Advance(10 * time.Second)
	noSignal(t, ca, "blip inside grace", func(s client.Signal) bool { return s.Presence != nil })

	// Gone for good: offline after the grace, with last_seen.
	p3.Close()
	waitOnline(t, n, 0)
	offAt := clk.Now()
	clk.Advance(6 * time.Second)
	s := nextSignal(t, ca, "bob offline", isPresence(bob.user, false))
	if s.Presence.LastSeen < offAt.UnixMilli() {
		t.Fatalf("last_seen %d, want >= %d", s.Presence.LastSeen, offAt.UnixMilli())
	}
	// last_seen is durable: a new watcher reads it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		states, err = ca.WatchPresence(ctx, []uint64{bob.user})
		if err != nil {
			t.Fatal(err)
		}
		if states[0].LastSeen == s.Presence.LastSeen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored last_seen %d, want %d", states[0].LastSeen, s.Presence.LastSeen)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Bad input: over the cap, unknown users.
	many := make([]uint64, wire.MaxPresenceWatch+1)
	for i := range many {
		many[i] = uint64(i + 1)
	}
	if _, err := ca.WatchPresence(ctx, many); !isCode(err, wire.CodeTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
	if _, err := ca.WatchPresence(ctx, []uint64{bob.user, 987654}); !isCode(err, wire.CodeNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
}

// waitOnline polls until the node has n open WebSocket connections minus
// the watchers: it waits for closes to reach the server.
func waitOnline(t *testing.T, n *node.Node, _ int) {
	t.Helper()
	want := 1.0 // the watcher (alice) stays connected
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, n, "parley_connections") != want {
		if time.Now().After(deadline) {
			t.Fatalf("connections: %v, want %v", metricValue(t, n, "parley_connections"), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
