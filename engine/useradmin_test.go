package engine

import "testing"

func TestUserAdministration(t *testing.T) {
	w := newPushWorld(t) // alice 1 (devices 1, 2), bob 2 (device 3)
	rec := &recorder{}
	w.e.SetPublisher(rec)

	w.ok(&Command{Op: OpSuspend, User: 2, Admin: true, Audit: "ops@10.0.0.9"})
	if !w.e.Suspended(2) || w.e.Suspended(1) {
		t.Fatal("suspension not in the index")
	}
	evs := rec.take()
	if len(evs) != 1 || evs[0].Kind != EventUserSuspended || evs[0].From != 2 {
		t.Fatalf("published %+v", evs)
	}
	w.ok(&Command{Op: OpSuspend, User: 2, Admin: true, Audit: "ops@10.0.0.9"}) // again: no new event
	if evs := rec.take(); len(evs) != 0 {
		t.Fatalf("a second suspension published %+v", evs)
	}
	w.fails(&Command{Op: OpSuspend, User: 99, Admin: true, Audit: "ops"}, ErrCodeNotFound)
	w.reopen()
	if !w.e.Suspended(2) {
		t.Fatal("suspension lost on reopen")
	}
	w.e.SetPublisher(rec)
	w.ok(&Command{Op: OpSuspend, User: 2, Audit: "ops@10.0.0.9"})
	if w.e.Suspended(2) {
		t.Fatal("still suspended")
	}

	// A new password revokes every device of the user.
	w.ok(&Command{Op: OpResetPassword, User: 1, PasswordHash: []byte("new-hash"), Audit: "ops@10.0.0.9"})
	if u, _ := w.e.User(1); string(u.PasswordHash) != "new-hash" {
		t.Fatalf("hash %q", u.PasswordHash)
	}
	if w.e.DeviceActive(1, 1) || w.e.DeviceActive(1, 2) || !w.e.DeviceActive(2, 3) {
		t.Fatal("devices after the reset")
	}
	w.fails(&Command{Op: OpResetPassword, User: 1, Audit: "ops"}, ErrCodeInvalid)
	w.ok(&Command{Op: OpRevokeDevice, User: 2, Device: 3, Audit: "ops@10.0.0.9"})
	w.ok(&Command{Op: OpRevokeDevice, User: 2, Device: 3}) // a user's own revocation: not audited

	log, more, err := w.e.AuditLog(0, 0, 100)
	if err != nil || more {
		t.Fatal(err, more)
	}
	var ops []Op
	for _, a := range log {
		ops = append(ops, a.Op)
		if a.Who != "ops@10.0.0.9" || a.Ts == 0 || a.Index == 0 {
			t.Fatalf("entry %+v", a)
		}
	}
	want := []Op{OpSuspend, OpSuspend, OpSuspend, OpResetPassword, OpRevokeDevice}
	if len(ops) != len(want) {
		t.Fatalf("audit ops %v, want %v (failures are not audited)", ops, want)
	}
	for i := range want {
		if ops[i] != want[i] {
			t.Fatalf("audit ops %v, want %v", ops, want)
		}
	}
	if !log[0].Admin || log[2].Admin || log[4].Device != 3 {
		t.Fatalf("entries %+v", log)
	}
	page, more, err := w.e.AuditLog(log[1].Index, log[1].N, 2)
	if err != nil || !more || len(page) != 2 || page[0] != log[2] {
		t.Fatalf("paging: %+v %v %v", page, more, err)
	}
	w.reopen()
}

func TestDeleteUser(t *testing.T) {
	w := newPushWorld(t) // alice 1 (devices 1, 2), bob 2 (device 3), their 1:1
	w.ok(&Command{Op: OpRegister, Username: "carol", PasswordHash: []byte("h")})
	g := w.ok(&Command{Op: OpCreateGroup, User: 1, Name: "g", Members: []uint64{2, 3}}).Conv
	m := w.ok(&Command{Op: OpSend, User: 1, Device: 1, Conv: g, ClientMsgID: "m", Body: "kept"})
	w.ok(&Command{Op: OpBlock, User: 1, Peer: 3})
	w.ok(&Command{Op: OpPushSet, User: 1, Device: 1, PushProvider: PushFCM, PushToken: "t"})

	w.ok(&Command{Op: OpDeleteUser, User: 1, Audit: "ops"})
	if _, ok := w.e.UserByName("alice"); ok {
		t.Fatal("the name of a deleted account still finds it")
	}
	u, ok := w.e.User(1)
	if !ok || !u.Deleted || u.Username != "" || len(u.PasswordHash) != 0 {
		t.Fatalf("deleted account: %+v", u)
	}
	if w.e.DeviceActive(1, 1) || w.e.DeviceActive(1, 2) {
		t.Fatal("devices of a deleted account")
	}
	if targets, _ := w.e.PushTargets(1); len(targets) != 0 {
		t.Fatalf("push targets of a deleted account: %+v", targets)
	}
	if w.e.IsMember(g, 1) || !w.e.IsMember(w.dm, 1) {
		t.Fatal("a deleted account leaves its groups, and keeps its 1:1s")
	}
	if info, _ := w.e.Conversation(g); len(info.Members) != 2 || !info.Members[0].Admin {
		t.Fatalf("the group after its admin's account was deleted: %+v", info.Members)
	}
	if w.e.IsBlocking(1, 3) {
		t.Fatal("a deleted account's blocks")
	}
	evs, _, code := w.e.History(2, g, 0, After, 10, Budget{})
	if code != ErrCodeNone || evs[m.Seq-1].Body != "kept" || evs[m.Seq-1].From != 1 {
		t.Fatalf("history: %+v %s", evs, code)
	}
	w.ok(&Command{Op: OpDeleteUser, User: 1, Audit: "ops"}) // again: nothing more
	w.fails(&Command{Op: OpDeleteUser, User: 99, Audit: "ops"}, ErrCodeNotFound)
	w.reopen()
	again := w.ok(&Command{Op: OpRegister, Username: "alice", PasswordHash: []byte("h2")})
	if again.User == 1 {
		t.Fatal("a new alice got the deleted account's id")
	}
	w.reopen()
}
