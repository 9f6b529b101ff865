package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"parley/engine"
	"parley/raftlog"
)

// stateFile writes the snapshot of an engine with a user and returns it
// with its applied index.
func stateFile(t *testing.T) (*os.File, uint64) {
	t.Helper()
	e, err := engine.Open(filepath.Join(t.TempDir(), "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cmd, _ := engine.EncodeCommand(&engine.Command{Op: engine.OpRegister, Username: "alice", PasswordHash: []byte("h")})
	e.Apply(7, time.Now().UnixMilli(), [][]byte{cmd})
	snap, err := e.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	f, err := os.Create(filepath.Join(t.TempDir(), "state.tar"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snap.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return f, snap.Index()
}

func writeBackup(t *testing.T, state *os.File, index uint64, sum string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "b.tar")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := Write(out, Meta{AppliedIndex: index, Node: "n1", StateSHA256: sum}, state); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVerifyAndRestore(t *testing.T) {
	state, index := stateFile(t)
	sum := sha256File(t, state.Name())
	path := writeBackup(t, state, index, sum)
	meta, err := Verify(path)
	if err != nil || meta.AppliedIndex != 7 || meta.Format != Format || meta.StateSHA256 != sum {
		t.Fatalf("verify: %+v %v", meta, err)
	}
	dir := t.TempDir()
	servers := []raftlog.Server{{ID: "n1", Addr: "127.0.0.1:7072"}}
	if _, err := Restore(path, dir, servers); err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(filepath.Join(dir, "state"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.AppliedIndex() != 7 {
		t.Fatalf("restored state at %d", e.AppliedIndex())
	}
	if _, ok := e.UserByName("alice"); !ok {
		t.Fatal("the restored state lacks its user")
	}
	e.Close()
	if _, err := Restore(path, dir, servers); err == nil || !strings.Contains(err.Error(), "empty data directory") {
		t.Fatalf("restore over a restored directory: %v", err)
	}
}

func TestVerifyRefusesACorruptOrForeignFile(t *testing.T) {
	state, index := stateFile(t)
	path := writeBackup(t, state, index, sha256File(t, state.Name()))
	b, _ := os.ReadFile(path)
	// Flip one byte inside the state (past the meta entry's blocks).
	b[len(b)-2048] ^= 0xff
	bad := filepath.Join(t.TempDir(), "bad.tar")
	os.WriteFile(bad, b, 0o600)
	if _, err := Verify(bad); err == nil || !strings.Contains(err.Error(), "corrupted") {
		t.Fatalf("a corrupted backup: %v", err)
	}
	if _, err := Restore(bad, t.TempDir(), []raftlog.Server{{ID: "n1", Addr: "x:1"}}); err == nil {
		t.Fatal("restored a corrupted backup")
	}
	wrong := writeBackup(t, state, index, strings.Repeat("0", 64))
	if _, err := Verify(wrong); err == nil {
		t.Fatal("a backup whose checksum does not match passed")
	}
	if _, err := Verify(state.Name()); err == nil || !strings.Contains(err.Error(), "not a Parley backup") {
		t.Fatalf("a state tar taken for a backup: %v", err)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
