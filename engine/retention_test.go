package engine

import "testing"

// TestExpireMessages: retention deletes, per conversation, the events
// older than the cutoff and nothing else; FirstSeq says where history now
// starts; unread no longer counts what went; sync and history serve what
// is kept; attachments lose their reference; a budget smaller than the
// work resumes where it stopped; a replica replaying the log and a
// reopened engine agree.
func TestExpireMessages(t *testing.T) {
	defer func(n int) { expireMessagesBudget = n }(expireMessagesBudget)
	expireMessagesBudget = 3

	b := newMediaBed(t, t.TempDir()) // alice 1, bob 2, carol 3; their 1:1 is conversation 1; one entry a second from ts 1,001,000
	id := b.upload(1, 1, fileBytes(5, 100), "old.pdf")
	oldAtt := b.ok(send(1, 1, "a0", "with a file", id))
	var old []uint64
	for i := range 4 {
		old = append(old, b.ok(send(1, 1, "o"+string(rune('0'+i)), "old")).Seq)
	}
	g := b.ok(&Command{Op: OpCreateGroup, User: 2, Name: "g", Members: []uint64{3}}).Conv
	b.ok(send(2, g, "g0", "old in the group"))
	cutoff := b.ts + 1 // everything so far is older
	b.ts += 10_000
	kept := b.ok(send(1, 1, "k0", "kept"))
	keptIdx := b.index

	// bob's unread in the 1:1 before: 6 messages.
	if ci, _ := b.e.ConversationFor(2, 1); ci.Unread != 6 || ci.FirstSeq != 1 {
		t.Fatalf("before: unread %d first %d", ci.Unread, ci.FirstSeq)
	}
	total := 0
	for range 8 { // budget 3: several commands, resuming
		total += b.ok(&Command{Op: OpExpireMessages, Ts: cutoff}).Expired
	}
	// 1:1: created + 5 old messages; group: created + 1 message.
	if total != 8 {
		t.Fatalf("expired %d events, want 8", total)
	}
	ci, _ := b.e.ConversationFor(2, 1)
	if ci.FirstSeq != kept.Seq || ci.Unread != 1 || ci.LastSeq != kept.Seq {
		t.Fatalf("after: first %d (want %d) unread %d (want 1) last %d", ci.FirstSeq, kept.Seq, ci.Unread, ci.LastSeq)
	}
	evs, more, code := b.e.History(2, 1, 0, Before, 50, Budget{})
	if code != ErrCodeNone || more || len(evs) != 1 || evs[0].Seq != kept.Seq {
		t.Fatalf("history after: %+v more=%v %s", evs, more, code)
	}
	page, code := b.e.Sync(2, SyncQuery{Since: 0})
	if code != ErrCodeNone {
		t.Fatal(code)
	}
	for _, ch := range page.Convs {
		for _, ev := range ch.Events {
			if ev.Ts < cutoff {
				t.Fatalf("sync served an expired event %+v", ev)
			}
		}
		if ch.Info.ID == 1 && (len(ch.Events) != 1 || ch.Events[0].Seq != kept.Seq) {
			t.Fatalf("sync of the 1:1: %+v", ch.Events)
		}
	}
	if m, _ := b.e.Media(id); m.Refs != 0 {
		t.Fatalf("the expired message's file still has %d references", m.Refs)
	}
	b.fail(&Command{Op: OpDeleteMessage, User: 1, Conv: 1, Seq: oldAtt.Seq}, ErrCodeNotFound)
	// A send after keeps going from the last seq; messages at or after the
	// cutoff stay through further sweeps.
	after := b.ok(send(1, 1, "k1", "after"))
	if after.Seq != kept.Seq+1 {
		t.Fatalf("seq after retention %d, want %d", after.Seq, kept.Seq+1)
	}
	for range 3 {
		b.ok(&Command{Op: OpExpireMessages, Ts: cutoff})
	}
	if evs, _, _ := b.e.History(2, 1, 0, After, 50, Budget{}); len(evs) != 2 {
		t.Fatalf("kept events: %+v", evs)
	}
	_ = keptIdx
	_ = old

	// Another replica replaying the log, and a reopened engine, agree.
	other := openEngine(t, t.TempDir())
	defer other.Close()
	for _, en := range b.log {
		applyEntry(t, other, en)
	}
	if dumpState(t, other) != dumpState(t, b.e) {
		t.Fatal("a replica replaying the log differs")
	}
	b.fail(&Command{Op: OpExpireMessages}, ErrCodeInvalid)
}

// TestExpireMessagesBudgetInsideAnEntry: when the budget stops among the
// events of one entry, sync still finds the rest of them.
func TestExpireMessagesBudgetInsideAnEntry(t *testing.T) {
	defer func(n int) { expireMessagesBudget = n }(expireMessagesBudget)
	expireMessagesBudget = 3
	b := newMediaBed(t, t.TempDir())
	res := b.apply(send(1, 1, "b0", "0"), send(1, 1, "b1", "1"), send(1, 1, "b2", "2"), send(1, 1, "b3", "3"), send(1, 1, "b4", "4"))
	cutoff := b.ts + 1
	b.ts += 10_000
	// The created event and two of the entry's messages go; three stay.
	if n := b.ok(&Command{Op: OpExpireMessages, Ts: cutoff}).Expired; n != 3 {
		t.Fatalf("first step expired %d, want 3", n)
	}
	page, _ := b.e.Sync(2, SyncQuery{Since: 0})
	var seqs []uint64
	for _, ch := range page.Convs {
		if ch.Info.ID == 1 {
			for _, ev := range ch.Events {
				seqs = append(seqs, ev.Seq)
			}
		}
	}
	if len(seqs) != 3 || seqs[0] != res[2].Seq {
		t.Fatalf("sync between the steps: %v, want the entry's last three from %d", seqs, res[2].Seq)
	}
	if n := b.ok(&Command{Op: OpExpireMessages, Ts: cutoff}).Expired; n != 3 {
		t.Fatalf("second step expired %d, want 3", n)
	}
	if ci, _ := b.e.ConversationFor(2, 1); ci.FirstSeq != res[4].Seq+1 {
		t.Fatalf("first seq %d, want %d", ci.FirstSeq, res[4].Seq+1)
	}
}
