package node

import (
	"context"
	"errors"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"parley/engine"
	"parley/netpoll"
	"parley/raftlog"
	"parley/wire"
)

// The node is the netpoll.Handler: these methods run on the event loops and
// never block. Writes go to the Raft proposer (non-blocking Submit, answered
// from its goroutine); reads go to the query workers.

// Authorize checks the device token before the upgrade.
func (n *Node) Authorize(r *netpoll.Request) (any, int, string) {
	tok := r.Query.Get("token")
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return nil, 401, "authorization must be a Bearer token"
		}
		tok = strings.TrimSpace(rest)
	}
	if tok == "" {
		return nil, 401, "missing token"
	}
	user, device, expires, err := n.tokens.verify(tok)
	if err != nil {
		return nil, 401, "invalid or expired token"
	}
	switch n.engine.DeviceStatus(user, device) {
	case engine.DeviceIsRevoked:
		return nil, 401, "unknown or revoked device"
	case engine.DeviceNotYet:
		// Logged in on another node a moment ago: the device has not
		// reached this replica yet. 503 makes clients retry, where a 401
		// would make them give up on a good token.
		return nil, 503, "device not replicated to this node yet, retry"
	}
	if n.engine.Suspended(user) {
		return nil, 403, "account suspended"
	}
	r.LimitKey = user // WSMaxConnsPerUser
	return &session{
		user:    user,
		device:  device,
		expires: expires.UnixMilli(),
		limiter: rate.NewLimiter(rate.Limit(n.cfg.RatePerSecond), n.cfg.RateBurst),
	}, 0, ""
}

// OnOpen registers the session for delivery and greets the client.
func (n *Node) OnOpen(c *netpoll.Conn) {
	s := c.Session().(*session)
	s.conn = c
	if n.hub.add(s) {
		n.signals.userOnline(s.user)
	}
	hello, err := wire.Marshal(&wire.Hello{
		Type: wire.TypeHello, Protocol: 1, User: s.user, Device: s.device, Node: n.cfg.NodeID,
		Index: n.engine.AppliedIndex(), PingMS: n.cfg.PingInterval.Milliseconds(),
		Limits: wire.Limits{
			MaxFrameBytes: wire.MaxFrameBytes, MaxBodyBytes: wire.MaxBodyBytes,
			RatePerSecond: n.cfg.RatePerSecond, RateBurst: n.cfg.RateBurst,
			MaxReplyBytes: n.replyBudget(), Reads: wire.MaxReadsInFlight,
		},
		VAPID: n.vapidPublicKey(),
	})
	if err == nil {
		s.send(netpoll.PrepareBinary(hello))
	}
}

// OnClose forgets the session.
func (n *Node) OnClose(c *netpoll.Conn, _ error) {
	s, ok := c.Session().(*session)
	if !ok || s.conn == nil {
		return
	}
	s.closed.Store(true)
	if n.hub.remove(s) {
		n.signals.userLeft(s.user)
	}
	n.signals.presence.forget(s)
}

