package node

import (
	"slices"
	"sync"
	"time"

	"parley/engine"
	"parley/netpoll"
	"parley/wire"
)

// Receipts are cursors (delivered-up-to, read-up-to) written through Raft.
// A client may report every message of a burst; the node coalesces each
// device's reports for one signal tick and writes them as one command, so a
// 1,000-message burst costs a handful of Raft entries, not a thousand.

// receiptBuffer holds the reports received since the last flush.
type receiptBuffer struct {
	mu      sync.Mutex // guards pending
	pending map[*session]map[uint64]engine.ReceiptItem
}

func newReceiptBuffer() *receiptBuffer {
	return &receiptBuffer{pending: make(map[*session]map[uint64]engine.ReceiptItem)}
}

// add merges one report: cursors only move forward.
func (b *receiptBuffer) add(s *session, it engine.ReceiptItem) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.pending[s]
	if m == nil {
		m = make(map[uint64]engine.ReceiptItem)
		b.pending[s] = m
	}
	cur := m[it.Conv]
	cur.Conv = it.Conv
	cur.Delivered = max(cur.Delivered, it.Delivered)
	cur.Read = max(cur.Read, it.Read)
	m[it.Conv] = cur
}

// take returns and clears everything pending, each device's items in
// conversation order (deterministic commands).
func (b *receiptBuffer) take() map[*session][]engine.ReceiptItem {
	b.mu.Lock()
	pending := b.pending
	b.pending = make(map[*session]map[uint64]engine.ReceiptItem, len(pending))
	b.mu.Unlock()
	out := make(map[*session][]engine.ReceiptItem, len(pending))
	for s, m := range pending {
		items := make([]engine.ReceiptItem, 0, len(m))
		for _, it := range m {
			items = append(items, it)
		}
		slices.SortFunc(items, func(a, b engine.ReceiptItem) int {
			switch {
			case a.Conv < b.Conv:
				return -1
			case a.Conv > b.Conv:
				return 1
			}
			return 0
		})
		out[s] = items
	}
	return out
}

// handleReceipt validates a report and buffers it. The reply means
// "accepted": the cursor is written within a signal tick.
func (sg *signals) handleReceipt(s *session, req *wire.Request) *wire.Reply {
	info, _, code := sg.engine.ConversationPageFor(s.user, req.Conv, 0, 0) // no member list: a check
	if code != "" {
		return wire.ErrorReply(req.ID, engineError(code, "receipt"))
	}
	if max(req.Delivered, req.Read) > info.LastSeq {
		return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeInvalid, "seq beyond the conversation's last"))
	}
	sg.receipts.add(s, engine.ReceiptItem{Conv: req.Conv, Delivered: req.Delivered, Read: req.Read})
	return &wire.Reply{Type: wire.TypeOK, ID: req.ID}
}

// flushReceipts proposes the buffered reports, one command per device (split
// at the engine's item limit). Reports that cannot be proposed now (busy, no
// leader) go back into the buffer for the next tick.
func (sg *signals) flushReceipts() {
	for s, items := range sg.receipts.take() {
		for chunk := range slices.Chunk(items, engine.MaxReceiptItems) {
			cmd := &engine.Command{Op: engine.OpReceipts, User: s.user, Device: s.device, Items: chunk}
			b, err := engine.EncodeCommand(cmd)
			if err != nil {
				sg.log.Error("encode receipts", "err", err)
				continue
			}
			retry := func() {
				for _, it := range chunk {
					sg.receipts.add(s, it)
				}
			}
			err = sg.raft.Submit(b, func(_ any, _ uint64, err error) {
				if err != nil && proposeError(err).Code.Retryable() {
					retry()
				}
			})
			if err != nil && proposeError(err).Code.Retryable() {
				retry()
			}
		}
	}
}

// publishReceipt delivers a receipt event: to both members of a 1:1, to the
// reader's own devices in a group (the engine sets the recipients). A group
// receipt also marks the group for a throttled read_counts update.
func (sg *signals) publishReceipt(ev *engine.Event) {
	b, err := wire.Marshal(&wire.Receipt{
		Type: wire.TypeReceiptEvent, Conv: ev.Conv, User: ev.From, Device: ev.Device,
		Delivered: ev.Delivered, Read: ev.Read, Index: ev.Index,
	})
	if err == nil {
		sg.hub.deliver(ev.Recipients, netpoll.PrepareBinary(b))
	}
	if len(ev.Recipients) == 1 { // a group: only the reader was told
		sg.readCounts.mark(ev.Conv, ev.From)
	}
}

