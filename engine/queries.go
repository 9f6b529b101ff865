package engine

import (
	"cmp"
	"errors"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Queries read the local state and run concurrently with Apply. They see
// every entry up to at least the applied index they start at. Lookups that
// report "not found" with a bool also report a failed read of the database
// that way (Pebble logs the cause).

// User returns the user with the given ID.
func (e *Engine) User(id uint64) (User, bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	return e.userLocked(id)
}

// UserByName returns the user with the given (case-folded) username,
// password hash included, for login.
func (e *Engine) UserByName(name string) (User, bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return User{}, false
	}
	e.idx.mu.RLock()
	id, ok := e.idx.names[name]
	e.idx.mu.RUnlock()
	if !ok {
		return User{}, false
	}
	return e.userLocked(id)
}

// userLocked reads a user; stateMu is held.
func (e *Engine) userLocked(id uint64) (User, bool) {
	var u User
	if e.db == nil {
		return u, false
	}
	k := key1(prefixUser, id)
	v, closer, err := e.db.Get(k)
	if err != nil {
		return u, false
	}
	defer closer.Close()
	if !decodeUserRecord(id, v, &u) {
		return u, false
	}
	u.GroupAdd = GroupAddEveryone
	e.idx.mu.RLock()
	if ue := e.idx.users[id]; ue != nil {
		u.LastSeen, u.HideLastSeen, u.GroupAdd = ue.seen.lastSeen, ue.seen.hide, ue.seen.groupAddPolicy()
		u.Preview, u.DND = ue.seen.preview, ue.seen.dnd
		u.Deleted = ue.seen.deleted
	}
	e.idx.mu.RUnlock()
	return u, true
}

// Blocked lists the users that user blocks, ascending, after the user ID
// after: up to limit of them (clamped to [1, MaxBlockListLimit], 0 meaning
// DefaultBlockListLimit). more reports whether further ones follow; page
// them with after = the last ID returned.
func (e *Engine) Blocked(user, after uint64, limit int) (users []uint64, more bool, code ErrCode) {
	limit = clamp(limit, DefaultBlockListLimit, MaxBlockListLimit)
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, false, ErrCodeInternal
	}
	if after == math.MaxUint64 || user == math.MaxUint64 {
		return nil, false, ErrCodeNone
	}
	it, err := e.db.NewIter(&pebble.IterOptions{
		LowerBound: key2(prefixBlock, user, after+1),
		UpperBound: key1(prefixBlock, user+1),
	})
	if err != nil {
		return nil, false, ErrCodeInternal
	}
	defer it.Close()
	valid := it.First()
	for ; valid && len(users) < limit; valid = it.Next() {
		if k := it.Key(); len(k) == 17 {
			users = append(users, u64At(k, 9))
		} else {
			return nil, false, ErrCodeInternal
		}
	}
	if it.Error() != nil {
		return nil, false, ErrCodeInternal
	}
	return users, valid, ErrCodeNone
}

// IsBlocking reports whether user blocks peer. It reads only memory.
func (e *Engine) IsBlocking(user, peer uint64) bool {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return false
	}
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	u := e.idx.users[user]
	if u == nil {
		return false
	}
	_, ok := u.blocked[peer]
	return ok
}

// LastSeen returns a user's last_seen (unix ms, 0 if never recorded) and
// privacy setting. It reads memory only. The node shows ts to nobody but
// the user themself while hidden is set. ok is false for an unknown user.
func (e *Engine) LastSeen(user uint64) (ts int64, hidden, ok bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return 0, false, false
	}
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	u := e.idx.users[user]
	if u == nil {
		return 0, false, false
	}
	return u.seen.lastSeen, u.seen.hide, true
}

// Device returns a device of a user.
func (e *Engine) Device(user, device uint64) (Device, bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	var d Device
	if e.db == nil {
		return d, false
	}
	v, closer, err := e.db.Get(key2(prefixDevice, user, device))
	if err != nil {
		return d, false
	}
	defer closer.Close()
	ok := decodeDeviceRecord(user, device, v, &d)
	return d, ok
}

// Devices lists the devices of user, revoked ones included, ascending by
// ID, after the device ID after: up to limit of them (clamped to [1,
// MaxDevicesLimit], 0 meaning DefaultDevicesLimit; every login makes a
// device, so the list is paged). more reports whether further devices
// follow; page them with after = the last ID returned. An unknown user has
// none.
func (e *Engine) Devices(user, after uint64, limit int) (devices []Device, more bool, code ErrCode) {
	limit = clamp(limit, DefaultDevicesLimit, MaxDevicesLimit)
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, false, ErrCodeInternal
	}
	if after == math.MaxUint64 || user == math.MaxUint64 { // no key above; user+1 would wrap
		return nil, false, ErrCodeNone
	}
	it, err := e.db.NewIter(&pebble.IterOptions{
		LowerBound: key2(prefixDevice, user, after+1),
		UpperBound: key1(prefixDevice, user+1),
	})
	if err != nil {
		return nil, false, ErrCodeInternal
	}
	defer it.Close()
	valid := it.First()
	for ; valid && len(devices) < limit; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, false, ErrCodeInternal
		}
		var d Device
		if k := it.Key(); len(k) != 17 || !decodeDeviceRecord(user, u64At(k, 9), v, &d) {
			return nil, false, ErrCodeInternal
		}
		devices = append(devices, d)
	}
	if it.Error() != nil {
		return nil, false, ErrCodeInternal
	}
	return devices, valid, ErrCodeNone
}

