package wire

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// The old request decoder, msgpack/v5 by reflection with a pooled decoder,
// kept here (and only here) as the oracle the hand-written one is compared
// with. It must only be given frames that checkValue accepts: on the
// others it allocates what the frame declares (that was the bug).

type oldDecoderState struct {
	rd  bytes.Reader
	dec *msgpack.Decoder
}

var oldDecoders = sync.Pool{New: func() any {
	s := &oldDecoderState{}
	s.dec = msgpack.NewDecoder(&s.rd)
	return s
}}

// oldDecode is the old DecodeRequest without its checks before and after:
// msgpack/v5 into a zero Request, then no trailing bytes.
func oldDecode(b []byte, r *Request) *Error {
	*r = Request{}
	s := oldDecoders.Get().(*oldDecoderState)
	s.rd.Reset(b)
	s.dec.Reset(&s.rd)
	err := s.dec.Decode(r)
	trailing := s.rd.Len()
	s.rd.Reset(nil)
	oldDecoders.Put(s)
	if err != nil {
		id := r.ID
		*r = Request{ID: id}
		return Errorf(CodeBadFrame, "malformed msgpack: "+err.Error())
	}
	if trailing != 0 {
		return Errorf(CodeBadFrame, "trailing bytes after the frame")
	}
	return nil
}

// oldDecodeRequest is DecodeRequest as it was.
func oldDecodeRequest(b []byte, r *Request) *Error {
	*r = Request{}
	if len(b) > MaxFrameBytes {
		return Errorf(CodeTooLarge, "frame over limit")
	}
	if len(b) == 0 || !isMap(b[0]) {
		return Errorf(CodeBadFrame, "frame is not a msgpack map")
	}
	if e := oldDecode(b, r); e != nil {
		return e
	}
	return r.Validate()
}

// oldPeekType is PeekType as it was.
func oldPeekType(b []byte) (string, error) {
	var h struct {
		Type string `msgpack:"t"`
	}
	err := msgpack.Unmarshal(b, &h)
	return h.Type, err
}

