package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Key layout of the log database. Every key starts with a one-byte prefix so
// that the log entries and the stable values live in disjoint, bounded key
// ranges:
//
//	'l' + uint64 index, big-endian  -> encoded raft.Log
//	's' + raw key                   -> StableStore value
//	'v'                             -> storage format version (one byte)
//
// Big-endian fixed-width indexes sort numerically, so First/Last on the 'l'
// range are the lowest and highest stored indexes.
const (
	prefixLog     byte = 'l'
	prefixStable  byte = 's'
	prefixVersion byte = 'v'

	logKeyLen = 1 + 8

	// storeFormat is the version of the key layout and value encoding above.
	storeFormat byte = 1
	// logValueFormat is the first byte of every encoded raft.Log.
	logValueFormat byte = 1
	// logValueHeader is format, type, index, term and AppendedAt.
	logValueHeader = 1 + 1 + 8 + 8 + 8

	// zeroTime encodes a zero AppendedAt: time.Time{}.UnixNano() is not defined.
	zeroTime = math.MinInt64
)

var (
	logLowerBound  = []byte{prefixLog}
	logUpperBound  = []byte{prefixLog + 1}
	versionKey     = []byte{prefixVersion}
	errStoreClosed = errors.New("raftlog: log store closed")
)

// LogStore is a raft.LogStore and raft.StableStore on its own Pebble database.
//
// Durability: StoreLogs writes all its entries in one batch committed with
// fsync; Set, SetUint64 and DeleteRange are fsynced too. Reads copy values
// out of Pebble, so nothing returned aliases memory Pebble owns.
//
// All methods are safe for concurrent use (raft reads logs from its
// replication goroutines while the main goroutine appends).
type LogStore struct {
	// closeMu guards db against Close. Every operation holds it for reading
	// for its whole duration, I/O included: it is a lifecycle guard, never
	// contended except by Close, which takes it for writing and so waits
	// for operations in progress. It is needed because raft.Shutdown does
	// not join every goroutine that reads the log (the leader's log-age
	// metrics loop), and Pebble panics when used after Close.
	closeMu sync.RWMutex
	db      *pebble.DB // nil once closed

	// refuseAppends: StoreLogs fails with ErrStorageFull (StorageCritical).
	refuseAppends atomic.Bool
}

var (
	_ raft.LogStore    = (*LogStore)(nil)
	_ raft.StableStore = (*LogStore)(nil)
)

// OpenLogStore opens (creating if needed) the log database in dir. cache may
// be nil (Pebble then uses a private one) or shared with other databases;
// the store takes its own reference. logger receives Pebble's errors; nil
// discards them.
func OpenLogStore(dir string, cache *pebble.Cache, logger hclog.Logger) (*LogStore, error) {
	return openLogStore(dir, cache, logger, nil)
}

// OpenLogStoreFS is OpenLogStore on the file system fs (nil: the real one).
// It is for tests outside this package: the engine's crash tests keep the
// log and the state database on one crashable vfs.MemFS.
func OpenLogStoreFS(dir string, cache *pebble.Cache, logger hclog.Logger, fs vfs.FS) (*LogStore, error) {
	return openLogStore(dir, cache, logger, fs)
}

