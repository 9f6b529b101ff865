package node

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func writeSchedstat(t *testing.T, dir, tid string, wait uint64) {
	t.Helper()
	d := filepath.Join(dir, tid)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	line := "1000 " + strconv.FormatUint(wait, 10) + " 7\n"
	if err := os.WriteFile(filepath.Join(d, "schedstat"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readWait(t *testing.T, c *cpuWait) uint64 {
	t.Helper()
	total, ok := c.read()
	if !ok {
		t.Fatal("no schedstat read")
	}
	return total
}

// The series sums the threads' run delays and never goes back: a thread
// that exits keeps counting with its last reading, and a thread ID reused
// by a new thread counts its predecessor too.
func TestCPUWaitSumsThreadsAndOnlyGrows(t *testing.T) {
	dir := t.TempDir()
	c := newCPUWait(dir)
	if _, ok := c.read(); ok {
		t.Fatal("read reported a total with no threads")
	}
	writeSchedstat(t, dir, "10", 100)
	writeSchedstat(t, dir, "11", 50)
	if got := readWait(t, c); got != 150 {
		t.Fatalf("two threads: %d, want 150", got)
	}

	writeSchedstat(t, dir, "10", 120)
	if err := os.RemoveAll(filepath.Join(dir, "11")); err != nil {
		t.Fatal(err)
	}
	if got := readWait(t, c); got != 170 {
		t.Fatalf("thread 11 exited at 50, thread 10 at 120: %d, want 170", got)
	}

	writeSchedstat(t, dir, "10", 5) // a new thread with the old one's ID
	if got := readWait(t, c); got != 175 {
		t.Fatalf("thread ID 10 reused: %d, want 175", got)
	}

	if err := os.WriteFile(filepath.Join(dir, "10", "schedstat"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeSchedstat(t, dir, "12", 1)
	if got := readWait(t, c); got != 176 {
		t.Fatalf("an unreadable schedstat is skipped: %d, want 176", got)
	}
}

// On Linux with schedstats the node's own threads are read.
func TestCPUWaitReadsThisProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/schedstat"); err != nil {
		t.Skip("no schedstat here:", err)
	}
	c := newCPUWait("/proc/self/task")
	if _, ok := c.read(); !ok {
		t.Fatal("schedstat exists but was not read")
	}
	if len(c.last) < 2 {
		t.Fatalf("read %d threads; a Go process has several", len(c.last))
	}
}
