package engine

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// index is the in-memory view of the state that Apply checks rights against
// and queries answer from: users by name, conversations with their members
// and last seq/index, each user's conversations with their receipt cursors,
// the 1:1 lookup, each group's cursors in sorted order. It is
// derived data: built from the database by loadIndex on Open and Restore,
// never persisted on its own.
//
// Ownership: the Apply goroutine (holding Engine.applyMu) is the only writer.
// It reads the index without mu, and writes it holding mu, after the entry's
// batch is committed, so readers never see state that is not in Pebble yet.
// Queries read it holding mu for reading, copy what they need, and release it
// before any Pebble I/O.
type index struct {
	mu sync.RWMutex

	users   map[uint64]*userEntry
	names   map[string]uint64 // username -> user ID
	convs   map[uint64]*convEntry
	directs map[[2]uint64]uint64 // {low user, high user} -> conversation
	// devices lets Apply check the sender's device, and the node check a
	// token's device on connect, without a read; names and creation times
	// stay in Pebble.
	devices map[uint64]deviceState

	// The last ID handed out of each kind (mirrors the meta keys).
	lastUser, lastDevice, lastConv uint64
	// lastTs is the ts of the last applied entry (unix ms, mirrors the
	// meta key): an entry's ts is never below it.
	lastTs uint64

	// signingKey is the cluster's token signing key, nil until one is
	// applied. Never modified once set, so readers may keep the slice.
	signingKey []byte

	// pushProgress: every message up to this log index was handled by the
	// notifier (mirrors the meta key).
	pushProgress uint64
}

// deviceState is what the index keeps of a device: no pointers, so a
// million devices cost the garbage collector nothing to scan.
type deviceState struct {
	user    uint64
	revoked bool
}

type userEntry struct {
	id   uint64
	name string
	seen seenRecord // last_seen and privacy; written by install only
	// devices are the user's active (not revoked) devices, ascending: the
	// oldest first. Never modified in place: Apply builds a new slice
	// (txn.devicesOf) and install swaps it in.
	devices []uint64
	// blocked holds the users this user blocks (at most MaxBlocksPerUser);
	// nil when none. Written by install only; Apply checks it, block.list
	// reads Pebble.
	blocked map[uint64]struct{}
	// convs has every conversation the user is in or has left (a former
	// member keeps seeing the event that removed them, once, in sync).
	convs map[uint64]*membership
}

type membership struct {
	conv *convEntry
	// gone: the user left or was removed by the event at goneSeq/goneIndex.
	gone               bool
	goneSeq, goneIndex uint64
	// The user's receipt cursors, and the index of the entry that last
	// moved them. A former member's stay as they were.
	cursors     cursors
	cursorIndex uint64
	// mutedUntil: no notifications from the conversation until then (unix
	// ms; MuteForever; 0 when not muted).
	mutedUntil int64
}

// syncIndex is the index of the last change the user must see this
// conversation at in sync: its last event, or a change of the user's
// cursors (in a 1:1, of either member's); for a former member, the event
// that removed them.
func (m *membership) syncIndex() uint64 {
	c := m.conv
	switch {
	case m.gone:
		return m.goneIndex
	case c.kind == KindDirect:
		return max(c.lastIndex, c.cursorIndex)
	}
	return max(c.lastIndex, m.cursorIndex)
}

// unread is the number of messages from other users above the user's read
// cursor. Sending a message moves the sender's read cursor to it (see
// send), so every message above the read cursor is another user's, and
// the count is the number of messages in (read, lastSeq].
func (m *membership) unread() uint64 {
	if m.gone || m.cursors.read >= m.conv.lastSeq {
		return 0
	}
	// Messages retention deleted are not unread any more.
	from := max(m.cursors.read, m.conv.firstSeq-min(m.conv.firstSeq, 1))
	return m.conv.messagesUpTo(m.conv.lastSeq) - m.conv.messagesUpTo(from)
}

