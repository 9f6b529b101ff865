package engine

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestSigningKeyFirstWriteWins: the first valid key applied is the cluster's
// for good, in the same entry or a later one; invalid keys fail and change
// nothing; the key survives a reopen and a snapshot restore.
func TestSigningKeyFirstWriteWins(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "a")
	e := openEngine(t, dir)
	defer func() { e.Close() }()
	if k := e.SigningKey(); k != nil {
		t.Fatalf("new engine has key %x", k)
	}
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, MaxSigningKeyLen)

	res := applyEntry(t, e, entry{index: 1, ts: 1, cmds: mustEncode(t,
		&Command{Op: OpSetSigningKey, SigningKey: k1[:MinSigningKeyLen-1]}, // too short
		&Command{Op: OpSetSigningKey, SigningKey: append(k2, 2)},           // too long
		&Command{Op: OpSetSigningKey},                                      // missing
	)})
	for i, r := range res {
		if r.Err != ErrCodeInvalid {
			t.Fatalf("bad key %d: %+v", i, r)
		}
	}
	if k := e.SigningKey(); k != nil {
		t.Fatalf("a bad key was stored: %x", k)
	}

	// Two proposals in one entry: the first wins, the second succeeds
	// without effect.
	res = applyEntry(t, e, entry{index: 2, ts: 2, cmds: mustEncode(t,
		&Command{Op: OpSetSigningKey, SigningKey: k1},
		&Command{Op: OpSetSigningKey, SigningKey: k2},
	)})
	for i, r := range res {
		if r.Err != ErrCodeNone {
			t.Fatalf("proposal %d: %+v", i, r)
		}
	}
	if k := e.SigningKey(); !bytes.Equal(k, k1) {
		t.Fatalf("key %x, want the first one", k)
	}
	// A later entry does not replace it either.
	applyEntry(t, e, entry{index: 3, ts: 3, cmds: mustEncode(t, &Command{Op: OpSetSigningKey, SigningKey: k2})})
	if k := e.SigningKey(); !bytes.Equal(k, k1) {
		t.Fatalf("key replaced by a later entry: %x", k)
	}

	snap := snapshotBytes(t, e)

	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	if k := e.SigningKey(); !bytes.Equal(k, k1) {
		t.Fatalf("after reopen: key %x", k)
	}

	// A replica that chose another key locally (it never committed) takes
	// the snapshot's.
	b := openEngine(t, filepath.Join(parent, "b"))
	defer b.Close()
	applyEntry(t, b, entry{index: 1, ts: 1, cmds: mustEncode(t, &Command{Op: OpSetSigningKey, SigningKey: k2})})
	if err := b.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if k := b.SigningKey(); !bytes.Equal(k, k1) {
		t.Fatalf("after restore: key %x", k)
	}
	if da, db := dumpState(t, e), dumpState(t, b); da != db {
		t.Fatalf("restored state differs:\n%s", diff(da, db))
	}
	// And keeps first-write-wins after the restore.
	applyEntry(t, b, entry{index: 4, ts: 4, cmds: mustEncode(t, &Command{Op: OpSetSigningKey, SigningKey: k2})})
	if k := b.SigningKey(); !bytes.Equal(k, k1) {
		t.Fatalf("restored key replaced: %x", k)
	}
}