// OnMessage decodes one request and starts it. payload is only valid during
// the call; DecodeRequest copies what it keeps.
func (n *Node) OnMessage(c *netpoll.Conn, binary bool, payload []byte) {
	s := c.Session().(*session)
	if !binary {
		c.Close(1003, "binary messages only")
		return
	}
	req := new(wire.Request)
	s.inflight.Add(1) // released by reply
	e := wire.DecodeRequest(payload, req)
	// Every frame is charged, a malformed one too: each costs a reply. A
	// client that goes on after a full burst of rate_limited replies is
	// not listening; it is cut off rather than answered for ever.
	if !s.limiter.Allow() {
		if s.limited++; s.limited > n.cfg.RateBurst {
			s.inflight.Add(-1)
			n.metrics.requestErrors.WithLabelValues(string(wire.CodeRateLimited)).Inc()
			c.Close(netpoll.ClosePolicyViolation, "rate limit exceeded")
			return
		}
		n.replyError(s, req.ID, wire.Errorf(wire.CodeRateLimited, "slow down"))
		return
	}
	s.limited = 0
	if e != nil {
		n.replyError(s, req.ID, e)
		return
	}
	n.metrics.requests.WithLabelValues(req.Type).Inc()
	if int(s.inflight.Load()) > n.cfg.MaxInflightPerConn {
		n.replyError(s, req.ID, wire.Errorf(wire.CodeBusy, "too many requests in flight"))
		return
	}
	switch req.Type {
	case wire.TypePing:
		n.reply(s, &wire.Reply{Type: wire.TypeOK, ID: req.ID})
	case wire.TypePrivacySet:
		n.submit(s, req.ID, &engine.Command{Op: engine.OpSetPrivacy, User: s.user, HideLastSeen: req.Hide,
			GroupAdd: groupAddPolicy(req.GroupAdd)},
			func(*engine.Result) *wire.Reply { return &wire.Reply{Type: wire.TypeOK, ID: req.ID} })
	case wire.TypeMsgDelete:
		n.submit(s, req.ID, &engine.Command{Op: engine.OpDeleteMessage, User: s.user, Conv: req.Conv, Seq: req.Seq},
			func(res *engine.Result) *wire.Reply {
				return &wire.Reply{Type: wire.TypeOK, ID: req.ID, Conv: res.Conv, Seq: res.Seq}
			})
	case wire.TypePushSet:
		if !n.pushConfigured(req.Provider) {
			n.reply(s, wire.ErrorReply(req.ID, wire.Errorf(wire.CodeInvalid, "push provider "+req.Provider+" is not configured on this server")))
			break
		}
		n.submit(s, req.ID, &engine.Command{Op: engine.OpPushSet, User: s.user, Device: s.device,
			PushProvider: req.Provider, PushToken: req.Token, PushEndpoint: req.Endpoint, PushP256dh: req.P256dh, PushAuth: req.Auth},
			func(*engine.Result) *wire.Reply { return &wire.Reply{Type: wire.TypeOK, ID: req.ID} })
	case wire.TypePushClear:
		n.submit(s, req.ID, &engine.Command{Op: engine.OpPushClear, User: s.user, Device: s.device},
			func(*engine.Result) *wire.Reply { return &wire.Reply{Type: wire.TypeOK, ID: req.ID} })
	case wire.TypeNotifySet:
		n.submit(s, req.ID, &engine.Command{Op: engine.OpNotifySet, User: s.user, Preview: req.Preview, DND: req.DND},
			func(*engine.Result) *wire.Reply { return &wire.Reply{Type: wire.TypeOK, ID: req.ID} })
	case wire.TypeConvMute:
		n.submit(s, req.ID, &engine.Command{Op: engine.OpMute, User: s.user, Conv: req.Conv, Until: req.Until},
			func(*engine.Result) *wire.Reply { return &wire.Reply{Type: wire.TypeOK, ID: req.ID, Conv: req.Conv} })
	case wire.TypeBlock, wire.TypeUnblock:
		op := engine.OpBlock
		if req.Type == wire.TypeUnblock {
			op = engine.OpUnblock
		}
		n.submit(s, req.ID, &engine.Command{Op: op, User: s.user, Peer: req.User},
			func(*engine.Result) *wire.Reply { return &wire.Reply{Type: wire.TypeOK, ID: req.ID} })
	case wire.TypeDeviceRevoke:
		cmd := &engine.Command{Op: engine.OpRevokeDevice, User: s.user, Device: req.Device}
		okReply := func(*engine.Result) *wire.Reply { return &wire.Reply{Type: wire.TypeOK, ID: req.ID} }
		if req.Device != s.device {
			n.submit(s, req.ID, cmd, okReply)
			break
		}
		// This connection's own device: closeDevice leaves the connection
		// alone until the reply is queued, then it closes (the queued reply
		// goes out first), so this request too gets its one reply.
		s.revokingSelf.Add(1)
		n.submitThen(s, req.ID, cmd, okReply, func() {
			if s.revokingSelf.Add(-1) == 0 && !n.engine.DeviceActive(s.user, s.device) {
				s.conn.Close(netpoll.ClosePolicyViolation, "device revoked")
			}
		})
	case wire.TypeSend:
		cmd := &engine.Command{
			Op: engine.OpSend, User: s.user, Device: s.device, Conv: req.Conv,
			ClientMsgID: req.ClientMsgID, Body: req.Body, ReplyTo: req.ReplyTo,
		}
		if len(req.Att) != 0 {
			refs, e := attachmentRefs(req.Att)
			if e != nil {
				n.replyError(s, req.ID, e)
				break
			}
			cmd.Media = &engine.MediaArgs{Attachments: refs}
		}
		n.submit(s, req.ID, cmd, func(res *engine.Result) *wire.Reply {
			return &wire.Reply{
				Type: wire.TypeOK, ID: req.ID, ClientMsgID: req.ClientMsgID, Conv: res.Conv,
				Seq: res.Seq, Ts: res.Ts, Index: res.Index, Duplicate: res.Duplicate,
			}
		})
	case wire.TypeDirectOpen:
		n.submitConv(s, req.ID, &engine.Command{Op: engine.OpOpenDirect, User: s.user, Peer: req.User})
	case wire.TypeGroupCreate:
		n.submitConv(s, req.ID, &engine.Command{Op: engine.OpCreateGroup, User: s.user, Name: req.Name, Members: req.Users})
	case wire.TypeGroupAdd:
		n.submitConv(s, req.ID, &engine.Command{Op: engine.OpAddMembers, User: s.user, Conv: req.Conv, Members: req.Users})
	case wire.TypeGroupRemove:
		n.submitConv(s, req.ID, &engine.Command{Op: engine.OpRemoveMember, User: s.user, Conv: req.Conv, Member: req.User})
	case wire.TypeGroupAdmin:
		n.submitConv(s, req.ID, &engine.Command{Op: engine.OpSetAdmin, User: s.user, Conv: req.Conv, Member: req.User, Admin: req.Admin})
	case wire.TypeGroupRename:
		n.submitConv(s, req.ID, &engine.Command{Op: engine.OpRename, User: s.user, Conv: req.Conv, Name: req.Name})
	case wire.TypeGroupLeave:
		n.submit(s, req.ID, &engine.Command{Op: engine.OpLeave, User: s.user, Conv: req.Conv},
			func(*engine.Result) *wire.Reply { return &wire.Reply{Type: wire.TypeOK, ID: req.ID} })
	case wire.TypeTyping, wire.TypeReceipt:
		// Signals, not reads: answered here on the event loop (an
		// in-memory check and a queue each), so they never wait behind
		// the read workers' history pages nor get busy because of them;
		// unless the client's min_idx is ahead of this node, when they
		// wait for it like a read (a receipt may name a seq not here yet).
		if req.MinIndex > n.engine.AppliedIndex() {
			n.query(s, req)
			break
		}
		if req.Type == wire.TypeTyping {
			n.reply(s, n.signals.handleTyping(s, req))
		} else {
			n.reply(s, n.signals.handleReceipt(s, req))
		}
	default:
		n.query(s, req)
	}
}