// allocBytes returns the bytes f allocates on the heap.
func allocBytes(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// minAllocBytes is allocBytes(f) at its least over up to three runs of f
// while it exceeds bound: another goroutine allocating at the same time
// (the fuzzing engine's, say) can only add to one measurement, whereas f
// allocates the same every time.
func minAllocBytes(bound uint64, f func()) uint64 {
	n := allocBytes(f)
	for i := 0; i < 2 && n > bound; i++ {
		n = min(n, allocBytes(f))
	}
	return n
}

// allocBound is what decoding a frame of n bytes may allocate: its strings
// and users (8 bytes per element, each element at least a byte of the
// frame), rounded to size classes, and the error.
func allocBound(n int) uint64 { return 8*uint64(n) + 2048 }

// ---- a msgpack writer that picks among the encodings of a value ----

type mpWriter struct {
	b []byte
	r *rand.Rand
}

func (w *mpWriter) pick(n int) int { return w.r.IntN(n) }

func (w *mpWriter) be(code byte, v uint64, size int) {
	w.b = append(w.b, code)
	for i := size - 1; i >= 0; i-- {
		w.b = append(w.b, byte(v>>(8*i)))
	}
}

// uint writes v (which fits an int64 when v > MaxUint32... any uint64) in
// one of its encodings, signed ones included.
func (w *mpWriter) uint(v uint64) {
	var opts []func()
	if v <= 0x7f {
		opts = append(opts, func() { w.b = append(w.b, byte(v)) })
	}
	for i, lim := range []uint64{math.MaxUint8, math.MaxUint16, math.MaxUint32, math.MaxUint64} {
		size := 1 << i
		if v <= lim {
			opts = append(opts, func() { w.be(0xcc+byte(i), v, size) })
		}
		if v <= lim>>1 {
			opts = append(opts, func() { w.be(0xd0+byte(i), v, size) })
		}
	}
	opts[w.pick(len(opts))]()
}

// int writes v in one of its encodings.
func (w *mpWriter) int(v int64) {
	if v >= 0 {
		w.uint(uint64(v))
		return
	}
	var opts []func()
	if v >= -32 {
		opts = append(opts, func() { w.b = append(w.b, byte(v)) })
	}
	for i, lim := range []int64{math.MinInt8, math.MinInt16, math.MinInt32, math.MinInt64} {
		if v >= lim {
			opts = append(opts, func() { w.be(0xd0+byte(i), uint64(v), 1<<i) })
		}
	}
	opts[w.pick(len(opts))]()
}

// str writes s as a str or a bin of any width that holds it.
func (w *mpWriter) str(s string) {
	var opts []func()
	if len(s) < 32 {
		opts = append(opts, func() { w.b = append(w.b, 0xa0|byte(len(s))) })
	}
	for i, lim := range []int{math.MaxUint8, math.MaxUint16, math.MaxUint32} {
		if len(s) <= lim {
			opts = append(opts,
				func() { w.be(mpStr8+byte(i), uint64(len(s)), 1<<i) },
				func() { w.be(0xc4+byte(i), uint64(len(s)), 1<<i) })
		}
	}
	opts[w.pick(len(opts))]()
	w.b = append(w.b, s...)
}

// key writes a map key: a str mostly, a bin now and then.
func (w *mpWriter) key(s string) {
	if w.pick(8) != 0 {
		w.b = appendStr(w.b, s)
		return
	}
	w.str(s)
}

func (w *mpWriter) header(fix byte, fixMax int, code16 byte, n int) {
	switch {
	case n <= fixMax && w.pick(2) == 0:
		w.b = append(w.b, fix|byte(n))
	case n <= math.MaxUint16 && w.pick(2) == 0:
		w.be(code16, uint64(n), 2)
	default:
		w.be(code16+1, uint64(n), 4)
	}
}

func (w *mpWriter) mapLen(n int)   { w.header(0x80, 15, mpMap16, n) }
func (w *mpWriter) arrayLen(n int) { w.header(0x90, 15, mpArray16, n) }

// junk writes a random value of any type, containers nested at most depth
// more levels.
func (w *mpWriter) junk(depth int) {
	k := w.pick(12)
	if depth <= 0 && k >= 10 {
		k = 0
	}
	switch k {
	case 0:
		w.int(int64(w.r.Uint64()) >> w.pick(64))
	case 1:
		w.uint(w.r.Uint64() >> w.pick(64))
	case 2:
		w.str(strings.Repeat("j", w.pick(40)))
	case 3:
		w.b = append(w.b, []byte{mpNil, mpTrue, mpFalse}[w.pick(3)])
	case 4:
		w.b = binary.BigEndian.AppendUint32(append(w.b, 0xca), math.Float32bits(1.5))
	case 5:
		w.b = binary.BigEndian.AppendUint64(append(w.b, 0xcb), math.Float64bits(-2.25))
	case 6: // fixext 1, 2, 4, 8, 16: type, data
		i := w.pick(5)
		w.b = append(append(w.b, 0xd4+byte(i), 7), bytes.Repeat([]byte{0xee}, 1<<i)...)
	case 7: // ext8, 16, 32: length, type, data
		n, i := w.pick(20), w.pick(3)
		w.be(0xc7+byte(i), uint64(n), 1<<i)
		w.b = append(append(w.b, 0xff), bytes.Repeat([]byte{0xdd}, n)...)
	case 8:
		w.b = append(w.b, 0xcf)
		w.b = binary.BigEndian.AppendUint64(w.b, w.r.Uint64())
	case 9:
		w.b = binary.BigEndian.AppendUint64(append(w.b, 0xd3), w.r.Uint64())
	case 10:
		n := w.pick(5)
		w.arrayLen(n)
		for range n {
			w.junk(depth - 1)
		}
	case 11:
		n := w.pick(4)
		w.mapLen(n)
		for range n {
			if w.pick(4) == 0 {
				w.junk(0) // not only string keys inside unknown values
			} else {
				w.key("k")
			}
			w.junk(depth - 1)
		}
	}
}

// variant encodes req as a map the way some other client might: fields in
// any order, every integer in any encoding that holds it, strings as str
// or bin of any width, zero values left out, written as zero or as nil,
// unknown keys with nested values in between, and now and then a field
// written twice (the last one wins).
func variant(r *rand.Rand, req *Request) []byte {
	w := &mpWriter{r: r}
	type entry struct {
		key   string
		write func()
	}
	var entries []entry
	add := func(key string, zero bool, write func()) {
		if zero {
			switch r.IntN(3) {
			case 0:
				return
			case 1:
				write = func() { w.b = append(w.b, mpNil) }
			}
		}
		if r.IntN(10) == 0 { // an earlier value of the same type, overwritten
			entries = append(entries, entry{key, func() {
				switch key {
				case "t", "cmid", "body", "name", "dir", "group_add", "provider", "token", "endpoint", "p256dh", "auth":
					w.str("decoy")
				case "admin", "on", "hide_last_seen", "preview", "dnd":
					w.b = append(w.b, mpTrue)
				case "limit":
					w.int(-5)
				case "users":
					w.arrayLen(3)
					for _, u := range []uint64{9, 8, 7} {
						w.uint(u)
					}
				default:
					w.uint(12345)
				}
			}})
		}
		entries = append(entries, entry{key, write})
	}
	uintField := func(key string, v uint64) { add(key, v == 0, func() { w.uint(v) }) }
	strField := func(key string, v string) { add(key, v == "", func() { w.str(v) }) }
	boolField := func(key string, v bool) {
		add(key, !v, func() { w.b = appendBool(w.b, v) })
	}
	strField("t", req.Type)
	uintField("id", req.ID)
	uintField("conv", req.Conv)
	strField("cmid", req.ClientMsgID)
	strField("body", req.Body)
	uintField("reply_to", req.ReplyTo)
	uintField("user", req.User)
	if req.Users == nil {
		if r.IntN(2) == 0 {
			add("users", true, func() { w.b = append(w.b, mpNil) })
		}
	} else {
		entries = append(entries, entry{"users", func() {
			w.arrayLen(len(req.Users))
			for _, u := range req.Users {
				if u == 0 && r.IntN(2) == 0 {
					w.b = append(w.b, mpNil)
				} else {
					w.uint(u)
				}
			}
		}})
	}
	strField("name", req.Name)
	boolField("admin", req.Admin)
	uintField("seq", req.Seq)
	strField("dir", req.Dir)
	add("limit", req.Limit == 0, func() { w.int(int64(req.Limit)) })
	uintField("since", req.Since)
	uintField("after", req.After)
	uintField("after_conv", req.AfterConv)
	boolField("on", req.On)
	uintField("delivered", req.Delivered)
	uintField("read", req.Read)
	boolField("hide_last_seen", req.Hide)
	uintField("dev", req.Device)
	strField("group_add", req.GroupAdd)
	uintField("min_idx", req.MinIndex)
	strField("provider", req.Provider)
	strField("token", req.Token)
	strField("endpoint", req.Endpoint)
	strField("p256dh", req.P256dh)
	strField("auth", req.Auth)
	boolField("preview", req.Preview)
	boolField("dnd", req.DND)
	add("until", req.Until == 0, func() { w.int(req.Until) })
	if req.Att != nil {
		entries = append(entries, entry{"att", func() { w.attachments(req.Att) }})
	}
	for range r.IntN(4) {
		name := []string{"future", "x", "", "ids", "T", "type", "usersX"}[r.IntN(7)]
		entries = append(entries, entry{"unknown:" + name, func() { w.junk(3) }})
	}
	// Shuffle the keys; a key written twice keeps its decoy first.
	writes := map[string][]func(){}
	for _, e := range entries {
		writes[e.key] = append(writes[e.key], e.write)
	}
	shuffled := make([]entry, len(entries))
	for i, j := range r.Perm(len(entries)) {
		shuffled[i] = entries[j]
	}
	for i := range shuffled {
		k := shuffled[i].key
		shuffled[i].write, writes[k] = writes[k][0], writes[k][1:]
	}
	w.mapLen(len(shuffled))
	for _, e := range shuffled {
		if name, ok := strings.CutPrefix(e.key, "unknown:"); ok {
			w.key(name)
		} else {
			w.key(e.key)
		}
		e.write()
	}
	return w.b
}

// randomRequest is a request that a conforming client could send, as far
// as encoding goes: every number in range, at most 1000 users. (Whether
// it validates is another matter: both decoders must agree on that too.)
func randomRequest(r *rand.Rand) *Request {
	u := func() uint64 {
		vals := []uint64{0, 0, 0, 1, 31, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, MaxSafeInteger, r.Uint64N(MaxSafeInteger)}
		return vals[r.IntN(len(vals))]
	}
	s := func() string {
		lengths := []int{0, 0, 0, 1, 5, 31, 32, 64, 255, 256}
		n := lengths[r.IntN(len(lengths))]
		if r.IntN(50) == 0 {
			n = 65536 + r.IntN(2)
		}
		return strings.Repeat("é", n/2) + "x"[:n%2]
	}
	types := []string{TypeSend, TypeDirectOpen, TypeGroupCreate, TypeGroupAdd, TypeGroupRemove, TypeGroupLeave,
		TypeGroupAdmin, TypeGroupRename, TypeConvGet, TypeConvList, TypeHistory, TypeSync, TypeUserGet, TypePing,
		TypeTyping, TypePresenceSub, TypeReceipt, TypeReadGet, TypePrivacySet, TypeDeviceList, TypeDeviceRevoke, "", "nope"}
	req := &Request{
		Type: types[r.IntN(len(types))], ID: u(), Conv: u(), ClientMsgID: s(), Body: s(), ReplyTo: u(), User: u(),
		Name: s(), Admin: r.IntN(2) == 0, Seq: u(), Limit: []int{0, 1, -1, 50, 300, math.MaxInt, math.MinInt, int(r.Int64())}[r.IntN(8)],
		Since: u(), After: u(), On: r.IntN(2) == 0, Delivered: u(), Read: u(), Hide: r.IntN(2) == 0, Device: u(),
	}
	if r.IntN(4) == 0 {
		req.Dir = []string{DirBefore, DirAfter, "up"}[r.IntN(3)]
	}
	if r.IntN(4) == 0 {
		req.Att = make([]Attachment, r.IntN(MaxAttachments+1))
		for i := range req.Att {
			req.Att[i] = Attachment{ID: s(), Name: s()}
		}
	}
	switch r.IntN(5) {
	case 0: // nil
	case 1:
		req.Users = []uint64{}
	default:
		n := []int{1, 2, 15, 16, 17, 256, 1000}[r.IntN(7)]
		req.Users = make([]uint64, n)
		for i := range req.Users {
			req.Users[i] = u()
		}
	}
	return req
}

// compareDecoders decodes b with the old and the new decoder, bare and
// with DecodeRequest's checks, and fails unless they agree exactly.
func compareDecoders(t *testing.T, what string, b []byte) (Request, *Error) {
	t.Helper()
	var oldReq, newReq Request
	oe, ne := oldDecode(b, &oldReq), decodeRequest(b, &newReq)
	if oe != nil || ne != nil {
		t.Fatalf("%s: old %v, new %v\nframe %x", what, oe, ne, b)
	}
	if !reflect.DeepEqual(oldReq, newReq) {
		t.Fatalf("%s: decoded differently:\nold %+v\nnew %+v\nframe %x", what, oldReq, newReq, b)
	}
	oe, ne = oldDecodeRequest(b, &oldReq), DecodeRequest(b, &newReq)
	if (oe == nil) != (ne == nil) || oe != nil && oe.Code != ne.Code {
		t.Fatalf("%s: DecodeRequest: old %v, new %v\nframe %x", what, oe, ne, b)
	}
	if !reflect.DeepEqual(oldReq, newReq) {
		t.Fatalf("%s: DecodeRequest decoded differently:\nold %+v\nnew %+v", what, oldReq, newReq)
	}
	return newReq, ne
}

// TestDecodeRequestMatchesMsgpack: on the frames conforming clients send,
// built by msgpack.Marshal or by hand in every encoding msgpack allows, the
// hand-written decoder gives exactly what msgpack/v5 gave.
func TestDecodeRequestMatchesMsgpack(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	valid := 0
	for i := range 3000 {
		req := randomRequest(r)
		if i%2 == 0 {
			compareDecoders(t, "msgpack.Marshal", mustMarshal(t, req))
		}
		b := variant(r, req)
		got, e := compareDecoders(t, "variant", b)
		if e == nil {
			valid++
		}
		// The variant wrote req's values (empty users may come back nil).
		var bare Request
		if e := decodeRequest(b, &bare); e != nil {
			t.Fatal(e)
		}
		want, back := *req, bare
		normalize(reflect.ValueOf(&want))
		normalize(reflect.ValueOf(&back))
		if !reflect.DeepEqual(want, back) {
			t.Fatalf("variant %d: wrote %+v\nread %+v\nframe %x", i, want, back, b)
		}
		_ = got
	}
	if valid < 100 {
		t.Fatalf("only %d of the frames validated: the test exercises little of Validate", valid)
	}
}

// TestDecodeRequestFillsEveryField sets every field of Request by
// reflection: a field that decode.go forgets (or cannot decode) fails here.
func TestDecodeRequestFillsEveryField(t *testing.T) {
	var in Request
	v := reflect.ValueOf(&in).Elem()
	for i := range v.NumField() {
		f, sf := v.Field(i), v.Type().Field(i)
		if sf.Tag.Get("msgpack") == "" {
			t.Fatalf("field %s has no msgpack tag", sf.Name)
		}
		switch {
		case f.Kind() == reflect.String:
			f.SetString("s-" + sf.Name)
		case f.Kind() == reflect.Uint64:
			f.SetUint(uint64(1000 + i))
		case f.Kind() == reflect.Int:
			f.SetInt(int64(-1 - i))
		case f.Kind() == reflect.Int64: // until: -1, or a time
			f.SetInt(int64(1_700_000_000_000 + i))
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.Type() == reflect.TypeFor[[]uint64]():
			f.Set(reflect.ValueOf([]uint64{uint64(i), MaxSafeInteger}))
		case f.Type() == reflect.TypeFor[[]Attachment](): // send reads id and name only
			f.Set(reflect.ValueOf([]Attachment{{ID: "id-" + sf.Name, Name: "a.pdf"}, {ID: "2"}}))
		default:
			t.Fatalf("field %s: type %s is new to this test (and to decode.go)", sf.Name, f.Type())
		}
	}
	check := func(what string, b []byte) {
		t.Helper()
		var out Request
		if e := decodeRequest(b, &out); e != nil {
			t.Fatalf("%s: %v", what, e)
		}
		ov := reflect.ValueOf(out)
		for i := range v.NumField() {
			if !reflect.DeepEqual(v.Field(i).Interface(), ov.Field(i).Interface()) {
				t.Fatalf("%s: field %s: wrote %v, decoded %v", what, v.Type().Field(i).Name, v.Field(i), ov.Field(i))
			}
		}
		compareDecoders(t, what, b)
	}
	check("msgpack.Marshal", mustMarshal(t, &in))
	r := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		check("variant", variant(r, &in))
	}
}

