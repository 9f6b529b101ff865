package engine

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
)

// TestPagesStayWithinBudget builds conversations of events of random sizes,
// some sharing entries, and pages through every one of them with sync and
// history under budgets from below one event to above everything: every
// page stays within its budget unless it holds a single item, no page is
// empty while more follow, and every event arrives exactly once.
func TestPagesStayWithinBudget(t *testing.T) {
	e := openEngine(t, filepath.Join(t.TempDir(), "state"))
	defer e.Close()
	rng := rand.New(rand.NewPCG(7, 8))
	var index uint64
	apply := func(cmds ...*Command) []*Result {
		index++
		return applyEntry(t, e, entry{index: index, ts: int64(index) * 1000, cmds: mustEncode(t, cmds...)})
	}
	apply(&Command{Op: OpRegister, Username: "alice", PasswordHash: []byte("h")},
		&Command{Op: OpRegister, Username: "bob", PasswordHash: []byte("h")},
		&Command{Op: OpAddDevice, User: 1, DeviceName: "a"})
	const convs = 12
	for i := range convs {
		apply(&Command{Op: OpCreateGroup, User: 1, Name: fmt.Sprintf("g%d", i), Members: []uint64{2}})
	}
	total := convs // the created events
	for n := 0; n < 300; {
		// One to four sends per entry, to random conversations.
		var cmds []*Command
		for range 1 + rng.IntN(4) {
			size := 1 + rng.IntN(MaxBodyBytes)
			if rng.IntN(2) == 0 {
				size = 1 + rng.IntN(200)
			}
			cmds = append(cmds, &Command{Op: OpSend, User: 1, Device: 1, Conv: uint64(1 + rng.IntN(convs)),
				ClientMsgID: fmt.Sprintf("m%d", n), Body: strings.Repeat("x", size)})
			n++
		}
		for _, r := range apply(cmds...) {
			if r.Err != ErrCodeNone {
				t.Fatal(r.Err)
			}
		}
		total += len(cmds)
	}

	for _, bytes := range []int{1, 5000, 20_000, 70_000, 256 << 10, 64 << 20} {
		budget := Budget{Bytes: bytes, Size: testSizer{}}
		check := func(what string, size, items int, more bool) {
			t.Helper()
			if size > bytes && items > 1 {
				t.Fatalf("budget %d: %s: %d bytes in %d items", bytes, what, size, items)
			}
			if items == 0 && more {
				t.Fatalf("budget %d: %s: an empty page with more", bytes, what)
			}
		}
		got := map[[2]uint64]int{}
		var after, afterConv uint64
		for pages := 0; ; pages++ {
			if pages > 10_000 {
				t.Fatalf("budget %d: sync does not end", bytes)
			}
			page, code := e.Sync(2, SyncQuery{After: after, AfterConv: afterConv, Convs: 5, Events: 20, Budget: budget})
			if code != ErrCodeNone {
				t.Fatal(code)
			}
			size, items := 0, 0
			for _, cs := range page.Convs {
				size += testSizer{}.ConvSize(&cs.Info)
				items += max(1, len(cs.Events))
				for _, ev := range cs.Events {
					size += testSizer{}.EventSize(&ev)
					got[[2]uint64{ev.Conv, ev.Seq}]++
				}
				last := uint64(0)
				if len(cs.Events) > 0 {
					last = cs.Events[len(cs.Events)-1].Seq
				}
				for more := cs.More; more; {
					if last == 0 {
						t.Fatalf("budget %d: conv %d: more without events", bytes, cs.Info.ID)
					}
					var evs []Event
					evs, more, code = e.History(2, cs.Info.ID, last, After, MaxHistoryLimit, budget)
					if code != ErrCodeNone {
						t.Fatal(code)
					}
					hsize := 0
					for _, ev := range evs {
						hsize += testSizer{}.EventSize(&ev)
						got[[2]uint64{ev.Conv, ev.Seq}]++
					}
					check("history", hsize, len(evs), more)
					if len(evs) > 0 {
						last = evs[len(evs)-1].Seq
					}
				}
			}
			check("sync", size, items, page.More)
			if !page.More {
				break
			}
			after, afterConv = page.Next, page.NextConv
		}
		if len(got) != total {
			t.Fatalf("budget %d: %d distinct events, want %d", bytes, len(got), total)
		}
		for k, n := range got {
			if n != 1 {
				t.Fatalf("budget %d: event %v %d times", bytes, k, n)
			}
		}
		// History before the newest, paged to the start.
		for conv := uint64(1); conv <= convs; conv++ {
			var anchor uint64
			seen := 0
			for more := true; more; {
				var evs []Event
				var code ErrCode
				evs, more, code = e.History(2, conv, anchor, Before, MaxHistoryLimit, budget)
				if code != ErrCodeNone {
					t.Fatal(code)
				}
				hsize := 0
				for _, ev := range evs {
					hsize += testSizer{}.EventSize(&ev)
				}
				check("history before", hsize, len(evs), more)
				seen += len(evs)
				if len(evs) > 0 {
					anchor = evs[len(evs)-1].Seq
				}
			}
			if ci, _ := e.Conversation(conv); uint64(seen) != ci.LastSeq {
				t.Fatalf("budget %d: conv %d: %d events before, want %d", bytes, conv, seen, ci.LastSeq)
			}
		}
		// conv.list pages.
		listed := 0
		var la, lc uint64
		for {
			cs, more := e.ConversationList(2, la, lc, 3, budget)
			size := 0
			for i := range cs {
				size += testSizer{}.ConvSize(&cs[i])
			}
			check("conv list", size, len(cs), more)
			listed += len(cs)
			if !more {
				break
			}
			la, lc = cs[len(cs)-1].LastIndex, cs[len(cs)-1].ID
		}
		if listed != convs {
			t.Fatalf("budget %d: conv list has %d, want %d", bytes, listed, convs)
		}
	}
}
