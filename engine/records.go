package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Values of the state database (keys in keys.go). Fixed-width fields are
// big-endian. Records are encoded by hand: they are small, fixed, and written
// on the Apply path; the storage format byte (meta 'v') versions all of them.
//
//	user    createdAt(8) nameLen(1) name passwordHash
//	device  flags(1: revoked) createdAt(8) name
//	conv    kind(1) createdAt(8) peerLow(8) peerHigh(8) name   (peers: direct only)
//	last    seq(8) index(8)
//	member  flags(1: active, admin) goneSeq(8) goneIndex(8)  (gone*: the seq and index of the
//	        event that removed an inactive member; kept so sync shows it that event once)
//	dedup   conv(8) seq(8) ts(8) index(8)
//	entry   seq(8)
//	event   see appendEvent
//	cursor  delivered(8) read(8) index(8)   (index: the entry that last moved them)
//	system  empty
//	seen    lastSeen(8) flags(1: hide last_seen; bits 1-2: group add, 0 everyone, 1 contacts, 2 nobody)
//	block   empty

var errCorrupt = errors.New("engine: corrupt record")

func corrupt(what string, k []byte) error { return fmt.Errorf("%w: %s at key %x", errCorrupt, what, k) }

func appendUserRecord(dst []byte, u *User) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(u.CreatedAt))
	dst = append(dst, byte(len(u.Username)))
	dst = append(dst, u.Username...)
	return append(dst, u.PasswordHash...)
}

func decodeUserRecord(id uint64, v []byte, u *User) bool {
	if len(v) < 9 || len(v) < 9+int(v[8]) {
		return false
	}
	n := int(v[8])
	*u = User{
		ID:           id,
		CreatedAt:    int64(u64At(v, 0)),
		Username:     string(v[9 : 9+n]),
		PasswordHash: append([]byte(nil), v[9+n:]...),
	}
	return true
}

const deviceRevoked byte = 1

func appendDeviceRecord(dst []byte, d *Device) []byte {
	var flags byte
	if d.Revoked {
		flags |= deviceRevoked
	}
	dst = append(dst, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(d.CreatedAt))
	return append(dst, d.Name...)
}

func decodeDeviceRecord(user, id uint64, v []byte, d *Device) bool {
	if len(v) < 9 {
		return false
	}
	*d = Device{
		ID: id, User: user, Revoked: v[0]&deviceRevoked != 0,
		CreatedAt: int64(u64At(v, 1)), Name: string(v[9:]),
	}
	return true
}

const (
	convKindDirect byte = 1
	convKindGroup  byte = 2
)

func appendConvRecord(dst []byte, c *convEntry) []byte {
	kind := convKindGroup
	if c.kind == KindDirect {
		kind = convKindDirect
	}
	dst = append(dst, kind)
	dst = binary.BigEndian.AppendUint64(dst, uint64(c.createdAt))
	dst = binary.BigEndian.AppendUint64(dst, c.peers[0])
	dst = binary.BigEndian.AppendUint64(dst, c.peers[1])
	return append(dst, c.name...)
}

func decodeConvRecord(id uint64, v []byte, c *convEntry) bool {
	if len(v) < 25 {
		return false
	}
	switch v[0] {
	case convKindDirect:
		c.kind = KindDirect
	case convKindGroup:
		c.kind = KindGroup
	default:
		return false
	}
	c.id = id
	c.createdAt = int64(u64At(v, 1))
	c.peers = [2]uint64{u64At(v, 9), u64At(v, 17)}
	c.name = string(v[25:])
	return true
}

func appendU64s(dst []byte, vs ...uint64) []byte {
	for _, v := range vs {
		dst = binary.BigEndian.AppendUint64(dst, v)
	}
	return dst
}

const (
	memberActive byte = 1
	memberAdmin  byte = 2
)

// memberRecord is the value of a 'p' key.
type memberRecord struct {
	active, admin      bool
	goneSeq, goneIndex uint64
}

func appendMemberRecord(dst []byte, m memberRecord) []byte {
	var flags byte
	if m.active {
		flags |= memberActive
	}
	if m.admin {
		flags |= memberAdmin
	}
	return appendU64s(append(dst, flags), m.goneSeq, m.goneIndex)
}

func decodeMemberRecord(v []byte) (memberRecord, bool) {
	if len(v) != 17 {
		return memberRecord{}, false
	}
	return memberRecord{
		active: v[0]&memberActive != 0, admin: v[0]&memberAdmin != 0,
		goneSeq: u64At(v, 1), goneIndex: u64At(v, 9),
	}, true
}