// The attack frames of the security finding.
var (
	// 32 bytes: {"t": "group.create", "id": 1, "users": array32 of 2^32-1
	// elements, and then one}.
	attackUsers = []byte("\x83\xa1t\xacgroup.create\xa2id\x01\xa5users\xdd\xff\xff\xff\xff\x01")
	// 18 bytes: {"id": 7, "t": str32 of 4 GiB (minus one), and six bytes}.
	attackType = []byte("\x82\xa2id\x07\xa1t\xdb\xff\xff\xff\xffabcdef")
	// {"t": "ping", "id": -1}, as a negative fixint and as an int64, and
	// {"t": "ping", "id": 2^64-1}.
	attackIDMinus1    = []byte("\x82\xa1t\xa4ping\xa2id\xff")
	attackIDMinus1I64 = []byte("\x82\xa1t\xa4ping\xa2id\xd3\xff\xff\xff\xff\xff\xff\xff\xff")
	attackIDMaxU64    = []byte("\x82\xa1t\xa4ping\xa2id\xcf\xff\xff\xff\xff\xff\xff\xff\xff")
)

func TestDecodeRequestLengthBombs(t *testing.T) {
	if len(attackUsers) != 32 || len(attackType) != 18 {
		t.Fatalf("attack frames are %d and %d bytes", len(attackUsers), len(attackType))
	}
	cases := []struct {
		name  string
		frame []byte
		id    uint64
		msg   string
	}{
		{"users array32", attackUsers, 1, "users: declared 4294967295 elements, frame has 1 bytes left"},
		{"t str32", attackType, 7, "t: declared 4294967295 bytes, frame has 6 bytes left"},
		{"key str32", []byte("\x81\xdb\xff\xff\xff\xffab"), 0, "a key: declared 4294967295 bytes"},
		{"body bin32", []byte("\x82\xa2id\x05\xa4body\xc6\x7f\xff\xff\xff"), 5, "body: declared 2147483647 bytes, frame has 0 bytes left"},
		{"top map32", []byte("\xdf\xff\xff\xff\xff\xa1t"), 0, "declared 4294967295 entries, frame has 2 bytes left"},
		{"unknown array32", []byte("\x82\xa2id\x09\xa1x\xdd\xff\xff\xff\xff\x01\x02"), 9, `"x": declared 4294967295 elements, frame has 2 bytes left`},
		{"unknown map32", []byte("\x81\xa1x\xdf\x00\x01\x00\x00\x01"), 0, `"x": declared 65536 entries, frame has 1 bytes left`},
		{"unknown ext32", []byte("\x81\xa1x\xc9\xff\xff\xff\xff\x01"), 0, `"x": declared 4294967295 bytes, frame has 0 bytes left`},
		{"nested array32", []byte("\x81\xa1x\x91\x91\xdd\x00\x10\x00\x00"), 0, `"x": declared 1048576 elements, frame has 0 bytes left`},
	}
	for _, c := range cases {
		var r Request
		var e *Error
		n := allocBytes(func() { e = DecodeRequest(c.frame, &r) })
		if e == nil || e.Code != CodeBadFrame || !strings.Contains(e.Message, c.msg) {
			t.Errorf("%s: got %v, want bad_frame %q", c.name, e, c.msg)
		}
		if r.ID != c.id {
			t.Errorf("%s: error reply id %d, want %d", c.name, r.ID, c.id)
		}
		if n > allocBound(len(c.frame)) {
			t.Errorf("%s: %d-byte frame allocated %d bytes", c.name, len(c.frame), n)
		}
	}
	// The str32 frame, over and over on one connection: nothing grows.
	var r Request
	n := allocBytes(func() {
		for range 10000 {
			DecodeRequest(attackType, &r)
		}
	})
	if n > 10000*allocBound(len(attackType)) {
		t.Fatalf("10000 frames of 18 bytes allocated %d bytes", n)
	}
	t.Logf("%d bytes per 18-byte attack frame", n/10000)
}

