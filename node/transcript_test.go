package node_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"parley/wire"
)

var updateTranscript = flag.Bool("update", false, "rewrite testdata/transcript.txt from a real node")

const transcriptPath = "testdata/transcript.txt"

// transcriptTs replaces every timestamp in the transcript; log indexes are
// renumbered from transcriptIdx0 in order of first appearance.
const (
	transcriptTs   = 1767225600000
	transcriptIdx0 = 100
)

// transcript records a scripted session frame by frame: the client's
// frames as sent, the server's with their clock- and log-dependent fields
// made fixed and re-encoded by the server's own encoder.
type transcript struct {
	out bytes.Buffer
	idx map[uint64]uint64
}

func (tr *transcript) fixIdx(v *uint64) {
	if *v == 0 {
		return
	}
	if tr.idx == nil {
		tr.idx = make(map[uint64]uint64)
	}
	n, ok := tr.idx[*v]
	if !ok {
		n = transcriptIdx0 + uint64(len(tr.idx))
		tr.idx[*v] = n
	}
	*v = n
}

func fixTs(v *int64) {
	if *v != 0 {
		*v = transcriptTs
	}
}

func (tr *transcript) fixEvent(e *wire.Event) {
	tr.fixIdx(&e.Index)
	fixTs(&e.Ts)
}

func (tr *transcript) fixInfo(c *wire.ConvInfo) {
	tr.fixIdx(&c.LastIndex)
	fixTs(&c.CreatedAt)
}

// normalize decodes a server frame, checks that the server's encoder gives
// back the same bytes, fixes its clock- and log-dependent fields, and
// returns it re-encoded. reqType is the request a reply answers: it says
// what a reply's next means.
func (tr *transcript) normalize(t *testing.T, raw []byte, reqType string) []byte {
	t.Helper()
	typ, err := wire.PeekType(raw)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	switch typ {
	case wire.TypeHello:
		v = new(wire.Hello)
	case wire.TypeOK, wire.TypeError:
		v = new(wire.Reply)
	case wire.TypeEvent:
		v = new(wire.Event)
	case wire.TypeReceiptEvent:
		v = new(wire.Receipt)
	case wire.TypeTypingEvent:
		v = new(wire.Typing)
	case wire.TypePresenceEvent:
		v = new(wire.Presence)
	case wire.TypeReadCountsEvent:
		v = new(wire.ReadCounts)
	default:
		t.Fatalf("unknown server frame %q", typ)
	}
	if err := wire.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
	if again, err := wire.Marshal(v); err != nil || !bytes.Equal(again, raw) {
		t.Fatalf("%s frame does not re-encode to the server's bytes (%v):\n got %x\nwant %x", typ, err, again, raw)
	}
	switch f := v.(type) {
	case *wire.Hello:
		tr.fixIdx(&f.Index)
	case *wire.Event:
		tr.fixEvent(f)
	case *wire.Receipt:
		tr.fixIdx(&f.Index)
	case *wire.Presence:
		fixTs(&f.LastSeen)
	case *wire.Reply:
		tr.fixIdx(&f.Index)
		fixTs(&f.Ts)
		if f.Info != nil {
			tr.fixInfo(f.Info)
		}
		for i := range f.Events {
			tr.fixEvent(&f.Events[i])
		}
		for i := range f.Changes {
			tr.fixInfo(&f.Changes[i].Info)
			for j := range f.Changes[i].Events {
				tr.fixEvent(&f.Changes[i].Events[j])
			}
		}
		for i := range f.Convs {
			tr.fixInfo(&f.Convs[i])
		}
		if reqType == wire.TypeSync || reqType == wire.TypeConvList {
			tr.fixIdx(&f.Next) // a log index there; elsewhere an id
		}
		for i := range f.Devices {
			fixTs(&f.Devices[i].CreatedAt)
		}
		for i := range f.Presence {
			fixTs(&f.Presence[i].LastSeen)
		}
		if f.UserInfo != nil {
			fixTs(&f.UserInfo.LastSeen)
		}
	}
	b, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// line writes one frame: a direction marker, its decoded form, its hex.
func (tr *transcript) line(t *testing.T, dir string, b []byte) {
	t.Helper()
	var m any
	if err := msgpack.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&tr.out, "%s %s\n%s %s\n", dir, j, dir, hex.EncodeToString(b))
}

