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