type convEntry struct {
	id        uint64
	kind      ConvKind
	name      string
	createdAt int64
	peers     [2]uint64 // direct conversations: the two users, ascending

	lastSeq, lastIndex uint64
	// firstSeq is the first seq retention kept (retention.go): events
	// below it were deleted. 0 or 1: none was.
	firstSeq uint64

	// members and admins are sorted user IDs. They are never modified in
	// place: a membership change builds new slices (copy on write), so a
	// published event can carry members as its Recipients without a copy.
	members []uint64
	admins  []uint64

	// systemSeqs are the seqs of the events that are not messages,
	// ascending: with them, the number of messages up to any seq is a
	// binary search. Apply appends to it in place from the entry's working
	// copy: readers of the live entry read only up to its length, and only
	// the Apply goroutine appends.
	systemSeqs []uint64

	// cursorIndex is the index of the last entry that moved any member's
	// receipt cursors. cursors holds a group's current members' cursors
	// in sorted order (nil for a 1:1: two members need no index). Both are
	// written only by install, after it has copied the entry's working
	// copies back (which carry them unchanged), under index.mu.
	cursorIndex uint64
	cursors     *cursorSet
}

// messagesUpTo is the number of message events with seq <= seq.
func (c *convEntry) messagesUpTo(seq uint64) uint64 {
	n, _ := slices.BinarySearch(c.systemSeqs, seq+1)
	return seq - uint64(n)
}

func (c *convEntry) isMember(user uint64) bool { return contains(c.members, user) }

// peerOf is the other member of a 1:1.
func (c *convEntry) peerOf(user uint64) uint64 {
	if c.peers[0] == user {
		return c.peers[1]
	}
	return c.peers[0]
}
func (c *convEntry) isAdmin(user uint64) bool { return contains(c.admins, user) }

// info describes the conversation; member lists longer than maxMembers are
// left out (MemberCount is always set).
func (c *convEntry) info(maxMembers int) ConvInfo {
	ci := ConvInfo{
		ID: c.id, Kind: c.kind, Name: c.name, MemberCount: len(c.members),
		LastSeq: c.lastSeq, LastIndex: c.lastIndex, CreatedAt: c.createdAt, FirstSeq: max(c.firstSeq, 1),
	}
	if len(c.members) <= maxMembers {
		ci.Members = make([]Member, len(c.members))
		for i, u := range c.members {
			ci.Members[i] = Member{User: u, Admin: c.isAdmin(u)}
		}
	}
	return ci
}

// infoPage describes the conversation with the members whose IDs are
// above after, at most maxMembers of them; more reports whether further
// members follow. MemberCount is always set.
func (c *convEntry) infoPage(after uint64, maxMembers int) (ci ConvInfo, more bool) {
	ci = c.info(-1) // no members
	i := len(c.members)
	if after < math.MaxUint64 {
		i, _ = slices.BinarySearch(c.members, after+1)
	}
	j := i + min(max(maxMembers, 0), len(c.members)-i)
	ci.Members = make([]Member, j-i)
	for k, u := range c.members[i:j] {
		ci.Members[k] = Member{User: u, Admin: c.isAdmin(u)}
	}
	return ci, j < len(c.members)
}

func contains(sorted []uint64, v uint64) bool {
	_, found := slices.BinarySearch(sorted, v)
	return found
}

