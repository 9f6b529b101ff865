package wire

import (
	"encoding/binary"
	"math"
)

// Append-style encoders for the server frames, written out by hand.
//
// msgpack/v5 encodes a struct by reflection, and every omitempty field
// boxes its value to test it: about 17 allocations and 8 µs for one event
// frame, paid for every message event and every reply. These encoders
// write the same bytes as msgpack.Marshal of the same struct (the tests
// compare them byte for byte): a map with the fields in declaration order,
// omitempty fields left out when zero, uint64 and int64 fields at full
// width (0xcf and 0xd3 with 8 bytes) but int fields in the fewest bytes, as
// msgpack/v5 writes them, nil slices as nil. They allocate nothing beyond
// growing dst. Marshal uses them for these types.
//
// When a field is added to one of these structs, add it here too: the
// tests fill every field by reflection and fail on any difference.

// AppendEvent appends e as a msgpack map.
func AppendEvent(b []byte, e *Event) []byte {
	n := 6 // conv, seq, idx, ts, kind, from
	n += count(e.Type != "") + count(e.Device != 0) + count(e.ClientMsgID != "") + count(e.Body != "") + count(e.ReplyTo != 0) +
		count(len(e.Users) != 0) + count(e.Name != "") + count(e.Admin) + count(len(e.Att) != 0) +
		count(e.Target != 0) + count(e.Deleted)
	b = appendMapLen(b, n)
	if e.Type != "" { // "ev" as a frame, absent inside replies
		b = appendStr(appendStr(b, "t"), e.Type)
	}
	b = appendU64(appendStr(b, "conv"), e.Conv)
	b = appendU64(appendStr(b, "seq"), e.Seq)
	b = appendU64(appendStr(b, "idx"), e.Index)
	b = appendI64(appendStr(b, "ts"), e.Ts)
	b = appendStr(appendStr(b, "kind"), e.Kind)
	b = appendU64(appendStr(b, "from"), e.From)
	if e.Device != 0 {
		b = appendU64(appendStr(b, "dev"), e.Device)
	}
	if e.ClientMsgID != "" {
		b = appendStr(appendStr(b, "cmid"), e.ClientMsgID)
	}
	if e.Body != "" {
		b = appendStr(appendStr(b, "body"), e.Body)
	}
	if e.ReplyTo != 0 {
		b = appendU64(appendStr(b, "reply_to"), e.ReplyTo)
	}
	if len(e.Users) != 0 {
		b = appendU64s(appendStr(b, "users"), e.Users)
	}
	if e.Name != "" {
		b = appendStr(appendStr(b, "name"), e.Name)
	}
	if e.Admin {
		b = appendBool(appendStr(b, "admin"), true)
	}
	if len(e.Att) != 0 {
		b = appendAttachments(appendStr(b, "att"), e.Att)
	}
	if e.Target != 0 {
		b = appendU64(appendStr(b, "target"), e.Target)
	}
	if e.Deleted {
		b = appendBool(appendStr(b, "deleted"), true)
	}
	return b
}

// EventSize is a size to reserve for AppendEvent(e): exact for the fixed
// part, generous for the rest.
func EventSize(e *Event) int {
	n := 128 + len(e.Type) + len(e.Kind) + len(e.ClientMsgID) + len(e.Body) + len(e.Name) + 9*len(e.Users)
	if len(e.Att) != 0 {
		n += attachmentsLen(e.Att)
	}
	return n
}

