package engine

import "testing"

// TestDeleteMessage: the sender deletes their message for everyone (and a
// group admin anyone's): the message keeps its seq without body or
// attachments, a deleted event names it, and history, sync and a replica
// rebuilt from the database show the same.
func TestDeleteMessage(t *testing.T) {
	b := newMediaBed(t, t.TempDir()) // alice 1, bob 2, carol 3; the 1:1 of alice and bob is conversation 1
	id := b.upload(1, 1, fileBytes(3, 100), "a.pdf")
	m := b.ok(send(1, 1, "m1", "secret", id))
	other := b.ok(send(2, 1, "m2", "from bob"))
	b.rec.take()

	b.fail(&Command{Op: OpDeleteMessage, User: 2, Conv: 1, Seq: m.Seq}, ErrCodeForbidden) // not the sender
	b.fail(&Command{Op: OpDeleteMessage, User: 3, Conv: 1, Seq: m.Seq}, ErrCodeNotMember)
	b.fail(&Command{Op: OpDeleteMessage, User: 1, Conv: 1, Seq: 99}, ErrCodeNotFound)
	b.fail(&Command{Op: OpDeleteMessage, User: 1, Conv: 9, Seq: 1}, ErrCodeNotFound)
	b.fail(&Command{Op: OpDeleteMessage, User: 1, Conv: 1, Seq: 1}, ErrCodeInvalid) // the created event
	del := b.ok(&Command{Op: OpDeleteMessage, User: 1, Conv: 1, Seq: m.Seq})
	if del.Seq != other.Seq+1 {
		t.Fatalf("deleted event at seq %d, want %d", del.Seq, other.Seq+1)
	}
	evs := b.rec.take()
	if len(evs) != 1 || evs[0].Kind != EventDeleted || evs[0].Target != m.Seq || evs[0].From != 1 || len(evs[0].Recipients) != 2 {
		t.Fatalf("published %+v", evs)
	}

	check := func(e *Engine) {
		t.Helper()
		page, _, code := e.History(2, 1, 0, Before, 10, Budget{})
		if code != ErrCodeNone || len(page) != 4 {
			t.Fatalf("history: %d events, %s", len(page), code)
		}
		got := map[uint64]Event{}
		for _, ev := range page {
			got[ev.Seq] = ev
		}
		if tomb := got[m.Seq]; !tomb.Deleted || tomb.Body != "" || tomb.Attachments != nil || tomb.Target != del.Seq || tomb.Kind != EventMessage || tomb.ClientMsgID != "m1" {
			t.Fatalf("the deleted message: %+v", tomb)
		}
		if d := got[del.Seq]; d.Kind != EventDeleted || d.Target != m.Seq {
			t.Fatalf("the deleted event: %+v", d)
		}
		if o := got[other.Seq]; o.Deleted || o.Body != "from bob" {
			t.Fatalf("another message: %+v", o)
		}
		if _, ok := e.Media(id); ok && e.MediaAllowed(2, id) {
			t.Fatal("bob still reaches the file of a deleted message")
		}
	}
	check(b.e)
	// Idempotent: no second event; the retry of a send still gets its ack.
	if again := b.ok(&Command{Op: OpDeleteMessage, User: 1, Conv: 1, Seq: m.Seq}); again.Seq != del.Seq || len(b.rec.take()) != 0 {
		t.Fatalf("second deletion: seq %d", again.Seq)
	}
	if dup := b.apply(send(1, 1, "m1", "secret", id))[0]; !dup.Duplicate || dup.Seq != m.Seq {
		t.Fatalf("a retried send of the deleted message: %+v", dup)
	}

	// A replica replaying the log, and the engine reopened, agree.
	other2 := openEngine(t, t.TempDir())
	defer other2.Close()
	for _, en := range b.log {
		applyEntry(t, other2, en)
	}
	if dumpDB(t, other2) != dumpDB(t, b.e) {
		t.Fatal("a replica replaying the log differs")
	}
	check(other2)

	// In a group an admin deletes anyone's message; a member only their own.
	g := b.ok(&Command{Op: OpCreateGroup, User: 1, Name: "g", Members: []uint64{2, 3}}).Conv
	bm := b.ok(send(2, g, "g1", "bob in the group"))
	b.fail(&Command{Op: OpDeleteMessage, User: 3, Conv: g, Seq: bm.Seq}, ErrCodeForbidden)
	b.ok(&Command{Op: OpDeleteMessage, User: 1, Conv: g, Seq: bm.Seq})
}