// cursors are a member's receipt cursors in a conversation: the highest seq
// delivered to and read on any of their devices. delivered >= read.
type cursors struct {
	delivered, read uint64
}

func appendCursorRecord(dst []byte, c cursors, index uint64) []byte {
	return appendU64s(dst, c.delivered, c.read, index)
}

func decodeCursorRecord(v []byte) (c cursors, index uint64, ok bool) {
	if len(v) != 24 {
		return cursors{}, 0, false
	}
	c = cursors{delivered: u64At(v, 0), read: u64At(v, 8)}
	return c, u64At(v, 16), c.delivered >= c.read
}

const (
	seenHidden        byte = 1
	seenGroupAddShift      = 1
	seenGroupAddMask  byte = 3 << seenGroupAddShift
	seenPreview       byte = 1 << 3 // notifications show the sender and text
	seenDND           byte = 1 << 4 // do not disturb
	seenSuspended     byte = 1 << 5 // suspended by an administrator
	seenDeleted       byte = 1 << 6 // the account was deleted
)

// seenRecord is the value of a 'w' key: last_seen and the privacy
// settings.
type seenRecord struct {
	lastSeen int64
	hide     bool
	// groupAdd is who may add the user to groups; GroupAddUnchanged (the
	// zero value) means GroupAddEveryone, and is what it is stored as.
	groupAdd GroupAddPolicy
	// preview: notifications show the sender and the text (off by
	// default, for privacy); dnd: no notifications at all.
	preview, dnd bool
	// suspended: an administrator suspended the account; deleted: an
	// administrator deleted it.
	suspended, deleted bool
}

// groupAddPolicy is the setting, GroupAddEveryone when never set.
func (s seenRecord) groupAddPolicy() GroupAddPolicy {
	if s.groupAdd == GroupAddUnchanged {
		return GroupAddEveryone
	}
	return s.groupAdd
}

func appendSeenRecord(dst []byte, s seenRecord) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.lastSeen))
	var flags byte
	if s.hide {
		flags |= seenHidden
	}
	if s.preview {
		flags |= seenPreview
	}
	if s.dnd {
		flags |= seenDND
	}
	if s.suspended {
		flags |= seenSuspended
	}
	if s.deleted {
		flags |= seenDeleted
	}
	switch s.groupAdd {
	case GroupAddContacts:
		flags |= 1 << seenGroupAddShift
	case GroupAddNobody:
		flags |= 2 << seenGroupAddShift
	}
	return append(dst, flags)
}

func decodeSeenRecord(v []byte) (seenRecord, bool) {
	if len(v) != 9 || v[8]&^(seenHidden|seenGroupAddMask|seenPreview|seenDND|seenSuspended|seenDeleted) != 0 {
		return seenRecord{}, false
	}
	rec := seenRecord{lastSeen: int64(u64At(v, 0)), hide: v[8]&seenHidden != 0, preview: v[8]&seenPreview != 0, dnd: v[8]&seenDND != 0,
		suspended: v[8]&seenSuspended != 0, deleted: v[8]&seenDeleted != 0}
	switch (v[8] & seenGroupAddMask) >> seenGroupAddShift {
	case 1:
		rec.groupAdd = GroupAddContacts
	case 2:
		rec.groupAdd = GroupAddNobody
	case 3:
		return seenRecord{}, false
	}
	return rec, true
}

// sendRecord is the value of a dedup key: the outcome of the original send.
type sendRecord struct {
	conv, seq uint64
	ts        int64
	index     uint64
}

func appendSendRecord(dst []byte, s sendRecord) []byte {
	return appendU64s(dst, s.conv, s.seq, uint64(s.ts), s.index)
}

func decodeSendRecord(v []byte) (sendRecord, bool) {
	if len(v) != 32 {
		return sendRecord{}, false
	}
	return sendRecord{conv: u64At(v, 0), seq: u64At(v, 8), ts: int64(u64At(v, 16)), index: u64At(v, 24)}, true
}

// Event kinds as stored.
var (
	eventKinds     = [...]EventKind{1: EventMessage, EventCreated, EventMemberAdded, EventMemberRemoved, EventMemberLeft, EventAdminChanged, EventRenamed, EventDeleted}
	eventKindCodes = func() map[EventKind]byte {
		m := make(map[EventKind]byte, len(eventKinds))
		for i, k := range eventKinds {
			if k != "" {
				m[k] = byte(i)
			}
		}
		return m
	}()
)

const eventFormat byte = 1

