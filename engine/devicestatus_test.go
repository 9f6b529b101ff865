package engine

import (
	"path/filepath"
	"testing"
)

// TestDeviceStatus: a token's device is active, refused for good (revoked,
// another user's, or an ID this replica has passed without creating it), or
// not replicated here yet (above the last device applied).
func TestDeviceStatus(t *testing.T) {
	e := openEngine(t, filepath.Join(t.TempDir(), "s"))
	defer e.Close()
	res := applyEntry(t, e, entry{index: 1, ts: 1, cmds: mustEncode(t,
		&Command{Op: OpRegister, Username: "alice", PasswordHash: []byte("h")},
		&Command{Op: OpRegister, Username: "bob", PasswordHash: []byte("h")},
	)})
	alice, bob := res[0].User, res[1].User
	res = applyEntry(t, e, entry{index: 2, ts: 2, cmds: mustEncode(t,
		&Command{Op: OpAddDevice, User: alice, DeviceName: "phone"},
		&Command{Op: OpAddDevice, User: alice, DeviceName: "laptop"},
	)})
	phone, laptop := res[0].Device, res[1].Device
	applyEntry(t, e, entry{index: 3, ts: 3, cmds: mustEncode(t, &Command{Op: OpRevokeDevice, User: alice, Device: laptop})})

	for _, tc := range []struct {
		name         string
		user, device uint64
		want         DeviceState
	}{
		{"active", alice, phone, DeviceIsActive},
		{"revoked", alice, laptop, DeviceIsRevoked},
		{"another user's", bob, phone, DeviceIsRevoked},
		{"not replicated yet", alice, laptop + 1, DeviceNotYet},
		{"never existed below the last", alice, 0, DeviceIsRevoked},
	} {
		if got := e.DeviceStatus(tc.user, tc.device); got != tc.want {
			t.Errorf("%s: DeviceStatus(%d, %d) = %d, want %d", tc.name, tc.user, tc.device, got, tc.want)
		}
	}
}
