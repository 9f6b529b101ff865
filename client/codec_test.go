package client

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"parley/wire"
)

// fillScalars sets the exported scalar fields of the struct v points to
// (those named in only, or all of them) to random values, zero a third of
// the time (so omitempty is exercised), and leaves slices and pointers
// alone.
func fillScalars(rng *rand.Rand, v any, only ...string) {
	s := reflect.ValueOf(v).Elem()
	lengths := []int{1, 5, 31, 32, 255, 256, 65535, 65536}
	for i := range s.NumField() {
		f := s.Field(i)
		if !f.CanSet() || rng.IntN(3) == 0 || (only != nil && !slices.Contains(only, s.Type().Field(i).Name)) {
			continue
		}
		switch f.Kind() {
		case reflect.String:
			f.SetString(strings.Repeat("é", lengths[rng.IntN(len(lengths))]/2+1))
		case reflect.Uint64:
			f.SetUint([]uint64{1, 127, 128, 1 << 40, 1<<64 - 1}[rng.IntN(5)])
		case reflect.Int, reflect.Int64:
			f.SetInt([]int64{1, -1, -33, 127, 128, -200, 70000, -70000, 1 << 33, -(1 << 40)}[rng.IntN(10)])
		case reflect.Bool:
			f.SetBool(true)
		}
	}
}

// The hand-written request encoder writes what msgpack/v5 writes.
func TestAppendRequestIsMsgpack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		var r wire.Request
		fillScalars(rng, &r)
		got, ok := wire.AppendRequest(nil, &r)
		want, err := msgpack.Marshal(&r)
		if !ok || err != nil || !bytes.Equal(got, want) {
			t.Fatalf("request:\n got %x (%v)\nwant %x (%v)", got[:min(len(got), 200)], ok, want[:min(len(want), 200)], err)
		}
	}
	for _, r := range []wire.Request{{Users: []uint64{1}}, {Att: []wire.Attachment{{ID: "m"}}}} {
		if _, ok := wire.AppendRequest(nil, &r); ok {
			t.Errorf("encoded %+v by hand", r)
		}
		got, err := marshalRequest(&r)
		want, _ := msgpack.Marshal(&r)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("marshalRequest(%+v) = %x, %v; want %x", r, got, err, want)
		}
	}
}

// The fast decoders agree with wire.Unmarshal on the frames the server
// writes, and leave the others to it.
func TestFastDecodersAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		var rep wire.Reply
		fillScalars(rng, &rep, "Type", "ID", "Code", "Message", "RetryMS", "ClientMsgID", "Conv", "Seq", "Ts", "Index", "Duplicate")
		b := wire.AppendReply(nil, &rep)
		if !fastReply(b, new(wire.Reply)) {
			t.Fatalf("reply frame %x not decoded by hand", b[:min(len(b), 64)])
		}
		checkDecoded(t, b, new(wire.Reply), decodeReply)

		var ev wire.Event
		fillScalars(rng, &ev, "Type", "Conv", "Seq", "Index", "Ts", "Kind", "From", "Device", "ClientMsgID", "Body",
			"ReplyTo", "Name", "Admin", "Target", "Deleted")
		b = wire.AppendEvent(nil, &ev)
		if !fastEvent(b, new(wire.Event)) {
			t.Fatalf("event frame %x not decoded by hand", b[:min(len(b), 64)])
		}
		checkDecoded(t, b, new(wire.Event), decodeEvent)
		checkScanned(t, b)

		// Any other field leaves the frame to msgpack, with the same result.
		rep = wire.Reply{}
		fillScalars(rng, &rep)
		checkDecoded(t, wire.AppendReply(nil, &rep), new(wire.Reply), decodeReply)
	}

	// Fields with containers go to msgpack, and come out the same.
	rep := wire.Reply{Type: wire.TypeOK, ID: 7, Info: &wire.ConvInfo{ID: 3, Kind: "direct", Members: []uint64{1, 2}}}
	b := wire.AppendReply(nil, &rep)
	if fastReply(b, new(wire.Reply)) {
		t.Fatal("a reply with info decoded by hand")
	}
	var got wire.Reply
	checkDecoded(t, b, &got, decodeReply)
	ev := wire.Event{Type: wire.TypeEvent, Conv: 1, Seq: 2, Kind: "joined", Users: []uint64{4, 5}}
	b = wire.AppendEvent(nil, &ev)
	if fastEvent(b, new(wire.Event)) {
		t.Fatal("an event with users decoded by hand")
	}
	var gotEv wire.Event
	checkDecoded(t, b, &gotEv, decodeEvent)
}

