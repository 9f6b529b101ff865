package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

var sampleCommands = []*Command{
	{Op: OpRegister, Username: "alice", PasswordHash: []byte("$argon2id$v=19$...")},
	{Op: OpAddDevice, User: 1, DeviceName: "phone"},
	{Op: OpAddDevice, User: 1, DeviceName: "laptop", Ts: 1_700_000_000_123, MaxDevices: 100},
	{Op: OpRevokeDevice, User: 1, Device: 2},
	{Op: OpOpenDirect, User: 1, Peer: 2},
	{Op: OpCreateGroup, User: 1, Name: "team", Members: []uint64{2, 3, 1 << 52}},
	{Op: OpAddMembers, User: 1, Conv: 7, Members: []uint64{4}},
	{Op: OpRemoveMember, User: 1, Conv: 7, Member: 4},
	{Op: OpLeave, User: 2, Conv: 7},
	{Op: OpSetAdmin, User: 1, Conv: 7, Member: 2, Admin: true},
	{Op: OpRename, User: 1, Conv: 7, Name: "renamed ✓"},
	{Op: OpSend, User: 1, Device: 3, Conv: 7, ClientMsgID: "c-1", Body: "hello, world", ReplyTo: 5},
	{Op: OpReceipts, User: 2, Device: 4, Items: []ReceiptItem{{Conv: 7, Delivered: 9, Read: 8}, {Conv: 1 << 52, Read: 1}, {}}},
	{Op: OpLastSeen, User: 2, Ts: 1_700_000_000_123},
	{Op: OpLastSeen, User: 2, Ts: -1},
	{Op: OpSetPrivacy, User: 2, HideLastSeen: true},
	{Op: OpSetPrivacy, User: 2, GroupAdd: GroupAddContacts},
	{Op: OpBlock, User: 2, Peer: 1 << 52},
	{Op: OpUnblock, User: 2, Peer: 3},
	{Op: OpSetSigningKey, SigningKey: bytes.Repeat([]byte{0, 0xff}, 16)},
	{Op: OpMediaChunk, User: 1, Media: &MediaArgs{Upload: 1 << 62, Index: 3, Data: bytes.Repeat([]byte{9}, 300), Quota: 1 << 30}},
	{Op: OpMediaCommit, User: 1, Media: &MediaArgs{Upload: 7, Index: 4, Size: 1 << 20, ID: bytes.Repeat([]byte{1}, 32),
		Mime: "image/png", Width: 800, Height: 600, Thumb: []byte{0xff, 0xd8}, ThumbMime: "image/jpeg", Name: "cat.png"}},
	{Op: OpMediaExpire, Ts: 1_700_000_000_123},
	{Op: OpMediaExpire, User: 3, Media: &MediaArgs{Upload: 7}},
	{Op: OpSend, User: 1, Device: 3, Conv: 7, ClientMsgID: "c-2", Media: &MediaArgs{Attachments: []AttachmentRef{
		{ID: bytes.Repeat([]byte{2}, 32), Name: "a.pdf"}, {ID: bytes.Repeat([]byte{3}, 32)}}}},
	{},
}

func TestCommandRoundTrip(t *testing.T) {
	maxItems := &Command{Op: OpReceipts, User: 1, Device: 1, Items: make([]ReceiptItem, MaxReceiptItems)}
	for i := range maxItems.Items {
		maxItems.Items[i] = ReceiptItem{Conv: uint64(i + 1), Delivered: math.MaxUint64, Read: uint64(i)}
	}
	for _, c := range append(slices.Clone(sampleCommands), maxItems) {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		commandKeys(t, b)
		var got Command
		if err := DecodeCommand(b, &got); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if !reflect.DeepEqual(&got, c) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, *c)
		}
	}
}

// commandVariants is how many different values setNonZero tries for each
// field (its lists of values wrap around).
const commandVariants = 6