// merged returns a new sorted slice holding a and b (both sorted, disjoint).
func merged(a, b []uint64) []uint64 {
	out := make([]uint64, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if a[i] < b[j] {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// without returns a new slice holding sorted minus v.
func without(sorted []uint64, v uint64) []uint64 {
	out := make([]uint64, 0, len(sorted))
	for _, u := range sorted {
		if u != v {
			out = append(out, u)
		}
	}
	return out
}

// sortedUnique returns the distinct values of ids, ascending, in a new slice.
func sortedUnique(ids []uint64) []uint64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}

func newIndex() *index {
	return &index{
		users:   make(map[uint64]*userEntry),
		names:   make(map[string]uint64),
		convs:   make(map[uint64]*convEntry),
		directs: make(map[[2]uint64]uint64),
		devices: make(map[uint64]deviceState),
	}
}

// loadIndex builds the index from the database and returns it with the
// applied index stored there.
func loadIndex(db *pebble.DB) (*index, uint64, error) {
	ix := newIndex()
	var applied uint64
	for _, m := range []struct {
		name byte
		dst  *uint64
	}{
		{metaApplied, &applied}, {metaLastUser, &ix.lastUser},
		{metaLastDevice, &ix.lastDevice}, {metaLastConv, &ix.lastConv},
		{metaLastTs, &ix.lastTs},
	} {
		v, err := getU64(db, metaKey(m.name))
		if err != nil {
			return nil, 0, err
		}
		*m.dst = v
	}
	if v, closer, err := db.Get(metaKey(metaSigningKey)); err == nil {
		ix.signingKey = slices.Clone(v)
		_ = closer.Close()
		if n := len(ix.signingKey); n < MinSigningKeyLen || n > MaxSigningKeyLen {
			return nil, 0, corrupt("signing key", metaKey(metaSigningKey))
		}
	} else if !errors.Is(err, pebble.ErrNotFound) {
		return nil, 0, err
	}

	err := scan(db, prefixUser, func(k, v []byte) error {
		if len(k) != 9 {
			return corrupt("user key", k)
		}
		var u User
		if !decodeUserRecord(u64At(k, 1), v, &u) {
			return corrupt("user record", k)
		}
		ix.users[u.ID] = &userEntry{id: u.ID, name: u.Username, convs: make(map[uint64]*membership)}
		if u.Username != "" { // "": a deleted account, whose name is free
			ix.names[u.Username] = u.ID
		}
		return nil
	})
	if err == nil {
		err = scan(db, prefixDevice, func(k, v []byte) error {
			var d Device
			if len(k) != 17 || !decodeDeviceRecord(u64At(k, 1), u64At(k, 9), v, &d) || ix.users[d.User] == nil {
				return corrupt("device record", k)
			}
			ix.devices[d.ID] = deviceState{user: d.User, revoked: d.Revoked}
			if !d.Revoked { // keys come in (user, device) order
				ix.users[d.User].devices = append(ix.users[d.User].devices, d.ID)
			}
			return nil
		})
	}
	if err == nil {
		err = scan(db, prefixConv, func(k, v []byte) error {
			c := new(convEntry)
			if len(k) != 9 || !decodeConvRecord(u64At(k, 1), v, c) {
				return corrupt("conversation record", k)
			}
			ix.convs[c.id] = c
			if c.kind == KindDirect {
				ix.directs[c.peers] = c.id
			}
			return nil
		})
	}
	if err == nil {
		err = scan(db, prefixLast, func(k, v []byte) error {
			c := ix.convs[u64At(k, 1)]
			if len(k) != 9 || len(v) != 16 || c == nil {
				return corrupt("last seq", k)
			}
			c.lastSeq, c.lastIndex = u64At(v, 0), u64At(v, 8)
			return nil
		})
	}
	if err == nil {
		err = scan(db, prefixSystem, func(k, v []byte) error {
			c := ix.convs[u64At(k, 1)]
			if len(k) != 17 || c == nil {
				return corrupt("system seq", k)
			}
			c.systemSeqs = append(c.systemSeqs, u64At(k, 9)) // keys come in seq order
			return nil
		})
	}
	if err == nil {
		err = scan(db, prefixSeen, func(k, v []byte) error {
			rec, ok := decodeSeenRecord(v)
			if len(k) != 9 || !ok || ix.users[u64At(k, 1)] == nil {
				return corrupt("last seen record", k)
			}
			ix.users[u64At(k, 1)].seen = rec
			return nil
		})
	}
	if err == nil {
		err = scan(db, prefixBlock, func(k, v []byte) error {
			u := ix.users[u64At(k, 1)]
			if len(k) != 17 || len(v) != 0 || u == nil || ix.users[u64At(k, 9)] == nil {
				return corrupt("block", k)
			}
			if u.blocked == nil {
				u.blocked = make(map[uint64]struct{})
			}
			u.blocked[u64At(k, 9)] = struct{}{}
			return nil
		})
	}
	if err == nil {
		// Keys are ordered by (conv, user): members come out sorted.
		err = scan(db, prefixMember, func(k, v []byte) error {
			if len(k) != 17 {
				return corrupt("member key", k)
			}
			c, u := ix.convs[u64At(k, 1)], ix.users[u64At(k, 9)]
			rec, ok := decodeMemberRecord(v)
			if c == nil || u == nil || !ok {
				return corrupt("member record", k)
			}
			if rec.active {
				c.members = append(c.members, u.id)
				if rec.admin {
					c.admins = append(c.admins, u.id)
				}
			}
			u.convs[c.id] = &membership{conv: c, gone: !rec.active, goneSeq: rec.goneSeq, goneIndex: rec.goneIndex}
			return nil
		})
	}
	if err == nil {
		err = loadCursors(db, ix)
	}
	if err == nil {
		err = loadPush(db, ix)
	}
	if err == nil {
		err = scan(db, prefixFirst, func(k, v []byte) error {
			c := ix.convs[u64At(k, 1)]
			if len(k) != 9 || len(v) != 8 || c == nil {
				return corrupt("first seq", k)
			}
			c.firstSeq = u64At(v, 0)
			return nil
		})
	}
	if err != nil {
		return nil, 0, err
	}
	return ix, applied, nil
}

// loadCursors reads every member's receipt cursors into their membership
// and builds each group's cursor set. Every member and former member has a
// cursor record (written when they joined).
func loadCursors(db *pebble.DB, ix *index) error {
	records := 0
	err := scan(db, prefixCursor, func(k, v []byte) error {
		if len(k) != 17 {
			return corrupt("cursor key", k)
		}
		var m *membership
		if u := ix.users[u64At(k, 9)]; u != nil {
			m = u.convs[u64At(k, 1)]
		}
		cur, index, ok := decodeCursorRecord(v)
		if m == nil || !ok {
			return corrupt("cursor record", k)
		}
		records++
		m.cursors, m.cursorIndex = cur, index
		c := m.conv
		c.cursorIndex = max(c.cursorIndex, index)
		if c.kind == KindGroup && !m.gone {
			if c.cursors == nil {
				c.cursors = &cursorSet{}
			}
			c.cursors.delivered = append(c.cursors.delivered, cur.delivered)
			c.cursors.read = append(c.cursors.read, cur.read)
		}
		return nil
	})
	if err != nil {
		return err
	}
	memberships := 0
	for _, u := range ix.users {
		memberships += len(u.convs)
	}
	if records != memberships {
		return fmt.Errorf("%w: %d cursor records for %d memberships", errCorrupt, records, memberships)
	}
	for _, c := range ix.convs {
		if c.kind != KindGroup {
			continue
		}
		if c.cursors == nil {
			c.cursors = &cursorSet{}
		}
		slices.Sort(c.cursors.delivered)
		slices.Sort(c.cursors.read)
	}
	return nil
}

// scan calls f for every key with the prefix, in order. k and v are valid
// only during the call.
func scan(db *pebble.DB, prefix byte, f func(k, v []byte) error) error {
	lower, upper := prefixBounds(prefix)
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return err
	}
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			break
		}
		if err := f(it.Key(), v); err != nil {
			_ = it.Close()
			return err
		}
	}
	return it.Close() // reports the iteration error, if any
}

// getU64 reads an 8-byte value; a missing key reads as 0.
func getU64(db pebble.Reader, k []byte) (uint64, error) {
	v, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, corrupt("integer", k)
	}
	return u64At(v, 0), nil
}

// checkFormat refuses a database in a layout this build does not know and
// stamps a new, empty one with the current layout.
func checkFormat(db *pebble.DB) error {
	k := metaKey(metaFormat)
	v, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		applied, err := getU64(db, metaKey(metaApplied))
		if err != nil {
			return err
		}
		if applied != 0 {
			return fmt.Errorf("engine: state at index %d has no format version", applied)
		}
		return db.Set(k, []byte{storageFormat}, pebble.Sync)
	}
	if err != nil {
		return fmt.Errorf("engine: read format version: %w", err)
	}
	defer closer.Close()
	if len(v) != 1 || v[0] != storageFormat {
		return fmt.Errorf("engine: state format %x, this build reads %d", v, storageFormat)
	}
	return nil
}