func TestDecodeRequestIDRange(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame []byte
		msg   string
	}{
		{"-1 fixint", attackIDMinus1, "id must be 0..2^53-1, got -1"},
		{"-1 int64", attackIDMinus1I64, "id must be 0..2^53-1, got -1"},
		{"2^64-1", attackIDMaxU64, "id must be 0..2^53-1, got 18446744073709551615"},
		{"2^53", mustMarshal(t, map[string]any{"t": "ping", "id": uint64(1 << 53)}), "got 9007199254740992"},
		// The bad id wins over what else is wrong, before or after it.
		{"bad conv too", mustMarshal(t, &Request{Type: TypeSend, Conv: 1 << 60, ID: 1 << 60}), "id must be"},
		{"bad id then garbage", append(attackIDMinus1[:len(attackIDMinus1):len(attackIDMinus1)], 0xc1), "id must be"},
	} {
		var r Request
		var e *Error
		n := allocBytes(func() { e = DecodeRequest(c.frame, &r) })
		if e == nil || e.Code != CodeInvalid || !strings.Contains(e.Message, c.msg) || r.ID != 0 {
			t.Errorf("%s: got %v with id %d, want invalid %q with id 0", c.name, e, r.ID, c.msg)
		}
		if n > allocBound(len(c.frame)) {
			t.Errorf("%s: allocated %d bytes", c.name, n)
		}
		b, err := Marshal(ErrorReply(r.ID, e))
		if err != nil {
			t.Fatal(err)
		}
		var rep Reply
		if err := Unmarshal(b, &rep); err != nil || rep.ID != 0 {
			t.Errorf("%s: error reply %+v, %v", c.name, rep, err)
		}
	}
	// The largest valid id, in every encoding that holds it.
	w := &mpWriter{r: rand.New(rand.NewPCG(7, 8))}
	for range 20 {
		w.b = append(w.b[:0], "\x82\xa1t\xa4ping\xa2id"...)
		w.uint(MaxSafeInteger)
		var r Request
		if e := DecodeRequest(w.b, &r); e != nil || r.ID != MaxSafeInteger {
			t.Fatalf("%x: %v %d", w.b, e, r.ID)
		}
	}
	// A valid id is kept for the reply when the frame fails after it, and
	// also after a well-formed but wrong value that comes before it.
	for _, c := range []struct {
		name  string
		frame []byte
		code  Code
	}{
		{"truncated after id", []byte("\x83\xa2id\x2a\xa1t\xa4ping\xa4conv"), CodeBadFrame},
		{"wrong type before id", []byte("\x83\xa4conv\xa1x\xa2id\x2a\xa1t\xa4ping"), CodeBadFrame},
		{"negative before id", []byte("\x83\xa4conv\xff\xa2id\x2a\xa1t\xa4ping"), CodeInvalid},
		{"float before id", []byte("\x83\xa4conv\xca\x3f\xc0\x00\x00\xa2id\x2a\xa1t\xa4ping"), CodeBadFrame},
		{"trailing byte", []byte("\x82\xa2id\x2a\xa1t\xa4ping\x00"), CodeBadFrame},
		{"users too many", append([]byte("\x83\xa2id\x2a\xa1t\xa4ping\xa5users\xdc\x03\xe9"), bytes.Repeat([]byte{1}, 1001)...), CodeTooLarge},
	} {
		var r Request
		if e := DecodeRequest(c.frame, &r); e == nil || e.Code != c.code || r.ID != 42 {
			t.Errorf("%s: got %v with id %d, want %s with id 42", c.name, e, r.ID, c.code)
		} else if !reflect.DeepEqual(r, Request{ID: 42}) {
			t.Errorf("%s: a failed decode left %+v", c.name, r)
		}
	}
}

