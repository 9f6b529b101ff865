package node_test

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/lxzan/gws"

	"parley/client"
	"parley/internal/testwait"
	"parley/node"
	"parley/wire"
)

// TestAdminUsers: an operator looks a user up, suspends them (their
// connections close, logins and connections are refused, a wrong
// password still reads as one), lifts it, resets their password (every
// device revoked), revokes a device; each change is in the audit log with
// who made it.
func TestAdminUsers(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.AdminToken = testAdminToken
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	phone, tablet := login(t, n, alice, "phone"), login(t, n, alice, "tablet")
	login(t, n, bob, "phone")
	admin := &client.Admin{Base: n.HTTPURL(), Token: testAdminToken, Actor: "carol"}
	ctx := ctxT(t)

	u, err := admin.User(ctx, "Alice") // usernames fold case, as at login
	if err != nil || u.ID != alice.user || len(u.Devices) != 2 || u.Suspended {
		t.Fatalf("user: %+v %v", u, err)
	}
	if byID, err := admin.User(ctx, strconv.FormatUint(alice.user, 10)); err != nil || byID.Username != "alice" {
		t.Fatalf("by id: %+v %v", byID, err)
	}
	var ae *client.AdminError
	if _, err := admin.User(ctx, "nobody"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := (&client.Admin{Base: n.HTTPURL(), Token: "wrong"}).User(ctx, "alice"); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("wrong admin token: %v", err)
	}

	// Suspend: the open connection closes, logins and connections are refused.
	c, _ := dialConn(t, n, phone)
	if err := admin.Suspend(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	_, closeErr := c.untilClosed(t)
	var ce *gws.CloseError
	if !errors.As(closeErr, &ce) || ce.Code != 1008 || !strings.Contains(string(ce.Reason), "suspended") {
		t.Fatalf("closed with %v", closeErr)
	}
	if st, m := httpJSON(t, n.HTTPURL()+"/v1/login", `{"username":"alice","password":"`+alice.password+`","device":"x"}`); st != 403 || m["code"] != "forbidden" {
		t.Fatalf("login while suspended: %d %v", st, m)
	}
	if st, _ := httpJSON(t, n.HTTPURL()+"/v1/login", `{"username":"alice","password":"wrong-password","device":"x"}`); st != 401 {
		t.Fatalf("wrong password while suspended: %d, want 401 (a suspension is told only to whoever knows the password)", st)
	}
	if st, _, body := rawHandshake(t, n, "/v1/ws?token="+tablet, upgradeHeaders); st != 403 || handshakeJSON(t, body, wire.CodeForbidden) != "account suspended" {
		t.Fatalf("connect while suspended: %d %s", st, body)
	}
	if err := admin.Suspend(ctx, "alice", false); err != nil {
		t.Fatal(err)
	}
	dialConn(t, n, tablet) // the token works again

	// A new password revokes every device.
	if err := admin.ResetPassword(ctx, "alice", "short"); !errors.As(err, &ae) || ae.Code != wire.CodeInvalid || !strings.Contains(ae.Message, "8 to 256 bytes") {
		t.Fatalf("a short password: %v", err)
	}
	if err := admin.ResetPassword(ctx, "alice", "a-new-password"); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := rawHandshake(t, n, "/v1/ws?token="+tablet, upgradeHeaders); st != 401 {
		t.Fatalf("an old token after the reset: %d", st)
	}
	if st, _ := httpJSON(t, n.HTTPURL()+"/v1/login", `{"username":"alice","password":"`+alice.password+`","device":"x"}`); st != 401 {
		t.Fatalf("the old password: %d", st)
	}
	newTok := login(t, n, account{user: alice.user, name: "alice", password: "a-new-password"}, "laptop")
	c2, _ := dialConn(t, n, newTok)
	_ = c2
	u, _ = admin.User(ctx, "alice")
	var laptop uint64
	for _, d := range u.Devices {
		if d.Name == "laptop" {
			laptop = d.ID
		}
	}
	if err := admin.RevokeDevice(ctx, "alice", laptop); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := rawHandshake(t, n, "/v1/ws?token="+newTok, upgradeHeaders); st != 401 {
		t.Fatalf("a revoked device: %d", st)
	}

	// Deleting bob: his name is free, his login is gone, others see a
	// deleted account.
	c3, _ := dialConn(t, n, newTokAgain(t, n))
	if err := admin.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	rep := c3.do(t, map[string]any{"t": "user.get", "user": bob.user})
	if rep.UserInfo == nil || !rep.UserInfo.Deleted || rep.UserInfo.Username != "" {
		t.Fatalf("user.get of a deleted account: %+v", rep.UserInfo)
	}
	if st, _ := httpJSON(t, n.HTTPURL()+"/v1/login", `{"username":"bob","password":"`+bob.password+`"}`); st != 401 {
		t.Fatalf("login to a deleted account: %d", st)
	}
	if again := register(t, n, "bob"); again.user == bob.user {
		t.Fatal("the name did not get a new account")
	}

	page, err := admin.Audit(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range page.Entries {
		got = append(got, e.Action+":"+strconv.FormatBool(e.Suspended))
		if !strings.HasPrefix(e.Who, "carol@127.0.0.1:") || (e.User != alice.user && e.Action != "delete_user") || e.Ts == 0 {
			t.Fatalf("entry %+v", e)
		}
	}
	want := "suspend:true suspend:false reset_password:false revoke_device:false delete_user:false"
	if strings.Join(got, " ") != want {
		t.Fatalf("audit %v, want %s", got, want)
	}
	// Cluster actions are audited too, with what was done.
	if _, err := admin.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Backup(ctx, io.Discard); err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, "the snapshot and the backup in the audit log", func() bool {
		p, err := admin.Audit(ctx, "", 0)
		if err != nil || len(p.Entries) < 7 {
			return false
		}
		snap, backup := p.Entries[5], p.Entries[6]
		return snap.Action == "audit" && strings.HasPrefix(snap.What, "cluster snapshot on ") && strings.HasPrefix(snap.Who, "carol@") &&
			backup.Action == "audit" && strings.HasPrefix(backup.What, "backup of ")
	})

	first, err := admin.Audit(ctx, "", 2)
	if err != nil || len(first.Entries) != 2 || !first.More {
		t.Fatalf("first page: %+v %v", first, err)
	}
	rest, err := admin.Audit(ctx, first.Next, 3)
	if err != nil || len(rest.Entries) != 3 || !rest.More || rest.Entries[0].Action != "reset_password" {
		t.Fatalf("next page: %+v %v", rest, err)
	}
}

// newTokAgain logs alice in with her new password on a fresh device.
func newTokAgain(t *testing.T, n *node.Node) string {
	t.Helper()
	u, _ := adminOf(n, testAdminToken).User(ctxT(t), "alice")
	return login(t, n, account{user: u.ID, name: "alice", password: "a-new-password"}, "desk")
}