// AppendReply appends r as a msgpack map.
func AppendReply(b []byte, r *Reply) []byte {
	n := 2 // t, id
	n += count(r.Code != "") + count(r.Message != "") + count(r.RetryMS != 0) + count(r.ClientMsgID != "") + count(r.Conv != 0) +
		count(r.Seq != 0) + count(r.Ts != 0) + count(r.Index != 0) + count(r.Duplicate) +
		count(r.Info != nil) + count(len(r.Convs) != 0) + count(r.UserInfo != nil) + count(len(r.Events) != 0) +
		count(r.More) + count(len(r.Changes) != 0) + count(r.Next != 0) + count(r.NextConv != 0) + count(len(r.Presence) != 0) +
		count(r.ReadCount != 0) + count(r.DeliveredCount != 0) + count(r.MemberCount != 0) +
		count(len(r.Readers) != 0) + count(len(r.Devices) != 0) + count(len(r.Blocked) != 0)
	b = appendMapLen(b, n)
	b = appendStr(appendStr(b, "t"), r.Type)
	b = appendU64(appendStr(b, "id"), r.ID)
	if r.Code != "" {
		b = appendStr(appendStr(b, "code"), string(r.Code))
	}
	if r.Message != "" {
		b = appendStr(appendStr(b, "msg"), r.Message)
	}
	if r.RetryMS != 0 {
		b = appendI64(appendStr(b, "retry_ms"), r.RetryMS)
	}
	if r.ClientMsgID != "" {
		b = appendStr(appendStr(b, "cmid"), r.ClientMsgID)
	}
	if r.Conv != 0 {
		b = appendU64(appendStr(b, "conv"), r.Conv)
	}
	if r.Seq != 0 {
		b = appendU64(appendStr(b, "seq"), r.Seq)
	}
	if r.Ts != 0 {
		b = appendI64(appendStr(b, "ts"), r.Ts)
	}
	if r.Index != 0 {
		b = appendU64(appendStr(b, "idx"), r.Index)
	}
	if r.Duplicate {
		b = appendBool(appendStr(b, "dup"), true)
	}
	if r.Info != nil {
		b = appendConvInfo(appendStr(b, "info"), r.Info)
	}
	if len(r.Convs) != 0 {
		b = appendArrayLen(appendStr(b, "convs"), len(r.Convs))
		for i := range r.Convs {
			b = appendConvInfo(b, &r.Convs[i])
		}
	}
	if r.UserInfo != nil {
		b = appendUserInfo(appendStr(b, "user"), r.UserInfo)
	}
	if len(r.Events) != 0 {
		b = appendEvents(appendStr(b, "events"), r.Events)
	}
	if r.More {
		b = appendBool(appendStr(b, "more"), true)
	}
	if len(r.Changes) != 0 {
		b = appendArrayLen(appendStr(b, "changes"), len(r.Changes))
		for i := range r.Changes {
			b = appendConvSync(b, &r.Changes[i])
		}
	}
	if r.Next != 0 {
		b = appendU64(appendStr(b, "next"), r.Next)
	}
	if r.NextConv != 0 {
		b = appendU64(appendStr(b, "next_conv"), r.NextConv)
	}
	if len(r.Presence) != 0 {
		b = appendArrayLen(appendStr(b, "presence"), len(r.Presence))
		for i := range r.Presence {
			b = AppendPresence(b, &r.Presence[i])
		}
	}
	if r.ReadCount != 0 {
		b = appendInt(appendStr(b, "read_count"), int64(r.ReadCount))
	}
	if r.DeliveredCount != 0 {
		b = appendInt(appendStr(b, "delivered_count"), int64(r.DeliveredCount))
	}
	if r.MemberCount != 0 {
		b = appendInt(appendStr(b, "member_count"), int64(r.MemberCount))
	}
	if len(r.Readers) != 0 {
		b = appendU64s(appendStr(b, "readers"), r.Readers)
	}
	if len(r.Devices) != 0 {
		b = appendArrayLen(appendStr(b, "devices"), len(r.Devices))
		for i := range r.Devices {
			b = appendDeviceInfo(b, &r.Devices[i])
		}
	}
	if len(r.Blocked) != 0 {
		b = appendU64s(appendStr(b, "blocked"), r.Blocked)
	}
	return b
}