func (tr *transcript) comment(s string) {
	fmt.Fprintf(&tr.out, "\n# %s\n", s)
}

// frameRank orders the server frames of one step: events and signals
// before the reply, whose order against them is not defined.
func frameRank(b []byte) int {
	typ, _ := wire.PeekType(b)
	switch typ {
	case wire.TypeHello:
		return 0
	case wire.TypeEvent:
		return 1
	case wire.TypeReceiptEvent:
		return 2
	case wire.TypeTypingEvent:
		return 3
	case wire.TypePresenceEvent:
		return 4
	case wire.TypeReadCountsEvent:
		return 5
	}
	return 6
}

// encodeRequest encodes a client frame with its keys sorted, so that the
// transcript's client bytes are reproducible.
func encodeRequest(t *testing.T, m map[string]any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestProtocolTranscript runs a scripted session against a fresh node and
// compares every frame, byte for byte, with testdata/transcript.txt (see
// PROTOCOL.md section 3); -update rewrites the file.
func TestProtocolTranscript(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.NodeID = "node1"
	cfg.RatePerSecond, cfg.RateBurst = 0, 0 // the defaults, as hello shows them
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	tr := &transcript{}
	fmt.Fprintf(&tr.out, `# Parley protocol v1: a golden transcript (docs/PROTOCOL.md, section 3).
#
# A scripted session of alice (user %d) with a fresh node; bob (user %d)
# connects later. "C" lines are frames alice's client sends, "S" lines
# frames the server sends her: each frame as its decoded form (JSON; map
# keys sorted for reading, the bytes keep the server's order) and then its
# bytes in hex. Timestamps are all %d and log indexes are renumbered
# from %d in order of first appearance, in both forms; everything else is
# exactly what the server sent. Where a step makes several server frames,
# events and signals are listed before the reply (their order on the wire
# is not defined). Regenerate: go test ./node -run TestProtocolTranscript -update
`, alice.user, bob.user, transcriptTs, transcriptIdx0)

	a, hello := dialConn(t, n, login(t, n, alice, "phone"))
	tr.comment("the upgrade succeeded: hello")
	tr.line(t, "S", tr.normalize(t, hello, ""))

	// collect takes the frames that have arrived or arrive on c, want of
	// them, and writes them in rank order.
	collect := func(c *conn, got [][]byte, want int, reqType string) {
		t.Helper()
		for len(got) < want {
			if len(c.pending) > 0 {
				got = append(got, c.pending[0])
				c.pending = c.pending[1:]
			} else {
				got = append(got, c.next(t))
			}
		}
		if len(c.pending) > 0 {
			t.Fatalf("unexpected frames: %q", c.pending)
		}
		slices.SortStableFunc(got, func(x, y []byte) int { return frameRank(x) - frameRank(y) })
		for _, b := range got {
			tr.line(t, "S", tr.normalize(t, b, reqType))
		}
	}
	// step sends a request of alice's and records it, its reply and the
	// extra frames it causes.
	var nextID uint64
	step := func(title string, req map[string]any, extra int) wire.Reply {
		t.Helper()
		nextID++
		if _, ok := req["id"]; !ok {
			req["id"] = nextID
		}
		id, _ := req["id"].(uint64)
		b := encodeRequest(t, req)
		tr.comment(title)
		tr.line(t, "C", b)
		a.write(t, b)
		var rep wire.Reply
		raw := a.frame(t, func(b []byte, typ string) bool {
			rep = wire.Reply{}
			return (typ == wire.TypeOK || typ == wire.TypeError) && wire.Unmarshal(b, &rep) == nil && rep.ID == id
		})
		typ, _ := req["t"].(string)
		collect(a, [][]byte{raw}, 1+extra, typ)
		return rep
	}
	// async records frames alice receives because of what bob does.
	async := func(title string, want int) {
		t.Helper()
		tr.comment(title)
		collect(a, nil, want, "")
	}

	step("ping", map[string]any{"t": "ping"}, 0)
	dm := step("dm.open: the 1:1 with bob is created (its created event comes too)", map[string]any{"t": "dm.open", "user": bob.user}, 1).Info.ID
	step("send: a message (acknowledged, and its ev frame to the sending device too)", map[string]any{"t": "send", "conv": dm, "cmid": "c1", "body": "hello, bob"}, 1)
	step("send again with the same cmid: the original ack, dup", map[string]any{"t": "send", "conv": dm, "cmid": "c1", "body": "hello, bob"}, 0)
	step("send: a reply, non-ASCII body", map[string]any{"t": "send", "conv": dm, "cmid": "c2", "body": "ünïcödé ✓", "reply_to": 2}, 1)
	step("history: newest first; events inside replies have no t", map[string]any{"t": "history", "conv": dm}, 0)
	step("sync from 0", map[string]any{"t": "sync", "since": 0}, 0)
	g := step("group.create with bob", map[string]any{"t": "group.create", "name": "team", "users": []uint64{bob.user}}, 1).Info.ID
	step("conv.list", map[string]any{"t": "conv.list"}, 0)
	step("conv.get", map[string]any{"t": "conv.get", "conv": g}, 0)
	step("user.get by name (case-folded)", map[string]any{"t": "user.get", "name": "Bob"}, 0)
	step("user.get of oneself: with one's privacy settings", map[string]any{"t": "user.get", "user": alice.user}, 0)
	step("presence.sub: bob is offline", map[string]any{"t": "presence.sub", "users": []uint64{bob.user}}, 0)
	step("typing: answered ok, forwarded to the other members only", map[string]any{"t": "typing", "conv": dm, "on": true}, 0)
	step("read.get", map[string]any{"t": "read.get", "conv": dm, "seq": 2}, 0)
	step("device.list", map[string]any{"t": "device.list"}, 0)
	step("block.list", map[string]any{"t": "block.list"}, 0)
	step("error: unknown type", map[string]any{"t": "teleport"}, 0)
	step("error: no t, the id is echoed", map[string]any{"conv": dm}, 0)
	step("error: a cmid over 64 bytes", map[string]any{"t": "send", "conv": dm, "cmid": strings.Repeat("x", 65), "body": "x"}, 0)
	step("error: no such conversation", map[string]any{"t": "history", "conv": 999}, 0)

	b, _ := dialConn(t, n, login(t, n, bob, "phone"))
	async("bob connects: a presence frame", 1)
	wantOK(t, "bob typing", b.do(t, map[string]any{"t": "typing", "conv": dm, "on": true}))
	async("bob types: a typing frame", 1)
	wantOK(t, "bob receipt", b.do(t, map[string]any{"t": "receipt", "conv": dm, "delivered": 3, "read": 3}))
	async("bob reads up to seq 3: a receipt frame", 1)
	wantOK(t, "bob send", b.do(t, map[string]any{"t": "send", "conv": dm, "cmid": "b1", "body": "hi alice"}))
	async("bob sends: an ev frame", 1)
	step("ping: nothing else arrived", map[string]any{"t": "ping"}, 0)

	if *updateTranscript {
		if err := os.MkdirAll(filepath.Dir(transcriptPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(transcriptPath, tr.out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(transcriptPath)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(tr.out.Bytes(), want) {
		gotLines, wantLines := strings.Split(tr.out.String(), "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gotLines), len(wantLines)) {
			if gotLines[i] != wantLines[i] {
				t.Fatalf("%s:%d differs:\n got %s\nwant %s", transcriptPath, i+1, gotLines[i], wantLines[i])
			}
		}
		t.Fatalf("%s: %d lines, want %d", transcriptPath, len(gotLines), len(wantLines))
	}
}