// eventFormatAtts is eventFormat followed by the message's attachments:
// count(uvarint), then each id(32) size(uvarint) width(uvarint)
// height(uvarint) thumb(1) mime(len + bytes) name(len + bytes). Events
// without attachments keep format 1.
const eventFormatAtts byte = 2

// eventFormatDeletion is eventFormat followed by Target (uvarint) and
// Deleted (one byte): a deleted event, or a message deleted (whose body
// and attachments are gone).
const eventFormatDeletion byte = 3

// appendEvent encodes e (without Conv and Seq, which are in the key, and
// without Recipients, which are derived):
//
//	format(1) kind(1) index(uvarint) ts(varint) from(uvarint) device(uvarint)
//	replyTo(uvarint) admin(1) cmid(uvarint len + bytes) body(len + bytes)
//	name(len + bytes) users(uvarint count + uvarint each)
func appendEvent(dst []byte, e *Event) []byte {
	code, ok := eventKindCodes[e.Kind]
	if !ok {
		panic(fmt.Sprintf("engine: event kind %q has no code", e.Kind))
	}
	format := eventFormat
	switch {
	case e.Target != 0 || e.Deleted:
		if len(e.Attachments) != 0 {
			panic("engine: a deleted message or a deletion with attachments")
		}
		format = eventFormatDeletion
	case len(e.Attachments) != 0:
		format = eventFormatAtts
	}
	dst = append(dst, format, code)
	dst = binary.AppendUvarint(dst, e.Index)
	dst = binary.AppendVarint(dst, e.Ts)
	dst = binary.AppendUvarint(dst, e.From)
	dst = binary.AppendUvarint(dst, e.Device)
	dst = binary.AppendUvarint(dst, e.ReplyTo)
	var admin byte
	if e.Admin {
		admin = 1
	}
	dst = append(dst, admin)
	dst = appendString(dst, e.ClientMsgID)
	dst = appendString(dst, e.Body)
	dst = appendString(dst, e.Name)
	dst = binary.AppendUvarint(dst, uint64(len(e.Users)))
	for _, u := range e.Users {
		dst = binary.AppendUvarint(dst, u)
	}
	switch format {
	case eventFormatAtts:
		dst = appendAttachments(dst, e.Attachments)
	case eventFormatDeletion:
		dst = binary.AppendUvarint(dst, e.Target)
		var deleted byte
		if e.Deleted {
			deleted = 1
		}
		dst = append(dst, deleted)
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	return append(binary.AppendUvarint(dst, uint64(len(s))), s...)
}

// decodeEvent decodes what appendEvent wrote. Strings are copied out of b.
func decodeEvent(conv, seq uint64, b []byte, e *Event) error {
	d := eventDecoder{b: b}
	format := d.byte()
	if format != eventFormat && format != eventFormatAtts && format != eventFormatDeletion {
		return errors.New("unknown event format")
	}
	code := d.byte()
	if int(code) >= len(eventKinds) || eventKinds[code] == "" {
		return fmt.Errorf("unknown event kind %d", code)
	}
	*e = Event{Conv: conv, Seq: seq, Kind: eventKinds[code]}
	e.Index = d.uvarint()
	e.Ts = d.varint()
	e.From = d.uvarint()
	e.Device = d.uvarint()
	e.ReplyTo = d.uvarint()
	e.Admin = d.byte() == 1
	e.ClientMsgID = d.string()
	e.Body = d.string()
	e.Name = d.string()
	if n := d.uvarint(); n > 0 {
		if n > uint64(len(d.b)) { // each user takes at least one byte
			return errors.New("user count exceeds the record")
		}
		e.Users = make([]uint64, n)
		for i := range e.Users {
			e.Users[i] = d.uvarint()
		}
	}
	switch format {
	case eventFormatAtts:
		if err := d.attachments(e); err != nil {
			return err
		}
	case eventFormatDeletion:
		e.Target = d.uvarint()
		switch d.byte() {
		case 0:
		case 1:
			e.Deleted = true
		default:
			return errors.New("bad deleted flag")
		}
	}
	if d.bad {
		return errors.New("truncated event")
	}
	if len(d.b) != 0 {
		return errors.New("trailing bytes after event")
	}
	return nil
}

// eventDecoder reads fields off b; after the first short read it returns
// zeros and sets bad.
type eventDecoder struct {
	b   []byte
	bad bool
}

func (d *eventDecoder) byte() byte {
	if len(d.b) < 1 {
		d.bad = true
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *eventDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *eventDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *eventDecoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.bad, d.b = true, nil
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
