package raftlog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"parley/internal/testwait"
)

func proposeErr(n *Node, cmd string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, err := n.Propose(ctx, []byte(cmd))
	return err
}

// TestStorageFullRefusesSubmit: a node in StorageFull refuses commands at
// once, without appending anything, and takes them again once lifted.
func TestStorageFullRefusesSubmit(t *testing.T) {
	sm := newMemSM()
	n := openLeader(t, testConfig(t, t.TempDir()), sm)
	defer n.Close()
	propose(t, n, "before")
	last := n.raft.LastIndex()

	n.SetStorage(StorageFull)
	if got := n.Storage(); got != StorageFull {
		t.Fatalf("Storage() = %v", got)
	}
	called := false
	if err := n.Submit([]byte("refused"), func(any, uint64, error) { called = true }); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("Submit while full: %v, want ErrStorageFull", err)
	}
	if called {
		t.Fatal("the callback of a refused Submit ran")
	}
	if got := n.raft.LastIndex(); got != last {
		t.Fatalf("last index moved from %d to %d while full", last, got)
	}

	n.SetStorage(StorageOK)
	propose(t, n, "after")
	requireEachOnce(t, sm, []string{"before", "after"})
}

// TestStorageOpenFull: a node opened with Config.Storage full refuses
// writes from the start.
func TestStorageOpenFull(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.Storage = StorageCritical
	n := openLeader(t, cfg, newMemSM())
	defer n.Close()
	if err := proposeErr(n, "x"); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("Propose on a node opened critical: %v", err)
	}
	n.SetStorage(StorageOK)
	// The noop of its first term may have been refused by the log store
	// (raft then stepped down and campaigns again): wait for a leader.
	testwait.Eventually(t, "a leader", n.IsLeader)
	testwait.Eventually(t, "a write to succeed", func() bool { return proposeErr(n, "y") == nil })
}

// TestStorageFullCluster: a full leader refuses the commands followers
// forward (the whole cluster is read-only); a full follower refuses only
// its own. A critical follower refuses appends without failing, the
// others commit without it, and it catches up by itself once lifted.
func TestStorageFullCluster(t *testing.T) {
	// Default timing: the checks below name the leader, and the tests'
	// usual fast timeouts make spurious elections likely under -race.
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 0, 0, 0
	})
	m := newModel(t)
	l := c.leader()
	var fs []*testNode
	for _, tn := range c.nodes {
		if tn != l {
			fs = append(fs, tn)
		}
	}
	f1, f2 := fs[0], fs[1]
	m.proposeUntilOK(f1, "warmup")

	// A full leader: every node's writes are refused.
	l.n.SetStorage(StorageFull)
	if err := m.propose(f1, m.name("via-full-leader")); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("a command forwarded to a full leader: %v, want ErrStorageFull", err)
	}
	if err := m.propose(l, m.name("on-full-leader")); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("a command on a full leader: %v, want ErrStorageFull", err)
	}
	l.n.SetStorage(StorageOK)

	// A full follower refuses its own writes; the others go on.
	f1.n.SetStorage(StorageFull)
	if err := m.propose(f1, m.name("on-full-follower")); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("a command on a full follower: %v, want ErrStorageFull", err)
	}
	m.proposeUntilOK(f2, "beside-full-follower")

	// A critical follower: its log store refuses appends, and the leader
	// and f2, a majority, commit without it.
	f1.n.SetStorage(StorageCritical)
	for range 20 {
		m.proposeUntilOK(f2, "while-critical")
	}
	committed := f2.n.raft.AppliedIndex()
	if err := f1.n.logs.StoreLogs([]*raft.Log{{Index: committed + 1000, Term: 1}}); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("StoreLogs on a critical store: %v, want ErrStorageFull", err)
	}

	// Space is back: the follower catches up by itself.
	f1.n.SetStorage(StorageOK)
	testwait.Eventually(t, "the follower to catch up", func() bool { return f1.n.raft.AppliedIndex() >= committed })
	m.check(m.barrier(c, c.live()...), c.live()...)
}

// TestLogStoreCriticalRefusesAppends: StoreLogs stores nothing while the
// store refuses appends; the stable store and truncation still work.
func TestLogStoreCriticalRefusesAppends(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	defer s.Close()
	if err := s.StoreLogs([]*raft.Log{testLog(1, 1)}); err != nil {
		t.Fatal(err)
	}
	s.refuseAppends.Store(true)
	if err := s.StoreLogs([]*raft.Log{testLog(2, 1)}); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("StoreLogs: %v, want ErrStorageFull", err)
	}
	requireIndexes(t, s, 1, 1)
	if err := s.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 1); err != nil {
		t.Fatal(err)
	}
	s.refuseAppends.Store(false)
	if err := s.StoreLogs([]*raft.Log{testLog(2, 1)}); err != nil {
		t.Fatal(err)
	}
	requireIndexes(t, s, 2, 2)
}

