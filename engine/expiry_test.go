package engine

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestExpireSends: old dedup records go, in budgeted steps that resume and
// wrap; recent ones stay; a retry of an expired cmid is a new message, of a
// kept one a duplicate; two replicas applying the same entries end equal.
func TestExpireSends(t *testing.T) {
	defer func(b int) { expireBudget = b }(expireBudget)
	expireBudget = 3

	a := openEngine(t, filepath.Join(t.TempDir(), "a"))
	b := openEngine(t, filepath.Join(t.TempDir(), "b"))
	defer a.Close()
	defer b.Close()
	index := uint64(0)
	apply := func(ts int64, cmds ...*Command) []*Result {
		t.Helper()
		index++
		en := entry{index: index, ts: ts, cmds: mustEncode(t, cmds...)}
		ra, rb := applyEntry(t, a, en), applyEntry(t, b, en)
		for i := range ra {
			if fmt.Sprint(*ra[i]) != fmt.Sprint(*rb[i]) {
				t.Fatalf("entry %d command %d: replicas differ: %+v vs %+v", index, i, ra[i], rb[i])
			}
		}
		return ra
	}
	user := apply(1, &Command{Op: OpRegister, Username: "alice", PasswordHash: []byte("h")})[0].User
	peer := apply(1, &Command{Op: OpRegister, Username: "bob", PasswordHash: []byte("h")})[0].User
	dev := apply(1, &Command{Op: OpAddDevice, User: user, DeviceName: "phone"})[0].Device
	conv := apply(1, &Command{Op: OpOpenDirect, User: user, Peer: peer})[0].Conv
	send := func(ts int64, cmid string) *Result {
		return apply(ts, &Command{Op: OpSend, User: user, Device: dev, Conv: conv, ClientMsgID: cmid, Body: "b"})[0]
	}
	for i := range 7 {
		send(1000, fmt.Sprint("old", i))
	}
	for i := range 2 {
		send(5000, fmt.Sprint("new", i))
	}

	// Nine records, budget three, in key order new0 new1 old0 ... old6: the
	// first step keeps the two new ones and deletes old0, the next two
	// delete three each and reach the end; the fourth starts over and finds
	// nothing more to delete.
	var expired []int
	for range 4 {
		r := apply(6000, &Command{Op: OpExpireSends, Ts: 2000})[0]
		if r.Err != ErrCodeNone {
			t.Fatalf("expire: %+v", r)
		}
		expired = append(expired, r.Expired)
	}
	if fmt.Sprint(expired) != "[1 3 3 0]" {
		t.Fatalf("expired per step %v, want [1 3 3 0]", expired)
	}
	// A cutoff ahead of the entry's own time is capped at it: see
	// TestApplyClampsTs (the entry's time is never behind the last one's).
	if r := apply(6000, &Command{Op: OpExpireSends})[0]; r.Err != ErrCodeInvalid {
		t.Fatalf("expire without a cutoff: %+v", r)
	}

	if r := send(7000, "old0"); r.Duplicate {
		t.Fatalf("retry of an expired cmid was a duplicate: %+v", r)
	}
	if r := send(7000, "new1"); !r.Duplicate {
		t.Fatalf("retry of a kept cmid was stored again: %+v", r)
	}
	if da, db := dumpState(t, a), dumpState(t, b); da != db {
		t.Fatalf("replicas differ after expiry:\n%s\n---\n%s", da, db)
	}
}
