package node

import (
	"cmp"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"parley/raftlog"
)

// Helpers for the cluster tests of package node_test.

// BootstrapForTest makes nodes, opened with Bootstrap false, one cluster,
// seeded from the first.
func BootstrapForTest(nodes ...*Node) error {
	var servers []raftlog.Server
	for _, n := range nodes {
		servers = append(servers, raftlog.Server{ID: n.cfg.NodeID, Addr: n.raft.Addr()})
	}
	return nodes[0].raft.Bootstrap(servers)
}

// PeerLinksUpForTest is the number of this node's links to peers that are
// up.
func (n *Node) PeerLinksUpForTest() int { return n.raft.PeerStats().LinksUp }

// AppliedIndexForTest is the engine's applied index.
func (n *Node) AppliedIndexForTest() uint64 { return n.engine.AppliedIndex() }

// OnlineOnPeerForTest reports whether peer told this node that user is
// online there.
func (n *Node) OnlineOnPeerForTest(peer string, user uint64) bool {
	p := n.signals.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.peers[peer]
	if pp == nil {
		return false
	}
	_, ok := pp.users[user]
	return ok
}

// PeerLostForTest reports whether this node lost the link from peer and
// waits for the grace to drop its users.
func (n *Node) PeerLostForTest(peer string) bool {
	p := n.signals.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	pp := p.peers[peer]
	return pp != nil && !pp.dropAt.IsZero()
}

type change = presenceChange

func on(u uint64) change            { return change{user: u, online: true} }
func off(u uint64, ts int64) change { return change{user: u, lastSeen: ts} }
func sortChanges(c []change) []change {
	slices.SortFunc(c, func(a, b change) int { return cmp.Compare(a.user, b.user) })
	return c
}

func requireChanges(t *testing.T, what string, got []change, want ...change) {
	t.Helper()
	if !slices.Equal(sortChanges(got), want) {
		t.Fatalf("%s: changes %+v, want %+v", what, got, want)
	}
}

// TestPresenceMergesPeers: a user is online while online on this node or
// any peer; watchers get only the cluster-wide transitions.
func TestPresenceMergesPeers(t *testing.T) {
	p := newPresenceTracker(5 * time.Second)
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	// n2 reports 10 and 11 online; n3 reports 11 too.
	requireChanges(t, "n2's set", p.peerSet("n2", 3, []uint64{11, 10, 10}, 1), on(10), on(11))
	requireChanges(t, "n3's set", p.peerSet("n3", 1, []uint64{11}, 1))
	if !p.isOnline(10) || !p.isOnline(11) || p.isOnline(12) {
		t.Fatal("isOnline must merge the peers' sets")
	}
	// 11 leaves n2: still online on n3. Then n3: offline, at n3's time.
	requireChanges(t, "11 off on n2", p.peerDelta("n2", 4, nil, []uint64{11}, 500))
	requireChanges(t, "11 off on n3", p.peerDelta("n3", 2, nil, []uint64{11}, 600), off(11, 600))
	if got := p.takeWentOffline(); len(got) != 1 || got[11].at != 600 {
		t.Fatalf("went offline: %v", got)
	}
	if p.takeWentOffline() != nil {
		t.Fatal("went offline must be taken once")
	}

	// A user online here and on a peer: no event either way, and this
	// node's changes are queued for the peers with a growing version.
	if p.connected(10) {
		t.Fatal("online on n2: connecting here is no transition")
	}
	ver, ons, offs, ok := p.takeChanges()
	if !ok || ver != 1 || !slices.Equal(ons, []uint64{10}) || len(offs) != 0 {
		t.Fatalf("changes to send: %d %v %v %v", ver, ons, offs, ok)
	}
	if _, _, _, ok := p.takeChanges(); ok {
		t.Fatal("changes must be taken once")
	}
	requireChanges(t, "10 off on n2 while here", p.peerDelta("n2", 5, nil, []uint64{10}, 700))
	p.disconnected(10, at(0))
	requireChanges(t, "10 inside grace", p.sweep(at(4*time.Second)))
	requireChanges(t, "10 after grace", p.sweep(at(5*time.Second)), off(10, at(5*time.Second).UnixMilli()))
	if ver, _, offs, _ := p.takeChanges(); ver != 2 || !slices.Equal(offs, []uint64{10}) {
		t.Fatalf("offline here not queued: %d %v", ver, offs)
	}
	ver, users := p.localSet()
	if ver != 2 || len(users) != 0 {
		t.Fatalf("local set %d %v", ver, users)
	}
}

