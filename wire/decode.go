package wire

import (
	"encoding/binary"
	"math"
	"strconv"
)

// A hand-written msgpack decoder for requests, and the bounds-checked
// reader that it, PeekType and Unmarshal's guard are built on.
//
// Nothing here trusts a declared length: a str, bin or ext is read only
// if its declared size fits in the bytes left in the frame, an array only
// if each declared element could have at least one byte (count <= bytes
// left), a map only if each declared entry could have two; containers
// nest at most maxDepth deep. So decoding a frame allocates at most its
// string fields (copied out once, at the end, and only on success), Users
// slices of 8 bytes per element present in the frame (at most
// MaxUsersPerRequest elements each), and on failure one *Error: at most
// about 8 times the frame's size. Nothing is pooled: a failed decode
// leaves nothing grown behind.
//
// What DecodeRequest accepts (docs/PROTOCOL.md, section 3, says the same):
//
//   - the frame: one map (fixmap, map16, map32) and nothing after it;
//   - keys: str of any width; bin and nil are taken as keys too (nil as
//     the unknown key ""), as msgpack/v5 did; any other key is bad_frame;
//   - unsigned fields (id, conv, user, seq, ...) and the users elements:
//     any msgpack integer encoding (positive or negative fixint, uint8-64,
//     int8-64) whose value is in 0..2^53-1, or nil for 0. A negative value
//     or one above 2^53-1 is CodeInvalid (msgpack/v5 wrapped negatives
//     around); a float, a string or any other type is CodeBadFrame
//     (msgpack/v5 refused floats there too);
//   - limit: any integer (negative ones are refused by Validate where
//     limit is used) or nil for 0; floats are CodeBadFrame;
//   - string fields: str or bin of any width, or nil for "";
//   - bool fields: true, false, or nil for false;
//   - users: an array (at most MaxUsersPerRequest elements, else
//     CodeTooLarge) or nil;
//   - unknown keys: any value, skipped, containers nested at most
//     maxDepth deep in all;
//   - a key given twice: the last value wins (but an error in an earlier
//     one still fails the frame).
//
// Decoding goes on after a value that is well formed but wrong (wrong
// type, out of range) so that an id later in the frame is still known for
// the error reply; it stops at the first malformed byte. The error
// returned is the one about the id if the id itself is wrong, else the
// first one in the frame.

// maxDepth is how deeply containers (maps, arrays) may nest in a frame,
// the frame's own map included.
const maxDepth = 32

// mpReader reads msgpack values from b, never past its end.
type mpReader struct {
	b   []byte
	off int
}

func (r *mpReader) left() int { return len(r.b) - r.off }

func (r *mpReader) peek() (byte, *Error) {
	if r.off >= len(r.b) {
		return 0, errShort(1, 0)
	}
	return r.b[r.off], nil
}

func (r *mpReader) readByte() (byte, *Error) {
	c, e := r.peek()
	if e == nil {
		r.off++
	}
	return c, e
}

