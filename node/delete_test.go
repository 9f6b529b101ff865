package node_test

import (
	"testing"

	"parley/wire"
)

// TestConformanceDelete walks §4.2's msg.delete and §4.3's deleted event.
func TestConformanceDelete(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	a, _ := dialConn(t, n, login(t, n, alice, "phone"))
	b, _ := dialConn(t, n, login(t, n, bob, "phone"))
	c, _ := dialConn(t, n, login(t, n, carol, "phone"))
	rep := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", rep)
	dm := rep.Info.ID
	sent := a.do(t, map[string]any{"t": "send", "conv": dm, "cmid": "d1", "body": "oops"})
	wantOK(t, "send", sent)

	t.Run("§4.2 msg.delete errors", func(t *testing.T) {
		wantCode(t, "no seq", a.do(t, map[string]any{"t": "msg.delete", "conv": dm}), wire.CodeInvalid)
		wantCode(t, "no conv", a.do(t, map[string]any{"t": "msg.delete", "seq": sent.Seq}), wire.CodeInvalid)
		wantCode(t, "not the sender", b.do(t, map[string]any{"t": "msg.delete", "conv": dm, "seq": sent.Seq}), wire.CodeForbidden)
		wantCode(t, "not a member", c.do(t, map[string]any{"t": "msg.delete", "conv": dm, "seq": sent.Seq}), wire.CodeNotMember)
		wantCode(t, "past the last seq", a.do(t, map[string]any{"t": "msg.delete", "conv": dm, "seq": sent.Seq + 5}), wire.CodeNotFound)
		wantCode(t, "no such conversation", a.do(t, map[string]any{"t": "msg.delete", "conv": 999, "seq": 1}), wire.CodeNotFound)
		wantCode(t, "not a message", a.do(t, map[string]any{"t": "msg.delete", "conv": dm, "seq": 1}), wire.CodeInvalid)
	})
	var del wire.Reply
	t.Run("§4.2 msg.delete replies conv, seq of the deleted event, idx", func(t *testing.T) {
		del = a.do(t, map[string]any{"t": "msg.delete", "conv": dm, "seq": sent.Seq})
		wantOK(t, "msg.delete", del)
		if del.Conv != dm || del.Seq != sent.Seq+1 || del.Index == 0 {
			t.Fatalf("reply %+v", del)
		}
	})
	t.Run("§4.3 members get a deleted event whose target is the message", func(t *testing.T) {
		ev := b.event(t, dm, del.Seq)
		if ev.Kind != wire.KindDeleted || ev.Target != sent.Seq || ev.From != alice.user {
			t.Fatalf("event %+v", ev)
		}
	})
	t.Run("§4.3 the deleted message keeps its seq, with deleted and no body", func(t *testing.T) {
		h := b.do(t, map[string]any{"t": "history", "conv": dm, "dir": "after", "seq": sent.Seq - 1, "limit": 1})
		wantOK(t, "history", h)
		if len(h.Events) != 1 || h.Events[0].Seq != sent.Seq || !h.Events[0].Deleted || h.Events[0].Body != "" ||
			h.Events[0].Target != del.Seq || h.Events[0].Kind != wire.KindMessage {
			t.Fatalf("history %+v", h.Events)
		}
	})
	t.Run("§4.2 deleting a deleted message returns the first deletion", func(t *testing.T) {
		again := a.do(t, map[string]any{"t": "msg.delete", "conv": dm, "seq": sent.Seq})
		wantOK(t, "msg.delete again", again)
		if again.Seq != del.Seq {
			t.Fatalf("again: %+v", again)
		}
	})
}
