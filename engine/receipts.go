package engine

import (
	"fmt"
	"slices"
)

// Receipts are cursors, not rows: per (user, conversation) the highest seq
// delivered to and read on any of the user's devices, moving forward only.
//
//   - A member's cursors start at the event that made them a member (the
//     history before it counts as read), and a send moves the sender's
//     cursors to their own message: sending reads the conversation, as in
//     the large messengers. So every message above a member's read cursor
//     is another user's, and Unread is a count of messages between two seqs,
//     which the conversation's list of non-message seqs answers by binary
//     search (membership.unread) instead of a scan of the history.
//   - OpReceipts carries many conversations' cursors (the node coalesces a
//     device's reports). Each item is judged on its own: an unknown
//     conversation is not_found, one the user is not a current member of
//     not_member, a seq beyond the conversation's last invalid. A value at
//     or below the stored cursor is a silent no-op, and read implies
//     delivered.
//   - Receipts take no seq. A change publishes an EventReceipt (1:1: both
//     members; group: the reader's devices, when Read moved) and moves the
//     membership's cursor index, which makes the conversation show up in
//     sync with its new cursors (in a 1:1, for both members).
//   - Groups keep their current members' cursors sorted (cursorSet), so
//     "read by N of M" is two binary searches, whatever the group's size.

// cursorSet holds the receipt cursors of a group's current members, each
// list sorted ascending (a multiset: members with equal cursors repeat).
// Written by install, under index.mu, in place; read by queries under
// index.mu for reading.
type cursorSet struct {
	delivered, read []uint64
}

// atLeast counts the members whose cursors are >= seq.
func (s *cursorSet) atLeast(seq uint64) (read, delivered int) {
	r, _ := slices.BinarySearch(s.read, seq)
	d, _ := slices.BinarySearch(s.delivered, seq)
	return len(s.read) - r, len(s.delivered) - d
}

func (s *cursorSet) add(c cursors) {
	s.delivered = insertSorted(s.delivered, c.delivered)
	s.read = insertSorted(s.read, c.read)
}

func (s *cursorSet) remove(c cursors) {
	s.delivered = removeSorted(s.delivered, c.delivered)
	s.read = removeSorted(s.read, c.read)
}

// move replaces from by to, each cursor of which is not lower.
func (s *cursorSet) move(from, to cursors) {
	moveUp(s.delivered, from.delivered, to.delivered)
	moveUp(s.read, from.read, to.read)
}

func insertSorted(a []uint64, v uint64) []uint64 {
	i, _ := slices.BinarySearch(a, v+1) // after the equal ones: shifts fewer
	return slices.Insert(a, i, v)
}

func removeSorted(a []uint64, v uint64) []uint64 {
	i, found := slices.BinarySearch(a, v)
	if !found {
		panic(fmt.Sprintf("engine: cursor %d missing from its set", v))
	}
	return slices.Delete(a, i, i+1)
}

// moveUp replaces one occurrence of from by to (to >= from) in the sorted
// slice a, shifting only the values between them: a reader catching up
// moves past the members who read less, not the whole group.
func moveUp(a []uint64, from, to uint64) {
	if from == to {
		return
	}
	i, _ := slices.BinarySearch(a, from+1) // one past the last occurrence of from
	i--
	if i < 0 || a[i] != from || to < from {
		panic(fmt.Sprintf("engine: cursor %d -> %d not in its set", from, to))
	}
	j, _ := slices.BinarySearch(a, to) // the first value >= to
	copy(a[i:j-1], a[i+1:j])
	a[j-1] = to
}

// cursorKey names a member's cursors in a txn.
type cursorKey struct{ conv, user uint64 }

// cursorWork is a member's cursors as the entry sees them, and what install
// must do to the index: move the membership's cursors and the group's
// cursor set from the state at the start of the entry to the end.
type cursorWork struct {
	conv, user  uint64
	startActive bool    // a current member when the entry began: start is in the group's set
	start, cur  cursors // at the start of the entry; now
	index       uint64  // the entry that last moved cur
	dirty       bool    // cur changed in this entry: write the record
}

