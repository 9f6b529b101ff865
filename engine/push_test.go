package engine

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pushWorld is an engine with alice (devices 1 and 2) and bob (device 3)
// and their 1:1, applied one command per entry.
type pushWorld struct {
	t     *testing.T
	dir   string
	e     *Engine
	index uint64
	dm    uint64
}

func newPushWorld(t *testing.T) *pushWorld {
	w := &pushWorld{t: t, dir: filepath.Join(t.TempDir(), "s")}
	w.e = openEngine(t, w.dir)
	t.Cleanup(func() { w.e.Close() })
	w.ok(&Command{Op: OpRegister, Username: "alice", PasswordHash: []byte("h")})
	w.ok(&Command{Op: OpRegister, Username: "bob", PasswordHash: []byte("h")})
	w.ok(&Command{Op: OpAddDevice, User: 1, DeviceName: "phone"})
	w.ok(&Command{Op: OpAddDevice, User: 1, DeviceName: "laptop"})
	w.ok(&Command{Op: OpAddDevice, User: 2, DeviceName: "phone"})
	w.dm = w.ok(&Command{Op: OpOpenDirect, User: 1, Peer: 2}).Conv
	return w
}

func (w *pushWorld) apply(c *Command) *Result {
	w.t.Helper()
	w.index++
	return applyEntry(w.t, w.e, entry{index: w.index, ts: int64(1000 * w.index), cmds: mustEncode(w.t, c)})[0]
}

func (w *pushWorld) ok(c *Command) *Result {
	w.t.Helper()
	r := w.apply(c)
	if r.Err != ErrCodeNone {
		w.t.Fatalf("%s: %s %s", c.Op, r.Err, r.Message)
	}
	return r
}

func (w *pushWorld) fails(c *Command, code ErrCode) {
	w.t.Helper()
	if r := w.apply(c); r.Err != code {
		w.t.Fatalf("%s %+v: %s %q, want %s", c.Op, *c, r.Err, r.Message, code)
	}
}

// reopen closes and opens the engine, and checks that the index it
// rebuilds from the database is the one Apply kept.
func (w *pushWorld) reopen() {
	w.t.Helper()
	before := dumpState(w.t, w.e)
	w.e.Close()
	w.e = openEngine(w.t, w.dir)
	if after := dumpState(w.t, w.e); after != before {
		w.t.Fatalf("state after reopen differs:\n%s\nwant\n%s", after, before)
	}
}

func (w *pushWorld) targets(user uint64) []DevicePush {
	w.t.Helper()
	got, err := w.e.PushTargets(user)
	if err != nil {
		w.t.Fatal(err)
	}
	return got
}

func TestPushTargets(t *testing.T) {
	w := newPushWorld(t)
	fcm := &Command{Op: OpPushSet, User: 1, Device: 1, PushProvider: PushFCM, PushToken: "fcm-token-1"}
	web := &Command{Op: OpPushSet, User: 1, Device: 2, PushProvider: PushWebPush, PushEndpoint: "https://push.example/sub/1",
		PushP256dh: "BPub", PushAuth: "secret"}
	w.ok(fcm)
	w.ok(web)
	want := []DevicePush{
		{Device: 1, PushTarget: PushTarget{Provider: PushFCM, Token: "fcm-token-1"}},
		{Device: 2, PushTarget: PushTarget{Provider: PushWebPush, Endpoint: "https://push.example/sub/1", P256dh: "BPub", Auth: "secret"}},
	}
	if got := w.targets(1); !slices.Equal(got, want) {
		t.Fatalf("targets %+v, want %+v", got, want)
	}
	if got := w.targets(2); len(got) != 0 {
		t.Fatalf("bob's targets %+v, want none", got)
	}

	// Refusals change nothing.
	w.fails(&Command{Op: OpPushSet, User: 1, Device: 1, PushProvider: "pigeon", PushToken: "x"}, ErrCodeInvalid)
	w.fails(&Command{Op: OpPushSet, User: 1, Device: 1, PushProvider: PushAPNs}, ErrCodeInvalid)
	w.fails(&Command{Op: OpPushSet, User: 1, Device: 1, PushProvider: PushFCM, PushToken: "x", PushEndpoint: "https://e"}, ErrCodeInvalid)
	w.fails(&Command{Op: OpPushSet, User: 1, Device: 2, PushProvider: PushWebPush, PushEndpoint: "https://e", PushP256dh: "k"}, ErrCodeInvalid)
	w.fails(&Command{Op: OpPushSet, User: 1, Device: 1, PushProvider: PushFCM, PushToken: strings.Repeat("t", MaxPushTokenBytes+1)}, ErrCodeTooLarge)
	w.fails(&Command{Op: OpPushSet, User: 1, Device: 3, PushProvider: PushFCM, PushToken: "x"}, ErrCodeNotFound) // bob's device
	if got := w.targets(1); !slices.Equal(got, want) {
		t.Fatalf("targets after refusals %+v, want %+v", got, want)
	}

	// A clear naming an old token is a no-op (the device registered a new
	// one since the provider rejected the old); one naming the current
	// token, or none, clears.
	w.ok(&Command{Op: OpPushSet, User: 1, Device: 1, PushProvider: PushFCM, PushToken: "fcm-token-2"})
	w.ok(&Command{Op: OpPushClear, User: 1, Device: 1, PushToken: "fcm-token-1"})
	if got := w.targets(1); len(got) != 2 || got[0].Token != "fcm-token-2" {
		t.Fatalf("after a stale clear: %+v", got)
	}
	w.ok(&Command{Op: OpPushClear, User: 1, Device: 2, PushEndpoint: "https://push.example/sub/1"})
	if got := w.targets(1); len(got) != 1 || got[0].Device != 1 {
		t.Fatalf("after clearing the webpush target: %+v", got)
	}
	w.reopen()

	// Revoking a device drops its target; a revoked device cannot set one.
	w.ok(&Command{Op: OpRevokeDevice, User: 1, Device: 1})
	if got := w.targets(1); len(got) != 0 {
		t.Fatalf("targets after revoking the device: %+v", got)
	}
	w.fails(&Command{Op: OpPushSet, User: 1, Device: 1, PushProvider: PushFCM, PushToken: "x"}, ErrCodeForbidden)
	w.reopen()
}

