package netpoll

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// testMaskKey is the mask test clients use; any key works.
var testMaskKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame builds a masked client frame.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	return rawFrame(b0, true, uint64(len(payload)), payload)
}

// rawFrame builds a frame with any first byte, mask bit and declared length.
func rawFrame(b0 byte, masked bool, length uint64, payload []byte) []byte {
	var b []byte
	maskBit := byte(0)
	if masked {
		maskBit = 0x80
	}
	switch {
	case length < 126:
		b = append(b, b0, maskBit|byte(length))
	case length <= 0xFFFF:
		b = append(b, b0, maskBit|126, byte(length>>8), byte(length))
	default:
		b = append(b, b0, maskBit|127)
		b = binary.BigEndian.AppendUint64(b, length)
	}
	if masked {
		b = append(b, testMaskKey[:]...)
		start := len(b)
		b = append(b, payload...)
		maskBytes(testMaskKey, b[start:])
	} else {
		b = append(b, payload...)
	}
	return b
}

func closePayload(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// recorder is a frameSink that logs what it gets and, like a connection,
// stops at a close frame.
type recorder struct {
	events  []string
	stopped bool
}

func (r *recorder) onMessage(binary bool, payload []byte) bool {
	kind := "text"
	if binary {
		kind = "binary"
	}
	r.events = append(r.events, fmt.Sprintf("%s:%q", kind, payload))
	return true
}

func (r *recorder) onControl(op byte, payload []byte) bool {
	r.events = append(r.events, fmt.Sprintf("op%d:%q", op, payload))
	if op == opClose {
		r.stopped = true
		return false
	}
	return true
}

// decodeOutcome is what feeding a whole input produced.
type decodeOutcome struct {
	events []string
	frames int
	code   uint16 // close code of the protocol error, 0 if none
}

// decodePieces feeds input cut at the given offsets, stopping at an error
// or a close frame as a connection does. The input is copied first
// because the decoder unmasks in place.
func decodePieces(input []byte, limit int, cuts ...int) decodeOutcome {
	data := bytes.Clone(input)
	var d decoder
	defer d.release()
	var rec recorder
	var out decodeOutcome
	prev := 0
	for _, end := range append(cuts, len(data)) {
		frames, err := d.feed(data[prev:end], limit, &rec)
		out.frames += frames
		prev = end
		if err != nil {
			out.code = err.Code
			break
		}
		if rec.stopped {
			break
		}
	}
	out.events = rec.events
	return out
}

func TestDecoder(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 70000)
	mid := bytes.Repeat([]byte("y"), 300)
	tests := []struct {
		name   string
		limit  int
		input  []byte
		events []string
		code   uint16
	}{
		{name: "text", input: clientFrame(true, opText, []byte("hello")), events: []string{`text:"hello"`}},
		{name: "empty binary", input: clientFrame(true, opBinary, nil), events: []string{`binary:""`}},
		{name: "16-bit length", input: clientFrame(true, opBinary, mid), events: []string{fmt.Sprintf("binary:%q", mid)}},
		{name: "64-bit length", limit: 100000, input: clientFrame(true, opBinary, big), events: []string{fmt.Sprintf("binary:%q", big)}},
		{name: "two frames", input: concat(clientFrame(true, opText, []byte("a")), clientFrame(true, opBinary, []byte("b"))),
			events: []string{`text:"a"`, `binary:"b"`}},
		{name: "fragments with ping between", input: concat(
			clientFrame(false, opText, []byte("Hel")),
			clientFrame(false, opContinuation, []byte("lo ")),
			clientFrame(true, opPing, []byte("p")),
			clientFrame(true, opContinuation, []byte("world"))),
			events: []string{`op9:"p"`, `text:"Hello world"`}},
		{name: "rune split across fragments", input: concat(
			clientFrame(false, opText, []byte("caf\xc3")),
			clientFrame(true, opContinuation, []byte("\xa9"))),
			events: []string{`text:"café"`}},
		{name: "pong", input: clientFrame(true, opPong, []byte("x")), events: []string{`op10:"x"`}},
		{name: "close with code", input: concat(clientFrame(true, opClose, closePayload(1000, "bye")), clientFrame(true, opText, []byte("after"))),
			events: []string{`op8:"\x03\xe8bye"`}},
		{name: "empty close", input: clientFrame(true, opClose, nil), events: []string{`op8:""`}},
		{name: "close 4000", input: clientFrame(true, opClose, closePayload(4000, "")), events: []string{`op8:"\x0f\xa0"`}},

		{name: "unmasked", input: rawFrame(0x80|opText, false, 2, []byte("hi")), code: CloseProtocolError},
		{name: "rsv1", input: rawFrame(0x80|0x40|opText, true, 2, []byte("hi")), code: CloseProtocolError},
		{name: "rsv3", input: rawFrame(0x80|0x10|opBinary, true, 0, nil), code: CloseProtocolError},
		{name: "opcode 3", input: rawFrame(0x80|0x3, true, 0, nil), code: CloseProtocolError},
		{name: "opcode 11", input: rawFrame(0x80|0xB, true, 0, nil), code: CloseProtocolError},
		{name: "ping too large", input: clientFrame(true, opPing, bytes.Repeat([]byte("p"), 126)), code: CloseProtocolError},
		{name: "fragmented ping", input: clientFrame(false, opPing, []byte("p")), code: CloseProtocolError},
		{name: "continuation without start", input: clientFrame(true, opContinuation, []byte("x")), code: CloseProtocolError},
		{name: "new message while fragmented", input: concat(
			clientFrame(false, opText, []byte("a")), clientFrame(true, opText, []byte("b"))), code: CloseProtocolError},
		{name: "invalid utf8", input: clientFrame(true, opText, []byte("bad \xff")), code: CloseInvalidPayload},
		{name: "invalid utf8 fragmented", input: concat(
			clientFrame(false, opText, []byte("ok")), clientFrame(true, opContinuation, []byte("\xc3("))), code: CloseInvalidPayload},
		{name: "oversize frame", limit: 1000, input: clientFrame(true, opBinary, bytes.Repeat([]byte("z"), 1001)), code: CloseMessageTooBig},
		{name: "oversize by header alone", limit: 1000, input: rawFrame(0x80|opBinary, true, 1<<40, nil), code: CloseMessageTooBig},
		{name: "oversize reassembled", limit: 1000, input: concat(
			clientFrame(false, opBinary, bytes.Repeat([]byte("z"), 600)),
			clientFrame(true, opContinuation, bytes.Repeat([]byte("z"), 401))), code: CloseMessageTooBig},
		{name: "length top bit", input: rawFrame(0x80|opBinary, true, 1<<63, nil), code: CloseProtocolError},
		{name: "close one byte", input: clientFrame(true, opClose, []byte{3}), code: CloseProtocolError},
		{name: "close 1005", input: clientFrame(true, opClose, closePayload(1005, "")), code: CloseProtocolError},
		{name: "close 999", input: clientFrame(true, opClose, closePayload(999, "")), code: CloseProtocolError},
		{name: "close 5000", input: clientFrame(true, opClose, closePayload(5000, "")), code: CloseProtocolError},
		{name: "close reason not utf8", input: clientFrame(true, opClose, closePayload(1000, "\xff")), code: CloseInvalidPayload},
		{name: "messages before error", input: concat(clientFrame(true, opText, []byte("ok")), rawFrame(0x80|opText, false, 0, nil)),
			events: []string{`text:"ok"`}, code: CloseProtocolError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := tt.limit
			if limit == 0 {
				limit = DefaultMaxMessageSize
			}
			whole := decodePieces(tt.input, limit)
			if !reflect.DeepEqual(whole.events, tt.events) || whole.code != tt.code {
				t.Fatalf("got events %v code %d, want %v code %d", whole.events, whole.code, tt.events, tt.code)
			}
			// An event loop may deliver the bytes in any pieces.
			step := max(1, len(tt.input)/200)
			for cut := 0; cut <= len(tt.input); cut += step {
				if got := decodePieces(tt.input, limit, cut); !reflect.DeepEqual(got, whole) {
					t.Fatalf("cut at %d: got %+v, want %+v", cut, got, whole)
				}
			}
			if len(tt.input) < 2000 {
				cuts := make([]int, len(tt.input))
				for i := range cuts {
					cuts[i] = i
				}
				if got := decodePieces(tt.input, limit, cuts...); !reflect.DeepEqual(got, whole) {
					t.Fatalf("byte by byte: got %+v, want %+v", got, whole)
				}
			}
		})
	}
}

