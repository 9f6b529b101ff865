package engine

import (
	"path/filepath"
	"testing"
)

// TestApplyClampsTs: an entry stamped earlier than the last applied one
// (a new leader whose clock is behind) gets the last ts: in its results,
// its events and its records; the last ts survives a restart (it is in
// the state, written with the entry); dedup expiry uses the clamped time
// and still caps a cutoff ahead of it.
func TestApplyClampsTs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	e := openEngine(t, dir)
	index := uint64(0)
	apply := func(ts int64, cmds ...*Command) *Result {
		t.Helper()
		index++
		return applyEntry(t, e, entry{index: index, ts: ts, cmds: mustEncode(t, cmds...)})[0]
	}
	user := apply(1000, &Command{Op: OpRegister, Username: "alice", PasswordHash: []byte("h")}).User
	peer := apply(1000, &Command{Op: OpRegister, Username: "bob", PasswordHash: []byte("h")}).User
	dev := apply(1000, &Command{Op: OpAddDevice, User: user, DeviceName: "phone"}).Device
	conv := apply(1000, &Command{Op: OpOpenDirect, User: user, Peer: peer}).Conv
	send := func(ts int64, cmid string) *Result {
		t.Helper()
		r := apply(ts, &Command{Op: OpSend, User: user, Device: dev, Conv: conv, ClientMsgID: cmid, Body: "b"})
		if r.Err != ErrCodeNone {
			t.Fatalf("send: %+v", r)
		}
		return r
	}
	if r := send(4500, "a"); r.Ts != 4500 {
		t.Fatalf("ts %d, want the stamp 4500", r.Ts)
	}
	if r := send(5000, "b"); r.Ts != 5000 {
		t.Fatalf("ts %d, want the stamp 5000", r.Ts)
	}
	// A leader whose clock is behind: the entry keeps the last ts.
	if r := send(3000, "c"); r.Ts != 5000 {
		t.Fatalf("an entry stamped 3000 after 5000 got ts %d, want 5000", r.Ts)
	}
	events, _, code := e.History(user, conv, 0, After, 10, Budget{})
	if code != ErrCodeNone {
		t.Fatal(code)
	}
	for i := 1; i < len(events); i++ {
		if events[i].Ts < events[i-1].Ts {
			t.Fatalf("ts went back in the conversation: %d then %d", events[i-1].Ts, events[i].Ts)
		}
	}

	// The last ts is state: it survives a restart.
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	defer e.Close()
	if r := send(2000, "d"); r.Ts != 5000 {
		t.Fatalf("after a restart an entry stamped 2000 got ts %d, want 5000", r.Ts)
	}
	// Expiry at an entry stamped 4000 runs at the clamped 5000, and a
	// cutoff far ahead is capped at it: the record of 4500 goes, those of
	// 5000 stay.
	if r := apply(4000, &Command{Op: OpExpireSends, Ts: 1 << 50}); r.Err != ErrCodeNone || r.Expired != 1 {
		t.Fatalf("expire: %+v, want 1 expired", r)
	}
	if r := send(6000, "b"); !r.Duplicate {
		t.Fatalf("a send of 5000 lost its dedup record: %+v", r)
	}
}