// TestDecodeRequestEncodings: what the decoder accepts and refuses, as
// decode.go and docs/PROTOCOL.md say.
func TestDecodeRequestEncodings(t *testing.T) {
	frame := func(kv ...string) []byte {
		b := appendMapLen(nil, len(kv)/2)
		for i := 0; i < len(kv); i += 2 {
			b = append(appendStr(b, kv[i]), kv[i+1]...)
		}
		return b
	}
	ok := []struct {
		name  string
		frame []byte
		want  Request
	}{
		{"bin strings", frame("t", "\xc4\x04send", "id", "\x01", "conv", "\x02", "cmid", "\xc5\x00\x01c", "body", "\xc6\x00\x00\x00\x02hi"),
			Request{Type: TypeSend, ID: 1, Conv: 2, ClientMsgID: "c", Body: "hi"}},
		{"nil values", frame("t", "\xa4ping", "id", "\xc0", "conv", "\xc0", "users", "\xc0", "admin", "\xc0", "name", "\xc0", "limit", "\xc0"),
			Request{Type: TypePing}},
		{"signed widths", frame("t", "\xa4ping", "id", "\xd0\x05", "conv", "\xd1\x00\x06", "user", "\xd2\x00\x00\x00\x07", "seq", "\xd3\x00\x00\x00\x00\x00\x00\x00\x08"),
			Request{Type: TypePing, ID: 5, Conv: 6, User: 7, Seq: 8}},
		{"negative limit", frame("t", "\xa4ping", "limit", "\xd0\x80"), Request{Type: TypePing, Limit: -128}},
		{"bin and nil keys", []byte("\x83\xc4\x01t\xa4ping\xc0\x01\xd9\x02id\x03"), Request{Type: TypePing, ID: 3}},
		{"last wins", frame("t", "\xa4ping", "id", "\x01", "id", "\x02", "t", "\xa4sync"), Request{Type: TypeSync, ID: 2, Limit: DefaultSyncConvs}},
		{"empty users", frame("t", "\xa4ping", "users", "\x90"), Request{Type: TypePing, Users: []uint64{}}},
		{"users nil element", frame("t", "\xa4ping", "users", "\x92\xc0\x01"), Request{Type: TypePing, Users: []uint64{0, 1}}},
		{"unknown nested", frame("x", "\x81\xa1y\x92\x80\xd4\x01\x02", "t", "\xa4ping"), Request{Type: TypePing}},
	}
	for _, c := range ok {
		var r Request
		if e := DecodeRequest(c.frame, &r); e != nil || !reflect.DeepEqual(r, c.want) {
			t.Errorf("%s: got %+v %v, want %+v", c.name, r, e, c.want)
		}
	}
	bad := []struct {
		name  string
		frame []byte
		code  Code
		msg   string
	}{
		{"negative conv", frame("t", "\xa4ping", "conv", "\xff"), CodeInvalid, "conv: negative number -1"},
		{"negative int16 seq", frame("t", "\xa4ping", "seq", "\xd1\xff\x00"), CodeInvalid, "seq: negative number -256"},
		{"big user", frame("t", "\xa4ping", "user", "\xcf\x00\x20\x00\x00\x00\x00\x00\x00"), CodeInvalid, "user: 9007199254740992 is above 2^53-1"},
		{"negative in users", frame("t", "\xa4ping", "users", "\x92\x01\xff"), CodeInvalid, "users[1]: negative number -1"},
		{"float conv", frame("t", "\xa4ping", "conv", "\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00"), CodeBadFrame, "conv: expected an integer, got a float"},
		{"float limit", frame("t", "\xa4ping", "limit", "\xca\x3f\x80\x00\x00"), CodeBadFrame, "limit: expected an integer, got a float"},
		{"huge limit", frame("t", "\xa4ping", "limit", "\xcf\x80\x00\x00\x00\x00\x00\x00\x00"), CodeInvalid, "limit: out of range"},
		{"string conv", frame("t", "\xa4ping", "conv", "\xa1x"), CodeBadFrame, "conv: expected an integer, got a string"},
		{"int t", frame("t", "\x01"), CodeBadFrame, "t: expected a string, got an integer"},
		{"int bool", frame("t", "\xa4ping", "on", "\x01"), CodeBadFrame, "on: expected a bool, got an integer"},
		{"map users", frame("t", "\xa4ping", "users", "\x80"), CodeBadFrame, "users: expected an array, got a map"},
		{"string in users", frame("t", "\xa4ping", "users", "\x91\xa1x"), CodeBadFrame, "users[0]: expected an integer, got a string"},
		{"int key", []byte("\x82\x01\x02\xa1t\xa4ping"), CodeBadFrame, "a key: expected a string, got an integer"},
		{"0xc1", frame("t", "\xa4ping", "x", "\xc1"), CodeBadFrame, "0xc1"},
		{"truncated int", frame("t", "\xa4ping", "conv", "\xcd\x01"), CodeBadFrame, "conv: frame ends early: 2 more bytes needed, 1 left"},
		{"missing value", []byte("\x82\xa1t\xa4ping\xa4conv"), CodeBadFrame, "conv: frame ends early"},
		{"not a map", []byte("\x91\x01"), CodeBadFrame, "not a msgpack map"},
		{"trailing", append(frame("t", "\xa4ping"), 0), CodeBadFrame, "trailing bytes"},
		{"too big", append(frame("t", "\xa4ping", "x", "\xc6\x00\x01\x00\x00"), make([]byte, 1<<16)...), CodeTooLarge, "frame over limit"},
	}
	for _, c := range bad {
		var r Request
		if e := DecodeRequest(c.frame, &r); e == nil || e.Code != c.code || !strings.Contains(e.Message, c.msg) {
			t.Errorf("%s: got %v, want %s %q", c.name, e, c.code, c.msg)
		}
	}
}

