package raftlog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"
)

func TestLinkFramesRoundTrip(t *testing.T) {
	hello := helloFrame{version: linkVersion, origin: 0xdeadbeefcafe, id: "node-7"}
	cmds := []fwdCommand{{seq: 1, cmd: []byte("a")}, {seq: 1 << 40, cmd: nil}, {seq: 300, cmd: bytes.Repeat([]byte{9}, 70000)}}
	report := reportFrame{applied: 123456789, last: 123456790}
	refusals := []refusal{{seq: 5, code: refuseBusy}, {seq: 1 << 50, code: refuseNotLeader}}

	var stream []byte
	stream = appendHello(stream, hello)
	stream = appendSubmit(stream, cmds)
	stream = appendReport(stream, report)
	stream = appendRetry(stream, 1500*time.Millisecond)
	stream = appendRefuse(stream, refusals)
	r := bufio.NewReader(bytes.NewReader(stream))

	typ, p, err := readFrame(r)
	if err != nil || typ != frameHello {
		t.Fatalf("frame %d, %v", typ, err)
	}
	if got, err := decodeHello(p); err != nil || got != hello {
		t.Fatalf("hello %+v, %v", got, err)
	}

	typ, p, err = readFrame(r)
	if err != nil || typ != frameSubmit {
		t.Fatalf("frame %d, %v", typ, err)
	}
	var gotCmds []fwdCommand
	if err := decodeSubmit(p, func(seq uint64, cmd []byte) { gotCmds = append(gotCmds, fwdCommand{seq, cmd}) }); err != nil {
		t.Fatal(err)
	}
	if len(gotCmds) != len(cmds) {
		t.Fatalf("%d commands, want %d", len(gotCmds), len(cmds))
	}
	for i := range cmds {
		if gotCmds[i].seq != cmds[i].seq || !bytes.Equal(gotCmds[i].cmd, cmds[i].cmd) || cap(gotCmds[i].cmd) != len(gotCmds[i].cmd) {
			t.Fatalf("command %d: %d %q (cap %d)", i, gotCmds[i].seq, gotCmds[i].cmd, cap(gotCmds[i].cmd))
		}
	}

	typ, p, err = readFrame(r)
	if err != nil || typ != frameReport {
		t.Fatalf("frame %d, %v", typ, err)
	}
	if got, err := decodeReport(p); err != nil || got != report {
		t.Fatalf("report %+v, %v", got, err)
	}

	typ, p, err = readFrame(r)
	if err != nil || typ != frameRetry {
		t.Fatalf("frame %d, %v", typ, err)
	}
	if got, err := decodeRetry(p); err != nil || got != 1500*time.Millisecond {
		t.Fatalf("retry %v, %v", got, err)
	}

	typ, p, err = readFrame(r)
	if err != nil || typ != frameRefuse {
		t.Fatalf("frame %d, %v", typ, err)
	}
	var gotRefusals []refusal
	if err := decodeRefuse(p, func(rf refusal) { gotRefusals = append(gotRefusals, rf) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gotRefusals, refusals) {
		t.Fatalf("refusals %v", gotRefusals)
	}
	if _, _, err := readFrame(r); err != io.EOF {
		t.Fatalf("after the last frame: %v", err)
	}
}

func TestLinkFramesReject(t *testing.T) {
	// Lengths out of range, and a frame cut short.
	for _, stream := range [][]byte{
		{0, 0, 0, 0, frameHello},
		{0xff, 0xff, 0xff, 0xff, frameSubmit},
		appendReport(nil, reportFrame{1, 2})[:6],
	} {
		if _, _, err := readFrame(bufio.NewReader(bytes.NewReader(stream))); err == nil {
			t.Errorf("readFrame(%x) accepted", stream)
		}
	}
	payload := func(frame []byte) []byte { return frame[frameHeader:] }
	submit := payload(appendSubmit(nil, []fwdCommand{{seq: 1, cmd: []byte("xyz")}}))
	refuse := payload(appendRefuse(nil, []refusal{{seq: 1, code: refuseBusy}}))
	hello := payload(appendHello(nil, helloFrame{version: 1, origin: 1, id: "a"}))
	report := payload(appendReport(nil, reportFrame{1, 2}))
	retry := payload(appendRetry(nil, 300*time.Millisecond)) // two bytes
	for i := range len(submit) {
		if err := decodeSubmit(submit[:i], func(uint64, []byte) { t.Fatal("callback before validation") }); !errors.Is(err, errCorruptFrame) {
			t.Errorf("submit prefix %d: %v", i, err)
		}
	}
	for i := range len(refuse) {
		if err := decodeRefuse(refuse[:i], func(refusal) { t.Fatal("callback before validation") }); !errors.Is(err, errCorruptFrame) {
			t.Errorf("refuse prefix %d: %v", i, err)
		}
	}
	for i := range len(hello) {
		if _, err := decodeHello(hello[:i]); !errors.Is(err, errCorruptFrame) {
			t.Errorf("hello prefix %d: %v", i, err)
		}
	}
	for i := range len(report) {
		if _, err := decodeReport(report[:i]); !errors.Is(err, errCorruptFrame) {
			t.Errorf("report prefix %d: %v", i, err)
		}
	}
	for _, p := range [][]byte{retry[:1], append(append([]byte(nil), retry...), 0), {0x80, 0}} {
		if _, err := decodeRetry(p); !errors.Is(err, errCorruptFrame) {
			t.Errorf("retry %x: %v", p, err)
		}
	}
	for name, p := range map[string][]byte{
		"submit trailing": append(append([]byte(nil), submit...), 0),
		"submit zero":     {0},
		"submit padded":   {1, 0x81, 0x00, 0},
	} {
		if err := decodeSubmit(p, func(uint64, []byte) {}); !errors.Is(err, errCorruptFrame) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := decodeRefuse(append(append([]byte(nil), refuse...), 0), func(refusal) {}); !errors.Is(err, errCorruptFrame) {
		t.Errorf("refuse trailing: %v", err)
	}
	if _, err := decodeReport(append(append([]byte(nil), report...), 0)); !errors.Is(err, errCorruptFrame) {
		t.Errorf("report trailing: %v", err)
	}
}

// FuzzDecodeSubmit: arbitrary payloads never panic; what decodes
// re-encodes to the same bytes.
func FuzzDecodeSubmit(f *testing.F) {
	f.Add(appendSubmit(nil, []fwdCommand{{seq: 1, cmd: []byte("a")}, {seq: 2, cmd: nil}})[frameHeader:])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 1})
	f.Fuzz(func(t *testing.T, p []byte) {
		var cmds []fwdCommand
		if err := decodeSubmit(p, func(seq uint64, cmd []byte) { cmds = append(cmds, fwdCommand{seq, cmd}) }); err != nil {
			if len(cmds) != 0 {
				t.Fatal("callback ran for an invalid frame")
			}
			return
		}
		if re := appendSubmit(nil, cmds)[frameHeader:]; !bytes.Equal(re, p) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", p, re)
		}
	})
}