// readCountThrottle remembers which groups had receipts and when each last
// got a read_counts update: at most one per group per interval.
type readCountThrottle struct {
	every time.Duration

	mu    sync.Mutex           // guards dirty and sent
	dirty map[uint64]uint64    // conv -> a member who may read its history
	sent  map[uint64]time.Time // conv -> last update
}

func newReadCountThrottle(every time.Duration) *readCountThrottle {
	return &readCountThrottle{every: every, dirty: make(map[uint64]uint64), sent: make(map[uint64]time.Time)}
}

func (r *readCountThrottle) mark(conv, reader uint64) {
	r.mu.Lock()
	r.dirty[conv] = reader
	r.mu.Unlock()
}

// due returns the groups to update now (conv -> a member) and forgets
// groups quiet for a whole interval.
func (r *readCountThrottle) due(now time.Time) map[uint64]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out map[uint64]uint64
	for conv, reader := range r.dirty {
		if last, ok := r.sent[conv]; ok && now.Sub(last) < r.every {
			continue
		}
		if out == nil {
			out = make(map[uint64]uint64)
		}
		out[conv] = reader
		r.sent[conv] = now
		delete(r.dirty, conv)
	}
	for conv, last := range r.sent {
		if _, pending := r.dirty[conv]; !pending && now.Sub(last) >= r.every {
			delete(r.sent, conv)
		}
	}
	return out
}

// readCountsWindow is how many of a group's latest events a read_counts
// update covers.
const readCountsWindow = 20

// sendReadCounts tells the senders of a group's recent messages, on this
// node, how many of the other members have received and read each.
func (sg *signals) sendReadCounts(conv, reader uint64) {
	events, _, code := sg.engine.History(reader, conv, 0, engine.Before, readCountsWindow, engine.Budget{})
	if code != "" {
		return
	}
	rc := wire.ReadCounts{Type: wire.TypeReadCountsEvent, Conv: conv}
	var senders []uint64
	for i := len(events) - 1; i >= 0; i-- { // oldest first
		ev := &events[i]
		if ev.Kind != engine.EventMessage {
			continue
		}
		read, delivered, members, ok := sg.engine.ReadCount(conv, ev.Seq)
		if !ok {
			return
		}
		if sg.engine.IsMember(conv, ev.From) { // the sender counts as a reader of their own message
			read, delivered, members = read-1, delivered-1, members-1
		}
		rc.Items = append(rc.Items, wire.ReadCount{Seq: ev.Seq, From: ev.From, Read: read, Delivered: delivered, Members: members})
		if !slices.Contains(senders, ev.From) {
			senders = append(senders, ev.From)
		}
	}
	if len(rc.Items) == 0 {
		return
	}
	b, err := wire.Marshal(&rc)
	if err == nil {
		sg.hub.deliver(senders, netpoll.PrepareBinary(b))
	}
}

// handleReadGet answers who has read a message of a conversation, paged by
// user id, with the counts.
func (sg *signals) handleReadGet(s *session, req *wire.Request) *wire.Reply {
	info, _, code := sg.engine.ConversationPageFor(s.user, req.Conv, 0, 0) // no member list: a check
	if code != "" {
		return wire.ErrorReply(req.ID, engineError(code, "read.get"))
	}
	if req.Seq > info.LastSeq {
		return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeNotFound, "no such seq"))
	}
	read, delivered, members, ok := sg.engine.ReadCount(req.Conv, req.Seq)
	page, ok2 := sg.engine.Readers(req.Conv, req.Seq, req.After, req.Limit)
	if !ok || !ok2 {
		return wire.ErrorReply(req.ID, wire.Errorf(wire.CodeNotFound, "no such conversation"))
	}
	return &wire.Reply{
		Type: wire.TypeOK, ID: req.ID, Conv: req.Conv, Seq: req.Seq,
		ReadCount: read, DeliveredCount: delivered, MemberCount: members,
		Readers: page.Users, More: page.More, Next: page.Next,
	}
}