func TestNotifySettingsAndMutes(t *testing.T) {
	w := newPushWorld(t)
	if p, d := w.e.NotifySettings(1); p || d {
		t.Fatalf("defaults: preview %v dnd %v, want both off", p, d)
	}
	w.ok(&Command{Op: OpNotifySet, User: 1, Preview: true})
	w.ok(&Command{Op: OpSetPrivacy, User: 1, HideLastSeen: true}) // shares the record: must keep the settings
	if p, d := w.e.NotifySettings(1); !p || d {
		t.Fatalf("after notify_set preview: preview %v dnd %v", p, d)
	}
	w.ok(&Command{Op: OpNotifySet, User: 2, DND: true})
	w.fails(&Command{Op: OpNotifySet, User: 99}, ErrCodeNotFound)

	w.ok(&Command{Op: OpMute, User: 2, Conv: w.dm, Until: MuteForever})
	w.ok(&Command{Op: OpMute, User: 1, Conv: w.dm, Until: 5_000})
	w.fails(&Command{Op: OpMute, User: 1, Conv: w.dm, Until: -2}, ErrCodeInvalid)
	w.fails(&Command{Op: OpMute, User: 1, Conv: 999}, ErrCodeNotFound)
	w.ok(&Command{Op: OpCreateGroup, User: 2, Name: "g"})
	w.fails(&Command{Op: OpMute, User: 1, Conv: w.dm + 1, Until: MuteForever}, ErrCodeNotMember)
	if u := w.e.MutedUntil(2, w.dm); u != MuteForever {
		t.Fatalf("bob muted until %d", u)
	}
	if u := w.e.MutedUntil(1, w.dm); u != 5_000 || !Muted(u, 4_999) || Muted(u, 5_000) {
		t.Fatalf("alice muted until %d", u)
	}
	w.reopen()
	w.ok(&Command{Op: OpMute, User: 2, Conv: w.dm}) // unmute
	if u := w.e.MutedUntil(2, w.dm); u != 0 {
		t.Fatalf("bob after unmute: %d", u)
	}
	w.reopen()
	if p, d := w.e.NotifySettings(2); p || !d {
		t.Fatalf("bob after reopen: preview %v dnd %v", p, d)
	}
}

func TestPushProgress(t *testing.T) {
	w := newPushWorld(t)
	w.ok(&Command{Op: OpPushProgress, Progress: 3})
	w.ok(&Command{Op: OpPushProgress, Progress: 2}) // a deposed leader's late report
	if p := w.e.PushProgress(); p != 3 {
		t.Fatalf("progress %d, want 3", p)
	}
	w.fails(&Command{Op: OpPushProgress, Progress: w.index + 10}, ErrCodeInvalid)
	w.reopen()
	if p := w.e.PushProgress(); p != 3 {
		t.Fatalf("progress after reopen %d, want 3", p)
	}
}

