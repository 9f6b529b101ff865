package wire

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// The hand-written encoders must write exactly what msgpack/v5 writes for
// the same struct, and what they write must decode to the value encoded.

// fill sets every field of the struct v points to, recursively, to a
// random value: zero about a third of the time (so that omitempty is
// exercised), and strings and lists of lengths around every msgpack size
// boundary.
func fill(r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if r.IntN(3) == 0 {
			v.SetZero()
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fill(r, v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			fill(r, v.Field(i))
		}
	case reflect.String:
		lengths := []int{0, 0, 1, 5, 31, 32, 255, 256}
		n := lengths[r.IntN(len(lengths))]
		if r.IntN(64) == 0 {
			n = 65535 + r.IntN(2) // str16 and str32
		}
		v.SetString(strings.Repeat("é", n/2) + "x"[:n%2])
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Uint64:
		vals := []uint64{0, 0, 1, 127, 128, 255, 256, 1 << 16, 1 << 32, MaxSafeInteger, r.Uint64()}
		v.SetUint(vals[r.IntN(len(vals))])
	case reflect.Int, reflect.Int64:
		vals := []int64{0, 0, 1, -1, -33, 1 << 40, -(1 << 40), r.Int64()}
		v.SetInt(vals[r.IntN(len(vals))])
	case reflect.Slice:
		switch r.IntN(4) {
		case 0:
			v.SetZero() // nil
			return
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0)) // empty, not nil
			return
		}
		lengths := []int{1, 2, 15, 16, 17}
		n := lengths[r.IntN(len(lengths))]
		switch v.Type().Elem().Kind() {
		case reflect.Uint64:
			if r.IntN(64) == 0 {
				n = 65536 // array32
			}
		case reflect.Struct: // nested lists of structs: keep the value small
			if n > 2 && r.IntN(8) != 0 {
				n = 1 + r.IntN(2)
			}
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(r, s.Index(i))
		}
		v.Set(s)
	default:
		panic("fill: unhandled kind " + v.Kind().String())
	}
}

// normalize makes empty slices nil, recursively, since msgpack cannot tell
// an omitted empty list from a nil one.
func normalize(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			normalize(v.Elem())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			normalize(v.Field(i))
		}
	case reflect.Slice:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		for i := range v.Len() {
			normalize(v.Index(i))
		}
	}
}

// checkEncoder compares enc against msgpack.Marshal on random values of T.
func checkEncoder[T any](t *testing.T, enc func([]byte, *T) []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		v := new(T)
		fill(r, reflect.ValueOf(v).Elem())
		want, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("prefix")
		got := enc(bytes.Clone(prefix), v)
		if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], want) {
			got := got[len(prefix):]
			at := 0
			for at < min(len(got), len(want)) && got[at] == want[at] {
				at++
			}
			lo := max(0, at-16)
			t.Fatalf("value %d: %d bytes, msgpack %d; first difference at %d:\nmsgpack: …%x\nours:    …%x",
				i, len(got), len(want), at, want[lo:min(len(want), at+16)], got[lo:min(len(got), at+16)])
		}
		// Round trip: what we wrote decodes to what we encoded.
		back := new(T)
		if err := msgpack.Unmarshal(got[len(prefix):], back); err != nil {
			t.Fatalf("value %d: decode: %v", i, err)
		}
		normalize(reflect.ValueOf(v))
		normalize(reflect.ValueOf(back))
		if !reflect.DeepEqual(v, back) {
			t.Fatalf("value %d: round trip changed the value", i)
		}
	}
}

func TestAppendEventMatchesMsgpack(t *testing.T)   { checkEncoder(t, AppendEvent) }
func TestAppendReplyMatchesMsgpack(t *testing.T)   { checkEncoder(t, AppendReply) }
func TestAppendReceiptMatchesMsgpack(t *testing.T) { checkEncoder(t, AppendReceipt) }
func TestAppendTypingMatchesMsgpack(t *testing.T)  { checkEncoder(t, AppendTyping) }
func TestAppendPresenceMatchesMsgpack(t *testing.T) {
	checkEncoder(t, AppendPresence)
}
func TestAppendReadCountsMatchesMsgpack(t *testing.T) { checkEncoder(t, AppendReadCounts) }