// submit proposes cmd through Raft; ok builds the reply once the entry is
// committed and applied here.
func (n *Node) submit(s *session, id uint64, cmd *engine.Command, ok func(*engine.Result) *wire.Reply) {
	n.submitThen(s, id, cmd, ok, nil)
}

// submitThen is submit, calling then (if not nil) once the reply, ok or
// error, is queued.
func (n *Node) submitThen(s *session, id uint64, cmd *engine.Command, ok func(*engine.Result) *wire.Reply, then func()) {
	b, err := engine.EncodeCommand(cmd)
	if err != nil {
		n.replyThen(s, wire.ErrorReply(id, wire.Errorf(wire.CodeInternal, "encode command")), then)
		return
	}
	err = n.raft.Submit(b, func(result any, index uint64, err error) {
		n.replyThen(s, n.submitReply(id, result, index, err, ok), then)
	})
	if err != nil {
		n.replyThen(s, wire.ErrorReply(id, proposeError(err)), then)
	}
}

// submitReply is the reply to a proposed write once its outcome is known.
func (n *Node) submitReply(id uint64, result any, index uint64, err error, ok func(*engine.Result) *wire.Reply) *wire.Reply {
	if err != nil {
		return wire.ErrorReply(id, proposeError(err))
	}
	res, _ := result.(*engine.Result)
	if res == nil {
		return wire.ErrorReply(id, wire.Errorf(wire.CodeInternal, "no result"))
	}
	if res.Err != "" {
		return wire.ErrorReply(id, engineError(res.Err, res.Message))
	}
	rep := ok(res)
	if rep.Type == wire.TypeOK && rep.Index == 0 {
		// Every write's reply says where it is in the log, so that the
		// client's next read (min_idx) sees it on any node.
		rep.Index = index
	}
	return rep
}

// replyThen queues r and then calls then, if not nil.
func (n *Node) replyThen(s *session, r *wire.Reply, then func()) {
	n.reply(s, r)
	if then != nil {
		then()
	}
}