func FuzzDecodeRefuse(f *testing.F) {
	f.Add(appendRefuse(nil, []refusal{{seq: 1, code: 1}, {seq: 300, code: 4}})[frameHeader:])
	f.Add([]byte{2, 1})
	f.Fuzz(func(t *testing.T, p []byte) {
		var rs []refusal
		if err := decodeRefuse(p, func(r refusal) { rs = append(rs, r) }); err != nil {
			if len(rs) != 0 {
				t.Fatal("callback ran for an invalid frame")
			}
			return
		}
		if re := appendRefuse(nil, rs)[frameHeader:]; !bytes.Equal(re, p) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", p, re)
		}
	})
}

func TestWaitList(t *testing.T) {
	w := newWaitList(time.Hour)
	var calls []string
	mk := func(name string) DoneFunc {
		return func(any, uint64, error) { calls = append(calls, name) }
	}
	var seqs []uint64
	for i := range 5 {
		seq, ok := w.add(mk(fmt.Sprint(i)))
		if !ok || seq != uint64(i+1) {
			t.Fatalf("add %d: seq %d, %v", i, seq, ok)
		}
		seqs = append(seqs, seq)
	}
	// Out of order: the list keeps a hole until the front resolves.
	if w.take(seqs[2]) == nil || w.take(seqs[2]) != nil {
		t.Fatal("take twice")
	}
	if w.first != 1 || len(w.items) != 5 || w.waiting() != 4 {
		t.Fatalf("first %d, %d items, %d waiting", w.first, len(w.items), w.waiting())
	}
	if w.take(seqs[0]) == nil || w.take(seqs[1]) == nil {
		t.Fatal("take")
	}
	if w.first != 4 || len(w.items) != 2 {
		t.Fatalf("resolved prefix not dropped: first %d, %d items", w.first, len(w.items))
	}
	if w.take(99) != nil || w.take(0) != nil || w.take(1) != nil {
		t.Fatal("take of an unknown seq")
	}
	// Applied entries resolve only this origin's commands.
	res := w.takeApplied(nil, 7, []Tag{{7, 4}, {8, 5}, {7, 5}, {7, 4}}, []any{"r4", "x", "r5", "again"}, nil)
	if len(res) != 2 || res[0].result != "r4" || res[1].result != "r5" || w.waiting() != 0 || len(w.items) != 0 {
		t.Fatalf("takeApplied: %+v, %d waiting", res, w.waiting())
	}
	// Expiry pops only what is due, in order.
	w.timeout = 0
	seq, _ := w.add(mk("due"))
	w.timeout = time.Hour
	w.add(mk("later"))
	expired := w.expire(nil)
	if len(expired) != 1 || w.first != seq+1 {
		t.Fatalf("expired %d, first %d", len(expired), w.first)
	}
	expired[0](nil, 0, nil)
	rest := w.closeAll()
	for _, d := range rest {
		d(nil, 0, nil)
	}
	if !slices.Equal(calls, []string{"due", "later"}) {
		t.Fatalf("calls %v", calls)
	}
	if _, ok := w.add(mk("x")); ok || w.waiting() != 0 {
		t.Fatal("add after closeAll")
	}
}