// setNonZero sets v to a non-zero value for its type: the variant-th of a
// few (wrapping around), with seed telling fields apart. Lists are filled
// element by element and structs field by field, recursively. It reports
// false for a type it does not know, which is also a type the codec in
// command.go has never had to handle.
func setNonZero(v reflect.Value, variant, seed int) bool {
	if !v.CanSet() {
		return false // an unexported field: not settable, so not testable
	}
	// Named enums take a valid value, not just any non-zero byte.
	switch v.Type() {
	case reflect.TypeFor[Op]():
		ops := []Op{OpRegister, opCount - 1, OpSend}
		v.Set(reflect.ValueOf(ops[variant%len(ops)]))
		return true
	case reflect.TypeFor[GroupAddPolicy]():
		gs := []GroupAddPolicy{GroupAddEveryone, GroupAddContacts, GroupAddNobody}
		v.Set(reflect.ValueOf(gs[variant%len(gs)]))
		return true
	}
	switch v.Kind() {
	case reflect.Uint64:
		vals := []uint64{uint64(1000 + seed), 1, 127, 128, 1 << 52, math.MaxUint64}
		v.SetUint(vals[variant%len(vals)])
	case reflect.Int64:
		vals := []int64{-1, int64(1000 + seed), -(1 << 40), math.MinInt64, 1 << 52, math.MaxInt64}
		v.SetInt(vals[variant%len(vals)])
	case reflect.Bool:
		v.SetBool(true)
	case reflect.String:
		vals := []string{
			fmt.Sprintf("s-%d", seed), "é", "héllo ✓ 名前 🙂",
			strings.Repeat("x", 31), strings.Repeat("é", 128), strings.Repeat("✓", 22000), // 31 bytes: largest fixstr; 256: str16; 66000: str32
		}
		v.SetString(vals[variant%len(vals)])
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 { // []byte
			vals := [][]byte{{byte(seed)}, {0}, {0, 0xff}, bytes.Repeat([]byte{0xff, 0}, 16), make([]byte, 255), bytes.Repeat([]byte{7}, 70000)}
			v.SetBytes(bytes.Clone(vals[variant%len(vals)]))
			return true
		}
		n := []int{1, 2, 3, 15, 16, 17}[variant%commandVariants]
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			if !setNonZero(s.Index(i), variant+i, seed+i) {
				return false
			}
		}
		v.Set(s)
	case reflect.Struct:
		for i := range v.NumField() {
			if !setNonZero(v.Field(i), variant+i, seed*16+i) {
				return false
			}
		}
	case reflect.Pointer: // to a struct of fields, set as a struct is
		p := reflect.New(v.Type().Elem())
		if !setNonZero(p.Elem(), variant, seed) {
			return false
		}
		v.Set(p)
	default:
		return false
	}
	return true
}

// commandKeys reads the msgpack map of an encoded command on its own: it
// counts the key/value pairs actually present, compares them with the map
// header (the encoder's count() against its put() calls), and returns the
// keys, which must be distinct.
func commandKeys(t *testing.T, b []byte) []string {
	t.Helper()
	if len(b) == 0 || b[0] != commandVersion {
		t.Fatalf("encoded command % x does not start with version %d", b, commandVersion)
	}
	r := bytes.NewReader(b[1:])
	dec := msgpack.NewDecoder(r)
	n, err := dec.DecodeMapLen()
	if err != nil {
		t.Fatalf("map header: %v", err)
	}
	var keys []string
	for r.Len() > 0 {
		k, err := dec.DecodeString()
		if err != nil {
			t.Fatalf("key %d of map (header says %d): %v", len(keys), n, err)
		}
		if slices.Contains(keys, k) {
			t.Fatalf("key %q encoded twice", k)
		}
		if err := dec.Skip(); err != nil {
			t.Fatalf("value of key %q: %v", k, err)
		}
		keys = append(keys, k)
	}
	if len(keys) != n {
		t.Fatalf("map header says %d keys, %d present (%q): count() and put() disagree", n, len(keys), keys)
	}
	return keys
}

