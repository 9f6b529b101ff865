package node

import (
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"parley/raftlog"
)

// The storage guard keeps a full disk from reaching Pebble, which cannot
// go on after a failed write (raftlog/storage.go). It measures the free
// space of the data directory's file system at start and every
// StorageCheckEvery, and with StorageMinFree = m:
//
//   - free < m: storage full. New writes are refused with storage_full
//     before they reach Raft (raftlog.StorageFull: this node's own
//     commands and, on the leader, those followers forward). Reads,
//     connections, sync, history, presence and typing go on; /readyz
//     answers 503 "storage_full".
//   - free < m/4: critical. The Raft log also refuses appends
//     (raftlog.StorageCritical), so replication cannot fill the disk
//     either; the node serves reads and catches up once space returns.
//   - It lifts by itself, with hysteresis against flapping: full until
//     free >= 1.5 m, critical until free >= m/2.
//
// At start, below m/4 the node still opens, in the critical state, as
// long as there is room for Pebble to flush the write-ahead logs it
// replays (openReserve); below that, Open fails with a clear error rather
// than hang in Pebble's open (its flush fails and is retried for ever).
type storageGuard struct {
	dir    string
	probe  func(dir string) (uint64, error)
	log    *slog.Logger
	full   uint64 // enter StorageFull below
	resume uint64 // leave StorageFull at
	crit   uint64 // enter StorageCritical below
	uncrit uint64 // leave StorageCritical at
	// enabled: StorageMinFree > 0. Otherwise free space is measured for
	// the metrics only, and never refuses anything.
	enabled bool

	free  atomic.Uint64
	state atomic.Uint32 // a raftlog.StorageState

	mu        sync.Mutex // serializes check
	apply     func(raftlog.StorageState)
	probeFail bool
}

// Defaults of the storage guard.
const (
	DefaultStorageMinFree    = 256 << 20
	DefaultStorageCheckEvery = time.Second
)

func newStorageGuard(cfg *Config) *storageGuard {
	g := &storageGuard{dir: cfg.DataDir, probe: cfg.StorageProbe, log: cfg.Logger}
	if g.probe == nil {
		g.probe = statfsFree
	}
	if m := cfg.StorageMinFree; m > 0 {
		g.enabled = true
		g.full, g.resume = uint64(m), uint64(m)+uint64(m)/2
		g.crit, g.uncrit = uint64(m)/4, uint64(m)/2
	}
	return g
}

// statfsFree is the space an unprivileged process may still use on the
// file system of dir (root may have a little more: the reserved blocks).
func statfsFree(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// next is the state after cur for free bytes, with hysteresis.
func (g *storageGuard) next(cur raftlog.StorageState, free uint64) raftlog.StorageState {
	switch {
	case free < g.crit, cur == raftlog.StorageCritical && free < g.uncrit:
		return raftlog.StorageCritical
	case free < g.full, cur >= raftlog.StorageFull && free < g.resume:
		return raftlog.StorageFull
	}
	return raftlog.StorageOK
}

// check measures free space and moves the state. A failed measure keeps
// the state as it is (logged once until a measure works again).
func (g *storageGuard) check() raftlog.StorageState {
	g.mu.Lock()
	defer g.mu.Unlock()
	cur := raftlog.StorageState(g.state.Load())
	free, err := g.probe(g.dir)
	if err != nil {
		if !g.probeFail {
			g.log.Warn("storage: cannot measure free space; the storage state stays as it is", "dir", g.dir, "state", cur, "err", err)
		}
		g.probeFail = true
		return cur
	}
	if g.probeFail {
		g.log.Info("storage: free space measured again", "dir", g.dir)
		g.probeFail = false
	}
	g.free.Store(free)
	next := g.next(cur, free)
	if next == cur {
		return cur
	}
	g.state.Store(uint32(next))
	attrs := []any{"dir", g.dir, "free_bytes", free, "min_free_bytes", g.full}
	switch next {
	case raftlog.StorageOK:
		g.log.Info("storage: free space is back, writes accepted again", attrs...)
	case raftlog.StorageFull:
		if cur == raftlog.StorageCritical {
			g.log.Warn("storage: the Raft log takes appends again; writes stay refused until free space reaches 1.5x the minimum", attrs...)
		} else {
			g.log.Warn("storage: free space below the minimum: new writes are refused (storage_full) until it reaches 1.5x the minimum; free space on the data directory's disk", attrs...)
		}
	case raftlog.StorageCritical:
		g.log.Error("storage: free space below a quarter of the minimum: the Raft log refuses appends too, this node falls behind the cluster until space is freed", attrs...)
	}
	if g.apply != nil {
		g.apply(next)
	}
	return next
}

// start sets where state changes go from now on (the Raft node), and
// hands it the current state.
func (g *storageGuard) start(apply func(raftlog.StorageState)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.apply = apply
	apply(g.current())
}

func (g *storageGuard) current() raftlog.StorageState { return raftlog.StorageState(g.state.Load()) }

// isFull: writes are refused (full or critical).
func (g *storageGuard) isFull() bool { return g.current() >= raftlog.StorageFull }

// walBytes is the size of the write-ahead logs Pebble will replay on
// open, in the two databases under dataDir.
func walBytes(dataDir string) uint64 {
	var total uint64
	for _, db := range []string{filepath.Join(dataDir, "raft", "log"), filepath.Join(dataDir, "state")} {
		_ = filepath.WalkDir(db, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".log") {
				return nil
			}
			if info, err := d.Info(); err == nil {
				total += uint64(info.Size())
			}
			return nil
		})
	}
	return total
}

// openReserveMargin is room for what Pebble writes on open besides the
// flush of its logs: a MANIFEST, OPTIONS, a new WAL's first blocks.
const openReserveMargin = 8 << 20

// openCheck measures free space before the databases open: it sets the
// initial state, and refuses to open when Pebble could not flush the
// logs it replays.
func (g *storageGuard) openCheck() error {
	st := g.check()
	if !g.enabled || g.probeFail {
		return nil // nothing to enforce, or blind: opening is all that is left to try
	}
	free := g.free.Load()
	if need := walBytes(g.dir) + openReserveMargin; free < need {
		return fmt.Errorf("storage: %d bytes free on the file system of %s, and opening its databases needs about %d "+
			"(to flush the write-ahead logs it replays): free space on that disk, then start again", free, g.dir, need)
	}
	if st != raftlog.StorageOK {
		g.log.Warn("storage: starting with free space below the minimum: reads are served, writes refused (storage_full) until space is freed",
			"dir", g.dir, "free_bytes", free, "min_free_bytes", g.full, "state", st)
	}
	return nil
}

// run checks every interval until stop closes.
func (g *storageGuard) run(every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			g.check()
		case <-stop:
			return
		}
	}
}

// collectors are the guard's gauges, read at scrape time.
func (g *storageGuard) collectors() []prometheus.Collector {
	flag := func(on bool) float64 {
		if on {
			return 1
		}
		return 0
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_storage_free_bytes",
			Help: "Free space on the file system of the data directory, as last measured (every -storage-check-every).",
		}, func() float64 { return float64(g.free.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_storage_full",
			Help: "1 while free space is below -storage-min-free (until it is back above 1.5x): new writes are refused with storage_full.",
		}, func() float64 { return flag(g.isFull()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "parley_storage_critical",
			Help: "1 while free space is below a quarter of -storage-min-free (until it is back above half): the Raft log refuses appends, the node falls behind.",
		}, func() float64 { return flag(g.current() == raftlog.StorageCritical) }),
	}
}