// SigningKey is the cluster's device-token signing key (OpSetSigningKey),
// nil until one is applied. It reads only memory; the slice is shared and
// must not be modified.
func (e *Engine) SigningKey() []byte {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil
	}
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	return e.idx.signingKey
}

// DeviceState is what this replica knows of a device named by a token.
type DeviceState uint8

const (
	// DeviceIsActive: the device exists, belongs to the user, is not revoked.
	DeviceIsActive DeviceState = iota
	// DeviceIsRevoked: revoked, or not the user's, or gone: refuse for good.
	DeviceIsRevoked
	// DeviceNotYet: the ID is above every device this replica has applied;
	// it was created on the leader and has not reached this replica yet, so
	// the caller should retry shortly rather than refuse.
	DeviceNotYet
)

// DeviceStatus classifies the device for authentication.
func (e *Engine) DeviceStatus(user, device uint64) DeviceState {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return DeviceIsRevoked
	}
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	d, ok := e.idx.devices[device]
	switch {
	case ok && d.user == user && !d.revoked:
		return DeviceIsActive
	case !ok && device > e.idx.lastDevice:
		return DeviceNotYet
	}
	return DeviceIsRevoked
}

// DeviceActive reports whether the device exists, belongs to user and is not
// revoked. It reads only memory.
func (e *Engine) DeviceActive(user, device uint64) bool {
	return e.DeviceStatus(user, device) == DeviceIsActive
}

// Conversation describes a conversation, with its full member list.
func (e *Engine) Conversation(id uint64) (ConvInfo, bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return ConvInfo{}, false
	}
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	c := e.idx.convs[id]
	if c == nil {
		return ConvInfo{}, false
	}
	return c.info(math.MaxInt), true
}

// ConversationFor describes a conversation for one of its members, with
// that user's cursors and unread count (and the peer's in a 1:1) and the
// full member list: ErrCodeNotFound if there is no such conversation,
// ErrCodeNotMember if user is not a current member.
func (e *Engine) ConversationFor(user, id uint64) (ConvInfo, ErrCode) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return ConvInfo{}, ErrCodeInternal
	}
	ix := e.idx
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	c := ix.convs[id]
	if c == nil {
		return ConvInfo{}, ErrCodeNotFound
	}
	if !c.isMember(user) {
		return ConvInfo{}, ErrCodeNotMember
	}
	ci := c.info(math.MaxInt)
	ix.fillCursors(&ci, user, ix.users[user].convs[id])
	return ci, ErrCodeNone
}

// ConversationPageFor is ConversationFor with a page of the member list:
// the members with IDs above after, at most maxMembers of them (0 lists
// none: for a membership check that copies nothing), ascending. more
// reports whether further members follow (page them with after = the last
// one's ID); MemberCount is always the whole count.
func (e *Engine) ConversationPageFor(user, id, after uint64, maxMembers int) (ci ConvInfo, more bool, code ErrCode) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return ConvInfo{}, false, ErrCodeInternal
	}
	ix := e.idx
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	c := ix.convs[id]
	if c == nil {
		return ConvInfo{}, false, ErrCodeNotFound
	}
	if !c.isMember(user) {
		return ConvInfo{}, false, ErrCodeNotMember
	}
	ci, more = c.infoPage(after, maxMembers)
	ix.fillCursors(&ci, user, ix.users[user].convs[id])
	return ci, more, ErrCodeNone
}

// ConversationPage is Conversation with a page of the member list, as in
// ConversationPageFor, for no asking user.
func (e *Engine) ConversationPage(id, after uint64, maxMembers int) (ci ConvInfo, more, ok bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return ConvInfo{}, false, false
	}
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	c := e.idx.convs[id]
	if c == nil {
		return ConvInfo{}, false, false
	}
	ci, more = c.infoPage(after, maxMembers)
	return ci, more, true
}

// IsMember reports whether user is a current member of conv.
func (e *Engine) IsMember(conv, user uint64) bool {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return false
	}
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	c := e.idx.convs[conv]
	return c != nil && c.isMember(user)
}

