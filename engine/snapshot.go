package engine

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Snapshot is a point-in-time copy of the state, taken by Engine.Snapshot.
// It has the method set of raftlog.Snapshot.
type Snapshot interface {
	// WriteTo streams the snapshot (a tar of a Pebble checkpoint) to w;
	// Restore reads the same bytes. It may run concurrently with Apply.
	WriteTo(w io.Writer) (int64, error)
	// Release removes the checkpoint. Call it exactly once; later calls do
	// nothing.
	Release()
	// Index is the applied index of the state the snapshot holds.
	Index() uint64
}

// Snapshot captures the state as of the applied index: a Pebble checkpoint
// (hard links, so fast) in a temporary directory next to the data directory.
//
// The WAL is synced first: Apply commits without fsync, and the checkpoint
// copies the WAL files as they are on disk. It also makes every entry up to
// the snapshot durable here before Raft compacts its log up to it (see the
// package comment).
func (e *Engine) Snapshot() (Snapshot, error) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	if e.db == nil {
		return nil, errors.New("engine: snapshot of a closed engine")
	}
	if e.fs != nil {
		return nil, errTestFS
	}
	tmp, err := os.MkdirTemp(filepath.Dir(e.dir), filepath.Base(e.dir)+snapshotSuffix)
	if err != nil {
		return nil, fmt.Errorf("engine: snapshot: %w", err)
	}
	dir := filepath.Join(tmp, "db") // Checkpoint creates it
	if err := e.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("engine: snapshot: %w", err)
	}
	return &checkpoint{tmp: tmp, dir: dir, index: e.applied.Load()}, nil
}

// checkpoint is a Snapshot. Its files are immutable until Release.
type checkpoint struct {
	tmp, dir string
	index    uint64
	release  sync.Once
}

func (s *checkpoint) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	if err := writeTar(cw, s.dir); err != nil {
		return cw.n, fmt.Errorf("engine: write snapshot at index %d: %w", s.index, err)
	}
	return cw.n, nil
}

func (s *checkpoint) Index() uint64 { return s.index }

func (s *checkpoint) Release() {
	s.release.Do(func() { _ = os.RemoveAll(s.tmp) })
}

// writeTar writes the regular files of dir (a Pebble checkpoint is flat) as
// a tar stream.
func writeTar(w io.Writer, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, ent := range entries {
		if !ent.Type().IsRegular() {
			return fmt.Errorf("unexpected %s in checkpoint", ent.Name())
		}
		if err := writeTarFile(tw, dir, ent.Name()); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeTarFile(tw *tar.Writer, dir, name string) error {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: st.Size(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// errTestFS: Snapshot and Restore work on the real directories only.
var errTestFS = errors.New("engine: snapshot and restore need the real file system")

// Restore replaces the whole state with a snapshot written by WriteTo and
// rebuilds the indexes. The snapshot is unpacked and its index built next to
// the data directory first, while queries go on; then, with queries held
// off, the current database is closed, the directories are swapped by
// rename and the database reopened. A crash between the two renames is
// undone by Open (the old state comes back and Raft restores again).
func (e *Engine) Restore(r io.Reader) error {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	if e.fs != nil {
		return errTestFS
	}
	staging := e.dir + restoreSuffix
	if err := os.RemoveAll(staging); err != nil {
		return fmt.Errorf("engine: restore: %w", err)
	}
	ix, applied, err := unpackSnapshot(r, staging, e.cache)
	if err != nil {
		_ = os.RemoveAll(staging)
		return fmt.Errorf("engine: restore: %w", err)
	}

	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	if e.db != nil {
		e.stopDedupBuild() // its filters describe the state being replaced
		err := e.db.Close()
		e.db = nil
		if err != nil {
			return fmt.Errorf("engine: restore: close current state: %w", err)
		}
	}
	old := e.dir + oldSuffix
	if err := swapDirs(e.dir, staging, old); err != nil {
		// The current state is back in place (or, at worst, in old, where
		// Open finds it): reopen it so the engine stays usable.
		if db, rerr := openDB(e.dir, e.cache, false, nil, e.stalls); rerr == nil {
			e.db = db
		}
		return fmt.Errorf("engine: restore: %w", err)
	}
	db, err := openDB(e.dir, e.cache, false, nil, e.stalls)
	if err != nil {
		return fmt.Errorf("engine: restore: %w", err)
	}
	e.db, e.idx = db, ix
	e.applied.Store(applied)
	_ = os.RemoveAll(old)
	return nil
}

// unpackSnapshot writes the tar stream into dir (created, synced) and builds
// the index of the state it holds.
func unpackSnapshot(r io.Reader, dir string, cache *pebble.Cache) (*index, uint64, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, 0, err
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		name := hdr.Name
		if hdr.Typeflag != tar.TypeReg || name != filepath.Base(name) || name == "." || name == ".." {
			return nil, 0, fmt.Errorf("unexpected entry %q in snapshot", name)
		}
		if err := writeFile(filepath.Join(dir, name), tr); err != nil {
			return nil, 0, err
		}
	}
	if err := syncDir(dir); err != nil {
		return nil, 0, err
	}
	db, err := openDB(dir, cache, false, nil, nil)
	if err != nil {
		return nil, 0, err
	}
	ix, applied, err := loadIndex(db)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return ix, applied, err
}

// swapDirs moves dir to old and staging to dir. If the second rename fails,
// it moves old back.
func swapDirs(dir, staging, old string) error {
	if err := os.Rename(dir, old); err != nil {
		return err
	}
	if err := os.Rename(staging, dir); err != nil {
		return errors.Join(err, os.Rename(old, dir))
	}
	return syncDir(filepath.Dir(dir))
}

func writeFile(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
