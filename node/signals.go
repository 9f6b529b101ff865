package node

import (
	"log/slog"
	"time"

	"parley/engine"
	"parley/raftlog"

	"parley/netpoll"
	"parley/wire"
)

// Ephemeral signals (DESIGN guarantee 7): typing and presence never go
// through Raft; they cross the cluster on the peer channel (peers.go).
// Only last_seen, which is durable, goes through Raft (throttled).

// signalLoop expires typing indicators and presence grace periods, sends
// the peers this node's presence changes and, on the leader, sweeps old
// dedup records (expiry.go), once per tick. It owns no
// state of its own: the trackers lock theirs.
func (n *Node) signalLoop() {
	defer n.workers.Done()
	t := time.NewTicker(n.cfg.SignalTick)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.sweepSignals(n.cfg.Clock())
		}
	}
}

func (n *Node) sweepSignals(now time.Time) {
	n.signals.sweep(now)
	n.expireSends(now)
	n.expireMessages(now)
	n.expireMedia(now)
	n.closeExpired()
}

// signals owns the node's ephemeral signals and what is throttled with
// them: presence (who is online here and in the cluster, who watches
// whom), typing, last_seen, receipts and read counts. The node composes
// it: sessions tell it of connections, requests hand it typing, receipts
// and presence.sub, the engine's events hand it receipts, the peer channel
// hands it the other nodes' presence and typing (peers.go).
type signals struct {
	cfg     *Config
	log     *slog.Logger
	metrics *metrics
	engine  *engine.Engine
	hub     *hub
	raft    *raftlog.Node // set once Raft is open; used only after

	typing     *typingTracker
	presence   *presenceTracker
	lastSeen   *lastSeenThrottle
	receipts   *receiptBuffer
	readCounts *readCountThrottle
	// wentOffline, if set, hears on the leader of the users who went
	// offline cluster-wide: the notifier's catch-up.
	wentOffline func(map[uint64]wentOffline)
}

func newSignals(cfg *Config, log *slog.Logger, m *metrics, h *hub) *signals {
	sg := &signals{
		cfg: cfg, log: log, metrics: m, hub: h,
		typing:     newTypingTracker(cfg.TypingThrottle, cfg.TypingTTL),
		presence:   newPresenceTracker(cfg.PresenceGrace),
		lastSeen:   newLastSeenThrottle(cfg.LastSeenEvery),
		receipts:   newReceiptBuffer(),
		readCounts: newReadCountThrottle(cfg.ReadCountsEvery),
	}
	sg.presence.remoteSlack = cfg.SignalTick // peers report once a tick
	return sg
}

// sweep expires typing indicators and presence grace periods, tells the
// peers this node's presence changes, and writes what is due: last_seen,
// receipts, read counts. The signal loop calls it once per tick.
func (sg *signals) sweep(now time.Time) {
	for _, k := range sg.typing.expire(now) {
		sg.signalTyping(k.user, k.conv, false)
	}
	sg.notifyChanges(sg.presence.sweep(now))
	sg.broadcastPresence(now.UnixMilli())
	sg.writeWentOffline()
	sg.flushLastSeen(now)
	sg.flushReceipts()
	for conv, reader := range sg.readCounts.due(now) {
		sg.sendReadCounts(conv, reader)
	}
}

// closeExpired ends the connections whose token has expired, so that a
// token stops working when it says it does, on an open connection too. It
// looks at most once per tokenSweepInterval (a walk over every session);
// only the signal loop calls it.
func (n *Node) closeExpired() {
	now := n.tokens.now().UnixMilli()
	if now < n.nextTokenSweep {
		return
	}
	n.nextTokenSweep = now + tokenSweepInterval.Milliseconds()
	for _, s := range n.hub.expired(now) {
		s.conn.Close(netpoll.ClosePolicyViolation, "token expired")
	}
}

// tokenSweepInterval bounds how long a connection outlives its token.
const tokenSweepInterval = time.Second

