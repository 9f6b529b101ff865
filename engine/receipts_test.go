package engine

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestCursorSet checks the group cursor set against a plain list of the
// members' cursors under random joins, forward moves and departures.
func TestCursorSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var set cursorSet
	model := map[int]cursors{} // member -> cursors
	next := 0
	for step := range 5000 {
		switch op := rng.IntN(10); {
		case op < 2 || len(model) == 0:
			c := cursors{read: uint64(rng.IntN(20))}
			c.delivered = c.read + uint64(rng.IntN(3))
			model[next] = c
			next++
			set.add(c)
		case op < 3:
			for m, c := range model {
				delete(model, m)
				set.remove(c)
				break
			}
		default:
			for m, c := range model {
				to := cursors{read: c.read + uint64(rng.IntN(4))}
				to.delivered = max(c.delivered+uint64(rng.IntN(3)), to.read)
				model[m] = to
				set.move(c, to)
				break
			}
		}
		var delivered, read []uint64
		for _, c := range model {
			delivered, read = append(delivered, c.delivered), append(read, c.read)
		}
		slices.Sort(delivered)
		slices.Sort(read)
		if !slices.Equal(set.delivered, delivered) || !slices.Equal(set.read, read) {
			t.Fatalf("step %d: set %v / %v, members %v / %v", step, set.delivered, set.read, delivered, read)
		}
		seq := uint64(rng.IntN(30))
		r, d := set.atLeast(seq)
		wantR, wantD := 0, 0
		for _, c := range model {
			if c.read >= seq {
				wantR++
			}
			if c.delivered >= seq {
				wantD++
			}
		}
		if r != wantR || d != wantD {
			t.Fatalf("step %d: atLeast(%d) = %d/%d, want %d/%d", step, seq, r, d, wantR, wantD)
		}
	}
}

// TestReceiptPublishedAfterCommit: when a receipt event is published, the
// queries already show the cursors it announces (persist, then publish).
func TestReceiptPublishedAfterCommit(t *testing.T) {
	e := openEngine(t, t.TempDir())
	defer e.Close()
	idx := setup(t, e, 3)
	applyEntry(t, e, entry{index: idx, cmds: mustEncode(t,
		&Command{Op: OpOpenDirect, User: 1, Peer: 2},
		&Command{Op: OpCreateGroup, User: 1, Name: "g", Members: []uint64{2, 3}},
		&Command{Op: OpSend, User: 1, Device: 1, Conv: 1, ClientMsgID: "a", Body: "x"},
		&Command{Op: OpSend, User: 1, Device: 1, Conv: 2, ClientMsgID: "b", Body: "y"},
	)})
	p := &receiptChecker{t: t, e: e}
	e.SetPublisher(p)
	res := applyEntry(t, e, entry{index: idx + 1, cmds: mustEncode(t,
		&Command{Op: OpReceipts, User: 2, Device: 2, Items: []ReceiptItem{{Conv: 1, Read: 2}, {Conv: 2, Read: 2}}},
	)})
	if res[0].Err != ErrCodeNone || res[0].ItemErrors != nil {
		t.Fatal(fmtResult(res[0]))
	}
	if p.seen != 2 {
		t.Fatalf("%d receipt events, want 2", p.seen)
	}
}

type receiptChecker struct {
	t    *testing.T
	e    *Engine
	seen int
}

func (p *receiptChecker) Publish(events []Event) {
	for _, ev := range events {
		if ev.Kind != EventReceipt {
			continue
		}
		p.seen++
		ci, code := p.e.ConversationFor(ev.From, ev.Conv)
		if code != ErrCodeNone || ci.Read != ev.Read || ci.Delivered != ev.Delivered || ci.Unread != 0 {
			p.t.Errorf("published %+v while the reader's conversation shows %+v (%s)", ev, ci, code)
		}
		if read, _, _, _ := p.e.ReadCount(ev.Conv, ev.Read); read != 2 {
			p.t.Errorf("conv %d: ReadCount(%d) = %d at publish, want 2", ev.Conv, ev.Read, read)
		}
	}
}

// TestReadersScanIsBounded: a page of a large group that few have read
// examines a bounded number of members and says where to go on.
func TestReadersScanIsBounded(t *testing.T) {
	e := openEngine(t, t.TempDir())
	defer e.Close()
	const n = readersScanLimit + 500
	idx := setup(t, e, n)
	members := make([]uint64, 0, n)
	for u := uint64(2); u <= n; u++ {
		members = append(members, u)
	}
	var cmds []*Command
	for i := 0; i < len(members); i += MaxMembersPerCommand {
		if i == 0 {
			cmds = append(cmds, &Command{Op: OpCreateGroup, User: 1, Name: "big", Members: members[:MaxMembersPerCommand]})
			continue
		}
		cmds = append(cmds, &Command{Op: OpAddMembers, User: 1, Conv: 1, Members: members[i:min(i+MaxMembersPerCommand, len(members))]})
	}
	cmds = append(cmds,
		&Command{Op: OpSend, User: 1, Device: 1, Conv: 1, ClientMsgID: "m", Body: "hello"},
		&Command{Op: OpReceipts, User: n, Device: n, Items: []ReceiptItem{{Conv: 1, Read: 100}}}, // beyond: invalid
	)
	res := applyEntry(t, e, entry{index: idx, cmds: mustEncode(t, cmds...)})
	last := res[len(res)-2]
	if last.Err != ErrCodeNone {
		t.Fatal(fmtResult(last))
	}
	seq := last.Seq
	applyEntry(t, e, entry{index: idx + 1, cmds: mustEncode(t,
		&Command{Op: OpReceipts, User: n, Device: n, Items: []ReceiptItem{{Conv: 1, Read: seq}}})})

	// Readers of the message: the sender (sending reads) and user n.
	var got []uint64
	var after uint64
	calls := 0
	for {
		page, ok := e.Readers(1, seq, after, 10)
		if !ok {
			t.Fatal("no conversation")
		}
		calls++
		got = append(got, page.Users...)
		if !page.More {
			break
		}
		if page.Next <= after || calls > 10 {
			t.Fatalf("no progress: %+v after %d", page, after)
		}
		after = page.Next
	}
	if want := []uint64{1, n}; !slices.Equal(got, want) || calls != 2 {
		t.Fatalf("readers %v in %d calls, want %v in 2", got, calls, want)
	}
	read, delivered, count, _ := e.ReadCount(1, seq)
	if read != 2 || delivered != 2 || count != n {
		t.Fatalf("ReadCount = %d/%d of %d", read, delivered, count)
	}
	ci, _ := e.ConversationFor(2, 1)
	if ci.Unread != 1 {
		t.Fatalf("unread %d, want 1 (read %d)", ci.Unread, ci.Read)
	}
}
