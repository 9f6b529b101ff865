package engine

import (
	"fmt"
	"testing"
)

// TestDedupInLargeEntries: entries of many sends look their dedup records
// up through one iterator (getDedup); a retry finds the original outcome
// whether its record is in the memtable, flushed to a table, or written
// earlier in the same entry, and a cmid reused in another conversation is
// a conflict.
func TestDedupInLargeEntries(t *testing.T) {
	b := newMediaBed(t, t.TempDir()) // the 1:1 of alice (1) and bob (2) is conversation 1
	g := b.ok(&Command{Op: OpCreateGroup, User: 1, Name: "g", Members: []uint64{2}}).Conv
	sends := func(from, to int) []*Command {
		var cmds []*Command
		for i := from; i < to; i++ {
			cmds = append(cmds, send(1, 1, fmt.Sprintf("m%d", i), "hello"))
		}
		return cmds
	}
	first := b.apply(sends(0, 10)...)
	seqOf := map[string]uint64{}
	for i, r := range first {
		if r.Err != "" || r.Duplicate {
			t.Fatalf("send %d: %+v", i, r)
		}
		seqOf[fmt.Sprintf("m%d", i)] = r.Seq
	}
	check := func(what string, from, to int) {
		t.Helper()
		cmds := append(sends(from, to), send(1, 1, fmt.Sprintf("m%d", from), "again"), send(1, g, "m0", "elsewhere"))
		res := b.apply(cmds...)
		for i, r := range res[:to-from] {
			cmid := fmt.Sprintf("m%d", from+i)
			if want, old := seqOf[cmid]; old {
				if !r.Duplicate || r.Seq != want {
					t.Fatalf("%s: retry of %s: %+v, want dup of seq %d", what, cmid, r, want)
				}
				continue
			}
			if r.Duplicate || r.Err != "" {
				t.Fatalf("%s: new %s: %+v", what, cmid, r)
			}
			seqOf[cmid] = r.Seq
		}
		if r := res[to-from]; !r.Duplicate || r.Seq != seqOf[fmt.Sprintf("m%d", from)] {
			t.Fatalf("%s: a retry within the entry: %+v", what, r)
		}
		if r := res[to-from+1]; r.Err != ErrCodeConflict {
			t.Fatalf("%s: a cmid reused in another conversation: %+v", what, r)
		}
	}
	check("records in the memtable", 5, 15)
	if err := b.e.db.Flush(); err != nil {
		t.Fatal(err)
	}
	check("records in a table", 12, 20)
}
