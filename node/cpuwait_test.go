package node

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

func writeSchedstat(t *testing.T, dir, tid string, wait uint64) {
	t.Helper()
	d := filepath.Join(dir, tid)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	// Written aside and renamed, as the kernel's file reads whole.
	line := "1000 " + strconv.FormatUint(wait, 10) + " 7\n"
	tmp := filepath.Join(d, "schedstat.new")
	if err := os.WriteFile(tmp, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d, "schedstat")); err != nil {
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
		t.Fatalf("a schedstat that does not parse keeps its thread's last reading: %d, want 176", got)
	}
	writeSchedstat(t, dir, "10", 9)
	if got := readWait(t, c); got != 180 {
		t.Fatalf("thread 10 read again: %d, want 180", got)
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

// Scrapes may run at once (two Prometheus servers): the series still
// never counts a live thread as gone, so it never exceeds the threads'
// own figures.
func TestCPUWaitConcurrentScrapes(t *testing.T) {
	dir := t.TempDir()
	c := newCPUWait(dir)
	const threads = 4
	for i := range threads {
		writeSchedstat(t, dir, strconv.Itoa(i), 0)
	}
	var wg sync.WaitGroup
	var bad atomic.Uint64
	var limit atomic.Uint64 // the threads' sum, written before it is reached
	for range 4 {
		wg.Go(func() {
			for range 200 {
				total, ok := c.read()
				if ok && total > limit.Load() {
					bad.Store(total)
				}
			}
		})
	}
	for step := uint64(1); step <= 200; step++ {
		limit.Store(step * threads)
		for i := range threads {
			writeSchedstat(t, dir, strconv.Itoa(i), step)
		}
	}
	wg.Wait()
	if v := bad.Load(); v != 0 {
		t.Fatalf("a scrape read %d ns, more than the threads waited", v)
	}
}
