package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"parley/client"
	"parley/wire"
)

func isReceipt(user, read uint64) func(client.Signal) bool {
	return func(s client.Signal) bool {
		return s.Receipt != nil && s.Receipt.User == user && s.Receipt.Read >= read
	}
}

// pollConv polls conv.get until pred holds.
func pollConv(t *testing.T, c *client.Client, conv uint64, what string, pred func(*wire.ConvInfo) bool) *wire.ConvInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.Conversation(ctxT(t), conv)
		if err != nil {
			t.Fatal(err)
		}
		if pred(info) {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: conv %+v", what, info)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDirectReceiptsReachBothSenderDevices(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	a1 := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	a2 := dial(t, []string{n.WSURL()}, login(t, n, alice, "laptop"), 0)
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	dm, err := a1.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	var last *wire.Reply
	for i := range 3 {
		if last, err = a1.Send(ctx, dm.ID, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := cb.Receipt(ctx, dm.ID, last.Seq, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{a1, a2} {
		s := nextSignal(t, c, "delivered", func(s client.Signal) bool { return s.Receipt != nil && s.Receipt.User == bob.user })
		if s.Receipt.Delivered != last.Seq || s.Receipt.Conv != dm.ID {
			t.Fatalf("delivered receipt %+v", s.Receipt)
		}
	}
	if err := cb.Receipt(ctx, dm.ID, 0, last.Seq); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Client{a1, a2} {
		nextSignal(t, c, "read", isReceipt(bob.user, last.Seq))
	}
	info := pollConv(t, a2, dm.ID, "peer cursors", func(ci *wire.ConvInfo) bool { return ci.PeerRead == last.Seq })
	if info.PeerDelivered != last.Seq {
		t.Fatalf("peer delivered %d", info.PeerDelivered)
	}
	// A stale report is a silent no-op; a seq beyond the last is refused; a stranger is refused.
	if err := cb.Receipt(ctx, dm.ID, 0, 1); err != nil {
		t.Fatalf("stale report: %v", err)
	}
	if err := cb.Receipt(ctx, dm.ID, 0, last.Seq+10); !isCode(err, wire.CodeInvalid) {
		t.Fatalf("beyond last: %v", err)
	}
	carol := register(t, n, "carol")
	cc := dial(t, []string{n.WSURL()}, login(t, n, carol, "phone"), 0)
	if err := cc.Receipt(ctx, dm.ID, 0, 1); !isCode(err, wire.CodeNotMember) {
		t.Fatalf("stranger: %v", err)
	}
	pollConv(t, a1, dm.ID, "cursor never moves back", func(ci *wire.ConvInfo) bool { return ci.PeerRead == last.Seq })
}

func TestReadOnOneDeviceClearsUnreadOnTheOther(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	bobPhone := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	bobLaptop := dial(t, []string{n.WSURL()}, login(t, n, bob, "laptop"), 0)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	var last *wire.Reply
	for i := range 4 {
		if last, err = ca.Send(ctx, dm.ID, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	pollConv(t, bobLaptop, dm.ID, "unread before", func(ci *wire.ConvInfo) bool { return ci.Unread == 4 })
	if err := bobPhone.Receipt(ctx, dm.ID, 0, last.Seq); err != nil {
		t.Fatal(err)
	}
	nextSignal(t, bobLaptop, "own read cursor on the other device", isReceipt(bob.user, last.Seq))
	pollConv(t, bobLaptop, dm.ID, "unread after", func(ci *wire.ConvInfo) bool { return ci.Unread == 0 && ci.Read == last.Seq })
	// A device that syncs later sees the same.
	fresh := dial(t, []string{n.WSURL()}, login(t, n, bob, "tablet"), 0)
	list, err := fresh.ConvList(ctx)
	if err != nil || len(list) != 1 || list[0].Unread != 0 {
		t.Fatalf("conv list on a new device: %+v %v", list, err)
	}
}

func TestGroupReceiptsAreAggregated(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	var users []account
	var clients []*client.Client
	for i := range 4 {
		a := register(t, n, fmt.Sprintf("member%d", i))
		users = append(users, a)
		clients = append(clients, dial(t, []string{n.WSURL()}, login(t, n, a, "phone"), 0))
	}
	g, err := clients[0].CreateGroup(ctx, "four", []uint64{users[1].user, users[2].user, users[3].user})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := clients[0].Send(ctx, g.ID, "did you read this?")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients[1:3] {
		if err := c.Receipt(ctx, g.ID, 0, msg.Seq); err != nil {
			t.Fatal(err)
		}
	}
	// The sender gets counts, not one event per member.
	s := nextSignal(t, clients[0], "read counts", func(s client.Signal) bool {
		if s.ReadCounts == nil {
			return false
		}
		for _, it := range s.ReadCounts.Items {
			if it.Seq == msg.Seq && it.Read == 2 {
				return true
			}
		}
		return false
	})
	for _, it := range s.ReadCounts.Items {
		if it.Seq == msg.Seq && (it.Members != 3 || it.From != users[0].user) {
			t.Fatalf("read counts item %+v", it)
		}
	}
	noSignal(t, clients[0], "no per-member receipts in a group", func(s client.Signal) bool { return s.Receipt != nil && s.Receipt.User != users[0].user })
	// Who read it, on request, paged.
	rep, err := clients[0].Readers(ctx, g.ID, msg.Seq, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Readers) != 1 || !rep.More {
		t.Fatalf("first page %+v", rep)
	}
	rep2, err := clients[0].Readers(ctx, g.ID, msg.Seq, rep.Next, 10)
	if err != nil {
		t.Fatal(err)
	}
	readers := append(rep.Readers, rep2.Readers...)
	want := map[uint64]bool{users[0].user: true, users[1].user: true, users[2].user: true} // the sender has read their own message
	if len(readers) != len(want) {
		t.Fatalf("readers %v, want %v", readers, want)
	}
	for _, r := range readers {
		if !want[r] {
			t.Fatalf("readers %v, want %v", readers, want)
		}
	}
}

func TestReceiptBurstIsCoalesced(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	const burst = 1000
	var last *wire.Reply
	for i := range burst {
		if last, err = ca.Send(ctx, dm.ID, fmt.Sprintf("m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	before := metricValue(t, n, "parley_commits_total")
	for seq := last.Seq - burst + 1; seq <= last.Seq; seq++ {
		if err := cb.Receipt(ctx, dm.ID, seq, seq); err != nil {
			t.Fatal(err)
		}
	}
	pollConv(t, ca, dm.ID, "all read", func(ci *wire.ConvInfo) bool { return ci.PeerRead == last.Seq })
	if entries := metricValue(t, n, "parley_commits_total") - before; entries > 100 {
		t.Fatalf("%v Raft entries for %d receipt reports: not coalesced", entries, burst)
	}
}

func TestRevokedDeviceIsCutOff(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	bob := register(t, n, "bob")
	phone := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	laptopTok := login(t, n, bob, "laptop")
	laptop := dial(t, []string{n.WSURL()}, laptopTok, 0)
	devs, _, err := phone.Devices(ctx, 0, 10)
	if err != nil || len(devs) != 2 {
		t.Fatalf("devices %+v %v", devs, err)
	}
	var laptopID uint64
	for _, d := range devs {
		if !d.Current {
			laptopID = d.ID
		}
	}
	if err := phone.RevokeDevice(ctx, laptopID); err != nil {
		t.Fatal(err)
	}
	// The laptop's connection closes and its token no longer connects.
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-laptop.Events():
			if !ok {
				goto closed
			}
		case <-deadline:
			t.Fatal("revoked device still connected")
		}
	}
closed:
	if err := laptop.Ping(ctx); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("revoked client: %v", err)
	}
	if _, err := client.Dial(ctx, client.Config{URLs: []string{n.WSURL()}, Token: laptopTok}); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("revoked token dialled: %v", err)
	}
	devs, _, _ = phone.Devices(ctx, 0, 10)
	for _, d := range devs {
		if d.ID == laptopID && !d.Revoked {
			t.Fatal("device not marked revoked")
		}
	}
	// Another user's device cannot be revoked.
	alice := register(t, n, "alice")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	if err := ca.RevokeDevice(ctx, devs[0].ID); err == nil {
		t.Fatal("revoked another user's device")
	}
}

func TestLastSeenSurvivesRestartAndPrivacyHidesIt(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir)
	cfg.PresenceGrace = time.Millisecond
	cfg.SignalTick = 5 * time.Millisecond
	n := startNodeWith(t, cfg)
	ctx := ctxT(t)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	aliceTok, bobTok := login(t, n, alice, "phone"), login(t, n, bob, "phone")
	cb := dial(t, []string{n.WSURL()}, bobTok, 0)
	cb.Close()
	ca := dial(t, []string{n.WSURL()}, aliceTok, 0)
	var seen int64
	deadline := time.Now().Add(10 * time.Second)
	for seen == 0 {
		u, err := ca.UserByID(ctx, bob.user)
		if err != nil {
			t.Fatal(err)
		}
		seen = u.LastSeen
		if time.Now().After(deadline) {
			t.Fatal("last_seen never written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ca.Close()
	n.Close()

	n2 := startNodeWith(t, cfg)
	ca = dial(t, []string{n2.WSURL()}, aliceTok, 0)
	u, err := ca.UserByID(ctx, bob.user)
	if err != nil || u.LastSeen != seen {
		t.Fatalf("after restart last_seen %d (%v), want %d", u.LastSeen, err, seen)
	}
	cb = dial(t, []string{n2.WSURL()}, bobTok, 0)
	if err := cb.SetLastSeenHidden(ctx, true); err != nil {
		t.Fatal(err)
	}
	if u, _ := ca.UserByID(ctx, bob.user); u.LastSeen != 0 {
		t.Fatalf("hidden last_seen shown: %d", u.LastSeen)
	}
	if u, _ := cb.UserByID(ctx, bob.user); u.LastSeen == 0 {
		t.Fatal("the user's own last_seen hidden from themselves")
	}
}