// userOnline runs when a user's first session on this node opened. The
// peers hear of it at the next signal tick.
func (sg *signals) userOnline(user uint64) {
	if sg.presence.connected(user) {
		sg.notifyPresence(user, true, 0)
	}
}

// userLeft runs when a user's last session on this node closed.
func (sg *signals) userLeft(user uint64) { sg.presence.disconnected(user, sg.cfg.Clock()) }

// notifyPresence sends a presence frame to every watcher of user on this
// node.
func (sg *signals) notifyPresence(user uint64, online bool, lastSeen int64) {
	watchers := sg.presence.watchersOf(user)
	if len(watchers) == 0 {
		return
	}
	if !online && sg.lastSeenHidden(user) {
		lastSeen = 0
	}
	b, err := wire.Marshal(&wire.Presence{Type: wire.TypePresenceEvent, User: user, Online: online, LastSeen: lastSeen})
	if err != nil {
		return
	}
	frame := netpoll.PrepareBinary(b)
	for _, s := range watchers {
		s.send(frame)
	}
}

// handleTyping forwards a typing start or stop, throttled.
func (sg *signals) handleTyping(s *session, req *wire.Request) *wire.Reply {
	if !sg.engine.IsMember(req.Conv, s.user) {
		if _, found := sg.engine.Conversation(req.Conv); !found {
			return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeNotFound, "no such conversation"))
		}
		return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeNotMember, "not a member"))
	}
	var forward bool
	if req.On {
		forward = sg.typing.start(s.user, req.Conv, sg.cfg.Clock())
	} else {
		forward = sg.typing.stop(s.user, req.Conv)
	}
	if forward {
		sg.signalTyping(s.user, req.Conv, req.On)
	}
	return &wire.Reply{Type: wire.TypeOK, ID: req.ID}
}

// signalTyping sends a typing start or stop this node decided to the
// conversation's members here and to the peers, which fan it out to
// theirs.
func (sg *signals) signalTyping(user, conv uint64, on bool) {
	if sg.fanTyping(user, conv, on) {
		sg.broadcastTyping(user, conv, on)
	}
}

// fanTyping sends one typing frame to the conversation's other members on
// this node. Groups over TypingMaxMembers get none: in a crowd the signal is
// noise and its fan-out the largest cost. It reports whether the
// conversation gets typing indicators at all.
func (sg *signals) fanTyping(user, conv uint64, on bool) bool {
	info, ok := sg.engine.Conversation(conv)
	if !ok || len(info.Members) > sg.cfg.TypingMaxMembers {
		return false
	}
	ev := wire.Typing{Type: wire.TypeTypingEvent, Conv: conv, User: user, On: on}
	if on {
		ev.TTLms = sg.cfg.TypingTTL.Milliseconds()
	}
	b, err := wire.Marshal(&ev)
	if err != nil {
		return true
	}
	others := make([]uint64, 0, len(info.Members))
	for _, m := range info.Members {
		if m.User != user {
			others = append(others, m.User)
		}
	}
	sg.hub.deliver(others, netpoll.PrepareBinary(b))
	return true
}

// handlePresenceSub replaces the session's watch list and answers with the
// current cluster-wide state of each watched user.
func (sg *signals) handlePresenceSub(s *session, req *wire.Request) *wire.Reply {
	users := dedupe(req.Users)
	for _, u := range users {
		if _, found := sg.engine.User(u); !found {
			return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeNotFound, "no such user"))
		}
	}
	sg.presence.watch(s, users)
	rep := &wire.Reply{Type: wire.TypeOK, ID: req.ID, Presence: make([]wire.Presence, len(users))}
	for i, u := range users {
		p := wire.Presence{User: u, Online: sg.presence.isOnline(u)}
		if !p.Online {
			p.LastSeen = sg.visibleLastSeen(u)
		}
		rep.Presence[i] = p
	}
	return rep
}

func dedupe(ids []uint64) []uint64 {
	seen := make(map[uint64]struct{}, len(ids))
	out := make([]uint64, 0, len(ids))
	for _, id := range ids {
		if _, ok := seen[id]; !ok {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}