// nested returns a frame whose unknown key holds arrays nested so that the
// frame has depth containers in all.
func nested(depth int) []byte {
	b := []byte("\x82\xa1t\xa4ping\xa1x")
	for range depth - 1 {
		b = append(b, 0x91)
	}
	return append(b, 0x01)
}

func TestDecodeRequestDepth(t *testing.T) {
	var r Request
	if e := DecodeRequest(nested(maxDepth), &r); e != nil {
		t.Fatalf("depth %d: %v", maxDepth, e)
	}
	if e := DecodeRequest(nested(maxDepth+1), &r); e == nil || e.Code != CodeBadFrame || !strings.Contains(e.Message, "nested") {
		t.Fatalf("depth %d: %v", maxDepth+1, e)
	}
	if e := checkValue(nested(100000)[10:]); e == nil { // the array alone, 100k deep
		t.Fatal("checkValue took 100000 levels")
	}
}

// TestDecodeRequestAllocs: a send frame allocates its two strings and
// nothing else (the type is a known one); a group.create its name and
// users.
func TestDecodeRequestAllocs(t *testing.T) {
	send := mustMarshal(t, &Request{Type: TypeSend, ID: 77, Conv: 42, ClientMsgID: "0123456789abcdef", Body: strings.Repeat("b", 100)})
	group := mustMarshal(t, &Request{Type: TypeGroupCreate, ID: 78, Name: "friends", Users: []uint64{1, 2, 3}})
	history := mustMarshal(t, &Request{Type: TypeHistory, ID: 79, Conv: 42, Dir: DirAfter, Seq: 10, Limit: 20})
	for _, c := range []struct {
		frame []byte
		want  float64
	}{{send, 2}, {group, 2}, {history, 0}} {
		var r Request
		n := testing.AllocsPerRun(100, func() {
			if e := DecodeRequest(c.frame, &r); e != nil {
				t.Fatal(e)
			}
		})
		if n != c.want {
			t.Errorf("%s: %v allocations, want %v", r.Type, n, c.want)
		}
	}
}

