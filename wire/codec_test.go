package wire

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRequestRoundTrip(t *testing.T) {
	in := Request{Type: TypeSend, ID: 7, Conv: 3, ClientMsgID: "c-1", Body: "héllo", ReplyTo: 2}
	var out Request
	if e := DecodeRequest(mustMarshal(t, &in), &out); e != nil {
		t.Fatal(e)
	}
	if out.Type != in.Type || out.ID != 7 || out.Conv != 3 || out.ClientMsgID != "c-1" || out.Body != "héllo" || out.ReplyTo != 2 {
		t.Fatalf("got %+v", out)
	}
}

func TestDecodeRequestIgnoresUnknownKeys(t *testing.T) {
	b := mustMarshal(t, map[string]any{"t": "ping", "id": 1, "future_field": []int{1, 2}})
	var r Request
	if e := DecodeRequest(b, &r); e != nil {
		t.Fatal(e)
	}
	if r.Type != TypePing || r.ID != 1 {
		t.Fatalf("got %+v", r)
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	long := strings.Repeat("x", MaxBodyBytes+1)
	many := make([]uint64, MaxUsersPerRequest+1)
	for i := range many {
		many[i] = uint64(i + 1)
	}
	cases := []struct {
		name  string
		frame []byte
		code  Code
	}{
		{"empty", nil, CodeBadFrame},
		{"not a map", mustMarshal(t, []int{1}), CodeBadFrame},
		{"garbage", []byte{0x81, 0xa1, 't', 0xc1}, CodeBadFrame},
		{"truncated", mustMarshal(t, map[string]any{"t": "ping", "id": 1})[:5], CodeBadFrame},
		{"trailing", append(mustMarshal(t, map[string]any{"t": "ping", "id": 1}), 0x01), CodeBadFrame},
		{"wrong field type", mustMarshal(t, map[string]any{"t": "send", "id": 1, "conv": "x"}), CodeBadFrame},
		{"no type", mustMarshal(t, map[string]any{"id": 1}), CodeBadFrame},
		{"unknown type", mustMarshal(t, map[string]any{"t": "nope", "id": 1}), CodeUnknownType},
		{"send no conv", mustMarshal(t, Request{Type: TypeSend, ClientMsgID: "a", Body: "b"}), CodeInvalid},
		{"send no cmid", mustMarshal(t, Request{Type: TypeSend, Conv: 1, Body: "b"}), CodeInvalid},
		{"send long cmid", mustMarshal(t, Request{Type: TypeSend, Conv: 1, ClientMsgID: strings.Repeat("a", 65), Body: "b"}), CodeInvalid},
		{"send empty body", mustMarshal(t, Request{Type: TypeSend, Conv: 1, ClientMsgID: "a"}), CodeInvalid},
		{"send long body", mustMarshal(t, Request{Type: TypeSend, Conv: 1, ClientMsgID: "a", Body: long}), CodeTooLarge},
		{"send bad utf8", mustMarshal(t, Request{Type: TypeSend, Conv: 1, ClientMsgID: "a", Body: "\xff"}), CodeInvalid},
		{"big id", mustMarshal(t, Request{Type: TypePing, ID: 1 << 60}), CodeInvalid},
		{"group no name", mustMarshal(t, Request{Type: TypeGroupCreate}), CodeInvalid},
		{"group long name", mustMarshal(t, Request{Type: TypeGroupCreate, Name: strings.Repeat("n", 65)}), CodeTooLarge},
		{"group too many", mustMarshal(t, Request{Type: TypeGroupCreate, Name: "g", Users: many}), CodeTooLarge},
		{"group zero user", mustMarshal(t, Request{Type: TypeGroupCreate, Name: "g", Users: []uint64{0}}), CodeInvalid},
		{"add no users", mustMarshal(t, Request{Type: TypeGroupAdd, Conv: 1}), CodeInvalid},
		{"remove no user", mustMarshal(t, Request{Type: TypeGroupRemove, Conv: 1}), CodeInvalid},
		{"history bad dir", mustMarshal(t, Request{Type: TypeHistory, Conv: 1, Dir: "up"}), CodeInvalid},
		{"history negative", mustMarshal(t, Request{Type: TypeHistory, Conv: 1, Limit: -1}), CodeInvalid},
		{"user.get nothing", mustMarshal(t, Request{Type: TypeUserGet}), CodeInvalid},
		{"dm no user", mustMarshal(t, Request{Type: TypeDirectOpen}), CodeInvalid},
	}
	for _, c := range cases {
		var r Request
		e := DecodeRequest(c.frame, &r)
		if e == nil || e.Code != c.code {
			t.Errorf("%s: got %v, want %s", c.name, e, c.code)
		}
	}
}

func TestValidateDefaults(t *testing.T) {
	r := Request{Type: TypeHistory, Conv: 1}
	if e := r.Validate(); e != nil {
		t.Fatal(e)
	}
	if r.Dir != DirBefore || r.Limit != DefaultHistoryLimit {
		t.Fatalf("defaults not applied: %+v", r)
	}
	r = Request{Type: TypeSync, Limit: 10_000}
	if e := r.Validate(); e != nil || r.Limit != MaxSyncConvs {
		t.Fatalf("sync limit not capped: %+v %v", r, e)
	}
}

func TestPeekType(t *testing.T) {
	b := mustMarshal(t, &Event{Type: TypeEvent, Conv: 1, Seq: 2, Kind: KindMessage, Body: "x"})
	typ, err := PeekType(b)
	if err != nil || typ != TypeEvent {
		t.Fatalf("got %q %v", typ, err)
	}
}

func TestCodeRetryable(t *testing.T) {
	if !CodeBusy.Retryable() || !CodeTimeout.Retryable() || CodeNotMember.Retryable() {
		t.Fatal("retryable classification changed")
	}
}

// FuzzDecodeRequest: on any input DecodeRequest allocates at most a small
// multiple of the frame's size, never puts an id above 2^53-1 in r, agrees
// with the old msgpack/v5 decoder (decode_test.go) wherever that one can
// safely run, and what it accepts re-encodes to the same request.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(mustMarshal(f, Request{Type: TypeSend, ID: 1, Conv: 2, ClientMsgID: "a", Body: "hi"}))
	f.Add(mustMarshal(f, Request{Type: TypeGroupCreate, ID: 1, Name: "g", Users: []uint64{1, 2}}))
	f.Add(mustMarshal(f, Request{Type: TypeHistory, ID: 3, Conv: 1, Dir: DirAfter, Seq: 9}))
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	for _, b := range [][]byte{attackUsers, attackType, attackIDMinus1, attackIDMinus1I64, attackIDMaxU64, nested(maxDepth), nested(maxDepth + 1)} {
		f.Add(b)
	}
	r := rand.New(rand.NewPCG(13, 14))
	for range 8 {
		f.Add(variant(r, randomRequest(r)))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Request
		var e *Error
		if n := minAllocBytes(allocBound(len(b)), func() { e = DecodeRequest(b, &r) }); n > allocBound(len(b)) {
			t.Fatalf("%d-byte frame allocated %d bytes", len(b), n)
		}
		if r.ID > MaxSafeInteger {
			t.Fatalf("id %d kept", r.ID)
		}
		// The old decoder allocates what the frame declares: run it only on
		// frames whose declared lengths checkValue found bounded.
		oldOK := false
		var old Request
		if len(b) <= MaxFrameBytes && checkValue(b) == nil {
			oldOK = oldDecodeRequest(b, &old) == nil
		}
		if e != nil {
			if e.Code == "" {
				t.Fatal("error without code")
			}
			// Where msgpack/v5 took a frame that is refused now, it is for
			// a number out of range or too many users (decode.go).
			if oldOK && e.Code != CodeInvalid && e.Code != CodeTooLarge {
				t.Fatalf("msgpack/v5 took %x, refused now: %v", b, e)
			}
			return
		}
		if !oldOK {
			t.Fatalf("accepted %x, which msgpack/v5 refused", b)
		}
		if !reflect.DeepEqual(old, r) {
			t.Fatalf("decoded differently:\nold %+v\nnew %+v", old, r)
		}
		// A frame that decodes must re-encode and decode to the same request.
		var again Request
		if e := DecodeRequest(mustMarshal(t, &r), &again); e != nil {
			t.Fatalf("re-decode: %v (%+v)", e, r)
		}
		normalize(reflect.ValueOf(&r))
		normalize(reflect.ValueOf(&again))
		if !reflect.DeepEqual(r, again) {
			t.Fatalf("re-decoded differently:\nfirst  %+v\nsecond %+v", r, again)
		}
	})
}