// cursor returns the entry's view of user's cursors in conv, registering it
// for install. The pointer is valid until the next call.
func (t *txn) cursor(conv, user uint64) *cursorWork {
	k := cursorKey{conv, user}
	if i, ok := t.cursorIdx[k]; ok {
		return &t.cursorWorks[i]
	}
	cw := cursorWork{conv: conv, user: user}
	if u := t.ix.users[user]; u != nil {
		if m := u.convs[conv]; m != nil {
			cw.start, cw.cur, cw.index = m.cursors, m.cursors, m.cursorIndex
			cw.startActive = !m.gone
		}
	}
	t.cursorIdx[k] = len(t.cursorWorks)
	t.cursorWorks = append(t.cursorWorks, cw)
	return &t.cursorWorks[len(t.cursorWorks)-1]
}

// advance moves the cursors forward to delivered and read (zero: no
// report), read implying delivered. It reports whether they moved.
func (t *txn) advance(cw *cursorWork, delivered, read uint64) bool {
	next := cursors{read: max(cw.cur.read, read)}
	next.delivered = max(cw.cur.delivered, delivered, next.read)
	if next == cw.cur {
		return false
	}
	cw.cur, cw.index, cw.dirty = next, t.index, true
	return true
}

// joined starts the cursors of a user who became a member of conv by the
// event at seq: the history before it counts as delivered and read.
func (t *txn) joined(conv, user, seq uint64) {
	cw := t.cursor(conv, user)
	t.advance(cw, seq, seq)
	cw.dirty = true // a member always has a record
}

// writeCursors writes the cursor records the entry changed (from finish).
func (t *txn) writeCursors() {
	for i := range t.cursorWorks {
		cw := &t.cursorWorks[i]
		if cw.dirty {
			t.kbuf = appendKey2(t.kbuf[:0], prefixCursor, cw.conv, cw.user)
			t.set(t.kbuf, appendCursorRecord(t.vbuf[:0], cw.cur, cw.index))
		}
	}
}

// installCursors brings the memberships' cursors and the groups' cursor
// sets to the end of the entry. It runs in install, holding index.mu, after
// the conversations and memberships are installed.
func (t *txn) installCursors() {
	ix := t.ix
	for i := range t.cursorWorks {
		cw := &t.cursorWorks[i]
		c := ix.convs[cw.conv]
		m := ix.users[cw.user].convs[cw.conv]
		if cw.dirty {
			m.cursors, m.cursorIndex = cw.cur, cw.index
			c.cursorIndex = max(c.cursorIndex, cw.index)
		}
		if c.cursors == nil {
			continue
		}
		switch endActive := !m.gone; {
		case cw.startActive && endActive:
			c.cursors.move(cw.start, cw.cur)
		case cw.startActive:
			c.cursors.remove(cw.start)
		case endActive:
			c.cursors.add(cw.cur)
		}
	}
}

// peekConv returns the entry's view of a conversation for reading only,
// without taking a working copy (nil if there is none).
func (t *txn) peekConv(id uint64) *convEntry {
	if w, ok := t.convs[id]; ok {
		return w.c
	}
	return t.ix.convs[id]
}