// Conversations lists the conversations user is a member of, the most
// recently active first, with their full member lists and the user's
// cursors and unread counts.
func (e *Engine) Conversations(user uint64) []ConvInfo {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil
	}
	e.idx.mu.RLock()
	u := e.idx.users[user]
	var out []ConvInfo
	if u != nil {
		out = make([]ConvInfo, 0, len(u.convs))
		for _, m := range u.convs {
			if !m.gone {
				out = append(out, m.conv.info(math.MaxInt))
				e.idx.fillCursors(&out[len(out)-1], user, m)
			}
		}
	}
	e.idx.mu.RUnlock()
	slices.SortFunc(out, func(a, b ConvInfo) int {
		if c := cmp.Compare(b.LastIndex, a.LastIndex); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	return out
}

// ConversationList is a page of Conversations: the user's conversations
// in the same order (the most recently active first: last index
// descending, then ID descending), starting after the position (after,
// afterConv) = the last index and ID of the previous page's last
// conversation (afterConv 0: from the start). At most limit of them
// (clamped to [1, MaxConvListLimit], 0 meaning DefaultConvListLimit), and
// no more than fit in the budget (at least one). Member lists are left out
// of groups over SyncInfoMembers, as in sync (MemberCount is set). more
// reports whether further conversations follow. A conversation whose
// activity moves it to the front while a client pages is not returned
// again by later pages: live events and sync report it.
func (e *Engine) ConversationList(user, after, afterConv uint64, limit int, b Budget) (convs []ConvInfo, more bool) {
	limit = clamp(limit, DefaultConvListLimit, MaxConvListLimit)
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, false
	}
	ix := e.idx
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	u := ix.users[user]
	if u == nil {
		return nil, false
	}
	type cand struct {
		lastIndex, id uint64
		m             *membership
	}
	cands := make([]cand, 0, len(u.convs))
	for _, m := range u.convs {
		if m.gone {
			continue
		}
		li, id := m.conv.lastIndex, m.conv.id
		if afterConv != 0 && (li > after || (li == after && id >= afterConv)) {
			continue // on an earlier page
		}
		cands = append(cands, cand{li, id, m})
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if c := cmp.Compare(b.lastIndex, a.lastIndex); c != 0 {
			return c
		}
		return cmp.Compare(b.id, a.id)
	})
	f := b.start()
	for i := range cands {
		if len(convs) == limit {
			return convs, true
		}
		ci := cands[i].m.conv.info(SyncInfoMembers)
		ix.fillCursors(&ci, user, cands[i].m)
		if !f.take(f.convSize(&ci)) {
			return convs, true
		}
		convs = append(convs, ci)
	}
	return convs, false
}

// Budget bounds a query's page by its encoded size: a page stops before
// the next item would take it over Bytes. A page always holds at least one
// item, even a larger one. The zero Budget bounds nothing.
type Budget struct {
	Bytes int
	Size  Sizer
}

// Sizer measures results as the caller encodes them (the node: wire
// frames). Its methods are called with the engine's locks held: they must
// not call the engine.
type Sizer interface {
	// EventSize is the encoded size of one event in a page.
	EventSize(*Event) int
	// ConvSize is the encoded size of one conversation in a sync page or a
	// list, without its events (never less than it will be).
	ConvSize(*ConvInfo) int
}

// pageFill tracks what is left of a Budget while a page is built.
type pageFill struct {
	sizer Sizer // nil: no byte bound
	left  int
	items int
}

func (b Budget) start() *pageFill {
	if b.Bytes <= 0 || b.Size == nil {
		return &pageFill{}
	}
	return &pageFill{sizer: b.Size, left: b.Bytes}
}

// take reports whether an item of n bytes fits on the page and, if so,
// counts it: the first item always fits.
func (f *pageFill) take(n int) bool {
	if f.sizer != nil {
		if n > f.left && f.items > 0 {
			return false
		}
		f.left -= n
	}
	f.items++
	return true
}

func (f *pageFill) eventSize(ev *Event) int {
	if f.sizer == nil {
		return 0
	}
	return f.sizer.EventSize(ev)
}

func (f *pageFill) convSize(ci *ConvInfo) int {
	if f.sizer == nil {
		return 0
	}
	return f.sizer.ConvSize(ci)
}

