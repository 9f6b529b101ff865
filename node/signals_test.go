package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"parley/client"
	"parley/internal/testwait"
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

// startSignalCluster starts three nodes with empty state on one fake
// clock, bootstraps them as one cluster and waits until every node's
// links to its two peers are up.
func startSignalCluster(t *testing.T) ([]*node.Node, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Now().Add(-time.Hour)} // behind the leader: the engine caps last_seen at the entry time
	key := []byte("0123456789abcdef0123456789abcdef")  // one token key: a token works on every node
	var nodes []*node.Node
	for i := range 3 {
		cfg := testConfig(t.TempDir())
		cfg.NodeID = fmt.Sprintf("n%d", i+1)
		cfg.Bootstrap = false
		cfg.JWTKey = key
		cfg.ClusterKey = testClusterKey // one cluster key, as for the token key
		cfg.Clock = clk.Now
		cfg.SignalTick = 5 * time.Millisecond // real ticks; expiries follow the fake clock
		n, err := node.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}
	if err := node.BootstrapForTest(nodes...); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := n.WaitLeader(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		testwait.Eventually(t, "peer links up", func() bool { return n.PeerLinksUpForTest() == 2 })
		if v := metricValue(t, n, "parley_peer_links_up"); v != 2 {
			t.Fatalf("parley_peer_links_up = %v, want 2", v)
		}
	}
	return nodes, clk
}

// waitUntil is testwait.Eventually under its old name, kept for the
// callers in files other work has open (conformance_tuned_test.go); new
// code calls testwait.Eventually.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.Eventually(t, what, cond)
}

// caughtUp waits until every node applied what from has applied.
func caughtUp(t *testing.T, from *node.Node, nodes ...*node.Node) {
	t.Helper()
	idx := from.AppliedIndexForTest()
	for _, n := range nodes {
		testwait.Eventually(t, "replication", func() bool { return n.AppliedIndexForTest() >= idx })
	}
}

// TestPresenceAcrossNodes: a watcher on one node sees a user connected to
// another come online and, after the grace, go offline with the last_seen
// the leader stores; a user moving between nodes does not flap; and when a
// node closes, its users go offline for the other nodes' watchers after
// the grace.
func TestPresenceAcrossNodes(t *testing.T) {
	nodes, clk := startSignalCluster(t)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := ctxT(t)
	alice, bob := register(t, n1, "alice"), register(t, n1, "bob")
	aliceTok, bobPhone, bobLaptop := login(t, n1, alice, "phone"), login(t, n1, bob, "phone"), login(t, n1, bob, "laptop")
	caughtUp(t, n1, n2, n3)

	ca := dial(t, []string{n2.WSURL()}, aliceTok, 0)
	states, err := ca.WatchPresence(ctx, []uint64{bob.user})
	if err != nil || len(states) != 1 || states[0].Online {
		t.Fatalf("initial state %+v, %v", states, err)
	}
	b1 := dial(t, []string{n1.WSURL()}, bobPhone, 0)
	nextSignal(t, ca, "bob online on n1", isPresence(bob.user, true))
	if states, err := ca.WatchPresence(ctx, []uint64{bob.user}); err != nil || !states[0].Online {
		t.Fatalf("presence.sub on n2 while bob is on n1: %+v, %v", states, err)
	}

	// Bob leaves n1: offline after n1's grace, with last_seen.
	b1.Close()
	testwait.Eventually(t, "bob's n1 session closed", func() bool { return metricValue(t, n1, "parley_connections") == 0 })
	offAt := clk.Now()
	clk.Advance(4 * time.Second)
	noSignal(t, ca, "bob offline inside the grace", isPresence(bob.user, false))
	clk.Advance(2 * time.Second)
	s := nextSignal(t, ca, "bob offline", isPresence(bob.user, false))
	if s.Presence.LastSeen < offAt.UnixMilli() {
		t.Fatalf("last_seen %d, want >= %d", s.Presence.LastSeen, offAt.UnixMilli())
	}
	// The leader stored it through Raft: every node reads it.
	for _, n := range nodes {
		c := dial(t, []string{n.WSURL()}, aliceTok, 0)
		testwait.Eventually(t, "stored last_seen", func() bool {
			states, err := c.WatchPresence(ctx, []uint64{bob.user})
			return err == nil && !states[0].Online && states[0].LastSeen == s.Presence.LastSeen
		})
		c.Close()
	}

	// Bob moves from n1 to n3, online there before n1's grace ends: no
	// flap. Then back to n1, the same way.
	b1 = dial(t, []string{n1.WSURL()}, bobPhone, 0)
	nextSignal(t, ca, "bob online on n1 again", isPresence(bob.user, true))
	b3 := dial(t, []string{n3.WSURL()}, bobLaptop, 0)
	testwait.Eventually(t, "n2 hears bob is on n3", func() bool { return n2.OnlineOnPeerForTest("n3", bob.user) })
	b1.Close()
	testwait.Eventually(t, "bob's n1 session closed", func() bool { return metricValue(t, n1, "parley_connections") == 0 })
	clk.Advance(6 * time.Second)
	testwait.Eventually(t, "n2 hears bob left n1", func() bool { return !n2.OnlineOnPeerForTest("n1", bob.user) })
	dial(t, []string{n1.WSURL()}, bobPhone, 0)
	testwait.Eventually(t, "n2 hears bob is on n1", func() bool { return n2.OnlineOnPeerForTest("n1", bob.user) })
	b3.Close()
	testwait.Eventually(t, "bob's n3 session closed", func() bool { return metricValue(t, n3, "parley_connections") == 0 })
	clk.Advance(6 * time.Second)
	testwait.Eventually(t, "n2 hears bob left n3", func() bool { return !n2.OnlineOnPeerForTest("n3", bob.user) })
	noSignal(t, ca, "bob moving between nodes", func(s client.Signal) bool { return s.Presence != nil })

	// n1 closes while bob is connected to it: n2 keeps him online for one
	// grace, then he is offline.
	n1.Close()
	testwait.Eventually(t, "n2 lost n1", func() bool { return n2.PeerLostForTest("n1") })
	noSignal(t, ca, "bob offline before the grace", isPresence(bob.user, false))
	clk.Advance(6 * time.Second)
	nextSignal(t, ca, "bob offline after n1 closed", isPresence(bob.user, false))
}