func (t *txn) receipts(c *Command) *Result {
	switch exists, revoked := t.device(c.User, c.Device); {
	case !exists:
		return failure(ErrCodeNotFound, "no such device")
	case revoked:
		return failure(ErrCodeForbidden, "device revoked")
	case len(c.Items) == 0:
		return failure(ErrCodeInvalid, "no receipt items")
	case len(c.Items) > MaxReceiptItems:
		return failure(ErrCodeTooLarge, fmt.Sprintf("over %d receipt items", MaxReceiptItems))
	}
	var itemErrs []ErrCode
	fail := func(i int, code ErrCode) {
		if itemErrs == nil {
			itemErrs = make([]ErrCode, len(c.Items))
		}
		itemErrs[i] = code
	}
	for i, it := range c.Items {
		cv := t.peekConv(it.Conv)
		switch {
		case cv == nil:
			fail(i, ErrCodeNotFound)
			continue
		case !cv.isMember(c.User):
			fail(i, ErrCodeNotMember)
			continue
		case it.Delivered > cv.lastSeq || it.Read > cv.lastSeq:
			fail(i, ErrCodeInvalid)
			continue
		}
		cw := t.cursor(cv.id, c.User)
		oldRead := cw.cur.read
		if !t.advance(cw, it.Delivered, it.Read) {
			continue // stale or replayed
		}
		var recipients []uint64
		switch {
		case cv.kind == KindDirect:
			recipients = cv.members // both; immutable, shared
		case cw.cur.read != oldRead:
			recipients = []uint64{c.User}
		default:
			continue // a group member's own delivered cursor concerns no device
		}
		t.publish(Event{
			Conv: cv.id, Index: t.index, Ts: t.ts, Kind: EventReceipt, From: c.User, Device: c.Device,
			Delivered: cw.cur.delivered, Read: cw.cur.read, Recipients: recipients,
		})
	}
	r := t.ok(0, 0)
	r.User, r.Device, r.ItemErrors = c.User, c.Device, itemErrs
	return r
}

// fillCursors sets in ci the cursors of user, whose membership is m, and
// in a 1:1 the other member's. index.mu is held.
func (ix *index) fillCursors(ci *ConvInfo, user uint64, m *membership) {
	ci.Delivered, ci.Read, ci.Unread = m.cursors.delivered, m.cursors.read, m.unread()
	ci.MutedUntil = m.mutedUntil
	c := m.conv
	if c.kind != KindDirect {
		return
	}
	other := c.peers[0]
	if other == user {
		other = c.peers[1]
	}
	if u := ix.users[other]; u != nil {
		if pm := u.convs[c.id]; pm != nil {
			ci.PeerDelivered, ci.PeerRead = pm.cursors.delivered, pm.cursors.read
		}
	}
}

// ReadCount answers "read by N of M" for a group sender: how many current
// members have read and have been delivered seq or more, of how many
// members. The sender of seq counts like any member (their cursors passed
// their own message when they sent it): to show the others only, subtract
// one from each number while the sender is a member. It reads memory only
// (two binary searches in a group). ok is false if there is no such
// conversation.
func (e *Engine) ReadCount(conv, seq uint64) (read, delivered, members int, ok bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return 0, 0, 0, false
	}
	ix := e.idx
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	c := ix.convs[conv]
	if c == nil {
		return 0, 0, 0, false
	}
	if c.cursors != nil {
		read, delivered = c.cursors.atLeast(seq)
		return read, delivered, len(c.members), true
	}
	for _, u := range c.members { // a 1:1: two members
		if m := ix.users[u].convs[conv]; m != nil {
			if m.cursors.read >= seq {
				read++
			}
			if m.cursors.delivered >= seq {
				delivered++
			}
		}
	}
	return read, delivered, len(c.members), true
}

// Readers lists the current members of conv who have read seq, ascending
// by user ID, after the user ID after: up to limit of them (clamped to
// [1, MaxReadersLimit], 0 meaning DefaultReadersLimit). A call examines at
// most readersScanLimit members, so its cost is bounded whatever the
// group's size; see ReadersPage for paging. ok is false if there is no such
// conversation. Who may ask is the caller's decision (members, normally).
func (e *Engine) Readers(conv, seq, after uint64, limit int) (page ReadersPage, ok bool) {
	limit = clamp(limit, DefaultReadersLimit, MaxReadersLimit)
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return page, false
	}
	ix := e.idx
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	c := ix.convs[conv]
	if c == nil {
		return page, false
	}
	start, _ := slices.BinarySearch(c.members, after+1)
	if after == ^uint64(0) {
		start = len(c.members)
	}
	end := min(len(c.members), start+readersScanLimit)
	i := start
	for ; i < end && len(page.Users) < limit; i++ {
		u := c.members[i]
		if m := ix.users[u].convs[conv]; m != nil && m.cursors.read >= seq {
			page.Users = append(page.Users, u)
		}
	}
	if i < len(c.members) { // i > start: limit >= 1 examined one at least
		page.More, page.Next = true, c.members[i-1]
	}
	return page, true
}