// History returns up to limit events of conv next to the anchor seq: with
// Before, those below it (anchor 0: from the newest), newest first; with
// After, those above it, oldest first. more reports whether further events
// exist in that direction. limit is clamped to [1, MaxHistoryLimit], 0
// meaning DefaultHistoryLimit, and the page stops before the budget (it
// holds at least one event): more is then set.
//
// Members read the whole conversation. A former member reads it up to the
// event that removed them, so that the events a sync page announced as More
// can still be paged; anyone else gets ErrCodeNotMember.
func (e *Engine) History(user, conv, anchor uint64, dir Direction, limit int, b Budget) (events []Event, more bool, code ErrCode) {
	switch {
	case limit <= 0:
		limit = DefaultHistoryLimit
	case limit > MaxHistoryLimit:
		limit = MaxHistoryLimit
	}
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, false, ErrCodeInternal
	}
	ix := e.idx
	ix.mu.RLock()
	c := ix.convs[conv]
	lastSeq := uint64(math.MaxUint64) // a member may read past the index: Pebble has it
	switch {
	case c == nil:
		code = ErrCodeNotFound
	case c.isMember(user):
	default:
		code = ErrCodeNotMember
		if u := ix.users[user]; u != nil {
			if m := u.convs[conv]; m != nil && m.gone {
				code, lastSeq = ErrCodeNone, m.goneSeq
			}
		}
	}
	ix.mu.RUnlock()
	if code != ErrCodeNone {
		return nil, false, code
	}

	var lo, hi uint64
	if dir == Before {
		lo, hi = 1, lastSeq
		if anchor != 0 {
			hi = min(anchor-1, lastSeq)
		}
	} else {
		lo, hi = anchor+1, lastSeq
	}
	if lo > hi || lo == 0 {
		return nil, false, ErrCodeNone
	}
	r, err := newEventReader(e.db)
	if err != nil {
		return nil, false, ErrCodeInternal
	}
	defer r.close()
	events, more, err = r.read(conv, lo, hi, limit, dir == Before, nil, b.start(), 0)
	if err != nil {
		return nil, false, ErrCodeInternal
	}
	return events, more, ErrCodeNone
}

// eventReader reads the events of conversations with one Pebble iterator
// whose bounds it moves from range to range.
type eventReader struct {
	it           *pebble.Iterator
	lower, upper []byte
}

func newEventReader(db *pebble.DB) (*eventReader, error) {
	r := &eventReader{lower: make([]byte, 0, 17), upper: make([]byte, 0, 17)}
	r.setBounds(prefixEvent, 0, 0, math.MaxUint64)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: r.lower, UpperBound: r.upper})
	if err != nil {
		return nil, err
	}
	r.it = it
	return r, nil
}

func (r *eventReader) close() { _ = r.it.Close() }

// setBounds bounds the iterator to the keys prefix+conv+[lo, hi].
func (r *eventReader) setBounds(prefix byte, conv, lo, hi uint64) {
	r.lower = appendKey2(r.lower[:0], prefix, conv, lo)
	if hi == math.MaxUint64 {
		r.upper = appendKey2(r.upper[:0], prefix, conv+1, 0)
	} else {
		r.upper = appendKey2(r.upper[:0], prefix, conv, hi+1)
	}
	if r.it != nil {
		r.it.SetBounds(r.lower, r.upper)
	}
}

// read appends to dst up to limit events of conv with seq in [lo, hi],
// ascending or descending, as many as fit in f (the first one with extra
// bytes more: what it brings onto the page with it), and reports whether
// more exist in that range.
func (r *eventReader) read(conv, lo, hi uint64, limit int, desc bool, dst []Event, f *pageFill, extra int) ([]Event, bool, error) {
	r.setBounds(prefixEvent, conv, lo, hi)
	valid := r.it.First()
	step := r.it.Next
	if desc {
		valid, step = r.it.Last(), r.it.Prev
	}
	n := 0
	for ; valid && n < limit; valid = step() {
		v, err := r.it.ValueAndErr()
		if err != nil {
			return dst, false, err
		}
		k := r.it.Key()
		dst = append(dst, Event{})
		ev := &dst[len(dst)-1]
		if err := decodeEvent(conv, u64At(k, 9), v, ev); err != nil {
			return dst, false, errors.Join(corrupt("event", k), err)
		}
		size := f.eventSize(ev)
		if n == 0 {
			size += extra
		}
		if !f.take(size) {
			dst = dst[:len(dst)-1] // valid stays true: more follow
			break
		}
		n++
	}
	if err := r.it.Error(); err != nil {
		return dst, false, err
	}
	return dst, valid, nil
}

// firstSeqAfter returns the first seq of conv appended by an entry after
// since, from the entry keys (one seek, whatever the conversation's length);
// ok is false if no entry after since touched conv.
func (r *eventReader) firstSeqAfter(conv, since uint64) (uint64, bool, error) {
	if since == math.MaxUint64 {
		return 0, false, nil
	}
	r.setBounds(prefixEntry, conv, since+1, math.MaxUint64)
	if !r.it.First() {
		return 0, false, r.it.Error()
	}
	v, err := r.it.ValueAndErr()
	if err != nil {
		return 0, false, err
	}
	if len(v) != 8 {
		return 0, false, corrupt("entry key", r.it.Key())
	}
	return u64At(v, 0), true, nil
}
