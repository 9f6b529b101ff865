package node

import (
	"sync"

	"parley/engine"
	"parley/wire"
)

// query runs a request that reads state on the query workers, off the event
// loop (looking up a large group's members is not loop work). Reads come
// from this node's local state, which already holds every write this node
// acknowledged (guarantee 8).
//
// Expensive reads are admitted fairly: a connection has at most
// wire.MaxReadsInFlight of them queued or running, and a user at most
// maxReadsPerUser over all their connections to this node; one more is
// answered busy at once instead of waiting. The queue they wait in is
// bounded too (QueryQueue), so the work one user can put in front of
// everyone else's is a few pages, each at most the reply budget.
func (n *Node) query(s *session, req *wire.Request) {
	charged := expensiveRead(req.Type)
	if charged && !n.reads.acquire(s) {
		n.replyError(s, req.ID, wire.Errorf(wire.CodeBusy, "too many reads in flight"))
		return
	}
	f := func() {
		rep := n.read(s, req)
		if charged {
			// Released before the reply is queued: a client that sends its
			// next read as soon as it has this reply must find its slot free.
			n.reads.release(s)
		}
		n.reply(s, rep)
	}
	enqueue := func() {
		select {
		case n.queries <- f:
		default:
			if charged {
				n.reads.release(s)
			}
			n.replyError(s, req.ID, wire.Errorf(wire.CodeBusy, "too many reads queued"))
		}
	}
	if req.MinIndex > n.engine.AppliedIndex() {
		// The client has seen a write this node has not applied yet: the
		// read waits for it, off the loop and off the workers
		// (consistency.go).
		n.readAfter(s, req.ID, req.MinIndex, enqueue, func() {
			if charged {
				n.reads.release(s)
			}
		})
		return
	}
	enqueue()
}

// queryWorker serves reads until the queue is closed.
func (n *Node) queryWorker() {
	defer n.workers.Done()
	for f := range n.queries {
		f()
	}
}

// expensiveRead reports whether a request is charged to the read allowance:
// those that read pages, member lists or the database. Typing, receipts and
// presence.sub are cheap, bounded by count, and not charged.
func expensiveRead(t string) bool {
	switch t {
	case wire.TypeHistory, wire.TypeSync, wire.TypeConvGet, wire.TypeConvList, wire.TypeUserGet,
		wire.TypeReadGet, wire.TypeDeviceList, wire.TypeBlockList:
		return true
	}
	return false
}

// maxReadsPerUser bounds one user's expensive reads in flight on this node
// over all their connections (each also bounded by wire.MaxReadsInFlight):
// more devices do not buy more of the workers.
const maxReadsPerUser = 4 * wire.MaxReadsInFlight

// readAdmission counts expensive reads in flight per connection (in the
// session) and per user. The zero value is ready to use.
type readAdmission struct {
	mu    sync.Mutex
	users map[uint64]int
}

