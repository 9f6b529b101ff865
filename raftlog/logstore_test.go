package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func openTestStore(t *testing.T, dir string) *LogStore {
	t.Helper()
	s, err := OpenLogStore(dir, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testLog(index, term uint64) *raft.Log {
	return &raft.Log{
		Index:      index,
		Term:       term,
		Type:       raft.LogCommand,
		Data:       []byte(fmt.Sprintf("data-%d", index)),
		Extensions: []byte(fmt.Sprintf("ext-%d", index)),
		AppendedAt: time.Unix(1700000000, int64(index)),
	}
}

func requireLogEqual(t *testing.T, got, want *raft.Log) {
	t.Helper()
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) ||
		!got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("log mismatch:\n got  %+v\n want %+v", got, want)
	}
}

func requireIndexes(t *testing.T, s *LogStore, first, last uint64) {
	t.Helper()
	f, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if f != first || l != last {
		t.Fatalf("first, last = %d, %d; want %d, %d", f, l, first, last)
	}
}

func TestLogStoreEmpty(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	defer s.Close()
	requireIndexes(t, s, 0, 0)
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on empty store: %v, want ErrLogNotFound", err)
	}
	v, err := s.Get([]byte("missing"))
	if err != nil || len(v) != 0 {
		t.Fatalf("Get missing = %q, %v; want empty, nil", v, err)
	}
	u, err := s.GetUint64([]byte("missing"))
	if err != nil || u != 0 {
		t.Fatalf("GetUint64 missing = %d, %v; want 0, nil", u, err)
	}
}

func TestLogStoreStoreGetDelete(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	defer s.Close()

	if err := s.StoreLog(testLog(1, 1)); err != nil {
		t.Fatal(err)
	}
	var logs []*raft.Log
	for i := uint64(2); i <= 300; i++ { // crosses the 0xff/0x100 byte boundary
		logs = append(logs, testLog(i, 2))
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 1, 300)
	for _, i := range []uint64{1, 2, 255, 256, 300} {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatal(err)
		}
		want := testLog(i, 2)
		if i == 1 {
			want.Term = 1
		}
		requireLogEqual(t, &got, want)
	}
	var l raft.Log
	if err := s.GetLog(301, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(301) = %v, want ErrLogNotFound", err)
	}

	// Compaction from the front, as after a snapshot.
	if err := s.DeleteRange(1, 100); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 101, 300)
	if err := s.GetLog(100, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog(100) after delete = %v, want ErrLogNotFound", err)
	}
	if err := s.GetLog(101, &l); err != nil {
		t.Fatal(err)
	}

	// Truncation of a conflicting suffix, as on a follower.
	if err := s.DeleteRange(251, 300); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 101, 250)
	// Overwrite after truncation with a new term.
	if err := s.StoreLogs([]*raft.Log{testLog(251, 3)}); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := s.GetLog(251, &got); err != nil {
		t.Fatal(err)
	}
	requireLogEqual(t, &got, testLog(251, 3))

	// An empty range is a no-op; an unbounded one removes everything.
	if err := s.DeleteRange(10, 5); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 101, 251)
	if err := s.DeleteRange(0, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 0, 0)
}

// TestLogStoreIndexExtremes stores entries at the ends of the key range,
// where an off-by-one in the bounds would show.
func TestLogStoreIndexExtremes(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	defer s.Close()
	// Stable keys sort after log keys ('s' > 'l'); they must not be seen.
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 0, 0)
	if err := s.StoreLogs([]*raft.Log{testLog(0, 1), testLog(math.MaxUint64, 1)}); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 0, math.MaxUint64)
	if err := s.DeleteRange(1, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 0, 0) // index 0 is left; FirstIndex cannot tell it from empty
	var l raft.Log
	if err := s.GetLog(0, &l); err != nil {
		t.Fatal(err)
	}
	if u, err := s.GetUint64([]byte("CurrentTerm")); err != nil || u != 7 {
		t.Fatalf("stable value after DeleteRange = %d, %v", u, err)
	}
}

func TestLogStoreEncodingEdgeCases(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	defer s.Close()
	cases := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogNoop},                           // nil data, zero time
		{Index: 2, Term: 1, Type: raft.LogConfiguration, Data: []byte{0}}, // one byte
		{Index: 3, Term: math.MaxUint64, Type: raft.LogBarrier, Extensions: []byte("x")},
		{Index: 4, Term: 2, Type: raft.LogCommand, Data: bytes.Repeat([]byte{0xab}, 300<<10), AppendedAt: time.Unix(0, 1)},
		{Index: 5, Term: 2, Type: raft.LogCommand, AppendedAt: time.Unix(-5, 0)}, // before 1970
	}
	if err := s.StoreLogs(cases); err != nil {
		t.Fatal(err)
	}
	for _, want := range cases {
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		requireLogEqual(t, &got, want)
		if want.AppendedAt.IsZero() != got.AppendedAt.IsZero() {
			t.Fatalf("entry %d: zero time not preserved", want.Index)
		}
		if (want.Data == nil) != (got.Data == nil) {
			t.Fatalf("entry %d: nil data not preserved", want.Index)
		}
	}
}

