package engine

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// entry is one Raft entry as the tests feed it to Apply.
type entry struct {
	index uint64
	ts    int64
	cmds  [][]byte
}

func openEngine(t testing.TB, dir string) *Engine {
	t.Helper()
	e, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustEncode(t testing.TB, cmds ...*Command) [][]byte {
	t.Helper()
	out := make([][]byte, len(cmds))
	for i, c := range cmds {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// snapshotBytes is a snapshot of e as Raft would send it to a replica.
func snapshotBytes(t testing.TB, e *Engine) *bytes.Buffer {
	t.Helper()
	snap, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// applyEntry applies an entry and returns its results as *Result.
func applyEntry(t testing.TB, e *Engine, en entry) []*Result {
	t.Helper()
	res := e.Apply(en.index, en.ts, en.cmds)
	if res == nil {
		return nil
	}
	if len(res) != len(en.cmds) {
		t.Fatalf("entry %d: %d results for %d commands", en.index, len(res), len(en.cmds))
	}
	out := make([]*Result, len(res))
	for i, r := range res {
		out[i] = r.(*Result)
	}
	return out
}

// recorder is a Publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []Event
	calls  int
}

func (r *recorder) Publish(events []Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.events = append(r.events, events...)
}

func (r *recorder) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

// dumpState renders the whole state: every key and value in Pebble, then
// the in-memory index, canonically ordered. Two engines with equal dumps
// hold the same state and the same indexes.
func dumpState(t testing.TB, e *Engine) string {
	t.Helper()
	return dumpDB(t, e) + dumpIndex(e)
}

func dumpDB(t testing.TB, e *Engine) string {
	t.Helper()
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	var b strings.Builder
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: []byte{0}, UpperBound: []byte{0xff}})
	if err != nil {
		t.Fatal(err)
	}
	for valid := it.First(); valid; valid = it.Next() {
		fmt.Fprintf(&b, "%x = %x\n", it.Key(), it.Value())
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func dumpIndex(e *Engine) string {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	ix := e.idx
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var b strings.Builder
	fmt.Fprintf(&b, "applied=%d last user=%d device=%d conv=%d signing key=%x push progress=%d\n", e.AppliedIndex(), ix.lastUser, ix.lastDevice, ix.lastConv, ix.signingKey, ix.pushProgress)
	for _, id := range slices.Sorted(maps.Keys(ix.users)) {
		u := ix.users[id]
		fmt.Fprintf(&b, "user %d %q byname=%d seen=%+v blocked=%v convs:", u.id, u.name, ix.names[u.name], u.seen,
			slices.Sorted(maps.Keys(u.blocked)))
		fmt.Fprintf(&b, " devices=%v", u.devices)
		for _, cid := range slices.Sorted(maps.Keys(u.convs)) {
			m := u.convs[cid]
			fmt.Fprintf(&b, " %d(gone=%v %d/%d cur=%d/%d@%d unread=%d muted=%d)", cid, m.gone, m.goneSeq, m.goneIndex,
				m.cursors.delivered, m.cursors.read, m.cursorIndex, m.unread(), m.mutedUntil)
			if m.conv != ix.convs[cid] {
				fmt.Fprintf(&b, " STALE-POINTER")
			}
		}
		b.WriteByte('\n')
	}
	if len(ix.names) != len(ix.users) {
		fmt.Fprintf(&b, "names: %d for %d users\n", len(ix.names), len(ix.users))
	}
	for _, id := range slices.Sorted(maps.Keys(ix.convs)) {
		c := ix.convs[id]
		fmt.Fprintf(&b, "conv %d %s %q created=%d peers=%v last=%d/%d first=%d members=%v admins=%v system=%v cursors@%d",
			c.id, c.kind, c.name, c.createdAt, c.peers, c.lastSeq, c.lastIndex, c.firstSeq, c.members, c.admins, c.systemSeqs, c.cursorIndex)
		if c.cursors != nil {
			fmt.Fprintf(&b, " delivered=%v read=%v", c.cursors.delivered, c.cursors.read)
		}
		b.WriteByte('\n')
	}
	for _, id := range slices.Sorted(maps.Keys(ix.devices)) {
		fmt.Fprintf(&b, "device %d %+v\n", id, ix.devices[id])
	}
	pairs := slices.SortedFunc(maps.Keys(ix.directs), func(a, b [2]uint64) int {
		if c := cmp.Compare(a[0], b[0]); c != 0 {
			return c
		}
		return cmp.Compare(a[1], b[1])
	})
	for _, p := range pairs {
		fmt.Fprintf(&b, "direct %v -> %d\n", p, ix.directs[p])
	}
	return b.String()
}