// AppendRequest appends r as msgpack/v5 encodes it (clients send with it:
// Marshal costs several µs and a dozen allocations a frame); ok false when
// r has Users or Att, which it does not encode: use Marshal then.
func AppendRequest(b []byte, r *Request) (_ []byte, ok bool) {
	if len(r.Users) != 0 || len(r.Att) != 0 {
		return b, false
	}
	n := 2 // t, id
	n += count(r.Conv != 0) + count(r.ClientMsgID != "") + count(r.Body != "") + count(r.ReplyTo != 0) +
		count(r.User != 0) + count(r.Name != "") + count(r.Admin) + count(r.Seq != 0) + count(r.Dir != "") +
		count(r.Limit != 0) + count(r.Since != 0) + count(r.After != 0) + count(r.AfterConv != 0) + count(r.On) +
		count(r.Delivered != 0) + count(r.Read != 0) + count(r.Hide) + count(r.GroupAdd != "") + count(r.Device != 0) +
		count(r.MinIndex != 0) + count(r.Provider != "") + count(r.Token != "") + count(r.Endpoint != "") +
		count(r.P256dh != "") + count(r.Auth != "") + count(r.Preview) + count(r.DND) + count(r.Until != 0)
	b = appendMapLen(b, n)
	b = appendStr(appendStr(b, "t"), r.Type)
	b = appendU64(appendStr(b, "id"), r.ID)
	b = optU64(b, "conv", r.Conv)
	b = optStr(b, "cmid", r.ClientMsgID)
	b = optStr(b, "body", r.Body)
	b = optU64(b, "reply_to", r.ReplyTo)
	b = optU64(b, "user", r.User)
	b = optStr(b, "name", r.Name)
	b = optBool(b, "admin", r.Admin)
	b = optU64(b, "seq", r.Seq)
	b = optStr(b, "dir", r.Dir)
	if r.Limit != 0 {
		b = appendInt(appendStr(b, "limit"), int64(r.Limit))
	}
	b = optU64(b, "since", r.Since)
	b = optU64(b, "after", r.After)
	b = optU64(b, "after_conv", r.AfterConv)
	b = optBool(b, "on", r.On)
	b = optU64(b, "delivered", r.Delivered)
	b = optU64(b, "read", r.Read)
	b = optBool(b, "hide_last_seen", r.Hide)
	b = optStr(b, "group_add", r.GroupAdd)
	b = optU64(b, "dev", r.Device)
	b = optU64(b, "min_idx", r.MinIndex)
	b = optStr(b, "provider", r.Provider)
	b = optStr(b, "token", r.Token)
	b = optStr(b, "endpoint", r.Endpoint)
	b = optStr(b, "p256dh", r.P256dh)
	b = optStr(b, "auth", r.Auth)
	b = optBool(b, "preview", r.Preview)
	b = optBool(b, "dnd", r.DND)
	if r.Until != 0 {
		b = appendI64(appendStr(b, "until"), r.Until)
	}
	return b, true
}

func optU64(b []byte, key string, v uint64) []byte {
	if v == 0 {
		return b
	}
	return appendU64(appendStr(b, key), v)
}

func optStr(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendStr(appendStr(b, key), v)
}

func optBool(b []byte, key string, v bool) []byte {
	if !v {
		return b
	}
	return appendBool(appendStr(b, key), true)
}

// ReplySize is a size to reserve for AppendReply(r): right for the small
// replies (acks, errors); the big ones grow as they are built.
func ReplySize(r *Reply) int {
	return 128 + len(r.Type) + len(r.Code) + len(r.Message) + len(r.ClientMsgID)
}

// AppendReceipt appends r as a msgpack map.
func AppendReceipt(b []byte, r *Receipt) []byte {
	b = appendMapLen(b, 6+count(r.Device != 0))
	b = appendStr(appendStr(b, "t"), r.Type)
	b = appendU64(appendStr(b, "conv"), r.Conv)
	b = appendU64(appendStr(b, "user"), r.User)
	if r.Device != 0 {
		b = appendU64(appendStr(b, "dev"), r.Device)
	}
	b = appendU64(appendStr(b, "delivered"), r.Delivered)
	b = appendU64(appendStr(b, "read"), r.Read)
	return appendU64(appendStr(b, "idx"), r.Index)
}

// AppendReadCounts appends r as a msgpack map.
func AppendReadCounts(b []byte, r *ReadCounts) []byte {
	b = appendMapLen(b, 3)
	b = appendStr(appendStr(b, "t"), r.Type)
	b = appendU64(appendStr(b, "conv"), r.Conv)
	b = appendStr(b, "items")
	if r.Items == nil {
		return append(b, mpNil)
	}
	b = appendArrayLen(b, len(r.Items))
	for i := range r.Items {
		it := &r.Items[i]
		b = appendMapLen(b, 5)
		b = appendU64(appendStr(b, "seq"), it.Seq)
		b = appendU64(appendStr(b, "from"), it.From)
		b = appendInt(appendStr(b, "read"), int64(it.Read))
		b = appendInt(appendStr(b, "delivered"), int64(it.Delivered))
		b = appendInt(appendStr(b, "members"), int64(it.Members))
	}
	return b
}

