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
	e.idx.mu.RLock()
	if ue := e.idx.users[id]; ue != nil {
		u.LastSeen, u.HideLastSeen = ue.seen.lastSeen, ue.seen.hide
	}
	e.idx.mu.RUnlock()
	return u, true
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

// History returns up to limit events of conv next to the anchor seq: with
// Before, those below it (anchor 0: from the newest), newest first; with
// After, those above it, oldest first. more reports whether further events
// exist in that direction. limit is clamped to [1, MaxHistoryLimit], 0
// meaning DefaultHistoryLimit.
//
// Members read the whole conversation. A former member reads it up to the
// event that removed them, so that the events a sync page announced as More
// can still be paged; anyone else gets ErrCodeNotMember.
func (e *Engine) History(user, conv, anchor uint64, dir Direction, limit int) (events []Event, more bool, code ErrCode) {
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
	events, more, err = r.read(conv, lo, hi, limit, dir == Before, nil)
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
// ascending or descending, and reports whether more exist in that range.
func (r *eventReader) read(conv, lo, hi uint64, limit int, desc bool, dst []Event) ([]Event, bool, error) {
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
		if err := decodeEvent(conv, u64At(k, 9), v, &dst[len(dst)-1]); err != nil {
			return dst, false, errors.Join(corrupt("event", k), err)
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