func TestDecoderReleasesBuffers(t *testing.T) {
	var d decoder
	var rec recorder
	f := concat(clientFrame(false, opText, []byte("ab")), clientFrame(true, opContinuation, []byte("cd")))
	if _, err := d.feed(f[:5], 1000, &rec); err != nil || d.carry == nil {
		t.Fatalf("partial frame: err %v, carry %v", err, d.carry)
	}
	if _, err := d.feed(f[5:], 1000, &rec); err != nil {
		t.Fatal(err)
	}
	if d.carry != nil || d.msg != nil || d.inMsg {
		t.Fatalf("idle decoder holds buffers: carry %v msg %v inMsg %v", d.carry, d.msg, d.inMsg)
	}
	if want := []string{`text:"abcd"`}; !reflect.DeepEqual(rec.events, want) {
		t.Fatalf("events %v, want %v", rec.events, want)
	}
}

func TestDecoderNoAllocWithinBuffer(t *testing.T) {
	frames := concat(
		clientFrame(true, opText, []byte(strings.Repeat("hello ", 20))),
		clientFrame(true, opBinary, bytes.Repeat([]byte{7}, 1000)),
		clientFrame(true, opPing, []byte("p")),
	)
	buf := make([]byte, len(frames))
	var d decoder
	var sink nopSink
	allocs := testing.AllocsPerRun(100, func() {
		copy(buf, frames)
		if _, err := d.feed(buf, DefaultMaxMessageSize, &sink); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("decoding whole frames allocated %v times per run", allocs)
	}
}

type nopSink struct{ n int }

func (s *nopSink) onMessage(bool, []byte) bool { s.n++; return true }
func (s *nopSink) onControl(byte, []byte) bool { s.n++; return true }

func TestMaskBytes(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for n := range 40 {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i * 7)
		}
		want := bytes.Clone(data)
		for i := range want {
			want[i] ^= key[i%4]
		}
		got := bytes.Clone(data)
		maskBytes(key, got)
		if !bytes.Equal(got, want) {
			t.Fatalf("n=%d: got %x want %x", n, got, want)
		}
	}
}