// take returns the next n bytes, a view into the frame.
func (r *mpReader) take(n int) ([]byte, *Error) {
	if n > r.left() {
		return nil, errShort(n, r.left())
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s, nil
}

// uintN reads an n-byte big-endian unsigned integer, n = 1, 2, 4 or 8.
func (r *mpReader) uintN(n int) (uint64, *Error) {
	s, e := r.take(n)
	if e != nil {
		return 0, e
	}
	switch n {
	case 1:
		return uint64(s[0]), nil
	case 2:
		return uint64(binary.BigEndian.Uint16(s)), nil
	case 4:
		return uint64(binary.BigEndian.Uint32(s)), nil
	}
	return binary.BigEndian.Uint64(s), nil
}

// skipDeclared skips n declared bytes.
func (r *mpReader) skipDeclared(n uint64) *Error {
	if n > uint64(r.left()) {
		return errDeclared(n, "bytes", r.left())
	}
	r.off += int(n)
	return nil
}

// readInt reads an integer of any encoding, or nil as 0. neg reports a
// negative value, whose two's complement v then holds. ok is false, and
// nothing is read, when the next value is of another type.
func (r *mpReader) readInt() (v uint64, neg, ok bool, e *Error) {
	c, e := r.peek()
	if e != nil {
		return 0, false, false, e
	}
	switch {
	case c <= 0x7f: // positive fixint
		r.off++
		return uint64(c), false, true, nil
	case c >= 0xe0: // negative fixint
		r.off++
		return uint64(int64(int8(c))), true, true, nil
	case c == mpNil:
		r.off++
		return 0, false, true, nil
	case c >= 0xcc && c <= 0xcf: // uint8, 16, 32, 64
		r.off++
		v, e = r.uintN(1 << (c - 0xcc))
		return v, false, e == nil, e
	case c >= 0xd0 && c <= 0xd3: // int8, 16, 32, 64
		r.off++
		n := 1 << (c - 0xd0)
		if v, e = r.uintN(n); e != nil {
			return 0, false, false, e
		}
		shift := 64 - 8*n
		s := int64(v<<shift) >> shift // sign-extend
		return uint64(s), s < 0, true, nil
	}
	return 0, false, false, nil
}

// readStr reads a str or bin of any width, or nil as empty, and returns a
// view of its bytes. ok is false, and nothing is read, when the next value
// is of another type.
func (r *mpReader) readStr() (s []byte, ok bool, e *Error) {
	c, e := r.peek()
	if e != nil {
		return nil, false, e
	}
	var n uint64
	switch {
	case c >= 0xa0 && c <= 0xbf: // fixstr
		r.off++
		n = uint64(c & 0x1f)
	case c == mpNil:
		r.off++
		return nil, true, nil
	case c == mpStr8 || c == 0xc4: // str8, bin8
		r.off++
		n, e = r.uintN(1)
	case c == mpStr16 || c == 0xc5:
		r.off++
		n, e = r.uintN(2)
	case c == mpStr32 || c == 0xc6:
		r.off++
		n, e = r.uintN(4)
	default:
		return nil, false, nil
	}
	if e != nil {
		return nil, false, e
	}
	if n > uint64(r.left()) {
		return nil, false, errDeclared(n, "bytes", r.left())
	}
	s, _ = r.take(int(n))
	return s, true, nil
}

// readMapLen reads a map header (not nil) and checks that its entries can
// fit in what is left, two bytes at least each.
func (r *mpReader) readMapLen() (n int, ok bool, e *Error) {
	c, e := r.peek()
	if e != nil {
		return 0, false, e
	}
	var u uint64
	switch {
	case c&0xf0 == 0x80:
		r.off++
		u = uint64(c & 0x0f)
	case c == mpMap16:
		r.off++
		u, e = r.uintN(2)
	case c == mpMap32:
		r.off++
		u, e = r.uintN(4)
	default:
		return 0, false, nil
	}
	if e != nil {
		return 0, false, e
	}
	if 2*u > uint64(r.left()) {
		return 0, false, errDeclared(u, "entries", r.left())
	}
	return int(u), true, nil
}

// readArrayLen reads an array header, or nil as -1, and checks that its
// elements can fit in what is left, one byte at least each.
func (r *mpReader) readArrayLen() (n int, ok bool, e *Error) {
	c, e := r.peek()
	if e != nil {
		return 0, false, e
	}
	var u uint64
	switch {
	case c&0xf0 == 0x90:
		r.off++
		u = uint64(c & 0x0f)
	case c == mpNil:
		r.off++
		return -1, true, nil
	case c == mpArray16:
		r.off++
		u, e = r.uintN(2)
	case c == mpArray32:
		r.off++
		u, e = r.uintN(4)
	default:
		return 0, false, nil
	}
	if e != nil {
		return 0, false, e
	}
	if u > uint64(r.left()) {
		return 0, false, errDeclared(u, "elements", r.left())
	}
	return int(u), true, nil
}

// skip reads past one value of any type, at nesting level depth (the
// frame's own value is at level 1), allocating nothing.
func (r *mpReader) skip(depth int) *Error {
	c, e := r.readByte()
	if e != nil {
		return e
	}
	switch {
	case c <= 0x7f || c >= 0xe0: // fixint
		return nil
	case c <= 0x8f:
		return r.skipMap(uint64(c&0x0f), depth)
	case c <= 0x9f:
		return r.skipArray(uint64(c&0x0f), depth)
	case c <= 0xbf: // fixstr
		return r.skipDeclared(uint64(c & 0x1f))
	}
	var hdr int  // a length of hdr bytes, then that many bytes
	var ext bool // with a type byte before them
	switch c {
	case mpNil, mpFalse, mpTrue:
		return nil
	case 0xc1:
		return Errorf(CodeBadFrame, "byte 0xc1 is not msgpack")
	case 0xcc, 0xd0: // uint8, int8
		_, e = r.take(1)
		return e
	case 0xcd, 0xd1:
		_, e = r.take(2)
		return e
	case 0xce, 0xd2, 0xca: // ..., float32
		_, e = r.take(4)
		return e
	case 0xcf, 0xd3, 0xcb: // ..., float64
		_, e = r.take(8)
		return e
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16: type, data
		_, e = r.take(1 + 1<<(c-0xd4))
		return e
	case 0xc4, mpStr8: // bin8, str8
		hdr = 1
	case 0xc5, mpStr16:
		hdr = 2
	case 0xc6, mpStr32:
		hdr = 4
	case 0xc7: // ext8: length, type, data
		hdr, ext = 1, true
	case 0xc8:
		hdr, ext = 2, true
	case 0xc9:
		hdr, ext = 4, true
	case mpArray16, mpArray32:
		n, e := r.uintN(2 << (c - mpArray16))
		if e != nil {
			return e
		}
		return r.skipArray(n, depth)
	case mpMap16, mpMap32:
		n, e := r.uintN(2 << (c - mpMap16))
		if e != nil {
			return e
		}
		return r.skipMap(n, depth)
	}
	n, e := r.uintN(hdr)
	if e != nil {
		return e
	}
	if ext {
		if _, e := r.take(1); e != nil {
			return e
		}
	}
	return r.skipDeclared(n)
}

func (r *mpReader) skipArray(n uint64, depth int) *Error {
	if depth > maxDepth {
		return errTooDeep()
	}
	if n > uint64(r.left()) {
		return errDeclared(n, "elements", r.left())
	}
	for range n {
		if e := r.skip(depth + 1); e != nil {
			return e
		}
	}
	return nil
}

func (r *mpReader) skipMap(n uint64, depth int) *Error {
	if depth > maxDepth {
		return errTooDeep()
	}
	if 2*n > uint64(r.left()) {
		return errDeclared(n, "entries", r.left())
	}
	for range 2 * n {
		if e := r.skip(depth + 1); e != nil {
			return e
		}
	}
	return nil
}

// checkValue checks that b starts with one well-formed msgpack value whose
// declared lengths all fit in b, nested at most maxDepth deep. What
// follows the value is not looked at.
func checkValue(b []byte) *Error {
	r := mpReader{b: b}
	return r.skip(1)
}

func errShort(need, left int) *Error {
	return Errorf(CodeBadFrame, "frame ends early: "+strconv.Itoa(need)+" more bytes needed, "+strconv.Itoa(left)+" left")
}

func errDeclared(n uint64, unit string, left int) *Error {
	return Errorf(CodeBadFrame, "declared "+strconv.FormatUint(n, 10)+" "+unit+", frame has "+strconv.Itoa(left)+" bytes left")
}

func errTooDeep() *Error {
	return Errorf(CodeBadFrame, "values nested more than "+strconv.Itoa(maxDepth)+" deep")
}

// within prefixes e's message with the field it is about.
func within(field string, e *Error) *Error {
	return Errorf(e.Code, field+": "+e.Message)
}

// quoteKey quotes an unknown key for a message, cut to 32 bytes.
func quoteKey(key []byte) string {
	if len(key) > 32 {
		return strconv.Quote(string(key[:32])) + "..."
	}
	return strconv.Quote(string(key))
}

// typeName names the msgpack type that starts with byte c, for messages.
func typeName(c byte) string {
	switch {
	case c <= 0x7f || c >= 0xe0 || c >= 0xcc && c <= 0xd3:
		return "an integer"
	case c <= 0x8f || c == mpMap16 || c == mpMap32:
		return "a map"
	case c <= 0x9f || c == mpArray16 || c == mpArray32:
		return "an array"
	case c <= 0xbf || c >= mpStr8 && c <= mpStr32:
		return "a string"
	case c == mpNil:
		return "nil"
	case c == mpFalse || c == mpTrue:
		return "a bool"
	case c >= 0xc4 && c <= 0xc6:
		return "bin"
	case c == 0xca || c == 0xcb:
		return "a float"
	case c == 0xc1:
		return "byte 0xc1"
	}
	return "an ext"
}

// known holds the strings a frame's "t" (and a request's "dir") usually
// carries, so that decoding them allocates nothing.
var known = func() map[string]string {
	m := make(map[string]string)
	for _, s := range []string{
		TypeSend, TypeDirectOpen, TypeGroupCreate, TypeGroupAdd, TypeGroupRemove, TypeGroupLeave,
		TypeGroupAdmin, TypeGroupRename, TypeConvGet, TypeConvList, TypeHistory, TypeSync, TypeUserGet,
		TypePing, TypeTyping, TypePresenceSub, TypeReceipt, TypeReadGet, TypePrivacySet, TypeDeviceList,
		TypeDeviceRevoke, TypeBlock, TypeUnblock, TypeBlockList,
		TypePushSet, TypePushClear, TypeNotifySet, TypeConvMute, TypeMsgDelete, PushFCM, PushAPNs, PushWebPush, PushWebhook,
		GroupAddEveryone, GroupAddContacts, GroupAddNobody,
		TypeHello, TypeOK, TypeError, TypeEvent, TypeTypingEvent, TypePresenceEvent, TypeReceiptEvent,
		TypeReadCountsEvent,
		DirBefore, DirAfter,
	} {
		m[s] = s
	}
	return m
}()

// internString returns b as a string, without allocating if it is a known one.
func internString(b []byte) string {
	if s, ok := known[string(b)]; ok {
		return s
	}
	return string(b)
}

// reqDecoder decodes one request frame.
type reqDecoder struct {
	r   mpReader
	req *Request
	// The string fields, as views into the frame: copied out at the end,
	// once, and only if the frame decodes.
	typ, cmid, body, name, dir, groupAdd    []byte
	provider, token, endpoint, p256dh, auth []byte
	atts                                    []attView // send's att (attachments.go); nil without
	err                                     *Error    // the first error about a well-formed value
	idErr                                   *Error    // the id is out of range or not an integer
}

// decodeRequest decodes b into req, which must be zero, without validating
// the request. On error req holds only the ID (0 unless it was read, and
// valid, before the error).
func decodeRequest(b []byte, req *Request) *Error {
	d := reqDecoder{r: mpReader{b: b}, req: req}
	fatal := d.decode()
	e := d.idErr
	if e == nil {
		e = d.err
	}
	if e == nil {
		e = fatal
	}
	if e != nil {
		id := req.ID
		if d.idErr != nil {
			id = 0
		}
		*req = Request{ID: id}
		return e
	}
	req.Type = internString(d.typ)
	req.ClientMsgID = string(d.cmid)
	req.Body = string(d.body)
	req.Name = string(d.name)
	req.Dir = internString(d.dir)
	req.GroupAdd = internString(d.groupAdd)
	// push.set's (empty strings cost no allocation on other requests)
	req.Provider = internString(d.provider)
	req.Token, req.Endpoint, req.P256dh, req.Auth = string(d.token), string(d.endpoint), string(d.p256dh), string(d.auth)
	req.Att = d.attachments()
	return nil
}

// decode reads the frame, recording errors about well-formed values in
// d.err and d.idErr; it returns an error that stopped it.
func (d *reqDecoder) decode() *Error {
	n, ok, e := d.r.readMapLen()
	if e != nil {
		return e
	}
	if !ok {
		return Errorf(CodeBadFrame, "frame is not a msgpack map")
	}
	req := d.req
	for range n {
		key, ok, e := d.r.readStr()
		if e != nil {
			return within("a key", e)
		}
		if !ok {
			c, _ := d.r.peek()
			if e := d.r.skip(2); e != nil {
				return within("a key", e)
			}
			if e := d.r.skip(2); e != nil {
				return e
			}
			if d.err == nil {
				d.err = Errorf(CodeBadFrame, "a key: expected a string, got "+typeName(c))
			}
			continue
		}
		switch string(key) {
		case "t":
			e = d.str("t", &d.typ)
		case "id":
			e = d.id()
		case "conv":
			e = d.uint("conv", &req.Conv)
		case "cmid":
			e = d.str("cmid", &d.cmid)
		case "body":
			e = d.str("body", &d.body)
		case "reply_to":
			e = d.uint("reply_to", &req.ReplyTo)
		case "user":
			e = d.uint("user", &req.User)
		case "users":
			e = d.users()
		case "name":
			e = d.str("name", &d.name)
		case "admin":
			e = d.bool("admin", &req.Admin)
		case "seq":
			e = d.uint("seq", &req.Seq)
		case "dir":
			e = d.str("dir", &d.dir)
		case "limit":
			e = d.limit()
		case "since":
			e = d.uint("since", &req.Since)
		case "after":
			e = d.uint("after", &req.After)
		case "after_conv":
			e = d.uint("after_conv", &req.AfterConv)
		case "on":
			e = d.bool("on", &req.On)
		case "delivered":
			e = d.uint("delivered", &req.Delivered)
		case "read":
			e = d.uint("read", &req.Read)
		case "hide_last_seen":
			e = d.bool("hide_last_seen", &req.Hide)
		case "dev":
			e = d.uint("dev", &req.Device)
		case "min_idx":
			e = d.uint("min_idx", &req.MinIndex)
		case "group_add":
			e = d.str("group_add", &d.groupAdd)
		case "att":
			e = d.att()
		case "provider":
			e = d.str("provider", &d.provider)
		case "token":
			e = d.str("token", &d.token)
		case "endpoint":
			e = d.str("endpoint", &d.endpoint)
		case "p256dh":
			e = d.str("p256dh", &d.p256dh)
		case "auth":
			e = d.str("auth", &d.auth)
		case "preview":
			e = d.bool("preview", &req.Preview)
		case "dnd":
			e = d.bool("dnd", &req.DND)
		case "until":
			e = d.until()
		default:
			if e = d.r.skip(2); e != nil {
				e = within(quoteKey(key), e)
			}
		}
		if e != nil {
			return e
		}
	}
	if d.r.left() != 0 {
		return Errorf(CodeBadFrame, "trailing bytes after the frame")
	}
	return nil
}

// The errors about well-formed values are built only for the first one,
// so that a frame full of them costs no more than a frame with one.

// fieldName is field, or field[index] for index >= 0.
func fieldName(field string, index int) string {
	if index < 0 {
		return field
	}
	return field + "[" + strconv.Itoa(index) + "]"
}

// wrongType skips a value of the wrong type for field (or its element
// index), at nesting level depth, and records it.
func (d *reqDecoder) wrongType(field string, index int, want string, depth int) *Error {
	c, _ := d.r.peek()
	if e := d.r.skip(depth); e != nil {
		return within(fieldName(field, index), e)
	}
	if d.err == nil {
		d.err = Errorf(CodeBadFrame, fieldName(field, index)+": expected "+want+", got "+typeName(c))
	}
	return nil
}

// outOfRange records that field (or its element index) holds v, negative
// if neg, where an integer in 0..2^53-1 belongs.
func (d *reqDecoder) outOfRange(field string, index int, v uint64, neg bool) {
	if d.err == nil {
		d.err = within(fieldName(field, index), rangeErr(v, neg))
	}
}

// rangeErr says why v (negative if neg) is not an unsigned protocol integer.
func rangeErr(v uint64, neg bool) *Error {
	if neg {
		return Errorf(CodeInvalid, "negative number "+strconv.FormatInt(int64(v), 10))
	}
	return Errorf(CodeInvalid, strconv.FormatUint(v, 10)+" is above 2^53-1")
}

func (d *reqDecoder) uint(field string, dst *uint64) *Error {
	v, neg, ok, e := d.r.readInt()
	switch {
	case e != nil:
		return within(field, e)
	case !ok:
		return d.wrongType(field, -1, "an integer", 2)
	case neg || v > MaxSafeInteger:
		d.outOfRange(field, -1, v, neg)
	default:
		*dst = v
	}
	return nil
}

func (d *reqDecoder) id() *Error {
	v, neg, ok, e := d.r.readInt()
	switch {
	case e != nil:
		return within("id", e)
	case !ok:
		c, _ := d.r.peek()
		if e := d.r.skip(2); e != nil {
			return within("id", e)
		}
		if d.idErr == nil {
			d.idErr = Errorf(CodeBadFrame, "id: expected an integer, got "+typeName(c))
		}
	case neg || v > MaxSafeInteger:
		if d.idErr == nil {
			s := strconv.FormatUint(v, 10)
			if neg {
				s = strconv.FormatInt(int64(v), 10)
			}
			d.idErr = Errorf(CodeInvalid, "id must be 0..2^53-1, got "+s)
		}
	default:
		d.req.ID = v
	}
	return nil
}

func (d *reqDecoder) limit() *Error {
	v, neg, ok, e := d.r.readInt()
	switch {
	case e != nil:
		return within("limit", e)
	case !ok:
		return d.wrongType("limit", -1, "an integer", 2)
	case neg && int64(v) >= math.MinInt:
		d.req.Limit = int(int64(v))
	case !neg && v <= math.MaxInt:
		d.req.Limit = int(v)
	default:
		if d.err == nil {
			d.err = Errorf(CodeInvalid, "limit: out of range")
		}
	}
	return nil
}

// until reads conv.mute's signed time; Validate checks its range.
func (d *reqDecoder) until() *Error {
	v, neg, ok, e := d.r.readInt()
	switch {
	case e != nil:
		return within("until", e)
	case !ok:
		return d.wrongType("until", -1, "an integer", 2)
	case neg && int64(v) >= -1:
		d.req.Until = int64(v)
	case !neg && v <= MaxSafeInteger:
		d.req.Until = int64(v)
	default:
		if d.err == nil {
			d.err = Errorf(CodeInvalid, "until: out of range")
		}
	}
	return nil
}

func (d *reqDecoder) str(field string, dst *[]byte) *Error {
	s, ok, e := d.r.readStr()
	switch {
	case e != nil:
		return within(field, e)
	case !ok:
		return d.wrongType(field, -1, "a string", 2)
	}
	*dst = s
	return nil
}

func (d *reqDecoder) bool(field string, dst *bool) *Error {
	c, e := d.r.peek()
	if e != nil {
		return within(field, e)
	}
	switch c {
	case mpNil, mpFalse:
		*dst = false
	case mpTrue:
		*dst = true
	default:
		return d.wrongType(field, -1, "a bool", 2)
	}
	d.r.off++
	return nil
}

func (d *reqDecoder) users() *Error {
	n, ok, e := d.r.readArrayLen()
	switch {
	case e != nil:
		return within("users", e)
	case !ok:
		return d.wrongType("users", -1, "an array", 2)
	case n < 0:
		d.req.Users = nil
		return nil
	case n > MaxUsersPerRequest:
		if e := d.r.skipArray(uint64(n), 2); e != nil {
			return within("users", e)
		}
		if d.err == nil {
			d.err = Errorf(CodeTooLarge, "users: "+strconv.Itoa(n)+" elements, at most "+strconv.Itoa(MaxUsersPerRequest))
		}
		return nil
	}
	// A second "users" reuses the first one's array: the last one wins.
	us := d.req.Users[:0]
	if cap(us) < n || us == nil {
		us = make([]uint64, 0, n)
	}
	for i := range n {
		v, neg, ok, e := d.r.readInt()
		switch {
		case e != nil:
			return within("users", e)
		case !ok:
			if e := d.wrongType("users", i, "an integer", 3); e != nil {
				return e
			}
		case neg || v > MaxSafeInteger:
			d.outOfRange("users", i, v, neg)
		}
		us = append(us, v)
	}
	d.req.Users = us
	return nil
}