// openLogStore is OpenLogStore on the file system fs (nil: the real one);
// tests inject write errors through it.
func openLogStore(dir string, cache *pebble.Cache, logger hclog.Logger, fs vfs.FS) (*LogStore, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	opts := &pebble.Options{
		FS:                 fs,
		Cache:              cache,
		FormatMajorVersion: pebble.FormatNewest,
		// Log entries are appended and, after a snapshot, deleted from the
		// front: a large memtable lets most of them die before a flush.
		MemTableSize: 64 << 20,
		Logger:       pebbleLogger{l: logger, dir: dir},
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("raftlog: open log store %s: %w", dir, err)
	}
	s := &LogStore{db: db}
	if err := s.checkFormat(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// checkFormat refuses a database written in a layout this code does not
// know, and stamps a new database with the current one.
func (s *LogStore) checkFormat() error {
	v, closer, err := s.db.Get(versionKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := s.db.Set(versionKey, []byte{storeFormat}, pebble.Sync); err != nil {
			return fmt.Errorf("raftlog: write log store format: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("raftlog: read log store format: %w", err)
	}
	defer closer.Close()
	if len(v) != 1 || v[0] != storeFormat {
		return fmt.Errorf("raftlog: log store format %x, this build reads %d", v, storeFormat)
	}
	return nil
}

// Close closes the database. Later calls return an error.
func (s *LogStore) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.db == nil {
		return errStoreClosed
	}
	err := s.db.Close()
	s.db = nil
	return err
}

// acquire returns the open db and holds closeMu for reading; the caller
// must call s.closeMu.RUnlock when done.
func (s *LogStore) acquire() (*pebble.DB, error) {
	s.closeMu.RLock()
	if s.db == nil {
		s.closeMu.RUnlock()
		return nil, errStoreClosed
	}
	return s.db, nil
}

// FirstIndex returns the lowest stored index, 0 if there are no entries.
func (s *LogStore) FirstIndex() (uint64, error) { return s.edgeIndex(true) }

// LastIndex returns the highest stored index, 0 if there are no entries.
func (s *LogStore) LastIndex() (uint64, error) { return s.edgeIndex(false) }

func (s *LogStore) edgeIndex(first bool) (uint64, error) {
	db, err := s.acquire()
	if err != nil {
		return 0, err
	}
	defer s.closeMu.RUnlock()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: logLowerBound, UpperBound: logUpperBound})
	if err != nil {
		return 0, err
	}
	var ok bool
	if first {
		ok = it.First()
	} else {
		ok = it.Last()
	}
	var idx uint64
	if ok {
		key := it.Key()
		if len(key) != logKeyLen {
			_ = it.Close()
			return 0, fmt.Errorf("raftlog: malformed log key %x", key)
		}
		idx = binary.BigEndian.Uint64(key[1:])
	}
	if err := it.Close(); err != nil {
		return 0, err
	}
	return idx, nil
}

// GetLog reads the entry at index into log, or returns raft.ErrLogNotFound.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	key := logKey(index)
	v, closer, err := db.Get(key[:])
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return err
	}
	err = decodeLog(v, log) // copies out of v
	closer.Close()
	if err != nil {
		return fmt.Errorf("raftlog: log entry %d: %w", index, err)
	}
	if log.Index != index {
		return fmt.Errorf("raftlog: log entry under key %d holds index %d", index, log.Index)
	}
	return nil
}

