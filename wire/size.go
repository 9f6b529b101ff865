package wire

// Exact encoded sizes, for building pages that stop before a byte budget
// (MaxReplyBytes) without encoding them twice: each returns
// len(AppendX(nil, v)) (the tests check it on random values).

// EventLen is the encoded size of e (as an ev frame, or inside a reply).
func EventLen(e *Event) int {
	n := 6 + count(e.Type != "") + count(e.Device != 0) + count(e.ClientMsgID != "") + count(e.Body != "") +
		count(e.ReplyTo != 0) + count(len(e.Users) != 0) + count(e.Name != "") + count(e.Admin) + count(len(e.Att) != 0) +
		count(e.Target != 0) + count(e.Deleted)
	size := mapLenSize(n) +
		strSize("conv") + 9 + strSize("seq") + 9 + strSize("idx") + 9 + strSize("ts") + 9 +
		strSize("kind") + strSize(e.Kind) + strSize("from") + 9
	if e.Type != "" {
		size += strSize("t") + strSize(e.Type)
	}
	if e.Device != 0 {
		size += strSize("dev") + 9
	}
	if e.ClientMsgID != "" {
		size += strSize("cmid") + strSize(e.ClientMsgID)
	}
	if e.Body != "" {
		size += strSize("body") + strSize(e.Body)
	}
	if e.ReplyTo != 0 {
		size += strSize("reply_to") + 9
	}
	if len(e.Users) != 0 {
		size += strSize("users") + u64sSize(e.Users)
	}
	if e.Name != "" {
		size += strSize("name") + strSize(e.Name)
	}
	if e.Admin {
		size += strSize("admin") + 1
	}
	if len(e.Att) != 0 {
		size += strSize("att") + attachmentsLen(e.Att)
	}
	if e.Target != 0 {
		size += strSize("target") + 9
	}
	if e.Deleted {
		size += strSize("deleted") + 1
	}
	return size
}

// EventsLen is the encoded size of a list of events (nil included).
func EventsLen(evs []Event) int {
	if evs == nil {
		return 1
	}
	n := arrayLenSize(len(evs))
	for i := range evs {
		n += EventLen(&evs[i])
	}
	return n
}

// ConvInfoLen is the encoded size of c.
func ConvInfoLen(c *ConvInfo) int {
	n := 6 + count(c.Name != "") + count(len(c.Admins) != 0) + count(c.MemberCount != 0) + count(c.Delivered != 0) +
		count(c.Read != 0) + count(c.Unread != 0) + count(c.PeerDelivered != 0) + count(c.PeerRead != 0) +
		count(c.MutedUntil != 0) + count(c.FirstSeq != 0)
	size := mapLenSize(n) + strSize("id") + 9 + strSize("kind") + strSize(c.Kind) +
		strSize("members") + u64sSize(c.Members) +
		strSize("last_seq") + 9 + strSize("last_idx") + 9 + strSize("created_at") + 9
	if c.Name != "" {
		size += strSize("name") + strSize(c.Name)
	}
	if len(c.Admins) != 0 {
		size += strSize("admins") + u64sSize(c.Admins)
	}
	if c.MemberCount != 0 {
		size += strSize("member_count") + intSize(int64(c.MemberCount))
	}
	for _, f := range [...]struct {
		key string
		set bool
	}{
		{"delivered", c.Delivered != 0}, {"read", c.Read != 0}, {"unread", c.Unread != 0},
		{"peer_delivered", c.PeerDelivered != 0}, {"peer_read", c.PeerRead != 0}, {"muted_until", c.MutedUntil != 0}, {"first_seq", c.FirstSeq != 0},
	} {
		if f.set {
			size += strSize(f.key) + 9
		}
	}
	return size
}

// ConvSyncLen is the encoded size of c, its events included.
func ConvSyncLen(c *ConvSync) int {
	size := mapLenSize(2+count(c.More)+count(c.Gone)) + strSize("info") + ConvInfoLen(&c.Info) +
		strSize("events") + EventsLen(c.Events)
	if c.More {
		size += strSize("more") + 1
	}
	if c.Gone {
		size += strSize("gone") + 1
	}
	return size
}

// DeviceInfoLen is the encoded size of d.
func DeviceInfoLen(d *DeviceInfo) int {
	size := mapLenSize(3+count(d.Revoked)+count(d.Current)) + strSize("id") + 9 +
		strSize("name") + strSize(d.Name) + strSize("created_at") + 9
	if d.Revoked {
		size += strSize("revoked") + 1
	}
	if d.Current {
		size += strSize("current") + 1
	}
	return size
}

// PageReplyOverhead bounds what a paged reply (history, sync, conv.list,
// device.list, conv.get) adds around its items: the map, t, id, the list's
// key and header, more, next, next_conv, and the WebSocket frame header. A
// page whose items total at most budget - PageReplyOverhead makes a frame
// of at most budget bytes.
const PageReplyOverhead = 128

func mapLenSize(n int) int {
	switch {
	case n < 16:
		return 1
	case n <= 0xffff:
		return 3
	}
	return 5
}

func arrayLenSize(n int) int { return mapLenSize(n) }

func strSize(s string) int {
	switch n := len(s); {
	case n < 32:
		return 1 + n
	case n < 256:
		return 2 + n
	case n <= 0xffff:
		return 3 + n
	default:
		return 5 + n
	}
}

func u64sSize(vs []uint64) int {
	if vs == nil {
		return 1
	}
	return arrayLenSize(len(vs)) + 9*len(vs)
}

func intSize(v int64) int {
	var b [9]byte
	return len(appendInt(b[:0], v))
}
