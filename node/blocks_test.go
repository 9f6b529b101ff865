package node_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"parley/wire"
)

// Blocking and who may add a user to groups, over the protocol.
func TestBlockingAndGroupAddSettings(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	alice, bob, carol, dave := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol"), register(t, n, "dave")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	cc := dial(t, []string{n.WSURL()}, login(t, n, carol, "phone"), 0)
	cd := dial(t, []string{n.WSURL()}, login(t, n, dave, "phone"), 0)
	forbidden := func(what string, err error) {
		t.Helper()
		var we *wire.Error
		if !isCode(err, wire.CodeForbidden) {
			t.Fatalf("%s: %v, want forbidden", what, err)
		}
		// The refusal says nothing about whom or why.
		if errors.As(err, &we) && (strings.Contains(we.Message, "block") || strings.Contains(we.Message, "bob") ||
			strings.Contains(we.Message, "carol") || strings.Contains(we.Message, fmt.Sprint(bob.user))) {
			t.Fatalf("%s: the message says too much: %q", what, we.Message)
		}
	}

	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	if err := cb.Block(ctx, alice.user); err != nil {
		t.Fatal(err)
	}
	if err := cb.Block(ctx, alice.user); err != nil { // twice: no error
		t.Fatal(err)
	}
	_, err = ca.OpenDirect(ctx, bob.user)
	forbidden("dm.open by the blocked user", err)
	_, err = ca.Send(ctx, dm.ID, "hello?")
	forbidden("send into the 1:1 by the blocked user", err)
	if _, err := cb.Send(ctx, dm.ID, "the blocker may write"); err != nil {
		t.Fatal(err)
	}
	_, err = ca.CreateGroup(ctx, "with bob", []uint64{bob.user, carol.user})
	forbidden("group.create with the blocker", err)
	g, err := ca.CreateGroup(ctx, "team", []uint64{carol.user})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ca.AddMembers(ctx, g.ID, []uint64{bob.user})
	forbidden("group.add of the blocker", err)
	// Carol, an admin, may add bob: his block is of alice.
	if _, err := ca.SetAdmin(ctx, g.ID, carol.user, true); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.AddMembers(ctx, g.ID, []uint64{bob.user}); err != nil {
		t.Fatal(err)
	}
	// In the group, alice's messages reach bob.
	sent, err := ca.Send(ctx, g.ID, "hello team")
	if err != nil {
		t.Fatal(err)
	}
	collect(t, cb, "alice's group message", func(evs []wire.Event) bool {
		return slices.ContainsFunc(evs, func(e wire.Event) bool { return e.Conv == g.ID && e.Seq == sent.Seq })
	})

	blocked, err := cb.BlockList(ctx)
	if err != nil || !slices.Equal(blocked, []uint64{alice.user}) {
		t.Fatalf("block.list: %v, %v", blocked, err)
	}
	if got, err := ca.BlockList(ctx); err != nil || len(got) != 0 {
		t.Fatalf("alice's block.list: %v, %v", got, err)
	}
	if err := cb.Block(ctx, bob.user); !isCode(err, wire.CodeInvalid) {
		t.Fatalf("blocking oneself: %v", err)
	}
	if err := cb.Block(ctx, 1<<40); !isCode(err, wire.CodeNotFound) {
		t.Fatalf("blocking nobody: %v", err)
	}
	if err := cb.Unblock(ctx, alice.user); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.OpenDirect(ctx, bob.user); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Send(ctx, dm.ID, "thanks"); err != nil {
		t.Fatal(err)
	}

	// Who may add me to groups: nobody.
	if err := cd.SetPrivacy(ctx, false, wire.GroupAddNobody); err != nil {
		t.Fatal(err)
	}
	me, err := cd.UserByID(ctx, dave.user)
	if err != nil || me.GroupAdd != wire.GroupAddNobody || me.HideLastSeen {
		t.Fatalf("dave's own settings: %+v, %v", me, err)
	}
	if other, err := ca.UserByID(ctx, dave.user); err != nil || other.GroupAdd != "" || other.HideLastSeen {
		t.Fatalf("dave's settings as alice sees them: %+v, %v", other, err)
	}
	_, err = ca.CreateGroup(ctx, "with dave", []uint64{carol.user, dave.user})
	forbidden("group.create with a user who allows nobody", err)
	// Hiding last_seen leaves the group-add setting as it is.
	if err := cd.SetLastSeenHidden(ctx, true); err != nil {
		t.Fatal(err)
	}
	if me, err = cd.UserByID(ctx, dave.user); err != nil || me.GroupAdd != wire.GroupAddNobody || !me.HideLastSeen {
		t.Fatalf("dave's settings: %+v, %v", me, err)
	}

	// Contacts: carol shares a 1:1 with dave, alice shares nothing.
	if err := cd.SetPrivacy(ctx, true, wire.GroupAddContacts); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.OpenDirect(ctx, dave.user); err != nil {
		t.Fatal(err)
	}
	_, err = ca.AddMembers(ctx, g.ID, []uint64{dave.user})
	forbidden("group.add by a stranger of a contacts-only user", err)
	if _, err := cc.AddMembers(ctx, g.ID, []uint64{dave.user}); err != nil {
		t.Fatalf("group.add by a contact: %v", err)
	}

	if err := cd.SetPrivacy(ctx, true, "friends"); !isCode(err, wire.CodeInvalid) {
		t.Fatalf("privacy.set with a bad group_add: %v", err)
	}
}
