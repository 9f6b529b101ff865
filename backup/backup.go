// Package backup owns Parley's backup file: a consistent copy of a node's
// state with its applied index and a checksum, and the offline restore
// that seeds a new cluster from it (as etcdutl snapshot restore does).
//
// A backup file is a tar of two entries:
//
//	backup.json  the Meta below: format, applied index, when, from which node,
//	             the SHA-256 and size of state.tar
//	state.tar    the engine's snapshot (a tar of a Pebble checkpoint), as
//	             GET /v1/admin/backup streamed it
//
// The state holds everything a cluster needs besides its own membership:
// users, devices and the token signing key (tokens issued before the
// backup stay valid), conversations, messages, cursors, push targets,
// media. Writes acknowledged after the backup's index are not in it.
package backup

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"parley/engine"
	"parley/raftlog"
)

// Format is the version of the backup file; Restore refuses others.
const Format = 1

// Meta is backup.json.
type Meta struct {
	Format       int    `json:"format"`
	AppliedIndex uint64 `json:"applied_index"`
	CreatedAt    int64  `json:"created_at"` // unix ms
	Node         string `json:"node"`
	StateSHA256  string `json:"state_sha256"`
	StateBytes   int64  `json:"state_bytes"`
}

const (
	metaName  = "backup.json"
	stateName = "state.tar"
)

// Write writes a backup file to w from meta and the state in state (a
// file, whose size the tar header needs).
func Write(w io.Writer, meta Meta, state *os.File) error {
	st, err := state.Stat()
	if err != nil {
		return err
	}
	meta.Format, meta.StateBytes = Format, st.Size()
	mb, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: metaName, Mode: 0o644, Size: int64(len(mb)), Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := tw.Write(mb); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: stateName, Mode: 0o644, Size: st.Size(), Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := state.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.Copy(tw, state); err != nil {
		return err
	}
	return tw.Close()
}

// Verify reads the backup file at path whole and checks it: its format,
// and the state's size and SHA-256 against its meta.
func Verify(path string) (Meta, error) {
	var meta Meta
	err := withState(path, &meta, func(state io.Reader) error {
		sum := sha256.New()
		n, err := io.Copy(sum, state)
		if err != nil {
			return err
		}
		if n != meta.StateBytes || hex.EncodeToString(sum.Sum(nil)) != meta.StateSHA256 {
			return fmt.Errorf("backup: %s is corrupted: its state does not match its checksum", path)
		}
		return nil
	})
	return meta, err
}

// withState opens the backup, reads its meta into meta, and calls f with
// a reader of its state.
func withState(path string, meta *Meta, f func(io.Reader) error) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	tr := tar.NewReader(file)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != metaName || hdr.Size > 1<<20 {
		return fmt.Errorf("backup: %s is not a Parley backup (no %s first)", path, metaName)
	}
	if err := json.NewDecoder(tr).Decode(meta); err != nil {
		return fmt.Errorf("backup: %s: %w", metaName, err)
	}
	if meta.Format != Format {
		return fmt.Errorf("backup: format %d, this build reads %d", meta.Format, Format)
	}
	if meta.AppliedIndex == 0 || len(meta.StateSHA256) != 2*sha256.Size {
		return fmt.Errorf("backup: %s lacks an applied index or a checksum", metaName)
	}
	if hdr, err = tr.Next(); err != nil || hdr.Name != stateName {
		return fmt.Errorf("backup: %s has no %s", path, stateName)
	}
	return f(tr)
}

// Restore seeds the data directory dataDir of one member of a new cluster
// from the backup at path: the state as of the backup's index in
// <dataDir>/state, and in <dataDir>/raft a Raft snapshot at that index
// whose configuration is servers (every member, this one included). Every
// member is restored from the same file with the same servers, then
// started with -bootstrap=false; they elect a leader and go on from the
// backup's index. dataDir must not hold a node already. The file is
// verified first.
func Restore(path, dataDir string, servers []raftlog.Server) (Meta, error) {
	meta, err := Verify(path)
	if err != nil {
		return meta, err
	}
	stateDir, raftDir := filepath.Join(dataDir, "state"), filepath.Join(dataDir, "raft")
	for _, d := range []string{stateDir, raftDir} {
		if _, err := os.Stat(d); err == nil {
			return meta, fmt.Errorf("backup: %s exists: restore into an empty data directory", d)
		} else if !errors.Is(err, os.ErrNotExist) {
			return meta, err
		}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return meta, err
	}
	var again Meta
	err = withState(path, &again, func(state io.Reader) error {
		e, err := engine.Open(stateDir, nil)
		if err != nil {
			return err
		}
		if err := e.Restore(state); err != nil {
			e.Close()
			return err
		}
		applied := e.AppliedIndex()
		if err := e.Close(); err != nil {
			return err
		}
		if applied != meta.AppliedIndex {
			return fmt.Errorf("backup: the state is at index %d, its meta says %d", applied, meta.AppliedIndex)
		}
		return nil
	})
	if err != nil {
		return meta, fmt.Errorf("backup: restore the state: %w", err)
	}
	err = withState(path, &again, func(state io.Reader) error {
		return raftlog.Seed(raftDir, servers, meta.AppliedIndex, state)
	})
	if err != nil {
		return meta, fmt.Errorf("backup: seed raft: %w", err)
	}
	return meta, nil
}
