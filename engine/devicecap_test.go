package engine

import (
	"path/filepath"
	"slices"
	"testing"
)

// TestDeviceCap: a login beyond MaxDevices revokes the user's oldest
// devices, devices created before the command's Ts are revoked first, a
// revocation by the user frees a place, and the index of active devices
// kept by Apply is the one rebuilt from the database.
func TestDeviceCap(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	e := openEngine(t, dir)
	rec := &recorder{}
	e.SetPublisher(rec)
	index := uint64(0)
	apply := func(ts int64, cmds ...*Command) []*Result {
		t.Helper()
		index++
		res := applyEntry(t, e, entry{index: index, ts: ts, cmds: mustEncode(t, cmds...)})
		for i, r := range res {
			if r.Err != ErrCodeNone {
				t.Fatalf("entry %d command %d: %s %s", index, i, r.Err, r.Message)
			}
		}
		return res
	}
	revoked := func() []uint64 {
		var out []uint64
		for _, ev := range rec.take() {
			if ev.Kind == EventDeviceRevoked {
				out = append(out, ev.Device)
			}
		}
		return out
	}
	active := func(user uint64) []uint64 {
		devs, _, code := e.Devices(user, 0, MaxDevicesLimit)
		if code != ErrCodeNone {
			t.Fatal(code)
		}
		var out []uint64
		for _, d := range devs {
			if !d.Revoked {
				out = append(out, d.ID)
				if e.DeviceStatus(user, d.ID) != DeviceIsActive {
					t.Fatalf("device %d listed active, DeviceStatus says otherwise", d.ID)
				}
			} else if e.DeviceStatus(user, d.ID) != DeviceIsRevoked {
				t.Fatalf("device %d listed revoked, DeviceStatus says otherwise", d.ID)
			}
		}
		return out
	}
	want := func(what string, got, want []uint64) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
	add := func(user uint64, maxDevices uint64, expiredBefore int64) *Command {
		return &Command{Op: OpAddDevice, User: user, DeviceName: "d", MaxDevices: maxDevices, Ts: expiredBefore}
	}

	res := apply(1000, &Command{Op: OpRegister, Username: "alice", PasswordHash: []byte("h")},
		&Command{Op: OpRegister, Username: "bob", PasswordHash: []byte("h")})
	alice, bob := res[0].User, res[1].User
	// Devices 1..5 at ts 1000..5000; without a cap nothing is revoked.
	for i := range 5 {
		apply(int64(1000*(i+1)), add(alice, 0, 0))
	}
	apply(5000, add(bob, 0, 0)) // device 6
	want("no cap", active(alice), []uint64{1, 2, 3, 4, 5})
	want("no cap: revoked", revoked(), nil)

	// A cap of 3: the three oldest go, with an event each.
	r := apply(6000, add(alice, 3, 0))
	want("cap 3", active(alice), []uint64{4, 5, 7})
	want("cap 3: revoked", revoked(), []uint64{1, 2, 3})
	if r[0].Device != 7 {
		t.Fatalf("new device %d, want 7", r[0].Device)
	}
	want("bob's devices", active(bob), []uint64{6})

	// Revoking one frees a place; several logins in one entry see each
	// other.
	apply(7000, &Command{Op: OpRevokeDevice, User: alice, Device: 5})
	want("revoked by the user", revoked(), []uint64{5})
	apply(8000, add(alice, 3, 0), add(alice, 3, 0), add(alice, 3, 0))
	want("three logins in one entry", active(alice), []uint64{8, 9, 10})
	want("three logins in one entry: revoked", revoked(), []uint64{4, 7})

	// Devices created before Ts have expired tokens: revoked whatever the
	// cap. Devices 8..10 were created at 8000, 11 at 9000.
	apply(9000, add(alice, 100, 0))
	apply(20000, add(alice, 100, 8500))
	want("expired", active(alice), []uint64{11, 12})
	want("expired: revoked", revoked(), []uint64{8, 9, 10})
	// A Ts beyond the entry's time is capped to it: the device made in
	// the same entry before, and this one, stay.
	apply(21000, add(alice, 100, 0), add(alice, 100, 1<<40))
	want("Ts capped at the entry's time", active(alice), []uint64{13, 14})
	want("Ts capped: revoked", revoked(), []uint64{11, 12})

	// A user registered in the same entry as their logins.
	res = apply(22000, &Command{Op: OpRegister, Username: "carol", PasswordHash: []byte("h")},
		add(3, 2, 0), add(3, 2, 0), add(3, 2, 0))
	want("new user", active(res[0].User), []uint64{16, 17})
	want("new user: revoked", revoked(), []uint64{15})

	// The index of active devices survives a restart as Apply left it.
	before := dumpState(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	defer e.Close()
	if after := dumpState(t, e); after != before {
		t.Fatalf("state after reopening differs:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	e.SetPublisher(rec)
	apply(23000, add(alice, 1, 0))
	want("after the restart", active(alice), []uint64{18})
	want("after the restart: revoked", revoked(), []uint64{13, 14})
}
