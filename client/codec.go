package client

import (
	"math"

	"parley/wire"
)

// The frames a client handles all the time, an ack, a message event and a
// send, are coded by hand here; everything else goes through wire.Marshal
// and wire.Unmarshal (msgpack/v5 by reflection, which costs several µs and
// a dozen allocations per frame: as much as the rest of a client's work for
// a message).
//
// The decoders read only the fields whose values are scalars and give up
// (ok false) at anything else: another key, a value of an unexpected
// msgpack type, a malformed frame. The caller then decodes the frame with
// wire.Unmarshal, so the result, and the error for a bad frame, are those of
// msgpack/v5. The encoder writes the bytes msgpack/v5 writes for a Request
// without Users or Att is wire.AppendRequest.

// marshalRequest encodes r: by hand when wire.AppendRequest can, otherwise with
// wire.Marshal.
func marshalRequest(r *wire.Request) ([]byte, error) {
	size := 96 + len(r.Type) + len(r.ClientMsgID) + len(r.Body) + len(r.Name) + len(r.Dir) + len(r.GroupAdd) +
		len(r.Provider) + len(r.Token) + len(r.Endpoint) + len(r.P256dh) + len(r.Auth)
	if b, ok := wire.AppendRequest(make([]byte, 0, size), r); ok {
		return b, nil
	}
	rr := *r // allocated here only: r stays on its caller's stack
	return wire.Marshal(&rr)
}

// decodeReply decodes a reply frame into rep, trying the hand-written
// decoder first.
func decodeReply(b []byte, rep *wire.Reply) error {
	if fastReply(b, rep) {
		return nil
	}
	*rep = wire.Reply{}
	return wire.Unmarshal(b, rep)
}

// decodeEvent decodes an event frame into ev, trying the hand-written
// decoder first.
func decodeEvent(b []byte, ev *wire.Event) error {
	if fastEvent(b, ev) {
		return nil
	}
	*ev = wire.Event{}
	return wire.Unmarshal(b, ev)
}

