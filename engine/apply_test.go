package engine

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// setup registers n users with one device each (device i belongs to user
// i) in entry 1 and returns the next free index.
func setup(t testing.TB, e *Engine, n int) uint64 {
	t.Helper()
	var cmds []*Command
	for i := 1; i <= n; i++ {
		cmds = append(cmds, &Command{Op: OpRegister, Username: fmt.Sprintf("user%d", i), PasswordHash: []byte("h")})
	}
	for i := 1; i <= n; i++ {
		cmds = append(cmds, &Command{Op: OpAddDevice, User: uint64(i), DeviceName: "d"})
	}
	for _, r := range applyEntry(t, e, entry{index: 1, ts: 1, cmds: mustEncode(t, cmds...)}) {
		if r.Err != ErrCodeNone {
			t.Fatal(fmtResult(r))
		}
	}
	return 2
}

func TestMembersPerCommandLimit(t *testing.T) {
	e := openEngine(t, t.TempDir())
	defer e.Close()
	idx := setup(t, e, 1001)
	users := make([]uint64, 1001)
	for i := range users {
		users[i] = uint64(i + 1)
	}
	res := applyEntry(t, e, entry{index: idx, cmds: mustEncode(t,
		&Command{Op: OpCreateGroup, User: 1, Name: "too many", Members: users},
		&Command{Op: OpCreateGroup, User: 1, Name: "all", Members: users[1:]}, // 1,000 others
	)})
	if res[0].Err != ErrCodeTooLarge || res[1].Err != ErrCodeNone {
		t.Fatalf("got %s / %s", fmtResult(res[0]), fmtResult(res[1]))
	}
	if ci, _ := e.Conversation(res[1].Conv); ci.MemberCount != 1001 || len(ci.Members) != 1001 {
		t.Fatalf("group has %d members", ci.MemberCount)
	}
	// A sync page leaves out the member lists of large groups.
	page, _ := e.Sync(1, SyncQuery{})
	if len(page.Convs) != 1 || page.Convs[0].Info.Members != nil || page.Convs[0].Info.MemberCount != 1001 {
		t.Fatalf("sync info: %+v", page.Convs[0].Info)
	}
}

// TestPublish: one Publish per entry that has events, after the state is
// visible; recipients are the members (plus the removed user); nothing for
// entries without events or skipped entries.
func TestPublish(t *testing.T) {
	e := openEngine(t, t.TempDir())
	defer e.Close()
	idx := setup(t, e, 4)
	rec := &publishChecker{e: e, t: t}
	e.SetPublisher(rec)

	res := applyEntry(t, e, entry{index: idx, cmds: mustEncode(t,
		&Command{Op: OpCreateGroup, User: 1, Name: "g", Members: []uint64{2, 3}},
		&Command{Op: OpSend, User: 2, Device: 2, Conv: 1, ClientMsgID: "a", Body: "x"},
		&Command{Op: OpRemoveMember, User: 1, Conv: 1, Member: 3},
		&Command{Op: OpSend, User: 1, Device: 1, Conv: 1, ClientMsgID: "b", Body: "y"},
	)})
	for _, r := range res {
		if r.Err != ErrCodeNone {
			t.Fatal(fmtResult(r))
		}
	}
	if rec.calls != 1 || len(rec.events) != 4 {
		t.Fatalf("%d calls, %d events", rec.calls, len(rec.events))
	}
	want := [][]uint64{{1, 2, 3}, {1, 2, 3}, {1, 2, 3}, {1, 2}}
	for i, ev := range rec.events {
		if !slices.Equal(ev.Recipients, want[i]) {
			t.Errorf("event %d (%s): recipients %v, want %v", i, ev.Kind, ev.Recipients, want[i])
		}
	}

	applyEntry(t, e, entry{index: idx + 1, cmds: mustEncode(t, &Command{Op: OpSend, User: 4, Device: 4, Conv: 1, ClientMsgID: "c", Body: "z"})})
	e.Apply(idx, 0, mustEncode(t, &Command{Op: OpRegister, Username: "late", PasswordHash: []byte("h")}))
	if rec.calls != 1 {
		t.Fatalf("%d Publish calls, want 1", rec.calls)
	}
}

type publishChecker struct {
	t      *testing.T
	e      *Engine
	calls  int
	events []Event
}

func (p *publishChecker) Publish(events []Event) {
	p.calls++
	p.events = append(p.events, events...)
	last := events[len(events)-1]
	if got := p.e.AppliedIndex(); got != last.Index {
		p.t.Errorf("published entry %d with the applied index at %d", last.Index, got)
	}
	if ci, _ := p.e.Conversation(last.Conv); ci.LastSeq != last.Seq {
		p.t.Errorf("published seq %d before the index shows it (%d)", last.Seq, ci.LastSeq)
	}
}

// TestApplyResultsAreValues: results are *Result; an entry of bad commands
// still advances the applied index and changes nothing else.
func TestApplyResultsAreValues(t *testing.T) {
	e := openEngine(t, t.TempDir())
	defer e.Close()
	before := dumpIndex(e)
	res := e.Apply(5, 0, [][]byte{{}, {1, 2}, mustEncode(t, &Command{Op: OpSend})[0]})
	if len(res) != 3 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res {
		if r.(*Result).Err == ErrCodeNone {
			t.Fatal("a bad command succeeded")
		}
	}
	if e.AppliedIndex() != 5 {
		t.Fatalf("applied index %d", e.AppliedIndex())
	}
	if after := dumpIndex(e); after != strings.Replace(before, "applied=0 ", "applied=5 ", 1) {
		t.Fatalf("index changed:\n%s\n%s", before, after)
	}
	if e.Apply(5, 0, nil) != nil || e.Apply(4, 0, nil) != nil {
		t.Fatal("an applied entry was applied again")
	}
}

// TestNewerCommandStopsApply: a committed command of a newer build (a
// later version byte, or an op this build does not know) is not refused
// as a bad one, which the newer replicas would apply: Apply calls the
// incompatible handler before writing anything of the entry, and panics
// if the handler returns.
func TestNewerCommandStopsApply(t *testing.T) {
	for name, raw := range map[string][]byte{
		"version": {commandVersion + 1, 0x80},
		"op":      {commandVersion, 0x81, 0xa2, 'o', 'p', 0xcc, byte(opCount)},
	} {
		t.Run(name, func(t *testing.T) {
			e := openEngine(t, t.TempDir())
			defer e.Close()
			var got uint64
			e.SetIncompatible(func(index uint64, err error) {
				if !errors.Is(err, ErrNewerCommand) {
					t.Errorf("handler got %v", err)
				}
				got = index
			})
			func() {
				defer func() {
					if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "upgrade this node") {
						t.Errorf("Apply went on: %v", r)
					}
				}()
				e.Apply(3, 0, [][]byte{mustEncode(t, &Command{Op: OpRegister, Username: "alice", PasswordHash: []byte("h")})[0], raw})
			}()
			if got != 3 {
				t.Fatalf("handler called for entry %d, want 3", got)
			}
		})
	}
}