func TestPeekTypeBounded(t *testing.T) {
	// The server frames, and odd but valid encodings: as msgpack/v5 did.
	r := rand.New(rand.NewPCG(9, 10))
	frames := [][]byte{
		[]byte("\x82\xa2id\x01\xa1t\xc4\x02ok"),    // bin
		[]byte("\x82\xa1t\xa2ok\xa1t\xa5error"),    // last wins
		[]byte("\x81\xa1t\xc0"),                    // nil
		[]byte("\x81\xa1x\x92\x01\x02"),            // no t
		[]byte("\x81\xa1t\xa2ev\x00\x01"),          // trailing bytes, ignored
		[]byte("\x81\xa1t\xd9\x07unknown"),         // not a known type
		[]byte("\x82\xa1x\xd4\x01\x02\xa1t\xa2ev"), // an ext skipped
	}
	for range 200 {
		for _, v := range []any{new(Event), new(Reply), new(Receipt), new(Typing), new(Presence), new(ReadCounts)} {
			fill(r, reflect.ValueOf(v).Elem())
			frames = append(frames, mustMarshal(t, v))
		}
	}
	for _, b := range frames {
		want, werr := oldPeekType(b)
		got, err := PeekType(b)
		if got != want || (err == nil) != (werr == nil) {
			t.Fatalf("%x: got %q %v, msgpack %q %v", b, got, err, want, werr)
		}
	}
	// Bombs are refused without allocating what they declare.
	for _, b := range [][]byte{
		[]byte("\x81\xa1t\xdb\xff\xff\xff\xff"),
		[]byte("\x82\xa1x\xdd\xff\xff\xff\xff\xa1t\xa2ok"),
		[]byte("\xdf\xff\xff\xff\xff"),
		[]byte("\x81\xdb\xff\xff\xff\xff"),
		nested(maxDepth + 1),
	} {
		var err error
		n := allocBytes(func() { _, err = PeekType(b) })
		if err == nil || n > allocBound(len(b)) {
			t.Errorf("%x: err %v, %d bytes allocated", b, err, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { PeekType(frames[0]) }); n != 0 {
		t.Errorf("PeekType allocates %v times", n)
	}
}

func TestUnmarshalGuard(t *testing.T) {
	// Every server frame decodes as msgpack.Unmarshal decodes it.
	r := rand.New(rand.NewPCG(11, 12))
	for range 200 {
		for _, v := range []any{new(Event), new(Reply), new(Receipt), new(Typing), new(Presence), new(ReadCounts), new(Hello)} {
			if h, ok := v.(*Hello); ok {
				*h = Hello{Type: TypeHello, User: r.Uint64(), Node: "n1", Limits: Limits{RatePerSecond: 1.5, MaxFrameBytes: MaxFrameBytes}}
			} else {
				fill(r, reflect.ValueOf(v).Elem())
			}
			b, err := Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			got := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			want := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := Unmarshal(b, got); err != nil {
				t.Fatalf("%T: %v", v, err)
			}
			if err := msgpack.Unmarshal(b, want); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%T: Unmarshal differs from msgpack.Unmarshal", v)
			}
		}
	}
	// Declared lengths beyond the input are refused before msgpack sees them.
	for _, b := range [][]byte{
		[]byte("\x82\xa1t\xa2ok\xa6events\xdd\xff\xff\xff\xff\xc0"),
		[]byte("\x82\xa1t\xa2ev\xa4body\xdb\xff\xff\xff\xff"),
		[]byte("\x81\xa1t\xdb\xff\xff\xff\xff"),
		[]byte("\xdf\xff\xff\xff\xff"),
		[]byte("\x81\xa4info\x81\xa7members\xdd\x7f\xff\xff\xff"),
		[]byte("\x81\xa1x\xc9\xff\xff\xff\xff\x01"),
		nested(maxDepth + 1),
	} {
		var rep Reply
		var err error
		n := allocBytes(func() { err = Unmarshal(b, &rep) })
		if err == nil || n > allocBound(len(b)) {
			t.Errorf("%x: err %v, %d bytes allocated", b, err, n)
		}
	}
}

// FuzzPeekType: PeekType agrees with msgpack/v5 on every input whose
// lengths are bounded (msgpack/v5 cannot be run on the others), allocating
// little on all.
func FuzzPeekType(f *testing.F) {
	f.Add(mustMarshal(f, &Event{Type: TypeEvent, Conv: 1, Users: []uint64{1}}))
	f.Add(mustMarshal(f, &Reply{Type: TypeOK, ID: 3, Info: &ConvInfo{ID: 1, Members: []uint64{1, 2}}}))
	f.Add([]byte("\x81\xa1t\xdb\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got string
		var err error
		if n := minAllocBytes(allocBound(len(b)), func() { got, err = PeekType(b) }); n > allocBound(len(b)) {
			t.Fatalf("%d bytes allocated for %d", n, len(b))
		}
		if checkValue(b) != nil {
			if err == nil {
				t.Fatalf("PeekType took %x, which checkValue refuses", b)
			}
			return
		}
		want, werr := oldPeekType(b)
		if err == nil && (werr != nil || got != want) {
			t.Fatalf("got %q, msgpack %q %v", got, want, werr)
		}
	})
}

// BenchmarkDecodeRequest: a typical send frame, by msgpack/v5 as before and
// by the hand-written decoder.
func BenchmarkDecodeRequest(b *testing.B) {
	frame := mustMarshal(b, &Request{Type: TypeSend, ID: 77, Conv: 42, ClientMsgID: "0123456789abcdef", Body: strings.Repeat("b", 100)})
	for _, c := range []struct {
		name string
		fn   func([]byte, *Request) *Error
	}{{"msgpack", oldDecodeRequest}, {"hand", DecodeRequest}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			var r Request // both reset it first
			for b.Loop() {
				if e := c.fn(frame, &r); e != nil {
					b.Fatal(e)
				}
			}
		})
	}
}

