package node

import (
	"parley/engine"
	"parley/wire"
)

// query runs a request that reads state on the query workers, off the event
// loop (looking up a large group's members is not loop work). Reads come
// from this node's local state, which already holds every write this node
// acknowledged (guarantee 8).
func (n *Node) query(s *session, req *wire.Request) {
	select {
	case n.queries <- func() { n.reply(s, n.read(s, req)) }:
	default:
		n.replyError(s, req.ID, wire.Errorf(wire.CodeBusy, "too many reads queued"))
	}
}

// queryWorker serves reads until the queue is closed.
func (n *Node) queryWorker() {
	defer n.workers.Done()
	for f := range n.queries {
		f()
	}
}

func (n *Node) read(s *session, req *wire.Request) *wire.Reply {
	ok := &wire.Reply{Type: wire.TypeOK, ID: req.ID}
	switch req.Type {
	case wire.TypeConvGet:
		info, code := n.engine.ConversationFor(s.user, req.Conv)
		if code != "" {
			return wire.ErrorReply(req.ID, wire.Errorf(wire.Code(code), "conv.get"))
		}
		ci := convInfo(&info)
		ok.Info = &ci
	case wire.TypeConvList:
		convs := n.engine.Conversations(s.user)
		ok.Convs = make([]wire.ConvInfo, len(convs))
		for i := range convs {
			ok.Convs[i] = convInfo(&convs[i])
		}
	case wire.TypeUserGet:
		var u engine.User
		var found bool
		if req.User != 0 {
			u, found = n.engine.User(req.User)
		} else {
			u, found = n.engine.UserByName(req.Name)
		}
		if !found {
			return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeNotFound, "no such user"))
		}
		ok.UserInfo = &wire.UserInfo{ID: u.ID, Username: u.Username}
		if !u.HideLastSeen || u.ID == s.user {
			ok.UserInfo.LastSeen = u.LastSeen
		}
	case wire.TypeTyping:
		return n.handleTyping(s, req)
	case wire.TypePresenceSub:
		return n.handlePresenceSub(s, req)
	case wire.TypeReceipt:
		return n.handleReceipt(s, req)
	case wire.TypeReadGet:
		return n.handleReadGet(s, req)
	case wire.TypeDeviceList:
		devs, more, code := n.engine.Devices(s.user, req.After, req.Limit)
		if code != "" {
			return wire.ErrorReply(req.ID, wire.Errorf(wire.Code(code), "device.list"))
		}
		ok.Devices = make([]wire.DeviceInfo, len(devs))
		for i, d := range devs {
			ok.Devices[i] = wire.DeviceInfo{ID: d.ID, Name: d.Name, CreatedAt: d.CreatedAt, Revoked: d.Revoked, Current: d.ID == s.device}
		}
		ok.More = more
		if more && len(devs) > 0 {
			ok.Next = devs[len(devs)-1].ID
		}
	case wire.TypeHistory:
		dir := engine.Before
		if req.Dir == wire.DirAfter {
			dir = engine.After
		}
		events, more, err := n.engine.History(s.user, req.Conv, req.Seq, dir, req.Limit)
		if err != "" {
			return wire.ErrorReply(req.ID, wire.Errorf(wire.Code(err), "history"))
		}
		ok.Events = wireEvents(events)
		ok.More = more
	case wire.TypeSync:
		page, err := n.engine.Sync(s.user, req.Since, req.After, req.Limit, wire.SyncEventsPerConv)
		if err != "" {
			return wire.ErrorReply(req.ID, wire.Errorf(wire.Code(err), "sync"))
		}
		ok.Changes = make([]wire.ConvSync, len(page.Convs))
		for i := range page.Convs {
			cs := &page.Convs[i]
			ok.Changes[i] = wire.ConvSync{
				Info: convInfo(&cs.Info), Events: wireEvents(cs.Events), More: cs.More, Gone: cs.Gone,
			}
		}
		ok.More = page.More
		ok.Next = page.Next
	default:
		return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeUnknownType, "unknown request type"))
	}
	return ok
}

func convInfo(c *engine.ConvInfo) wire.ConvInfo {
	ci := wire.ConvInfo{
		ID: c.ID, Name: c.Name, LastSeq: c.LastSeq, LastIndex: c.LastIndex, CreatedAt: c.CreatedAt,
		Kind: wire.ConvGroup, Members: make([]uint64, 0, len(c.Members)),
		MemberCount: c.MemberCount, Delivered: c.Delivered, Read: c.Read, Unread: c.Unread,
		PeerDelivered: c.PeerDelivered, PeerRead: c.PeerRead,
	}
	if c.Kind == engine.KindDirect {
		ci.Kind = wire.ConvDirect
	}
	for _, m := range c.Members {
		ci.Members = append(ci.Members, m.User)
		if m.Admin {
			ci.Admins = append(ci.Admins, m.User)
		}
	}
	return ci
}

func wireEvents(evs []engine.Event) []wire.Event {
	out := make([]wire.Event, len(evs))
	for i := range evs {
		out[i] = wireEvent(&evs[i])
	}
	return out
}

func wireEvent(e *engine.Event) wire.Event {
	return wire.Event{
		Conv: e.Conv, Seq: e.Seq, Index: e.Index, Ts: e.Ts, Kind: string(e.Kind), From: e.From,
		Device: e.Device, ClientMsgID: e.ClientMsgID, Body: e.Body, ReplyTo: e.ReplyTo,
		Users: e.Users, Name: e.Name, Admin: e.Admin,
	}
}