// FuzzDecodeHello and FuzzDecodeReport: frames a peer sends on the internal
// port; a valid one re-encodes to the same bytes (one encoding per value),
// anything else is refused without a panic.
func FuzzDecodeHello(f *testing.F) {
	f.Add(appendHello(nil, helloFrame{version: 1, origin: 42, id: "n1"})[frameHeader:])
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := decodeHello(p)
		if err != nil {
			return
		}
		if re := appendHello(nil, h)[frameHeader:]; !bytes.Equal(re, p) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", p, re)
		}
	})
}

func FuzzDecodeReport(f *testing.F) {
	f.Add(appendReport(nil, reportFrame{applied: 10, last: 300})[frameHeader:])
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := decodeReport(p)
		if err != nil {
			return
		}
		if re := appendReport(nil, r)[frameHeader:]; !bytes.Equal(re, p) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", p, re)
		}
	})
}

// FuzzDecodeRetry: a valid retry frame re-encodes to the same bytes unless
// its wait was over maxForwardedRetry, which it is bounded to.
func FuzzDecodeRetry(f *testing.F) {
	f.Add(appendRetry(nil, 2*time.Second)[frameHeader:])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, p []byte) {
		wait, err := decodeRetry(p)
		if err != nil {
			return
		}
		if wait < 0 || wait > maxForwardedRetry {
			t.Fatalf("wait %v out of bounds", wait)
		}
		if re := appendRetry(nil, wait)[frameHeader:]; wait < maxForwardedRetry && !bytes.Equal(re, p) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", p, re)
		}
	})
}