// BenchmarkUnmarshal: what Unmarshal's check adds to msgpack.Unmarshal, on
// a message event and on a sync reply of 20 conversations.
func BenchmarkUnmarshal(b *testing.B) {
	ev := &Event{Type: TypeEvent, Conv: 42, Seq: 1234, Index: 98765, Ts: 1_790_000_000_000, Kind: KindMessage,
		From: 7, Device: 9, ClientMsgID: "0123456789abcdef", Body: strings.Repeat("b", 100)}
	syncRep := &Reply{Type: TypeOK, ID: 5, More: true, Next: 99}
	for i := range 20 {
		cs := ConvSync{Info: ConvInfo{ID: uint64(i + 1), Kind: ConvGroup, Name: "group", Members: []uint64{1, 2, 3, 4, 5}, LastSeq: 50}}
		for j := range 5 {
			e := *ev
			e.Type, e.Seq = "", uint64(j+1)
			cs.Events = append(cs.Events, e)
		}
		syncRep.Changes = append(syncRep.Changes, cs)
	}
	for _, c := range []struct {
		name string
		v    any
		new  func() any
	}{
		{"event", ev, func() any { return new(Event) }},
		{"sync", syncRep, func() any { return new(Reply) }},
	} {
		frame, err := Marshal(c.v)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(c.name+"/msgpack", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if err := msgpack.Unmarshal(frame, c.new()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/check", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if e := checkValue(frame); e != nil {
					b.Fatal(e)
				}
			}
		})
		b.Run(c.name+"/Unmarshal", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if err := Unmarshal(frame, c.new()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPeekType: routing a message event, by msgpack/v5 as before and
// by the bounded reader.
func BenchmarkPeekType(b *testing.B) {
	frame, _ := Marshal(&Event{Type: TypeEvent, Conv: 42, Seq: 1234, Index: 98765, Ts: 1_790_000_000_000, Kind: KindMessage,
		From: 7, Device: 9, ClientMsgID: "0123456789abcdef", Body: strings.Repeat("b", 100)})
	for _, c := range []struct {
		name string
		fn   func([]byte) (string, error)
	}{{"msgpack", oldPeekType}, {"hand", PeekType}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.fn(frame); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