// TestMessagesAfter: the notifier's view of what came after an index:
// messages only, in order, paged, from any entry after it.
func TestMessagesAfter(t *testing.T) {
	w := newPushWorld(t)
	before := w.index
	var idx []uint64
	for i := range 5 {
		r := w.ok(&Command{Op: OpSend, User: 1, Device: 1, Conv: w.dm, ClientMsgID: string(rune('a' + i)), Body: "m"})
		idx = append(idx, w.index)
		_ = r
	}
	g := w.ok(&Command{Op: OpCreateGroup, User: 1, Name: "g", Members: []uint64{2}}).Conv
	w.ok(&Command{Op: OpSend, User: 2, Device: 3, Conv: g, ClientMsgID: "g1", Body: "in the group"})

	if got := w.e.ConvsChangedAfter(before, nil); !slices.Equal(slices.Sorted(slices.Values(got)), []uint64{w.dm, g}) {
		t.Fatalf("changed after %d: %v", before, got)
	}
	if got := w.e.ConvsChangedAfter(w.index, nil); len(got) != 0 {
		t.Fatalf("changed after the last index: %v", got)
	}
	if got := w.e.UserConvsChangedAfter(2, before, nil); !slices.Equal(slices.Sorted(slices.Values(got)), []uint64{w.dm, g}) {
		t.Fatalf("bob's changed after %d: %v", before, got)
	}
	if got := w.e.UserConvsChangedAfter(1, idx[4], nil); !slices.Equal(got, []uint64{g}) {
		t.Fatalf("alice's changed after her last direct message: %v", got)
	}
	if got := w.e.UserConvsChangedAfter(1, w.index, nil); len(got) != 0 {
		t.Fatalf("alice's changed after the last index: %v", got)
	}
	if got := w.e.UserConvsChangedAfter(99, before, nil); len(got) != 0 {
		t.Fatalf("changed for a user who is in none: %v", got)
	}
	msgs, more, err := w.e.MessagesAfter(w.dm, before, 0, 3)
	if err != nil || !more || len(msgs) != 3 || msgs[0].Index != idx[0] || msgs[2].Index != idx[2] {
		t.Fatalf("first page: %d msgs more=%v %v", len(msgs), more, err)
	}
	msgs, more, err = w.e.MessagesAfter(w.dm, before, msgs[2].Seq, 3)
	if err != nil || more || len(msgs) != 2 || msgs[0].Index != idx[3] || msgs[1].Body != "m" {
		t.Fatalf("second page: %+v more=%v %v", msgs, more, err)
	}
	// The group's created event is not a message.
	msgs, _, err = w.e.MessagesAfter(g, before, 0, 10)
	if err != nil || len(msgs) != 1 || msgs[0].From != 2 || msgs[0].Kind != EventMessage {
		t.Fatalf("group: %+v %v", msgs, err)
	}
	// Messages of one entry are paged by seq.
	w.index++
	applyEntry(t, w.e, entry{index: w.index, ts: 1000 * int64(w.index), cmds: mustEncode(t,
		&Command{Op: OpSend, User: 1, Device: 1, Conv: g, ClientMsgID: "b1", Body: "1"},
		&Command{Op: OpSend, User: 1, Device: 1, Conv: g, ClientMsgID: "b2", Body: "2"},
		&Command{Op: OpSend, User: 1, Device: 1, Conv: g, ClientMsgID: "b3", Body: "3"})})
	page1, more, err := w.e.MessagesAfter(g, w.index-1, 0, 2)
	if err != nil || !more || len(page1) != 2 || page1[1].Body != "2" {
		t.Fatalf("batch page 1: %+v more=%v %v", page1, more, err)
	}
	page2, more, err := w.e.MessagesAfter(g, w.index-1, page1[1].Seq, 2)
	if err != nil || more || len(page2) != 1 || page2[0].Body != "3" || page2[0].Index != w.index {
		t.Fatalf("batch page 2: %+v more=%v %v", page2, more, err)
	}
	msgs, _, err = w.e.MessagesAfter(g, before, 0, 1)
	if err != nil || len(msgs) != 1 || msgs[0].From != 2 || msgs[0].Kind != EventMessage {
		t.Fatalf("group: %+v %v", msgs, err)
	}
	if n := w.e.Unread(2); n != 8 { // five from alice in the 1:1 and three in the group
		t.Fatalf("bob's unread %d, want 8", n)
	}
	if n := w.e.Unread(1); n != 0 { // her own sends moved her read cursor past bob's message
		t.Fatalf("alice's unread %d, want 0", n)
	}
}
