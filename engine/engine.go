// Package engine is Parley's chat domain: the commands that change state, the
// deterministic state machine that applies them (Apply), the state itself in
// Pebble, the in-memory indexes derived from it, the queries served from it
// (history, sync) and snapshots of it.
//
// The engine knows nothing of networking or Raft. Raft (package raftlog)
// hands it committed entries, in log order, through Apply; every replica
// applies the same entries to the same state and so reaches the same state.
//
// # Rules of the domain
//
// Where the design leaves a choice, the engine makes this one:
//
//   - Every event of a conversation (messages and membership changes) takes
//     its next seq. A group's creator is its first admin. Admins add,
//     remove and set admins; any member renames or leaves. Adding users who
//     are members already, renaming to the same name or setting an admin
//     flag that is already so succeeds without an event. Removing yourself
//     is invalid (leave instead). The last admin cannot step down
//     (conflict); when the last admin leaves, the remaining member with the
//     lowest user ID becomes admin (an admin_changed event follows the
//     member_left). 1:1 conversations have no membership operations
//     (forbidden); an emptied group remains, without members.
//   - Members read a conversation's whole history, from before they joined
//     too. A former member reads it up to the event that removed them, so
//     that a sync page's More can be paged; others get not_member.
//   - A send is deduplicated by (user, device, client_msg_id) for good: the
//     record is small and a retry may come after any outage. A retry gets
//     the original result even if the sender has since left; the same
//     client_msg_id in another conversation is a conflict.
//   - A device must belong to the sender and not be revoked.
//   - Receipts are per (user, conversation) cursors, delivered and read,
//     forward only; a member's start at the event that made them one, and
//     a send moves the sender's to their message (sending reads). Stale
//     reports are no-ops; an OpReceipts fails per item, not as a whole.
//     Receipts take no seq; they publish a "receipt" signal and make the
//     conversation show up in sync. The details are in receipts.go.
//   - last_seen is the highest time reported, capped at the entry's time; the
//     privacy flag is stored, and the node decides who sees what.
//   - Revoking a device publishes a "device_revoked" signal to its user
//     (the nodes close its connections) and nothing else; revoking a
//     revoked device succeeds without one.
//   - Media (media.go): a file arrives as chunks in order under a random
//     upload id, then a commit names it by its SHA-256; equal bytes are
//     one object with several owners. Owners, and current members of a
//     conversation where a message carries it, may attach and download it;
//     anyone else is told not_found, as for no file. A user is charged for
//     uploads in progress and objects owned, against the quota in the
//     command. Uncommitted uploads and unreferenced objects go after a
//     cutoff the leader sends (OpMediaExpire).
//
// # Durability
//
// Apply commits each entry's batch without fsync (pebble.NoSync). That is
// safe because the Raft log, not this database, is the durable record: an
// entry reaches Apply only once it is fsynced in a majority of Raft logs.
// Every batch carries the applied index with the state it produced, so after
// a crash the database holds the state as of some whole entry (Pebble's WAL
// recovers a prefix of the batches) and Raft replays the entries after it;
// entries at or below the applied index are skipped, so none is applied
// twice. The log entries Raft needs for that replay are never compacted
// away: Raft compacts only up to a snapshot, and Snapshot syncs this
// database's WAL before taking its checkpoint, so everything up to a
// snapshot's index is durable here too.
//
// Pebble keeps NoSync batches in the process until a 32 KiB WAL block
// fills (or something syncs), so even a killed process, not only a
// crashed machine, loses the latest entries here; the replay covers both.
// crash_test.go proves it on a crashable in-memory file system: a crash
// after every entry, clones that keep random parts of unsynced data, the
// WAL cut between every two batches, and a failed WAL write.
//
// # Goroutines and locks
//
// Apply, Snapshot, Restore, SetPublisher and Close hold applyMu: Raft calls
// them from its one FSM goroutine, and the mutex makes that an invariant
// rather than an assumption. Queries run on any goroutine, concurrently with
// Apply and with each other:
//
//   - applyMu serializes the writers named above. Its holder owns the Apply
//     scratch (txn) and the publisher, and is the only writer of the index.
//   - stateMu guards the db and idx pointers. Restore and Close replace them
//     holding stateMu for writing (and applyMu); queries hold it for reading
//     while they use them, Pebble reads included, so no query ever reads a
//     closed database. Only Restore and Close wait on queries.
//   - index.mu guards the index contents (see index), including the
//     groups' cursor sets, which install updates in place.
//   - applied is atomic: AppliedIndex is read on hot paths.
//
// Lock order: applyMu, then stateMu, then index.mu.
package engine