// fastReply decodes a reply that holds only the scalar fields of an ack or
// an error; false for anything else (rep is then partly written).
func fastReply(b []byte, rep *wire.Reply) bool {
	r := mpr{b: b}
	n, ok := r.mapLen()
	if !ok {
		return false
	}
	for range n {
		key, ok := r.str()
		if !ok {
			return false
		}
		switch string(key) {
		case "t":
			rep.Type, ok = r.typ()
		case "id":
			rep.ID, ok = r.uint()
		case "code":
			var s string
			s, ok = r.string()
			rep.Code = wire.Code(s)
		case "msg":
			rep.Message, ok = r.string()
		case "retry_ms":
			rep.RetryMS, ok = r.int()
		case "cmid":
			rep.ClientMsgID, ok = r.string()
		case "conv":
			rep.Conv, ok = r.uint()
		case "seq":
			rep.Seq, ok = r.uint()
		case "ts":
			rep.Ts, ok = r.int()
		case "idx":
			rep.Index, ok = r.uint()
		case "dup":
			rep.Duplicate, ok = r.bool()
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

// fastEvent decodes an event without users or attachments; false for
// anything else (ev is then partly written).
func fastEvent(b []byte, ev *wire.Event) bool { return scanEvent(b, ev, true) }

// scanEvent is fastEvent; without strings, it checks the frame as fastEvent
// does but leaves out ClientMsgID, Body and Name, which would be copied
// (a NoEvents client only wants the index).
func scanEvent(b []byte, ev *wire.Event, strings bool) bool {
	r := mpr{b: b}
	n, ok := r.mapLen()
	if !ok {
		return false
	}
	for range n {
		key, ok := r.str()
		if !ok {
			return false
		}
		switch string(key) {
		case "t":
			ev.Type, ok = r.typ()
		case "conv":
			ev.Conv, ok = r.uint()
		case "seq":
			ev.Seq, ok = r.uint()
		case "idx":
			ev.Index, ok = r.uint()
		case "ts":
			ev.Ts, ok = r.int()
		case "kind":
			ev.Kind, ok = r.kind()
		case "from":
			ev.From, ok = r.uint()
		case "dev":
			ev.Device, ok = r.uint()
		case "cmid":
			ev.ClientMsgID, ok = r.stringIf(strings)
		case "body":
			ev.Body, ok = r.stringIf(strings)
		case "reply_to":
			ev.ReplyTo, ok = r.uint()
		case "name":
			ev.Name, ok = r.stringIf(strings)
		case "admin":
			ev.Admin, ok = r.bool()
		case "target":
			ev.Target, ok = r.uint()
		case "deleted":
			ev.Deleted, ok = r.bool()
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	return true
}

// firstType returns the frame type if the frame is a map whose first key
// is "t" with a string value; false otherwise. Other "t" keys may follow
// (PeekType takes the last).
func firstType(b []byte) (string, bool) {
	r := mpr{b: b}
	if n, ok := r.mapLen(); !ok || n == 0 {
		return "", false
	}
	if key, ok := r.str(); !ok || string(key) != "t" || r.nilNext() {
		return "", false
	}
	return r.typ()
}

// mpr reads the few msgpack forms the fast decoders accept. Each method
// returns false, consuming an unknown amount, at anything else.
type mpr struct {
	b   []byte
	off int
}

func (r *mpr) byte() (byte, bool) {
	if r.off >= len(r.b) {
		return 0, false
	}
	c := r.b[r.off]
	r.off++
	return c, true
}

func (r *mpr) take(n int) ([]byte, bool) {
	if n < 0 || n > len(r.b)-r.off {
		return nil, false
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s, true
}

// be reads an n-byte big-endian unsigned number.
func (r *mpr) be(n int) (uint64, bool) {
	s, ok := r.take(n)
	if !ok {
		return 0, false
	}
	var v uint64
	for _, c := range s {
		v = v<<8 | uint64(c)
	}
	return v, true
}

func (r *mpr) mapLen() (int, bool) {
	c, ok := r.byte()
	switch {
	case !ok:
		return 0, false
	case c&0xf0 == 0x80:
		return int(c & 0x0f), true
	case c == 0xde:
		n, ok := r.be(2)
		return int(n), ok
	case c == 0xdf:
		n, ok := r.be(4)
		return int(n), ok
	}
	return 0, false
}

// str reads a string (not nil) and returns its bytes, not copied.
func (r *mpr) str() ([]byte, bool) {
	c, ok := r.byte()
	if !ok {
		return nil, false
	}
	var n uint64
	switch {
	case c&0xe0 == 0xa0:
		n = uint64(c & 0x1f)
	case c == 0xd9:
		n, ok = r.be(1)
	case c == 0xda:
		n, ok = r.be(2)
	case c == 0xdb:
		n, ok = r.be(4)
	default:
		return nil, false
	}
	if !ok {
		return nil, false
	}
	return r.take(int(n))
}

// nilNext consumes a nil if one is next.
func (r *mpr) nilNext() bool {
	if r.off < len(r.b) && r.b[r.off] == 0xc0 {
		r.off++
		return true
	}
	return false
}

// string reads a string or nil ("").
func (r *mpr) string() (string, bool) {
	if r.nilNext() {
		return "", true
	}
	s, ok := r.str()
	return string(s), ok
}

// stringIf reads a string or nil, and copies it only if keep.
func (r *mpr) stringIf(keep bool) (string, bool) {
	if keep {
		return r.string()
	}
	if r.nilNext() {
		return "", true
	}
	_, ok := r.str()
	return "", ok
}

// typ reads a frame type, without allocating for the usual ones.
func (r *mpr) typ() (string, bool) {
	if r.nilNext() {
		return "", true
	}
	s, ok := r.str()
	switch string(s) {
	case wire.TypeOK:
		return wire.TypeOK, ok
	case wire.TypeError:
		return wire.TypeError, ok
	case wire.TypeEvent:
		return wire.TypeEvent, ok
	}
	return string(s), ok
}

// kind reads an event kind, without allocating for a message.
func (r *mpr) kind() (string, bool) {
	if r.nilNext() {
		return "", true
	}
	s, ok := r.str()
	if string(s) == wire.KindMessage {
		return wire.KindMessage, ok
	}
	return string(s), ok
}

// uint reads a non-negative integer or nil (0).
func (r *mpr) uint() (uint64, bool) {
	c, ok := r.byte()
	switch {
	case !ok:
		return 0, false
	case c <= 0x7f:
		return uint64(c), true
	case c == 0xc0:
		return 0, true
	case c >= 0xcc && c <= 0xcf:
		return r.be(1 << (c - 0xcc))
	case c >= 0xd0 && c <= 0xd3: // signed, accepted when not negative
		v, ok := r.be(1 << (c - 0xd0))
		shift := 64 - 8<<(c-0xd0)
		if !ok || int64(v<<shift) < 0 {
			return 0, false
		}
		return v, true
	}
	return 0, false
}

// int reads an integer that fits an int64, or nil (0).
func (r *mpr) int() (int64, bool) {
	c, ok := r.byte()
	switch {
	case !ok:
		return 0, false
	case c <= 0x7f:
		return int64(c), true
	case c >= 0xe0:
		return int64(int8(c)), true
	case c == 0xc0:
		return 0, true
	case c >= 0xcc && c <= 0xcf:
		v, ok := r.be(1 << (c - 0xcc))
		if !ok || v > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	case c >= 0xd0 && c <= 0xd3:
		v, ok := r.be(1 << (c - 0xd0))
		shift := 64 - 8<<(c-0xd0)
		return int64(v<<shift) >> shift, ok // sign-extended
	}
	return 0, false
}

// bool reads a bool or nil (false).
func (r *mpr) bool() (bool, bool) {
	c, ok := r.byte()
	switch {
	case !ok:
		return false, false
	case c == 0xc3:
		return true, true
	case c == 0xc2, c == 0xc0:
		return false, true
	}
	return false, false
}