// TestCommandEveryField sets the fields of Command by reflection, one at a
// time and then all together, so a field that command.go forgets to
// encode or decode fails here by name instead of vanishing from the Raft
// log.
func TestCommandEveryField(t *testing.T) {
	typ := reflect.TypeFor[Command]()
	roundTrip := func(what string, c *Command) []string {
		t.Helper()
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("%s: encode: %v", what, err)
		}
		keys := commandKeys(t, b) // before decoding, whose errors say less
		var got Command
		if err := DecodeCommand(b, &got); err != nil {
			t.Fatalf("%s: decode: %v", what, err)
		}
		want, gotV := reflect.ValueOf(c).Elem(), reflect.ValueOf(&got).Elem()
		for i := range typ.NumField() {
			if w, g := want.Field(i).Interface(), gotV.Field(i).Interface(); !reflect.DeepEqual(w, g) {
				t.Errorf("%s: field %s: encoded %#v, decoded %#v (is it in encodeCommand and decodeCommand?)",
					what, typ.Field(i).Name, w, g)
			}
		}
		if !t.Failed() && !reflect.DeepEqual(&got, c) {
			t.Errorf("%s: round trip:\n got %+v\nwant %+v", what, got, *c)
		}
		if t.Failed() {
			t.FailNow()
		}
		return keys
	}

	if keys := roundTrip("zero command", &Command{}); !slices.Equal(keys, []string{keyOp}) {
		t.Fatalf("zero command encodes keys %q, want only %q", keys, keyOp)
	}

	keyOf := map[string]string{} // field name -> its key in the map
	for variant := range commandVariants {
		var all Command
		allV := reflect.ValueOf(&all).Elem()
		for i := range typ.NumField() {
			sf := typ.Field(i)
			if !sf.IsExported() {
				t.Fatalf("field %s is unexported: the codec and this test only handle exported fields", sf.Name)
			}
			var c Command
			if !setNonZero(reflect.ValueOf(&c).Elem().Field(i), variant, i) {
				t.Fatalf("field %s: type %s is new to this test (and to command.go's codec): teach both", sf.Name, sf.Type)
			}
			if reflect.ValueOf(c).Field(i).IsZero() {
				t.Fatalf("field %s: setNonZero left it zero", sf.Name)
			}
			what := fmt.Sprintf("only %s set (variant %d)", sf.Name, variant)
			keys := roundTrip(what, &c)
			// Op is always encoded; any other field adds exactly one key.
			var own []string
			for _, k := range keys {
				if k != keyOp {
					own = append(own, k)
				}
			}
			switch {
			case !slices.Contains(keys, keyOp):
				t.Fatalf("%s: keys %q lack %q", what, keys, keyOp)
			case sf.Name == "Op" && len(own) == 0:
				keyOf[sf.Name] = keyOp
			case sf.Name != "Op" && len(own) == 1:
				if prev, ok := keyOf[sf.Name]; ok && prev != own[0] {
					t.Fatalf("%s: key %q, earlier %q", what, own[0], prev)
				}
				keyOf[sf.Name] = own[0]
			default:
				t.Fatalf("%s: encoded keys %q, want %q and one key of its own", what, keys, keyOp)
			}
			setNonZero(allV.Field(i), variant, i)
		}
		keys := roundTrip(fmt.Sprintf("every field set (variant %d)", variant), &all)
		if len(keys) != typ.NumField() {
			t.Fatalf("every field set: %d keys %q for %d fields", len(keys), keys, typ.NumField())
		}
	}
	// Every field has a key of its own: two sharing one would overwrite
	// each other in a command that sets both.
	fieldOf := map[string]string{}
	for f, k := range keyOf {
		if g, ok := fieldOf[k]; ok {
			t.Fatalf("fields %s and %s share the key %q", f, g, k)
		}
		fieldOf[k] = f
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	good, _ := EncodeCommand(&Command{Op: OpSend, User: 1, Members: []uint64{1, 2, 3}, Body: "x"})
	mapWith := func(key string, v any) []byte {
		var buf bytes.Buffer
		buf.WriteByte(commandVersion)
		enc := msgpack.NewEncoder(&buf)
		_ = enc.EncodeMapLen(1)
		_ = enc.EncodeString(key)
		_ = enc.Encode(v)
		return buf.Bytes()
	}
	cases := map[string][]byte{
		"empty":          nil,
		"version":        append([]byte{9}, good[1:]...),
		"truncated":      good[:len(good)-1],
		"trailing":       append(append([]byte{}, good...), 0xc0),
		"not a map":      {commandVersion, 0x93, 1, 2, 3},
		"nil map":        {commandVersion, 0xc0},
		"wrong type":     mapWith(keyUser, "one"),
		"op overflow":    mapWith(keyOp, 300),
		"huge list":      {commandVersion, 0x81, 0xa2, 'm', 's', 0xdd, 0xff, 0xff, 0xff, 0xff, 1},
		"list of string": mapWith(keyMembers, []string{"a"}),
		"too many items": mapWith(keyItems, make([][3]uint64, MaxReceiptItems+1)),
		"short item":     mapWith(keyItems, [][]uint64{{1, 2}}),
		"long item":      mapWith(keyItems, [][]uint64{{1, 2, 3, 4}}),
		"item of string": mapWith(keyItems, [][]string{{"a", "b", "c"}}),
		"items not list": mapWith(keyItems, 5),
		"huge items":     {commandVersion, 0x81, 0xa2, 'r', 'i', 0xdd, 0, 0, 0x03, 0xe8, 0x93, 1, 2, 3},
		"ts of string":   mapWith(keyTs, "now"),
		"hide not bool":  mapWith(keyHideLastSeen, 1),
		"group add over": mapWith(keyGroupAdd, 256),
		"group add str":  mapWith(keyGroupAdd, "nobody"),
	}
	for name, b := range cases {
		var c Command
		if err := DecodeCommand(b, &c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: got %v, want ErrBadCommand", name, err)
		}
	}
	// Unknown keys are skipped: a newer proposer may add fields.
	var c Command
	if err := DecodeCommand(mapWith("future", map[string]int{"x": 1}), &c); err != nil || !reflect.DeepEqual(c, Command{}) {
		t.Fatalf("unknown key: %+v, %v", c, err)
	}
}