// TestTypingAcrossNodes: typing decided on the typist's node (throttled,
// expiring there) reaches a member connected to another node.
func TestTypingAcrossNodes(t *testing.T) {
	nodes, clk := startSignalCluster(t)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	ctx := ctxT(t)
	alice, carol, dave := register(t, n1, "alice"), register(t, n1, "carol"), register(t, n1, "dave")
	aliceTok, carolTok, daveTok := login(t, n1, alice, "phone"), login(t, n1, carol, "phone"), login(t, n1, dave, "phone")
	ca := dial(t, []string{n1.WSURL()}, aliceTok, 0)
	dm, err := ca.OpenDirect(ctx, carol.user)
	if err != nil {
		t.Fatal(err)
	}
	caughtUp(t, n1, n2, n3)
	cc := dial(t, []string{n3.WSURL()}, carolTok, 0)
	cd := dial(t, []string{n2.WSURL()}, daveTok, 0)

	if err := ca.Typing(ctx, dm.ID, true); err != nil {
		t.Fatal(err)
	}
	s := nextSignal(t, cc, "start on n3", isTyping(alice.user, true))
	if s.Typing.Conv != dm.ID || s.Typing.TTLms != 6000 {
		t.Fatalf("typing frame %+v", s.Typing)
	}
	if err := ca.Typing(ctx, dm.ID, false); err != nil {
		t.Fatal(err)
	}
	nextSignal(t, cc, "stop on n3", isTyping(alice.user, false))

	// Throttled and expired on n1: a renewal inside the window is not
	// sent; the expiry is, as a stop.
	clk.Advance(4 * time.Second)
	ca.Typing(ctx, dm.ID, true)
	nextSignal(t, cc, "second start", isTyping(alice.user, true))
	clk.Advance(time.Second)
	ca.Typing(ctx, dm.ID, true)
	noSignal(t, cc, "throttled renewal", isTyping(alice.user, true))
	clk.Advance(7 * time.Second)
	nextSignal(t, cc, "expiry on n1 reaches n3", isTyping(alice.user, false))
	noSignal(t, cd, "non-member on n2", func(s client.Signal) bool { return s.Typing != nil })
}