// AppendTyping appends t as a msgpack map.
func AppendTyping(b []byte, t *Typing) []byte {
	b = appendMapLen(b, 4+count(t.TTLms != 0))
	b = appendStr(appendStr(b, "t"), t.Type)
	b = appendU64(appendStr(b, "conv"), t.Conv)
	b = appendU64(appendStr(b, "user"), t.User)
	b = appendBool(appendStr(b, "on"), t.On)
	if t.TTLms != 0 {
		b = appendI64(appendStr(b, "ttl_ms"), t.TTLms)
	}
	return b
}

// AppendPresence appends p as a msgpack map.
func AppendPresence(b []byte, p *Presence) []byte {
	b = appendMapLen(b, 2+count(p.Type != "")+count(p.LastSeen != 0))
	if p.Type != "" {
		b = appendStr(appendStr(b, "t"), p.Type)
	}
	b = appendU64(appendStr(b, "user"), p.User)
	b = appendBool(appendStr(b, "online"), p.Online)
	if p.LastSeen != 0 {
		b = appendI64(appendStr(b, "last_seen"), p.LastSeen)
	}
	return b
}

func appendEvents(b []byte, evs []Event) []byte {
	if evs == nil {
		return append(b, mpNil)
	}
	b = appendArrayLen(b, len(evs))
	for i := range evs {
		b = AppendEvent(b, &evs[i])
	}
	return b
}

func appendConvInfo(b []byte, c *ConvInfo) []byte {
	n := 6 // id, kind, members, last_seq, last_idx, created_at
	n += count(c.Name != "") + count(len(c.Admins) != 0) + count(c.MemberCount != 0) + count(c.Delivered != 0) +
		count(c.Read != 0) + count(c.Unread != 0) + count(c.PeerDelivered != 0) + count(c.PeerRead != 0) +
		count(c.MutedUntil != 0) + count(c.FirstSeq != 0)
	b = appendMapLen(b, n)
	b = appendU64(appendStr(b, "id"), c.ID)
	b = appendStr(appendStr(b, "kind"), c.Kind)
	if c.Name != "" {
		b = appendStr(appendStr(b, "name"), c.Name)
	}
	b = appendU64s(appendStr(b, "members"), c.Members)
	if len(c.Admins) != 0 {
		b = appendU64s(appendStr(b, "admins"), c.Admins)
	}
	b = appendU64(appendStr(b, "last_seq"), c.LastSeq)
	b = appendU64(appendStr(b, "last_idx"), c.LastIndex)
	b = appendI64(appendStr(b, "created_at"), c.CreatedAt)
	if c.MemberCount != 0 {
		b = appendInt(appendStr(b, "member_count"), int64(c.MemberCount))
	}
	if c.Delivered != 0 {
		b = appendU64(appendStr(b, "delivered"), c.Delivered)
	}
	if c.Read != 0 {
		b = appendU64(appendStr(b, "read"), c.Read)
	}
	if c.Unread != 0 {
		b = appendU64(appendStr(b, "unread"), c.Unread)
	}
	if c.PeerDelivered != 0 {
		b = appendU64(appendStr(b, "peer_delivered"), c.PeerDelivered)
	}
	if c.PeerRead != 0 {
		b = appendU64(appendStr(b, "peer_read"), c.PeerRead)
	}
	if c.MutedUntil != 0 {
		b = appendI64(appendStr(b, "muted_until"), c.MutedUntil)
	}
	if c.FirstSeq != 0 {
		b = appendU64(appendStr(b, "first_seq"), c.FirstSeq)
	}
	return b
}

func appendConvSync(b []byte, c *ConvSync) []byte {
	b = appendMapLen(b, 2+count(c.More)+count(c.Gone))
	b = appendConvInfo(appendStr(b, "info"), &c.Info)
	b = appendEvents(appendStr(b, "events"), c.Events)
	if c.More {
		b = appendBool(appendStr(b, "more"), true)
	}
	if c.Gone {
		b = appendBool(appendStr(b, "gone"), true)
	}
	return b
}