import (
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Engine is the chat state machine on a Pebble database.
type Engine struct {
	dir   string
	cache *pebble.Cache
	fs    vfs.FS // nil: the real file system; else a test's (see openFS)

	applyMu         sync.Mutex
	txn             txn                           // Apply's scratch; guarded by applyMu
	pub             Publisher                     // guarded by applyMu
	incompatible    func(index uint64, err error) // guarded by applyMu; SetIncompatible
	maxGroupMembers int                           // MaxGroupMembers; lowered by tests

	stateMu sync.RWMutex
	db      *pebble.DB // nil once closed
	idx     *index

	applied atomic.Uint64
	stalls  *writeStalls // of every database this engine opens

	// The dedup keys' filter (dedupfilter.go): the current one and the one
	// being built, guarded by applyMu; dedupBuilders counts build goroutines.
	dedup, dedupNext *dedupFilter
	dedupSeed        maphash.Seed
	dedupBuilders    sync.WaitGroup
}

// Directories next to the data directory, named after it.
const (
	restoreSuffix  = ".restore" // a snapshot being unpacked by Restore
	oldSuffix      = ".old"     // the state Restore replaced, until removed
	snapshotSuffix = ".snap-"   // checkpoints of live Snapshots (+ random)
)

// Open opens (creating it if needed) the state database in dir and builds
// the indexes from it. cache may be nil or shared with other databases (the
// Raft log's); Open takes its own reference.
func Open(dir string, cache *pebble.Cache) (*Engine, error) {
	return openFS(dir, cache, nil)
}

// openFS is Open on the file system fs; nil is the real one (Open). Tests
// pass a vfs.MemFS to crash the "machine" under the database (vfs
// CrashClone). On such a file system Open does not clean up after an
// interrupted Restore (cleanDirs works on the real directories), and
// Snapshot and Restore, which do too, refuse to run.
func openFS(dir string, cache *pebble.Cache, fs vfs.FS) (*Engine, error) {
	dir = filepath.Clean(dir)
	if fs == nil {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
		if err := cleanDirs(dir); err != nil {
			return nil, err
		}
	} else if err := fs.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	var stalls writeStalls
	db, err := openDB(dir, cache, true, fs, &stalls)
	if err != nil {
		return nil, err
	}
	ix, applied, err := loadIndex(db)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("engine: load %s: %w", dir, err)
	}
	e := &Engine{dir: dir, cache: cache, fs: fs, db: db, idx: ix, maxGroupMembers: MaxGroupMembers, stalls: &stalls,
		dedupSeed: maphash.MakeSeed()}
	e.applied.Store(applied)
	return e, nil
}

// openDB opens the database in dir, on fs (nil: the real file system), and
// checks its format. Unless create is set, the database must exist.
func openDB(dir string, cache *pebble.Cache, create bool, fs vfs.FS, stalls *writeStalls) (*pebble.DB, error) {
	opts := &pebble.Options{
		FS:                 fs,
		ErrorIfNotExists:   !create,
		Cache:              cache,
		FormatMajorVersion: pebble.FormatNewest,
		// Every send makes a point lookup that usually misses (its dedup
		// key) and inserts four or five keys. In a large memtable both are
		// long skiplist walks with cache misses (measured on a loaded node
		// at 30k msg/s: inserts took twice the CPU with 32 MiB as with 8,
		// which ate the compaction work a larger memtable saves); a small
		// one keeps them short and leaves the rest to the bloom filters.
		MemTableSize: 8 << 20,
		// Pebble stops writes while L0 holds 12 sublevels (its default),
		// and Apply, with every ack behind it, waits: applying 3M sends as
		// fast as it could, Apply stopped for 140-312 ms in three runs of
		// four ("L0 file count limit exceeded"). At 24 no run of three
		// stalled and the longest Apply was 29-35 ms, for the same CPU.
		L0StopWritesThreshold: 24,
		Logger:                pebbleLogger{dir: dir},
		EventListener:         stalls.listener(),
	}
	// Apply makes point lookups that usually miss (dedup keys, devices):
	// bloom filters answer most of them without reading a block.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("engine: open %s: %w", dir, err)
	}
	if err := checkFormat(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// cleanDirs finishes or undoes what a crash interrupted: a Restore stopped
// between its two renames leaves no data directory but the old one (the
// state before the restore, which Raft then restores over again), and
// unpacked snapshots or checkpoints left behind are garbage.
func cleanDirs(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(dir + oldSuffix); err == nil {
			if err := os.Rename(dir+oldSuffix, dir); err != nil {
				return fmt.Errorf("engine: recover interrupted restore: %w", err)
			}
		}
	}
	leftovers, _ := filepath.Glob(dir + snapshotSuffix + "*")
	leftovers = append(leftovers, dir+restoreSuffix, dir+oldSuffix)
	for _, p := range leftovers {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("engine: %w", err)
		}
	}
	return nil
}