// FuzzDecodeCommand: any input decodes or fails cleanly, and whatever
// decodes re-encodes to the same command.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{commandVersion, 0x81, 0xa2, 'm', 's', 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{commandVersion, 0x81, 0xa2, 'r', 'i', 0xdd, 0, 0, 0x03, 0xe8, 0x93, 1, 2, 3})
	f.Add([]byte{commandVersion, 0x81, 0xa2, 'r', 'i', 0x91, 0x92, 1, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Command
		if err := DecodeCommand(b, &c); err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			return
		}
		enc, err := EncodeCommand(&c)
		if err != nil {
			t.Fatal(err)
		}
		var again Command
		if err := DecodeCommand(enc, &again); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("re-encoding changed the command:\n%+v\n%+v", c, again)
		}
	})
}

var sampleEvents = []Event{
	{Conv: 1, Seq: 1, Index: 2, Ts: 1_700_000_000_000, Kind: EventCreated, From: 1, Users: []uint64{2, 3}, Name: "team"},
	{Conv: 1, Seq: 2, Index: 9, Ts: -5, Kind: EventMessage, From: 1, Device: 4, ClientMsgID: "c", Body: "hé", ReplyTo: 1},
	{Conv: 1, Seq: 3, Index: 10, Kind: EventAdminChanged, From: 1, Users: []uint64{2}, Admin: true},
	{Conv: 1, Seq: 4, Index: 11, Kind: EventMemberRemoved, From: 1, Users: []uint64{1 << 52}},
	{Conv: 1, Seq: 5, Index: 12, Kind: EventMemberLeft, From: 2, Users: []uint64{2}},
	{Conv: 1, Seq: 6, Index: 13, Kind: EventRenamed, From: 3, Name: strings.Repeat("n", 64)},
	{Conv: 1, Seq: 7, Index: 14, Kind: EventMemberAdded, From: 3, Users: []uint64{5, 6}},
}

func TestEventRoundTrip(t *testing.T) {
	for _, ev := range sampleEvents {
		b := appendEvent(nil, &ev)
		var got Event
		if err := decodeEvent(ev.Conv, ev.Seq, b, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, ev) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, ev)
		}
		for i := range b { // every truncation is an error, never a panic
			if err := decodeEvent(ev.Conv, ev.Seq, b[:i], &got); err == nil {
				t.Fatalf("%s truncated to %d bytes decoded", ev.Kind, i)
			}
		}
	}
}

// FuzzDecodeEvent: stored events are ours, but a corrupt record must come
// back as an error (queries answer ErrCodeInternal), not a panic or a huge
// allocation.
func FuzzDecodeEvent(f *testing.F) {
	for _, ev := range sampleEvents {
		f.Add(appendEvent(nil, &ev))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if err := decodeEvent(1, 1, b, &ev); err != nil {
			return
		}
		if again := appendEvent(nil, &ev); !bytes.Equal(again, b) {
			// Varints have one canonical form as written; a decoder that
			// accepts others is fine as long as the result is stable.
			var ev2 Event
			if err := decodeEvent(1, 1, again, &ev2); err != nil || !reflect.DeepEqual(ev, ev2) {
				t.Fatalf("unstable decode: %+v vs %+v (%v)", ev, ev2, err)
			}
		}
	})
}
