package client

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"parley/internal/testwait"
	"parley/wire"
)

// The server bounds history and sync pages by bytes as well as by count
// (hello's max_reply): a page may hold fewer items than asked for, and a
// sync page may end among conversations sharing a change index (next_conv).
// The client pages on in every case and delivers each event once, in order.

func TestCatchUpPagedByBytes(t *testing.T) {
	cl := newCluster(t, 1)
	// 40 kB pages: two or three 16 KiB messages each.
	cl.set(func(cl *testCluster) { cl.replyBytes = 40_000 })
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	big := strings.Repeat("x", wire.MaxBodyBytes)
	var groups []uint64
	for i := range 3 {
		groups = append(groups, cl.group(bob, fmt.Sprintf("g%d", i), alice))
	}
	for i := range 20 {
		for _, g := range groups {
			cl.post(bob, g, fmt.Sprint(i)+big[len(fmt.Sprint(i)):])
		}
	}
	// Three sends in one entry, twice: conversations sharing their last
	// index, more of them than a page holds.
	cl.postAll(bob, big, groups...)
	cl.postAll(bob, "small", groups...)

	c := dial(t, testConfig(tok, cl.nodes[0].url))
	evs := next(t, c, 3*(1+20+2))
	for _, g := range groups {
		expectSeqs(t, evs, g, 1, 23)
	}
	if h := cl.get(func(cl *testCluster) int { return cl.historyCalls }); h == 0 {
		t.Fatal("no history page: the sync pages were not cut by bytes")
	}
	if s := cl.get(func(cl *testCluster) int { return cl.syncCalls }); s < 2 {
		t.Fatalf("%d sync pages", s)
	}
	testwait.Eventually(t, "the cursor", func() bool { return c.Cursor() == cl.index() })
	expectMarker(t, cl, c, bob, groups[1])

	// History pages cut by bytes: more is set on each short page.
	var got []uint64
	var seq uint64
	for more := true; more; {
		var page []wire.Event
		var err error
		page, more, err = c.History(testCtx(t), groups[0], wire.DirAfter, seq, wire.MaxHistoryLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			t.Fatal("an empty history page")
		}
		for _, ev := range page {
			got = append(got, ev.Seq)
		}
		seq = page[len(page)-1].Seq
	}
	if len(got) != 23 || !slices.IsSorted(got) || got[0] != 1 {
		t.Fatalf("history after 0: %v", got)
	}
}

func TestGroupSharingAnIndexSplitAcrossSyncPages(t *testing.T) {
	cl := newCluster(t, 1)
	cl.set(func(cl *testCluster) { cl.syncConvs = 2 })
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	var groups []uint64
	for i := range 5 {
		groups = append(groups, cl.group(bob, fmt.Sprintf("g%d", i), alice))
	}
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	next(t, c, 5)
	n := cl.nodes[0]
	n.refuse.Store(true)
	n.dropConns()
	testwait.Eventually(t, "the disconnection", func() bool { return !c.State().Connected })
	syncs := cl.get(func(cl *testCluster) int { return cl.syncCalls })
	cl.postAll(bob, "one entry", groups...) // five conversations, one index, pages of two
	n.refuse.Store(false)

	evs := next(t, c, 5)
	for _, g := range groups {
		expectSeqs(t, evs, g, 2, 2)
	}
	if s := cl.get(func(cl *testCluster) int { return cl.syncCalls }) - syncs; s != 3 {
		t.Fatalf("%d sync pages, want 3 (2+2+1 conversations)", s)
	}
	testwait.Eventually(t, "the cursor", func() bool { return c.Cursor() == cl.index() })
	expectMarker(t, cl, c, bob, groups[4])
}

func TestReadsRetryBusy(t *testing.T) {
	cl := newCluster(t, 1)
	_, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	cl.set(func(cl *testCluster) { cl.busyReads = 3 })
	u, err := c.UserByID(testCtx(t), bob)
	if err != nil || u.Username != "bob" {
		t.Fatalf("user.get: %+v, %v", u, err)
	}
	if left := cl.get(func(cl *testCluster) int { return cl.busyReads }); left != 0 {
		t.Fatalf("%d busy answers left", left)
	}
}

func TestConvListAndMembersArePaged(t *testing.T) {
	cl := newCluster(t, 1)
	cl.set(func(cl *testCluster) { cl.convListMax, cl.membersPage = 2, 3 })
	alice, tok := cl.addUser("alice")
	var users []uint64
	for i := range 7 {
		u, _ := cl.addUser(fmt.Sprintf("u%d", i))
		users = append(users, u)
	}
	var groups []uint64
	for i := range 5 {
		groups = append(groups, cl.group(alice, fmt.Sprintf("g%d", i), users...))
	}
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	convs, err := c.ConvList(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, ci := range convs {
		ids = append(ids, ci.ID)
	}
	if want := []uint64{groups[4], groups[3], groups[2], groups[1], groups[0]}; !slices.Equal(ids, want) {
		t.Fatalf("conv.list: %v, want %v", ids, want)
	}
	info, err := c.Conversation(testCtx(t), groups[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]uint64{alice}, users...); !slices.Equal(info.Members, want) || !slices.Equal(info.Admins, []uint64{alice}) {
		t.Fatalf("members %v admins %v, want %v", info.Members, info.Admins, want)
	}
}