// SetIncompatible sets what Apply calls when a committed entry holds a
// command of a newer build (ErrNewerCommand): f must stop the process (it
// is called with the apply lock held, before anything of the entry is
// written), so that the replica restarts, upgraded, and applies the entry
// then. Without f, or if f returns, Apply panics with the same message.
func (e *Engine) SetIncompatible(f func(index uint64, err error)) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.incompatible = f
}

func (e *Engine) newerCommand(index uint64, err error) {
	if e.incompatible != nil {
		e.incompatible(index, err)
	}
	panic(fmt.Sprintf("engine: entry %d holds a command this build cannot read (%v): upgrade this node", index, err))
}

// SetPublisher sets the receiver of applied events (nil: none).
func (e *Engine) SetPublisher(p Publisher) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.pub = p
}

// AppliedIndex is the index of the last entry whose effects are committed to
// the database and visible to queries.
func (e *Engine) AppliedIndex() uint64 { return e.applied.Load() }

// Close syncs and closes the database. Queries after Close find nothing;
// Apply after Close panics. Later calls return nil.
func (e *Engine) Close() error {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	if e.db == nil {
		return nil
	}
	e.stopDedupBuild()
	// Sync what NoSync batches left in the WAL, so that a clean restart has
	// nothing to replay.
	err := e.db.LogData(nil, pebble.Sync)
	err = errors.Join(err, e.db.Close())
	e.db = nil
	if err != nil {
		return fmt.Errorf("engine: close: %w", err)
	}
	return nil
}

// writeStalls counts the times Pebble stopped the state database's writes
// (compactions behind, or memtables waiting to flush): Apply waits through
// them, and every ack with it.
type writeStalls struct {
	count atomic.Int64
	nanos atomic.Int64 // ended stalls
	began atomic.Int64 // unix nanoseconds of the stall in progress; 0: none
}

// listener returns the Pebble event hooks that count into w (nil: none).
func (w *writeStalls) listener() *pebble.EventListener {
	if w == nil {
		return nil
	}
	return &pebble.EventListener{
		WriteStallBegin: func(pebble.WriteStallBeginInfo) {
			w.count.Add(1)
			w.began.Store(time.Now().UnixNano())
		},
		WriteStallEnd: func() {
			if b := w.began.Swap(0); b != 0 {
				w.nanos.Add(time.Now().UnixNano() - b)
			}
		},
	}
}

// WriteStalls returns how many times the state database stopped writes
// and for how long in all (stalls that have ended).
func (e *Engine) WriteStalls() (n int64, total time.Duration) {
	return e.stalls.count.Load(), time.Duration(e.stalls.nanos.Load())
}

// pebbleLogger drops Pebble's informational chatter and reports its errors.
// Pebble's Fatalf must not return: the database cannot go on. A failed
// write (a full disk: the WAL, the MANIFEST) ends the process with one clear
// log line and ExitStorageFailure rather than a panic that looks like a
// bug; the Raft log, fsynced before every ack, replays what this database
// lost. Anything else (corruption, a broken invariant) panics, for the
// stack.
type pebbleLogger struct{ dir string }

func (pebbleLogger) Infof(string, ...any) {}

func (pebbleLogger) Errorf(format string, args ...any) {
	slog.Error("engine: pebble: " + fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	for _, a := range args {
		if err, ok := a.(error); ok && isSystemError(err) {
			exitOnStorageFailure(p.dir, msg)
		}
	}
	panic("engine: pebble: " + msg)
}

// isSystemError reports whether err comes from a system call (ENOSPC, EIO,
// ...): the disk failed, not Pebble's own logic.
func isSystemError(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno)
}

// exitOnStorageFailure ends the process after a failed write to the state
// database, with one line saying what happened and what to do.
func exitOnStorageFailure(dir, msg string) {
	slog.Error("fatal storage error in the state database, exiting: acknowledged writes are safe in the Raft log",
		"dir", dir, "error", msg, "what_to_do", "free space on (or repair) the disk of the data directory, then restart")
	os.Exit(ExitStorageFailure)
}

// applyBatch writes an entry's batch. Once a WAL write has failed, Pebble
// panics with the raw error at the next commit (v2.1.7 db.go:997,
// commitWrite) instead of calling Logger.Fatalf: a system error there ends
// the process the same way as through Fatalf.
func (e *Engine) applyBatch(b *pebble.Batch) error {
	defer func() {
		if r := recover(); r != nil {
			if err, ok := r.(error); ok && isSystemError(err) {
				exitOnStorageFailure(e.dir, err.Error())
			}
			panic(r)
		}
	}()
	return e.db.Apply(b, pebble.NoSync)
}

// ExitStorageFailure is the exit status after a fatal write error: 74 is
// EX_IOERR of sysexits.h (raftlog.ExitStorageFailure is the same).
const ExitStorageFailure = 74