// TestMarshalUsesTheEncoders: Marshal's output for the hand-encoded types
// is msgpack's, and other types still go through msgpack.
func TestMarshalUsesTheEncoders(t *testing.T) {
	for _, v := range []any{
		&Event{Type: TypeEvent, Conv: 1, Seq: 2, Kind: KindMessage, Body: "hi"},
		&Reply{Type: TypeOK, ID: 3, ClientMsgID: "c", Conv: 1, Seq: 2, Ts: 5, Index: 9},
		ErrorReply(4, Errorf(CodeBusy, "slow down")),
		&Receipt{Type: TypeReceiptEvent, Conv: 1, User: 2, Read: 3},
		&ReadCounts{Type: TypeReadCountsEvent, Conv: 1, Items: []ReadCount{{Seq: 1, Read: 2}}},
		&Typing{Type: TypeTypingEvent, Conv: 1, User: 2, On: true, TTLms: 6000},
		&Presence{Type: TypePresenceEvent, User: 2, Online: true},
		&Hello{Type: TypeHello, Protocol: 1, Limits: Limits{RatePerSecond: 1.5}},
		&Request{Type: TypeSend, ID: 1, Conv: 2, ClientMsgID: "c", Body: "b"},
		(*Event)(nil), (*Reply)(nil),
	} {
		got, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if want := mustMarshal(t, v); !bytes.Equal(got, want) {
			t.Fatalf("%T: %x, msgpack %x", v, got, want)
		}
	}
}

func TestAppendEventAllocatesNothing(t *testing.T) {
	ev := &Event{Type: TypeEvent, Conv: 1, Seq: 2, Index: 3, Ts: 4, Kind: KindMessage, From: 5, Device: 6,
		ClientMsgID: "c-1", Body: strings.Repeat("b", 100), Users: []uint64{1, 2}}
	r := &Reply{Type: TypeOK, ID: 3, ClientMsgID: "c", Conv: 1, Seq: 2, Ts: 5, Index: 9}
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendEvent(buf[:0], ev)
		buf = AppendReply(buf[:0], r)
	}); n != 0 {
		t.Fatalf("%v allocations", n)
	}
	if len(AppendEvent(nil, ev)) > EventSize(ev) {
		t.Fatal("EventSize is short")
	}
}

// FuzzAppendEvent compares AppendEvent with msgpack on events built from
// fuzzed fields.
func FuzzAppendEvent(f *testing.F) {
	f.Add("ev", uint64(1), uint64(2), int64(3), "message", "c-1", "hello", []byte{1, 2}, false)
	f.Add("", uint64(0), uint64(1<<40), int64(-1), "", "", strings.Repeat("x", 300), []byte(nil), true)
	f.Fuzz(func(t *testing.T, typ string, conv, seq uint64, ts int64, kind, cmid, body string, users []byte, admin bool) {
		ev := &Event{Type: typ, Conv: conv, Seq: seq, Index: seq ^ conv, Ts: ts, Kind: kind, From: conv + 1,
			Device: seq >> 3, ClientMsgID: cmid, Body: body, ReplyTo: conv >> 1, Name: cmid + kind, Admin: admin}
		for _, u := range users {
			ev.Users = append(ev.Users, uint64(u)*seq)
		}
		want := mustMarshal(t, ev)
		if got := AppendEvent(nil, ev); !bytes.Equal(got, want) {
			t.Fatalf("%+v\nmsgpack %x\nours    %x", ev, want, got)
		}
	})
}

// BenchmarkEncodeEvent: a message event frame, by msgpack and by hand.
func BenchmarkEncodeEvent(b *testing.B) {
	ev := &Event{Type: TypeEvent, Conv: 42, Seq: 1234, Index: 98765, Ts: 1_790_000_000_000, Kind: KindMessage,
		From: 7, Device: 9, ClientMsgID: "0123456789abcdef", Body: strings.Repeat("b", 100)}
	b.Run("msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := msgpack.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = AppendEvent(buf[:0], ev)
		}
	})
}

// BenchmarkEncodeReply: the ack of a send, by msgpack and by hand.
func BenchmarkEncodeReply(b *testing.B) {
	r := &Reply{Type: TypeOK, ID: 77, ClientMsgID: "0123456789abcdef", Conv: 42, Seq: 1234, Ts: 1_790_000_000_000, Index: 98765}
	b.Run("msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := msgpack.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = AppendReply(buf[:0], r)
		}
	})
}