// StoreLog stores one entry.
func (s *LogStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores entries in one batch committed with fsync: either all of
// them are durable when it returns nil, or (after a crash) none. While the
// node's storage is critical (Node.SetStorage) it stores nothing and
// returns ErrStorageFull.
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	if s.refuseAppends.Load() {
		return ErrStorageFull
	}
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	b := db.NewBatch()
	defer b.Close()
	for _, l := range logs {
		// Encode straight into the batch representation: no scratch buffer.
		op := b.SetDeferred(logKeyLen, encodedLogSize(l))
		putLogKey(op.Key, l.Index)
		encodeLog(op.Value, l)
		if err := op.Finish(); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// DeleteRange deletes the entries min..max, both inclusive, with one range
// tombstone.
func (s *LogStore) DeleteRange(min, max uint64) error {
	if min > max {
		return nil
	}
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	start := logKey(min)
	end := logKey(max + 1)
	endKey := end[:]
	if max == math.MaxUint64 {
		endKey = logUpperBound
	}
	return db.DeleteRange(start[:], endKey, pebble.Sync)
}

// Set stores a stable value (raft keeps its vote here) with fsync.
func (s *LogStore) Set(key, val []byte) error {
	db, err := s.acquire()
	if err != nil {
		return err
	}
	defer s.closeMu.RUnlock()
	return db.Set(stableKey(key), val, pebble.Sync)
}

// Get returns a copy of a stable value, or nil and no error if key is absent
// (the raft.StableStore contract).
func (s *LogStore) Get(key []byte) ([]byte, error) {
	db, err := s.acquire()
	if err != nil {
		return nil, err
	}
	defer s.closeMu.RUnlock()
	v, closer, err := db.Get(stableKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	closer.Close()
	return out, nil
}

// SetUint64 stores a stable number (raft keeps its term here) with fsync.
func (s *LogStore) SetUint64(key []byte, val uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], val)
	return s.Set(key, buf[:])
}

// GetUint64 returns a stable number, or 0 and no error if key is absent.
func (s *LogStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftlog: stable key %q holds %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func logKey(index uint64) [logKeyLen]byte {
	var k [logKeyLen]byte
	putLogKey(k[:], index)
	return k
}

func putLogKey(dst []byte, index uint64) {
	dst[0] = prefixLog
	binary.BigEndian.PutUint64(dst[1:], index)
}

func stableKey(key []byte) []byte {
	k := make([]byte, 1+len(key))
	k[0] = prefixStable
	copy(k[1:], key)
	return k
}

// Value encoding of a raft.Log:
//
//	format     1 byte (logValueFormat)
//	type       1 byte
//	index      8 bytes big-endian
//	term       8 bytes big-endian
//	appendedAt 8 bytes big-endian int64 unix nanoseconds (zeroTime if zero)
//	data       uvarint length + bytes
//	extensions uvarint length + bytes

func encodedLogSize(l *raft.Log) int {
	return logValueHeader +
		uvarintLen(uint64(len(l.Data))) + len(l.Data) +
		uvarintLen(uint64(len(l.Extensions))) + len(l.Extensions)
}

// encodeLog writes l into dst, which is exactly encodedLogSize(l) long.
func encodeLog(dst []byte, l *raft.Log) {
	dst[0] = logValueFormat
	dst[1] = byte(l.Type)
	binary.BigEndian.PutUint64(dst[2:], l.Index)
	binary.BigEndian.PutUint64(dst[10:], l.Term)
	at := int64(zeroTime)
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	binary.BigEndian.PutUint64(dst[18:], uint64(at))
	n := logValueHeader
	n += binary.PutUvarint(dst[n:], uint64(len(l.Data)))
	n += copy(dst[n:], l.Data)
	n += binary.PutUvarint(dst[n:], uint64(len(l.Extensions)))
	copy(dst[n:], l.Extensions)
}

var errCorruptLog = errors.New("corrupt log value")

// decodeLog fills l from v. Data and Extensions are copied into one fresh
// allocation, so l never aliases v; empty fields decode as nil.
func decodeLog(v []byte, l *raft.Log) error {
	if len(v) < logValueHeader || v[0] != logValueFormat {
		return errCorruptLog
	}
	rest := v[logValueHeader:]
	dataLen, n := binary.Uvarint(rest)
	if n <= 0 || dataLen > uint64(len(rest)-n) {
		return errCorruptLog
	}
	data := rest[n : n+int(dataLen)]
	rest = rest[n+int(dataLen):]
	extLen, n := binary.Uvarint(rest)
	if n <= 0 || extLen != uint64(len(rest)-n) {
		return errCorruptLog
	}
	ext := rest[n:]

	l.Type = raft.LogType(v[1])
	l.Index = binary.BigEndian.Uint64(v[2:])
	l.Term = binary.BigEndian.Uint64(v[10:])
	if at := int64(binary.BigEndian.Uint64(v[18:])); at == zeroTime {
		l.AppendedAt = time.Time{}
	} else {
		l.AppendedAt = time.Unix(0, at)
	}
	l.Data, l.Extensions = nil, nil
	if total := len(data) + len(ext); total > 0 {
		buf := make([]byte, total)
		copy(buf, data)
		copy(buf[len(data):], ext)
		if len(data) > 0 {
			l.Data = buf[:len(data):len(data)]
		}
		if len(ext) > 0 {
			l.Extensions = buf[len(data):]
		}
	}
	return nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// pebbleLogger routes Pebble's messages to hclog. Pebble's Fatalf must not
// return: the database cannot go on. A failed write (the WAL, the
// MANIFEST: pebble v2.1.7 db.go:885, version_set.go:671) ends the process
// with one clear log line and ExitStorageFailure, rather than a panic that
// looks like a bug; every entry acknowledged before it was fsynced, so
// nothing acknowledged is lost, and a restart replays the log. Anything
// else (corruption, a broken invariant) panics after logging, for the
// stack.
type pebbleLogger struct {
	l   hclog.Logger
	dir string
}

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Info(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if errno, ok := ioErrno(args); ok {
		p.l.Error("fatal storage error in the raft log store, exiting: acknowledged writes are safe (fsynced before their ack)",
			"dir", p.dir, "error", msg, "errno", errno.Error(), "what_to_do", storageHint(errno))
		os.Exit(ExitStorageFailure)
	}
	p.l.Error(msg)
	panic("pebble: " + msg)
}
