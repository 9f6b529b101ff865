package node

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Presence and typing across the cluster (DESIGN "Presence and typing",
// guarantee 7): the nodes tell each other over raftlog's peer channel, an
// ephemeral side channel of the internal links that never touches the log.
//
//   - Presence: when its link to a peer comes up, a node sends its full
//     online set (peerPresenceSet, the link's greeting); then, once per
//     signal tick, what changed (peerPresenceDelta). A user counts as
//     online on a node from their first connection there until the grace
//     after the last one closed, so deltas already carry no blips. Sets and
//     deltas carry the version of the sender's set, so a delta that the
//     set sent after it already covers is skipped (presenceTracker).
//   - Typing: the node the typist is connected to throttles and expires the
//     indicator (typingTracker) and sends each start and stop it decides
//     (peerTyping); every node fans it out to the conversation's members
//     connected to it.
//
// Messages lost with a link are not resent: the next link starts with the
// full set again, and typing indicators expire on the clients (TTLms).

// Peer message kinds.
const (
	peerPresenceSet   = 1
	peerPresenceDelta = 2
	peerTyping        = 3
)

// peerEnvelopeVersion is the version of peerMsg. A node ignores messages
// of another version; fields added within a version have new keys, which
// older nodes skip.
const peerEnvelopeVersion = 1

// peerMsg is a message between nodes, msgpack with one-letter keys and
// compact integers: a typing message is about 25 bytes, a presence set
// about 5 bytes per online user.
type peerMsg struct {
	V    uint8 `msgpack:"v"` // peerEnvelopeVersion
	Kind uint8 `msgpack:"k"`

	// Presence: the version of the sender's online set after this message,
	// the users online on the sender (a set: all of them; a delta: those
	// who came online) and, in a delta, those who went offline, at Ts (the
	// sender's clock, Unix ms).
	Ver uint64   `msgpack:"n,omitempty"`
	On  []uint64 `msgpack:"on,omitempty"`
	Off []uint64 `msgpack:"off,omitempty"`
	Ts  int64    `msgpack:"ts,omitempty"`

	// Typing: User started (Typing) or stopped typing in Conv.
	Conv   uint64 `msgpack:"c,omitempty"`
	User   uint64 `msgpack:"u,omitempty"`
	Typing bool   `msgpack:"t,omitempty"`
}

var errPeerMsgVersion = errors.New("peer message of another version")

func encodePeerMsg(m *peerMsg) ([]byte, error) {
	m.V = peerEnvelopeVersion
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodePeerMsg reads what encodePeerMsg wrote, by hand: msgpack's
// reflection would take a struct as an array too, and preallocate a list
// of whatever length a message claims (the fuzzer made one claim 2^32
// entries and the process ran out of memory). A list is refused unless
// its declared length fits in the bytes left; unknown keys are skipped.
func decodePeerMsg(b []byte) (*peerMsg, error) {
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	n, err := dec.DecodeMapLen()
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, errors.New("peer message: nil map")
	}
	m := new(peerMsg)
	for range n {
		key, err := dec.DecodeString()
		if err != nil {
			return nil, err
		}
		switch key {
		case "v":
			m.V, err = dec.DecodeUint8()
		case "k":
			m.Kind, err = dec.DecodeUint8()
		case "n":
			m.Ver, err = dec.DecodeUint64()
		case "on":
			m.On, err = decodePeerList(dec, r)
		case "off":
			m.Off, err = decodePeerList(dec, r)
		case "ts":
			m.Ts, err = dec.DecodeInt64()
		case "c":
			m.Conv, err = dec.DecodeUint64()
		case "u":
			m.User, err = dec.DecodeUint64()
		case "t":
			m.Typing, err = dec.DecodeBool()
		default:
			err = dec.Skip()
		}
		if err != nil {
			return nil, fmt.Errorf("peer message: %q: %w", key, err)
		}
	}
	if r.Len() != 0 {
		return nil, errors.New("peer message: trailing bytes")
	}
	if m.V != peerEnvelopeVersion {
		return nil, fmt.Errorf("%w: %d", errPeerMsgVersion, m.V)
	}
	return m, nil
}

// decodePeerList reads a list of user ids whose length is bounded by the
// bytes left (every element takes at least one).
func decodePeerList(dec *msgpack.Decoder, r *bytes.Reader) ([]uint64, error) {
	n, err := dec.DecodeArrayLen()
	if err != nil || n <= 0 {
		return nil, err
	}
	if n > r.Len() {
		return nil, fmt.Errorf("a list of %d in %d bytes", n, r.Len())
	}
	out := make([]uint64, n)
	for i := range out {
		if out[i], err = dec.DecodeUint64(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// peerHandler is the node's raftlog.PeerHandler. raftlog calls it from its
// link goroutines, possibly while raftlog.Open runs: it uses only what Open
// sets up before Raft (the trackers, the hub, the engine), never n.raft.
type peerHandler struct{ sg *signals }

// PeerUp greets a peer whose link came up with this node's full online set.
func (h peerHandler) PeerUp(string) []byte {
	sg := h.sg
	ver, users := sg.presence.localSet()
	b, err := encodePeerMsg(&peerMsg{Kind: peerPresenceSet, Ver: ver, On: users, Ts: sg.cfg.Clock().UnixMilli()})
	if err != nil {
		sg.log.Error("encode presence set", "err", err)
		return nil
	}
	return b
}

// PeerMessage applies a peer's presence, or fans its typing out here.
func (h peerHandler) PeerMessage(from string, b []byte) {
	sg := h.sg
	m, err := decodePeerMsg(b)
	if errors.Is(err, errPeerMsgVersion) {
		sg.log.Debug("skipping a peer message", "peer", from, "err", err) // a rolling upgrade
		return
	}
	if err != nil {
		sg.log.Warn("bad peer message", "peer", from, "err", err)
		return
	}
	switch m.Kind {
	case peerPresenceSet:
		sg.notifyChanges(sg.presence.peerSet(from, m.Ver, m.On, m.Ts))
	case peerPresenceDelta:
		sg.notifyChanges(sg.presence.peerDelta(from, m.Ver, m.On, m.Off, m.Ts))
	case peerTyping:
		sg.fanTyping(m.User, m.Conv, m.Typing)
	default:
		// A kind of a newer build: ignored.
	}
}

// PeerDown starts the grace after which the peer's users go offline here.
func (h peerHandler) PeerDown(id string) { h.sg.presence.peerDown(id, h.sg.cfg.Clock()) }

// notifyChanges tells the watchers on this node of cluster-wide
// transitions.
func (sg *signals) notifyChanges(changes []presenceChange) {
	for _, c := range changes {
		sg.notifyPresence(c.user, c.online, c.lastSeen)
	}
}

// broadcastPresence sends the peers what changed in this node's online set
// since the last call, as one delta. Called once per signal tick.
func (sg *signals) broadcastPresence(now int64) {
	ver, on, off, ok := sg.presence.takeChanges()
	if !ok {
		return
	}
	b, err := encodePeerMsg(&peerMsg{Kind: peerPresenceDelta, Ver: ver, On: on, Off: off, Ts: now})
	if err != nil {
		sg.log.Error("encode presence delta", "err", err)
		return
	}
	sg.raft.Broadcast(b)
}

// broadcastTyping sends a typing start or stop decided here to the peers.
func (sg *signals) broadcastTyping(user, conv uint64, on bool) {
	b, err := encodePeerMsg(&peerMsg{Kind: peerTyping, Conv: conv, User: user, Typing: on})
	if err != nil {
		sg.log.Error("encode typing", "err", err)
		return
	}
	sg.raft.Broadcast(b)
}

// writeWentOffline records when users went offline cluster-wide. Every node
// sees the same transitions, so exactly one must write: the Raft leader.
// It observes each transition once in its merged view, wherever the user
// was connected (a user whose node died included), and proposes without a
// forwarding hop. Across a leader change a value may be written twice
// (harmless: the later write wins) or not at all (last_seen stays older).
func (sg *signals) writeWentOffline() {
	off := sg.presence.takeWentOffline()
	if len(off) == 0 || !sg.raft.IsLeader() {
		return
	}
	for u, w := range off {
		sg.recordLastSeen(u, w.at)
	}
	if sg.wentOffline != nil {
		sg.wentOffline(off)
	}
}
