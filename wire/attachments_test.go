package wire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// attachments writes send's att in one of its encodings: keys in either
// order, sometimes an unknown key, nil for an empty string sometimes.
func (w *mpWriter) attachments(atts []Attachment) {
	w.arrayLen(len(atts))
	for _, a := range atts {
		type kv struct {
			k string
			v func()
		}
		fields := []kv{{"id", func() { w.strOrNil(a.ID) }}, {"name", func() { w.strOrNil(a.Name) }}}
		if w.pick(3) == 0 {
			fields = append(fields, kv{"later", func() { w.junk(5) }})
		}
		if w.pick(2) == 0 {
			fields[0], fields[1] = fields[1], fields[0]
		}
		w.mapLen(len(fields))
		for _, f := range fields {
			w.key(f.k)
			f.v()
		}
	}
}

func (w *mpWriter) strOrNil(s string) {
	if s == "" && w.pick(2) == 0 {
		w.b = append(w.b, mpNil)
		return
	}
	w.str(s)
}

func TestDecodeAttachments(t *testing.T) {
	frame := func(att any) []byte {
		b, err := msgpack.Marshal(map[string]any{"t": TypeSend, "id": 7, "conv": 1, "cmid": "c", "att": att})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	id := strings.Repeat("a", 52)
	for _, c := range []struct {
		name string
		att  any
		code Code
		want []Attachment
	}{
		{"one, no body", []map[string]any{{"id": id, "name": "cat.jpg", "mime": "ignored"}}, "", []Attachment{{ID: id, Name: "cat.jpg", Mime: "ignored"}}},
		{"nil", nil, CodeInvalid, nil}, // then the body is required
		{"ten", make([]map[string]any, 10), CodeInvalid, nil},
		{"eleven", make([]map[string]any, 11), CodeTooLarge, nil},
		{"not an array", "x", CodeBadFrame, nil},
		{"element not a map", []any{1}, CodeBadFrame, nil},
		{"id not a string", []map[string]any{{"id": 5}}, CodeBadFrame, nil},
		{"no id", []map[string]any{{"name": "x"}}, CodeInvalid, nil},
		{"long name", []map[string]any{{"id": id, "name": strings.Repeat("n", MaxAttachmentNameBytes+1)}}, CodeTooLarge, nil},
		{"name not UTF-8", []map[string]any{{"id": id, "name": "\xff"}}, CodeInvalid, nil},
		{"255-byte name", []map[string]any{{"id": id, "name": strings.Repeat("n", MaxAttachmentNameBytes)}}, "",
			[]Attachment{{ID: id, Name: strings.Repeat("n", MaxAttachmentNameBytes)}}},
	} {
		var req Request
		e := DecodeRequest(frame(c.att), &req)
		switch {
		case c.code == "" && e != nil:
			t.Errorf("%s: %v", c.name, e)
		case c.code != "" && (e == nil || e.Code != c.code):
			t.Errorf("%s: got %v, want %s", c.name, e, c.code)
		case c.code == "" && len(req.Att) != len(c.want):
			t.Errorf("%s: decoded %+v", c.name, req.Att)
		case c.code == "":
			for i := range c.want {
				if req.Att[i] != c.want[i] {
					t.Errorf("%s: decoded %+v", c.name, req.Att)
				}
			}
			if e == nil && req.ID != 7 {
				t.Errorf("%s: id %d", c.name, req.ID)
			}
		}
	}
	// A hostile count is refused before anything is allocated for it.
	hostile := append([]byte{0x82, 0xa1, 't', 0xa4, 's', 'e', 'n', 'd', 0xa3, 'a', 't', 't', 0xdd, 0xff, 0xff, 0xff, 0xff}, bytes.Repeat([]byte{0x80}, 20)...)
	var req Request
	if e := DecodeRequest(hostile, &req); e == nil || e.Code != CodeBadFrame {
		t.Fatalf("array32 of 2^32-1 attachments: %v", e)
	}
}

// TestAttachmentEventEncoding: AppendEvent writes att as msgpack/v5 does,
// and EventLen counts it.
func TestAttachmentEventEncoding(t *testing.T) {
	e := &Event{Type: TypeEvent, Conv: 1, Seq: 2, Index: 3, Ts: 4, Kind: KindMessage, From: 5, Att: []Attachment{
		{ID: strings.Repeat("b", 52), Name: "a.png", Mime: "image/png", Size: 1 << 20, Width: 640, Height: 480, Thumb: true},
		{ID: strings.Repeat("c", 52), Mime: "application/pdf", Size: 3},
	}}
	want, err := msgpack.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	got := AppendEvent(nil, e)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendEvent\n got %x\nwant %x", got, want)
	}
	if n := EventLen(e); n != len(got) {
		t.Fatalf("EventLen %d, encoded %d", n, len(got))
	}
	var back Event
	if err := msgpack.Unmarshal(got, &back); err != nil || len(back.Att) != 2 || back.Att[0] != e.Att[0] {
		t.Fatalf("decoded %+v, %v", back, err)
	}
}

// TestLargestEventFrame backs docs/PROTOCOL.md section 4.1: an ev frame is
// at most 16,579 bytes of msgpack without attachments, 21,554 with 10 of
// them at their largest.
func TestLargestEventFrame(t *testing.T) {
	big := uint64(MaxSafeInteger)
	ev := &Event{Type: TypeEvent, Conv: big, Seq: big, Index: big, Ts: -1 << 62, Kind: KindMessage, From: big,
		Device: big, ClientMsgID: strings.Repeat("c", MaxClientMsgIDBytes), Body: strings.Repeat("b", MaxBodyBytes), ReplyTo: big}
	if n := len(AppendEvent(nil, ev)); n != 16579 {
		t.Fatalf("largest message event without attachments: %d bytes", n)
	}
	for range MaxAttachments {
		ev.Att = append(ev.Att, Attachment{ID: strings.Repeat("a", 52), Name: strings.Repeat("n", MaxAttachmentNameBytes),
			Mime: strings.Repeat("m", 127), Size: big, Width: big, Height: big, Thumb: true})
	}
	if n := len(AppendEvent(nil, ev)); n != 21554 {
		t.Fatalf("largest message event: %d bytes", n)
	}
}
