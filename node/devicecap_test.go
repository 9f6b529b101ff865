package node_test

import (
	"errors"
	"slices"
	"testing"

	"parley/client"
)

// TestDeviceCapOnLogin: with MaxDevices 2, a third login revokes the
// user's oldest device; its token is refused from then on, the others
// work, and device.list shows it revoked.
func TestDeviceCapOnLogin(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MaxDevices = 2
	n := startNodeWith(t, cfg)
	ctx := ctxT(t)
	alice := register(t, n, "alice")
	first := login(t, n, alice, "old-phone")
	second := login(t, n, alice, "laptop")
	third := login(t, n, alice, "new-phone")

	if _, err := client.Dial(ctx, client.Config{URLs: []string{n.WSURL()}, Token: first}); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("the oldest device's token after a login beyond the cap: %v; want unauthorized", err)
	}
	dial(t, []string{n.WSURL()}, second, 0)
	c := dial(t, []string{n.WSURL()}, third, 0)
	devs, _, err := c.Devices(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range devs {
		state := "active"
		if d.Revoked {
			state = "revoked"
		}
		got = append(got, d.Name+" "+state)
	}
	if want := []string{"old-phone revoked", "laptop active", "new-phone active"}; !slices.Equal(got, want) {
		t.Fatalf("devices %v, want %v", got, want)
	}
}