// TestLogStoreReopen: everything written survives Close and Open.
func TestLogStoreReopen(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	var logs []*raft.Log
	for i := uint64(1); i <= 50; i++ {
		logs = append(logs, testLog(i, 4))
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 4); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("node-a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil {
		t.Fatal("second Close succeeded")
	}
	var l raft.Log
	if err := s.GetLog(20, &l); err == nil {
		t.Fatal("GetLog on a closed store succeeded")
	}

	s = openTestStore(t, dir)
	defer s.Close()
	requireIndexes(t, s, 11, 50)
	for i := uint64(11); i <= 50; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatal(err)
		}
		requireLogEqual(t, &got, testLog(i, 4))
	}
	if u, err := s.GetUint64([]byte("CurrentTerm")); err != nil || u != 4 {
		t.Fatalf("CurrentTerm = %d, %v", u, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-a" {
		t.Fatalf("LastVoteCand = %q, %v", v, err)
	}
}

// TestLogStoreValuesAreCopies: nothing returned aliases Pebble memory, so
// it survives later writes, compactions and Close, and modifying it does
// not change the store.
func TestLogStoreValuesAreCopies(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	if err := s.StoreLogs([]*raft.Log{testLog(1, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("k"), []byte("value-1")); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := s.GetLog(1, &got); err != nil {
		t.Fatal(err)
	}
	v, err := s.Get([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	// Overwrite, flush and compact so Pebble recycles its buffers.
	if err := s.Set([]byte("k"), []byte("value-2")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 1); err != nil {
		t.Fatal(err)
	}
	s.closeMu.RLock()
	err = s.db.Flush()
	s.closeMu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	requireLogEqual(t, &got, testLog(1, 1))
	if string(v) != "value-1" {
		t.Fatalf("Get result changed to %q", v)
	}

	s = openTestStore(t, dir)
	defer s.Close()
	v, err = s.Get([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	v[0] = 'X'
	if v2, _ := s.Get([]byte("k")); string(v2) != "value-2" {
		t.Fatalf("modifying a Get result changed the store: %q", v2)
	}
}

func TestLogStoreCorruptValues(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	defer s.Close()
	good := make([]byte, encodedLogSize(testLog(9, 1)))
	encodeLog(good, testLog(9, 1))
	key := logKey(9)
	put := func(v []byte) {
		t.Helper()
		s.closeMu.RLock()
		defer s.closeMu.RUnlock()
		if err := s.db.Set(key[:], v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < len(good); i++ {
		put(good[:i])
		var l raft.Log
		if err := s.GetLog(9, &l); err == nil {
			t.Fatalf("truncated value (%d of %d bytes) decoded", i, len(good))
		}
	}
	put(append(append([]byte(nil), good...), 0))
	var l raft.Log
	if err := s.GetLog(9, &l); err == nil {
		t.Fatal("value with a trailing byte decoded")
	}
	// A value stored under the wrong key.
	wrong := make([]byte, encodedLogSize(testLog(10, 1)))
	encodeLog(wrong, testLog(10, 1))
	put(wrong)
	if err := s.GetLog(9, &l); err == nil {
		t.Fatal("entry 10 stored under key 9 was accepted")
	}
	// A non-uint64 stable value.
	if err := s.Set([]byte("n"), []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUint64([]byte("n")); err == nil {
		t.Fatal("3-byte value read as uint64")
	}
}

func TestLogStoreRejectsUnknownFormat(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{FormatMajorVersion: pebble.FormatNewest, Logger: pebbleLogger{l: hclog.NewNullLogger()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(versionKey, []byte{storeFormat + 1}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenLogStore(dir, nil, nil); err == nil {
		s.Close()
		t.Fatal("opened a store with an unknown format")
	}
}

// TestLogStoreConcurrent reads while another goroutine appends and
// compacts, as raft's replication goroutines do; run it with -race.
func TestLogStoreConcurrent(t *testing.T) {
	s := openTestStore(t, filepath.Join(t.TempDir(), "log"))
	defer s.Close()
	const total = 400
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= total; i += 4 {
			batch := []*raft.Log{testLog(i, 1), testLog(i+1, 1), testLog(i+2, 1), testLog(i+3, 1)}
			if err := s.StoreLogs(batch); err != nil {
				errs <- err
				return
			}
			if i > 100 {
				if err := s.DeleteRange(i-100, i-97); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				first, err := s.FirstIndex()
				if err != nil {
					errs <- err
					return
				}
				last, err := s.LastIndex()
				if err != nil {
					errs <- err
					return
				}
				if last == 0 {
					continue
				}
				var l raft.Log
				err = s.GetLog(last, &l)
				if errors.Is(err, raft.ErrLogNotFound) {
					// Only allowed if the writer has compacted past it since.
					if now, ferr := s.FirstIndex(); ferr != nil || now <= last {
						errs <- fmt.Errorf("GetLog(%d) not found; first was %d, is %d (%v)", last, first, now, ferr)
						return
					}
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("GetLog(%d): %w", last, err)
					return
				}
				if l.Index != last || string(l.Data) != fmt.Sprintf("data-%d", last) {
					errs <- fmt.Errorf("GetLog(%d) returned %+v", last, l)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	requireIndexes(t, s, 301, total)
}
