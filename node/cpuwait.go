package node

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// cpuWait exports parley_process_cpu_wait_seconds_total: how long this
// process's threads were runnable but waiting for a CPU, the second field
// of Linux's /proc/<pid>/task/<tid>/schedstat summed over the threads. Set
// against process_cpu_seconds_total it tells a node starved of CPU (a
// shared or overcommitted machine: latency grows with every hop between
// threads and processes) from a node whose code is slow. Measured here
// with three nodes and the harness on two cores at 10k msg/s, the nodes'
// threads waited 1.2 to 2 times as long as they ran (docs/BENCHMARKS.md).
//
// The kernel keeps the figure per thread, and a thread that exits takes
// its figure with it, so the collector keeps what it last read of every
// thread and counts a departed thread's last reading for ever: the series
// only grows (it misses what such a thread waited after the last scrape).
// Where there is no schedstat (not Linux, or a kernel without
// CONFIG_SCHEDSTATS) the series is absent.
type cpuWait struct {
	dir  string // the process's task directory
	desc *prometheus.Desc

	mu      sync.Mutex
	last    map[string]uint64 // thread ID → its run delay last read, ns
	retired uint64            // ns waited by threads that have exited
}

func newCPUWait(taskDir string) *cpuWait {
	return &cpuWait{
		dir: taskDir,
		desc: prometheus.NewDesc("parley_process_cpu_wait_seconds_total",
			"Time this process's threads were runnable but waiting for a CPU (Linux schedstat run delay). "+
				"High against process_cpu_seconds_total: the node is starved of CPU, not slow.", nil, nil),
		last: map[string]uint64{},
	}
}

func (c *cpuWait) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *cpuWait) Collect(ch chan<- prometheus.Metric) {
	if total, ok := c.read(); ok {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(total)/1e9)
	}
}

// read sums the run delay of the threads alive now and of those gone, in
// nanoseconds; ok is false when no thread's schedstat could be read.
func (c *cpuWait) read() (total uint64, ok bool) {
	// Held across the reads: two scrapes interleaved would each compare
	// their readings with the other's, and a thread read earlier would
	// look like a new one with a reused ID.
	c.mu.Lock()
	defer c.mu.Unlock()
	tids, err := os.ReadDir(c.dir)
	if err != nil {
		return 0, false
	}
	now := make(map[string]uint64, len(tids))
	for _, t := range tids {
		b, err := os.ReadFile(filepath.Join(c.dir, t.Name(), "schedstat"))
		if err != nil {
			continue // exited since ReadDir
		}
		wait, ok := parseRunDelay(b)
		if !ok {
			wait, ok = c.last[t.Name()] // alive: keep its last reading
		}
		if ok {
			now[t.Name()] = wait
		}
	}
	if len(now) == 0 {
		return 0, false
	}
	for tid, wait := range c.last {
		if _, alive := now[tid]; !alive {
			c.retired += wait
		}
	}
	// A thread ID reused by a new thread reads lower than its predecessor:
	// count the old thread as retired.
	for tid, wait := range now {
		if prev, ok := c.last[tid]; ok && wait < prev {
			c.retired += prev
		}
	}
	c.last = now
	total = c.retired
	for _, wait := range now {
		total += wait
	}
	return total, true
}

// parseRunDelay reads the second of schedstat's three numbers ("time on
// the CPU, time waiting on a run queue, timeslices", in ns).
func parseRunDelay(b []byte) (uint64, bool) {
	f := bytes.Fields(b)
	if len(f) < 3 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(f[1]), 10, 64)
	return v, err == nil
}