func TestPrepareFrames(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536, 200000} {
		payload := bytes.Repeat([]byte{'a'}, n)
		for _, tc := range []struct {
			op      byte
			prepare func([]byte) []byte
		}{{opBinary, PrepareBinary}, {opText, PrepareText}} {
			f := tc.prepare(payload)
			if f[0] != 0x80|tc.op {
				t.Fatalf("n=%d: first byte %#x", n, f[0])
			}
			if f[1]&0x80 != 0 {
				t.Fatalf("n=%d: server frame is masked", n)
			}
			hl := frameHeaderLen(n)
			var got uint64
			switch f[1] {
			case 126:
				got = uint64(binary.BigEndian.Uint16(f[2:4]))
			case 127:
				got = binary.BigEndian.Uint64(f[2:10])
			default:
				got = uint64(f[1])
			}
			if got != uint64(n) || len(f) != hl+n || !bytes.Equal(f[hl:], payload) {
				t.Fatalf("n=%d: length field %d, frame %d bytes, header %d", n, got, len(f), hl)
			}
		}
	}
}

func TestBinaryFrameInPlace(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 200000} {
		payload := bytes.Repeat([]byte{'p'}, n)
		b := append(make([]byte, FrameHeadroom, FrameHeadroom+n), payload...)
		if got, want := BinaryFrameInPlace(b), PrepareBinary(payload); !bytes.Equal(got, want) {
			t.Fatalf("n=%d: %x… want %x…", n, got[:min(len(got), 12)], want[:min(len(want), 12)])
		}
	}
	if n := testing.AllocsPerRun(10, func() {
		b := append(make([]byte, FrameHeadroom, 64), "payload"...)
		BinaryFrameInPlace(b)
	}); n > 1 {
		t.Fatalf("%v allocations, want the buffer's one", n)
	}
}

func TestCloseFrameCutsReason(t *testing.T) {
	reason := strings.Repeat("é", 100) // 200 bytes
	f := closeFrame(4000, reason)
	if int(f[1]) != len(f)-2 || f[1] > 125 {
		t.Fatalf("close frame length byte %d for %d bytes", f[1], len(f))
	}
	var rec recorder
	var d decoder
	// Feed it back as if a client sent it: mask it first.
	masked := clientFrame(true, opClose, f[2:])
	if _, err := d.feed(masked, 1000, &rec); err != nil {
		t.Fatalf("cut reason is not a valid close payload: %v", err)
	}
}

// FuzzFrameDecoder checks that any input decodes the same however an event
// loop cuts it, and never panics or delivers more than the limit.
func FuzzFrameDecoder(f *testing.F) {
	f.Add(clientFrame(true, opText, []byte("hello")))
	f.Add(concat(clientFrame(false, opText, []byte("a")), clientFrame(true, opPing, nil), clientFrame(true, opContinuation, []byte("b"))))
	f.Add(clientFrame(true, opClose, closePayload(1000, "x")))
	f.Add(rawFrame(0x82, true, 300, bytes.Repeat([]byte{1}, 300)))
	f.Add(rawFrame(0x82, true, 1<<16, nil))
	f.Add(rawFrame(0x81, false, 1, []byte("a")))
	const limit = 512
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) > 4096 {
			return
		}
		whole := decodePieces(input, limit)
		for _, ev := range whole.events {
			if len(ev) > 4*limit+20 {
				t.Fatalf("event over the limit: %d bytes", len(ev))
			}
		}
		for cut := 0; cut <= len(input); cut++ {
			if got := decodePieces(input, limit, cut); !reflect.DeepEqual(got, whole) {
				t.Fatalf("cut at %d: got %+v, want %+v", cut, got, whole)
			}
		}
		if len(input) <= 256 {
			cuts := make([]int, len(input))
			for i := range cuts {
				cuts[i] = i
			}
			if got := decodePieces(input, limit, cuts...); !reflect.DeepEqual(got, whole) {
				t.Fatalf("byte by byte: got %+v, want %+v", got, whole)
			}
		}
	})
}