// submitConv proposes a conversation change and replies with the
// conversation as it is after the change: its first page of members, as
// conv.get gives it (more and next say whether to page the rest).
func (n *Node) submitConv(s *session, id uint64, cmd *engine.Command) {
	n.submit(s, id, cmd, func(res *engine.Result) *wire.Reply {
		info, more, code := n.engine.ConversationPageFor(s.user, res.Conv, 0, n.membersPerPage())
		if code != "" {
			var found bool
			if info, more, found = n.engine.ConversationPage(res.Conv, 0, n.membersPerPage()); !found {
				return wire.ErrorReply(id, wire.Errorf(wire.CodeNotFound, "conversation gone"))
			}
		}
		ci := convInfo(&info)
		rep := &wire.Reply{Type: wire.TypeOK, ID: id, Info: &ci}
		if more && len(info.Members) > 0 {
			rep.More, rep.Next = true, info.Members[len(info.Members)-1].User
		}
		return rep
	})
}

// proposeError maps a proposer failure to the code a client acts on.
func proposeError(err error) *wire.Error {
	switch {
	case errors.Is(err, raftlog.ErrBusy):
		// Refused before the log. The refusals say how long to wait
		// (longer the more the leader refuses; a follower passes on the
		// leader's hint); a leader of an older build sends none, and its
		// refusals wait an admission interval, by which it has measured
		// its queue again.
		retry := raftlog.DefaultAdmissionInterval
		if be := (*raftlog.BusyError)(nil); errors.As(err, &be) {
			retry = be.RetryAfter
		}
		return &wire.Error{Code: wire.CodeBusy, Message: "the write queue is full or too slow; retry after retry_ms",
			RetryMS: retry.Milliseconds()}
	case errors.Is(err, raftlog.ErrNotLeader), errors.Is(err, raftlog.ErrClosed):
		return wire.Errorf(wire.CodeUnavailable, "no leader")
	case errors.Is(err, raftlog.ErrTimeout):
		return wire.Errorf(wire.CodeTimeout, "not confirmed in time; retry with the same cmid")
	case errors.Is(err, raftlog.ErrStorageFull):
		return wire.Errorf(wire.CodeStorageFull, "the disk of this node or of the leader is nearly full: writes are refused until space is freed; retry later")
	}
	return wire.Errorf(wire.CodeInternal, err.Error())
}

// propose is the blocking form for the HTTP API.
func (n *Node) propose(ctx context.Context, cmd *engine.Command) (*engine.Result, *wire.Error) {
	b, err := engine.EncodeCommand(cmd)
	if err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "encode command")
	}
	result, index, err := n.raft.Propose(ctx, b)
	if err != nil {
		return nil, proposeError(err)
	}
	res, _ := result.(*engine.Result)
	if res == nil {
		return nil, wire.Errorf(wire.CodeInternal, "no result")
	}
	if res.Index == 0 {
		res.Index = index
	}
	if res.Err != "" {
		return nil, engineError(res.Err, res.Message)
	}
	return res, nil
}

// closeDevice cuts off a revoked device's connections on this node.
func (n *Node) closeDevice(user, device uint64) {
	for _, s := range n.hub.sessions(user) {
		if s.device == device && s.revokingSelf.Load() == 0 { // else submitThen closes it after the reply
			s.conn.Close(netpoll.ClosePolicyViolation, "device revoked")
		}
	}
}

// Publish is the engine's Publisher: it runs on the apply goroutine after an
// entry's state is written, and hands the events to the fan-out stage
// (fanout.go), which delivers them after Apply has moved on.
func (n *Node) Publish(events []engine.Event) {
	n.fanout.publish(events, n.writeHold.published(events, n.fanout.idle()))
}

// deliver runs on the fan-out stage for each applied entry, in log order.
// Each event is encoded once and the same frame goes to every online
// device of every recipient on this node.
func (n *Node) deliver(events []engine.Event) {
	now := time.Now().UnixMilli()
	for i := range events {
		ev := &events[i]
		switch ev.Kind {
		case engine.EventReceipt:
			n.signals.publishReceipt(ev)
			continue
		case engine.EventDeviceRevoked:
			n.closeDevice(ev.From, ev.Device)
			continue
		case engine.EventUserSuspended:
			for _, s := range n.hub.sessions(ev.From) {
				s.conn.Close(netpoll.ClosePolicyViolation, "account suspended")
			}
			continue
		}
		we := wireEvent(ev)
		we.Type = wire.TypeEvent
		d := n.hub.deliver(ev.Recipients, eventFrame(&we))
		n.metrics.deliveries.Add(float64(d))
		n.metrics.deliveryLatency.Observe(float64(now-ev.Ts) / 1000)
		if n.notifier != nil && ev.Kind == engine.EventMessage {
			n.notifier.messagePublished(ev.Conv, ev.Index)
		}
	}
	n.metrics.eventsPublished.Add(float64(len(events)))
}