// TestPresenceMoveDoesNotFlap: a user who moves from a peer to this node
// and back, each time connecting to the new node before the old one's
// grace ends, stays online throughout.
func TestPresenceMoveDoesNotFlap(t *testing.T) {
	p := newPresenceTracker(5 * time.Second)
	t0 := time.Unix(1000, 0)
	requireChanges(t, "online on n2", p.peerDelta("n2", 1, []uint64{20}, nil, 0), on(20))
	if p.connected(20) {
		t.Fatal("moving here flapped")
	}
	requireChanges(t, "n2's grace ends", p.peerDelta("n2", 2, nil, []uint64{20}, 1))
	requireChanges(t, "back to n2", p.peerDelta("n2", 3, []uint64{20}, nil, 2))
	p.disconnected(20, t0)
	requireChanges(t, "grace here ends", p.sweep(t0.Add(time.Minute)))
	if !p.isOnline(20) {
		t.Fatal("online on n2")
	}
	requireChanges(t, "leaves n2", p.peerDelta("n2", 4, nil, []uint64{20}, 3), off(20, 3))
}

// TestPresencePeerVersions: a delta the peer's latest full set already
// covers is skipped; a full set replaces what the peer reported before.
func TestPresencePeerVersions(t *testing.T) {
	p := newPresenceTracker(5 * time.Second)
	requireChanges(t, "set v10", p.peerSet("n2", 10, []uint64{1, 2}, 0), on(1), on(2))
	requireChanges(t, "delta v9 (before the set)", p.peerDelta("n2", 9, []uint64{3}, []uint64{1}, 0))
	requireChanges(t, "delta v10 (the set's own)", p.peerDelta("n2", 10, nil, []uint64{2}, 0))
	requireChanges(t, "delta v11", p.peerDelta("n2", 11, []uint64{3}, []uint64{1}, 50), off(1, 50), on(3))
	// The peer restarted: its versions start over with its new set.
	requireChanges(t, "new life's set", p.peerSet("n2", 0, []uint64{4, 3}, 60), off(2, 60), on(4))
	requireChanges(t, "new life's delta", p.peerDelta("n2", 1, nil, []uint64{4}, 70), off(4, 70))
}

// TestPresencePeerDown: the users of a peer whose link is lost go offline
// after the grace, unless they are online elsewhere or the link comes back
// with a full set in time.
func TestPresencePeerDown(t *testing.T) {
	p := newPresenceTracker(5 * time.Second)
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	p.peerSet("n2", 1, []uint64{1, 2, 3}, 0)
	p.peerSet("n3", 1, []uint64{3}, 0)
	p.connected(2)

	p.peerDown("n2", at(0))
	p.peerDown("n2", at(3*time.Second)) // a second loss does not push the deadline
	requireChanges(t, "inside grace", p.sweep(at(4999*time.Millisecond)))
	if !p.isOnline(1) {
		t.Fatal("offline before the grace ended")
	}
	ts := at(5 * time.Second).UnixMilli()
	requireChanges(t, "after grace", p.sweep(at(5*time.Second)), off(1, ts))
	if p.isOnline(1) || !p.isOnline(2) || !p.isOnline(3) {
		t.Fatal("only the users online nowhere else go offline")
	}
	if got := p.takeWentOffline(); len(got) != 1 || got[1].at != ts {
		t.Fatalf("went offline: %v", got)
	}

	// Lost and back in time: the new set decides, the drop is cancelled.
	p.peerDown("n3", at(10*time.Second))
	requireChanges(t, "n3 back without 3", p.peerSet("n3", 5, []uint64{7}, 77), off(3, 77), on(7))
	requireChanges(t, "no drop after the link came back", p.sweep(at(time.Hour)))
	if !p.isOnline(7) {
		t.Fatal("the set that came back was dropped")
	}
	if len(p.peers) != 1 {
		t.Fatalf("peers kept: %d", len(p.peers))
	}
}