func appendUserInfo(b []byte, u *UserInfo) []byte {
	b = appendMapLen(b, 2+count(u.LastSeen != 0)+count(u.HideLastSeen)+count(u.GroupAdd != "")+count(u.Preview)+count(u.DND)+count(u.Deleted))
	b = appendU64(appendStr(b, "id"), u.ID)
	b = appendStr(appendStr(b, "username"), u.Username)
	if u.LastSeen != 0 {
		b = appendI64(appendStr(b, "last_seen"), u.LastSeen)
	}
	if u.HideLastSeen {
		b = appendBool(appendStr(b, "hide_last_seen"), true)
	}
	if u.GroupAdd != "" {
		b = appendStr(appendStr(b, "group_add"), u.GroupAdd)
	}
	if u.Preview {
		b = appendBool(appendStr(b, "preview"), true)
	}
	if u.DND {
		b = appendBool(appendStr(b, "dnd"), true)
	}
	if u.Deleted {
		b = appendBool(appendStr(b, "deleted"), true)
	}
	return b
}

func appendDeviceInfo(b []byte, d *DeviceInfo) []byte {
	b = appendMapLen(b, 3+count(d.Revoked)+count(d.Current))
	b = appendU64(appendStr(b, "id"), d.ID)
	b = appendStr(appendStr(b, "name"), d.Name)
	b = appendI64(appendStr(b, "created_at"), d.CreatedAt)
	if d.Revoked {
		b = appendBool(appendStr(b, "revoked"), true)
	}
	if d.Current {
		b = appendBool(appendStr(b, "current"), true)
	}
	return b
}

// msgpack codes used here.
const (
	mpNil     = 0xc0
	mpFalse   = 0xc2
	mpTrue    = 0xc3
	mpUint64  = 0xcf
	mpInt64   = 0xd3
	mpStr8    = 0xd9
	mpStr16   = 0xda
	mpStr32   = 0xdb
	mpArray16 = 0xdc
	mpArray32 = 0xdd
	mpMap16   = 0xde
	mpMap32   = 0xdf
)

func count(nonZero bool) int {
	if nonZero {
		return 1
	}
	return 0
}

func appendMapLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n <= 0xffff:
		return append(b, mpMap16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpMap32), uint32(n))
}

func appendArrayLen(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x90|byte(n))
	case n <= 0xffff:
		return append(b, mpArray16, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint32(append(b, mpArray32), uint32(n))
}

func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 256:
		b = append(b, mpStr8, byte(n))
	case n <= 0xffff:
		b = append(b, mpStr16, byte(n>>8), byte(n))
	default:
		b = binary.BigEndian.AppendUint32(append(b, mpStr32), uint32(n))
	}
	return append(b, s...)
}

func appendU64(b []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(append(b, mpUint64), v)
}

func appendI64(b []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(append(b, mpInt64), uint64(v))
}

// appendInt writes a Go int field as msgpack/v5 does: in the fewest bytes
// (it writes int64 and uint64 fields at full width, but int compactly).
func appendInt(b []byte, v int64) []byte {
	if v >= 0 {
		switch u := uint64(v); {
		case u <= 0x7f:
			return append(b, byte(u))
		case u <= 0xff:
			return append(b, 0xcc, byte(u))
		case u <= 0xffff:
			return append(b, 0xcd, byte(u>>8), byte(u))
		case u <= 0xffffffff:
			return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(u))
		}
		return appendU64(b, uint64(v))
	}
	switch {
	case v >= -32:
		return append(b, byte(v))
	case v >= math.MinInt8:
		return append(b, 0xd0, byte(v))
	case v >= math.MinInt16:
		return append(b, 0xd1, byte(v>>8), byte(v))
	case v >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(v))
	}
	return appendI64(b, v)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, mpTrue)
	}
	return append(b, mpFalse)
}

func appendU64s(b []byte, vs []uint64) []byte {
	if vs == nil {
		return append(b, mpNil)
	}
	b = appendArrayLen(b, len(vs))
	for _, v := range vs {
		b = appendU64(b, v)
	}
	return b
}