func (a *readAdmission) acquire(s *session) bool {
	if s.reads.Add(1) > wire.MaxReadsInFlight {
		s.reads.Add(-1)
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.users[s.user] >= maxReadsPerUser {
		s.reads.Add(-1)
		return false
	}
	if a.users == nil {
		a.users = make(map[uint64]int)
	}
	a.users[s.user]++
	return true
}

func (a *readAdmission) release(s *session) {
	s.reads.Add(-1)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.users[s.user]--; a.users[s.user] <= 0 {
		delete(a.users, s.user)
	}
}

// replyBudget is the most bytes a paged reply may take: wire.MaxReplyBytes,
// or a quarter of the send queue if that is less, so that a page (and the
// next one, if the client pipelines) always fits in the queue beside the
// live events.
func (n *Node) replyBudget() int {
	return min(wire.MaxReplyBytes, n.cfg.SendQueueBytes/4)
}

// pageBudget is what the items of a paged reply may take.
func (n *Node) pageBudget() engine.Budget {
	return engine.Budget{Bytes: n.replyBudget() - wire.PageReplyOverhead, Size: wireSizer{}}
}

// membersPerPage is how many members a ConvInfo in a reply lists at most,
// so that a reply with one ConvInfo stays within the budget: 9 bytes per
// member and up to as many again for admins, plus the rest of the info.
func (n *Node) membersPerPage() int {
	return min(wire.MaxMembersPage, max(1, (n.replyBudget()-wire.PageReplyOverhead-512)/18))
}

// wireSizer measures engine results as the node encodes them.
type wireSizer struct{}

func (wireSizer) EventSize(e *engine.Event) int {
	we := wireEvent(e)
	return wire.EventLen(&we)
}

// ConvSize counts a conversation with no events as a ConvSync with its
// flags set and room for the header of a long events list (2 bytes more
// than the empty one), which also covers it as a plain ConvInfo.
func (wireSizer) ConvSize(c *engine.ConvInfo) int {
	return wire.ConvSyncLen(&wire.ConvSync{Info: convInfo(c), More: true, Gone: true}) + 2
}

func (n *Node) read(s *session, req *wire.Request) *wire.Reply {
	ok := &wire.Reply{Type: wire.TypeOK, ID: req.ID}
	switch req.Type {
	case wire.TypeConvGet:
		// Members page by user id: the first page with after 0.
		info, more, code := n.engine.ConversationPageFor(s.user, req.Conv, req.After, n.membersPerPage())
		if code != "" {
			return wire.ErrorReply(req.ID, engineError(code, "conv.get"))
		}
		ci := convInfo(&info)
		ok.Info = &ci
		if more && len(info.Members) > 0 {
			ok.More, ok.Next = true, info.Members[len(info.Members)-1].User
		}
	case wire.TypeConvList:
		convs, more := n.engine.ConversationList(s.user, req.After, req.AfterConv, req.Limit, n.pageBudget())
		ok.Convs = make([]wire.ConvInfo, len(convs))
		for i := range convs {
			ok.Convs[i] = convInfo(&convs[i])
		}
		if more && len(convs) > 0 {
			last := &convs[len(convs)-1]
			ok.More, ok.Next, ok.NextConv = true, last.LastIndex, last.ID
		}
	case wire.TypeUserGet:
		var u engine.User
		var found bool
		if req.User != 0 {
			u, found = n.engine.User(req.User)
		} else {
			u, found = n.engine.UserByName(foldUsername(req.Name)) // as login folds it
		}
		if !found {
			return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeNotFound, "no such user"))
		}
		ok.UserInfo = &wire.UserInfo{ID: u.ID, Username: u.Username, Deleted: u.Deleted}
		if !u.HideLastSeen || u.ID == s.user {
			// Never less than a presence frame from this node said.
			ok.UserInfo.LastSeen = n.signals.presence.seenAtLeast(u.ID, u.LastSeen)
		}
		if u.ID == s.user { // one's own privacy settings, to no one else
			ok.UserInfo.HideLastSeen, ok.UserInfo.GroupAdd = u.HideLastSeen, groupAddName(u.GroupAdd)
			ok.UserInfo.Preview, ok.UserInfo.DND = u.Preview, u.DND
		}
	case wire.TypeBlockList:
		users, more, code := n.engine.Blocked(s.user, req.After, req.Limit)
		if code != "" {
			return wire.ErrorReply(req.ID, engineError(code, "block.list"))
		}
		ok.Blocked, ok.More = users, more // at most 1000 ids: 9 KiB
		if more && len(users) > 0 {
			ok.Next = users[len(users)-1]
		}
	case wire.TypeTyping:
		return n.signals.handleTyping(s, req)
	case wire.TypePresenceSub:
		return n.signals.handlePresenceSub(s, req)
	case wire.TypeReceipt:
		return n.signals.handleReceipt(s, req)
	case wire.TypeReadGet:
		return n.signals.handleReadGet(s, req)
	case wire.TypeDeviceList:
		devs, more, code := n.engine.Devices(s.user, req.After, req.Limit)
		if code != "" {
			return wire.ErrorReply(req.ID, engineError(code, "device.list"))
		}
		// At most MaxDevicesLimit (500) devices of at most ~130 bytes: the
		// engine bounds the page by count; it is cut here to the budget.
		left := n.replyBudget() - wire.PageReplyOverhead
		ok.Devices = make([]wire.DeviceInfo, 0, len(devs))
		for _, d := range devs {
			di := wire.DeviceInfo{ID: d.ID, Name: d.Name, CreatedAt: d.CreatedAt, Revoked: d.Revoked, Current: d.ID == s.device}
			if left -= wire.DeviceInfoLen(&di); left < 0 && len(ok.Devices) > 0 {
				more = true
				break
			}
			ok.Devices = append(ok.Devices, di)
		}
		ok.More = more
		if more && len(ok.Devices) > 0 {
			ok.Next = ok.Devices[len(ok.Devices)-1].ID
		}
	case wire.TypeHistory:
		dir := engine.Before
		if req.Dir == wire.DirAfter {
			dir = engine.After
		}
		events, more, err := n.engine.History(s.user, req.Conv, req.Seq, dir, req.Limit, n.pageBudget())
		if err != "" {
			return wire.ErrorReply(req.ID, engineError(err, "history"))
		}
		ok.Events = wireEvents(events)
		ok.More = more
	case wire.TypeSync:
		page, err := n.engine.Sync(s.user, engine.SyncQuery{
			Since: req.Since, After: req.After, AfterConv: req.AfterConv,
			Convs: req.Limit, Events: wire.SyncEventsPerConv, Budget: n.pageBudget(),
		})
		if err != "" {
			return wire.ErrorReply(req.ID, engineError(err, "sync"))
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
		ok.NextConv = page.NextConv
	default:
		return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeUnknownType, "unknown request type"))
	}
	return ok
}

// groupAddPolicy maps privacy.set's group_add (validated) to the engine's.
func groupAddPolicy(s string) engine.GroupAddPolicy {
	switch s {
	case wire.GroupAddEveryone:
		return engine.GroupAddEveryone
	case wire.GroupAddContacts:
		return engine.GroupAddContacts
	case wire.GroupAddNobody:
		return engine.GroupAddNobody
	}
	return engine.GroupAddUnchanged
}

func groupAddName(p engine.GroupAddPolicy) string {
	switch p {
	case engine.GroupAddContacts:
		return wire.GroupAddContacts
	case engine.GroupAddNobody:
		return wire.GroupAddNobody
	}
	return wire.GroupAddEveryone
}

func convInfo(c *engine.ConvInfo) wire.ConvInfo {
	ci := wire.ConvInfo{
		ID: c.ID, Name: c.Name, LastSeq: c.LastSeq, LastIndex: c.LastIndex, CreatedAt: c.CreatedAt,
		Kind: wire.ConvGroup, Members: make([]uint64, 0, len(c.Members)),
		MemberCount: c.MemberCount, Delivered: c.Delivered, Read: c.Read, Unread: c.Unread, MutedUntil: c.MutedUntil,
		PeerDelivered: c.PeerDelivered, PeerRead: c.PeerRead,
	}
	if c.Kind == engine.KindDirect {
		ci.Kind = wire.ConvDirect
	}
	if c.FirstSeq > 1 {
		ci.FirstSeq = c.FirstSeq
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
		Users: e.Users, Name: e.Name, Admin: e.Admin, Att: wireAttachments(e.Attachments),
		Target: e.Target, Deleted: e.Deleted,
	}
}