// Frames another encoder could write: compact and signed integers, nil
// values, map16, unknown keys, broken frames.
func TestFastDecodersOddFrames(t *testing.T) {
	enc := func(m map[string]any) []byte {
		var buf bytes.Buffer
		e := msgpack.NewEncoder(&buf)
		e.UseCompactInts(true)
		e.SetSortMapKeys(true)
		if err := e.Encode(m); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	frames := [][]byte{
		enc(map[string]any{"t": "ok", "id": 5, "idx": int64(300), "seq": int8(4), "ts": -7, "dup": true}),
		enc(map[string]any{"t": "ok", "id": nil, "code": nil, "msg": nil, "dup": nil, "ts": nil}),
		enc(map[string]any{"t": "ok", "id": -1}),
		enc(map[string]any{"t": "ok", "id": 1.5}),
		enc(map[string]any{"t": "ok", "id": 1, "more_stuff": []int{1}}),
		enc(map[string]any{"t": "ev", "conv": uint16(9), "seq": int32(70000), "kind": "message", "body": "x", "admin": false}),
		enc(map[string]any{"t": "ev", "ts": uint64(1 << 63)}),
		enc(map[string]any{"t": []byte("ok")}),
		{0xde, 0x00, 0x01, 0xa1, 't', 0xa2, 'o', 'k'},
		{0x81, 0xa1, 't'},
		{0x81},
		{0x91, 0x01},
		{},
	}
	for _, b := range frames {
		checkDecoded(t, b, new(wire.Reply), decodeReply)
		checkDecoded(t, b, new(wire.Event), decodeEvent)
	}
}

// checkDecoded decodes b with decode into got and with wire.Unmarshal, and
// fails unless both succeed with equal values or both fail.
func checkDecoded[T any](t *testing.T, b []byte, got *T, decode func([]byte, *T) error) {
	t.Helper()
	var zero T
	*got = zero
	err := decode(b, got)
	var want T
	werr := wire.Unmarshal(b, &want)
	if (err == nil) != (werr == nil) || (err == nil && !reflect.DeepEqual(*got, want)) {
		t.Fatalf("frame %x:\n got %.300v (%v)\nwant %.300v (%v)", b[:min(len(b), 200)], fmt.Sprintf("%+v", *got), err, fmt.Sprintf("%+v", want), werr)
	}
}

func FuzzFastDecoders(f *testing.F) {
	f.Add(wire.AppendReply(nil, &wire.Reply{Type: wire.TypeOK, ID: 3, Conv: 4, Seq: 5, Index: 6, Ts: -1, Duplicate: true}))
	f.Add(wire.AppendReply(nil, &wire.Reply{Type: wire.TypeError, ID: 3, Code: wire.CodeRateLimited, Message: "slow"}))
	f.Add(wire.AppendEvent(nil, &wire.Event{Type: wire.TypeEvent, Conv: 1, Seq: 2, Kind: wire.KindMessage, Body: "hi", ClientMsgID: "m1"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecoded(t, b, new(wire.Reply), decodeReply)
		checkDecoded(t, b, new(wire.Event), decodeEvent)
		checkScanned(t, b)
	})
}

func BenchmarkDecodeAck(b *testing.B) {
	frame := wire.AppendReply(nil, &wire.Reply{Type: wire.TypeOK, ID: 123456, ClientMsgID: "m42", Conv: 77, Seq: 1234, Ts: 1_700_000_000_000, Index: 987654})
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var rep wire.Reply
			if err := wire.Unmarshal(frame, &rep); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var rep wire.Reply
			if err := decodeReply(frame, &rep); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecodeEvent(b *testing.B) {
	frame := wire.AppendEvent(nil, &wire.Event{Type: wire.TypeEvent, Conv: 77, Seq: 1234, Index: 987654, Ts: 1_700_000_000_000,
		Kind: wire.KindMessage, From: 12, Device: 13, ClientMsgID: "m42", Body: strings.Repeat("x", 100)})
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var ev wire.Event
			if err := wire.Unmarshal(frame, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var ev wire.Event
			if err := decodeEvent(frame, &ev); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkEncodeSend(b *testing.B) {
	req := wire.Request{Type: wire.TypeSend, ID: 123456, Conv: 77, ClientMsgID: "m42", Body: strings.Repeat("x", 100), MinIndex: 987654}
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := wire.Marshal(&req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := marshalRequest(&req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// firstType reads the first key only; handle trusts it only when the fast
// decoder, which reads every "t", ends with the same type (PeekType takes
// the last).
func TestFirstType(t *testing.T) {
	for _, c := range []struct {
		frame []byte
		typ   string
		ok    bool
	}{
		{wire.AppendReply(nil, &wire.Reply{Type: wire.TypeOK, ID: 1}), wire.TypeOK, true},
		{wire.AppendEvent(nil, &wire.Event{Type: wire.TypeEvent, Conv: 1}), wire.TypeEvent, true},
		{wire.AppendEvent(nil, &wire.Event{Conv: 1}), "", false}, // no "t": conv first
		{[]byte{0x82, 0xa1, 't', 0xa2, 'o', 'k', 0xa1, 't', 0xa2, 'e', 'v'}, wire.TypeOK, true},
		{[]byte{0x81, 0xa1, 't', 0xc0}, "", false},
		{[]byte{0x80}, "", false},
		{[]byte{0x91}, "", false},
	} {
		typ, ok := firstType(c.frame)
		if typ != c.typ || ok != c.ok {
			t.Errorf("frame %x: %q %v, want %q %v", c.frame, typ, ok, c.typ, c.ok)
		}
	}
	// Two "t": the fast decoder ends with the last, so handle does not
	// take the first.
	var rep wire.Reply
	b := []byte{0x82, 0xa1, 't', 0xa2, 'o', 'k', 0xa1, 't', 0xa2, 'e', 'v'}
	if fastReply(b, &rep) && rep.Type == wire.TypeOK {
		t.Fatal("the first t taken")
	}
	if typ, err := wire.PeekType(b); err != nil || typ != wire.TypeEvent {
		t.Fatalf("PeekType %q %v", typ, err)
	}
}

// checkScanned fails unless scanEvent without strings accepts b exactly
// when fastEvent does, with the same fields but the strings it leaves out.
func checkScanned(t *testing.T, b []byte) {
	t.Helper()
	var full, scanned wire.Event
	okFull, okScanned := fastEvent(b, &full), scanEvent(b, &scanned, false)
	full.ClientMsgID, full.Body, full.Name = "", "", ""
	if okFull != okScanned || (okFull && !reflect.DeepEqual(full, scanned)) {
		t.Fatalf("frame %x: scanned %v %+v, decoded %v %+v", b[:min(len(b), 200)], okScanned, scanned, okFull, full)
	}
}