func TestPeerMsgCodec(t *testing.T) {
	for _, m := range []peerMsg{
		{Kind: peerPresenceSet, Ver: 7, On: []uint64{1, 1 << 40}, Ts: 1700000000000},
		{Kind: peerPresenceDelta, Ver: 8, On: []uint64{3}, Off: []uint64{1}, Ts: 1700000000001},
		{Kind: peerTyping, Conv: 99, User: 1 << 33, Typing: true},
	} {
		b, err := encodePeerMsg(&m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodePeerMsg(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.V != peerEnvelopeVersion || got.Kind != m.Kind || got.Ver != m.Ver || !slices.Equal(got.On, m.On) ||
			!slices.Equal(got.Off, m.Off) || got.Ts != m.Ts || got.Conv != m.Conv || got.User != m.User || got.Typing != m.Typing {
			t.Fatalf("round trip %+v -> %+v", m, got)
		}
		if m.Kind == peerTyping && len(b) > 32 {
			t.Fatalf("typing message of %d bytes", len(b))
		}
	}
	// Fields of a newer build are skipped; another version is refused;
	// garbage is an error.
	newer, _ := msgpack.Marshal(map[string]any{"v": 1, "k": peerTyping, "c": 5, "zz": []int{1, 2}})
	if m, err := decodePeerMsg(newer); err != nil || m.Conv != 5 {
		t.Fatalf("newer fields: %+v %v", m, err)
	}
	v2, _ := msgpack.Marshal(map[string]any{"v": 2, "k": peerTyping})
	if _, err := decodePeerMsg(v2); !errors.Is(err, errPeerMsgVersion) {
		t.Fatalf("version 2: %v", err)
	}
	for _, b := range [][]byte{nil, {0xc1}, {0x81, 0xa1, 'v'}, []byte("hello")} {
		if _, err := decodePeerMsg(b); err == nil {
			t.Fatalf("garbage %x decoded", b)
		}
	}
}

// TestPresenceClosed: for each user who went offline cluster-wide, when
// their last connection closed, as the notifier's catch-up needs it: exact
// for a connection here, and at or before the close for one to a peer,
// which reports at its tick after the grace.
func TestPresenceClosed(t *testing.T) {
	p := newPresenceTracker(5 * time.Second)
	p.remoteSlack = 100 * time.Millisecond
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	p.connected(1)
	p.disconnected(1, at(time.Second))
	swept := at(6500 * time.Millisecond).UnixMilli()
	requireChanges(t, "1 off here", p.sweep(at(6500*time.Millisecond)), off(1, swept))
	want := wentOffline{at: swept, closed: at(time.Second).UnixMilli()}
	if got := p.takeWentOffline(); len(got) != 1 || got[1] != want {
		t.Fatalf("offline here: %+v, want %+v (closed at the close, not the sweep)", got, want)
	}

	p.peerSet("n2", 1, []uint64{2}, 0)
	requireChanges(t, "2 off on n2", p.peerDelta("n2", 2, nil, []uint64{2}, 9000), off(2, 9000))
	want = wentOffline{at: 9000, closed: 9000 - 5000 - 100}
	if got := p.takeWentOffline(); len(got) != 1 || got[2] != want {
		t.Fatalf("offline on a peer: %+v, want %+v", got, want)
	}
}