// The write-error tests run a child process (this test binary) that
// stores entries until a write fails, printing "stored N" after each
// acknowledged StoreLogs. The parent checks that the child ended with one
// clear log line and ExitStorageFailure rather than a panic, and that every
// acknowledged entry is in the store when it is opened again.
const (
	childDirEnv  = "RAFTLOG_STORAGE_CHILD_DIR"
	childModeEnv = "RAFTLOG_STORAGE_CHILD_MODE"
)

// TestStorageChild is the child's body; without the environment it does
// nothing.
func TestStorageChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("helper process for the write-error tests")
	}
	logger := hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Info})
	var fs vfs.FS
	var armed atomic.Bool
	entry := make([]byte, 64<<10)
	limit := uint64(1 << 40)
	if os.Getenv(childModeEnv) == "errorfs" {
		// Writes to the WAL fail with ENOSPC after 20 entries.
		fs = errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
			if armed.Load() && op.Kind == errorfs.OpFileWrite && strings.HasSuffix(op.Path, ".log") {
				return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
			}
			return nil
		}))
		entry, limit = entry[:1<<10], 20
	}
	s, err := openLogStore(dir, nil, logger, fs)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for i := uint64(1); ; i++ {
		if i > limit {
			armed.Store(true)
		}
		if err := s.StoreLogs([]*raft.Log{{Index: i, Term: 1, Type: raft.LogCommand, Data: entry}}); err != nil {
			fmt.Println("StoreLogs returned:", err)
			os.Exit(1)
		}
		fmt.Println("stored", i)
	}
}

// runStorageChild runs the child on dir and returns the last index it
// acknowledged, after checking how it ended.
func runStorageChild(t *testing.T, dir, mode string) uint64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStorageChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir, childModeEnv+"="+mode)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != ExitStorageFailure {
		t.Fatalf("child ended with %v, want exit status %d\nstdout tail: %s\nstderr: %s",
			err, ExitStorageFailure, tail(stdout.String()), stderr.String())
	}
	log := stderr.String()
	if !strings.Contains(log, "fatal storage error in the raft log store") ||
		!strings.Contains(log, "no space left on device") || strings.Contains(log, "goroutine ") {
		t.Fatalf("child's log is not one clear line:\n%s", log)
	}
	var acked uint64
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "stored "); ok {
			if acked, err = strconv.ParseUint(v, 10, 64); err != nil {
				t.Fatal(err)
			}
		}
	}
	if acked == 0 {
		t.Fatalf("the child acknowledged nothing:\n%s", stdout.String())
	}
	return acked
}

func tail(s string) string {
	if len(s) > 400 {
		return "..." + s[len(s)-400:]
	}
	return s
}

// requireAcked opens the store in dir and checks entries 1..acked.
func requireAcked(t *testing.T, dir string, acked uint64) {
	t.Helper()
	s := openTestStore(t, dir)
	defer s.Close()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first != 1 || last < acked {
		t.Fatalf("store holds %d..%d after the exit, want at least 1..%d", first, last, acked)
	}
	var l raft.Log
	for i := uint64(1); i <= acked; i++ {
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("acknowledged entry %d: %v", i, err)
		}
	}
}

// TestLogStoreWALWriteErrorExits: a WAL write that fails with ENOSPC
// (injected with pebble's errorfs) ends the process with
// ExitStorageFailure and a clear line, not a panic, and loses no
// acknowledged entry.
func TestLogStoreWALWriteErrorExits(t *testing.T) {
	dir := t.TempDir()
	acked := runStorageChild(t, dir, "errorfs")
	if acked != 20 {
		t.Fatalf("child acknowledged %d entries, want 20 (the writes before the injected error)", acked)
	}
	requireAcked(t, dir, acked)
}

// TestLogStoreFullDiskExits: the same on a real full file system, a small
// tmpfs (needs root and mount(2); skipped otherwise).
func TestLogStoreFullDiskExits(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): the full-disk case is covered by TestLogStoreWALWriteErrorExits with an injected ENOSPC", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	dir := filepath.Join(mnt, "log")
	acked := runStorageChild(t, dir, "tmpfs")
	// Pebble cannot even open a store whose WAL it cannot flush: make room
	// first, as an operator would.
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	requireAcked(t, dir, acked)
}
