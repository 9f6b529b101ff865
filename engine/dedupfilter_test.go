package engine

import (
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestDedupFilterHoldsEveryKey: a key added is always reported (a miss
// would store a retry as a new message); of keys never added, with the
// filter filled to its capacity, few are.
func TestDedupFilterHoldsEveryKey(t *testing.T) {
	seed := maphash.MakeSeed()
	key := func(i int) []byte { return appendDedupKey(nil, uint64(i%1000), 1, fmt.Sprintf("cmid-%d", i)) }
	f := newDedupFilter(100_000)
	for i := range f.capacity {
		f.add(dedupHash(seed, key(i)))
	}
	for i := range f.capacity {
		if !f.mayContain(dedupHash(seed, key(i))) {
			t.Fatalf("key %d was added and is not reported", i)
		}
	}
	const probes = 100_000
	fp := 0
	for i := f.capacity; i < f.capacity+probes; i++ {
		if f.mayContain(dedupHash(seed, key(i))) {
			fp++
		}
	}
	// At 10 bits a key a blocked Bloom filter with 7 probes passes about
	// 1-1.5% of absent keys; 100,000 probes put the rate within ±0.1%.
	if rate := float64(fp) / probes; rate > 0.03 {
		t.Fatalf("%.2f%% of absent keys pass the full filter, want under 3%%", 100*rate)
	}
}

// dedupBed drives sends through a mediaBed (alice and bob's 1:1 is
// conversation 1) and checks every result against a model: a new
// client_msg_id gets a new message, a used one the original outcome.
type dedupBed struct {
	*mediaBed
	seqOf map[string]uint64
	rng   *rand.Rand
	next  int
}

func newDedupBed(t *testing.T, dir string) *dedupBed {
	return &dedupBed{mediaBed: newMediaBed(t, dir), seqOf: map[string]uint64{}, rng: rand.New(rand.NewPCG(1, 2))}
}

// entry applies one entry of n sends, a third of them retries of earlier
// ones (when there are any), and checks the results.
func (b *dedupBed) entry(n int) {
	b.t.Helper()
	var cmids []string
	for range n {
		if len(b.seqOf) > 0 && b.rng.IntN(3) == 0 {
			cmids = append(cmids, fmt.Sprintf("m%d", b.rng.IntN(b.next)))
			continue
		}
		cmids = append(cmids, fmt.Sprintf("m%d", b.next))
		b.next++
	}
	b.check(cmids)
}

// check sends cmids as one entry and checks each outcome.
func (b *dedupBed) check(cmids []string) {
	b.t.Helper()
	cmds := make([]*Command, len(cmids))
	for i, cmid := range cmids {
		cmds[i] = send(1, 1, cmid, "hi")
	}
	for i, r := range b.apply(cmds...) {
		want, used := b.seqOf[cmids[i]]
		switch {
		case r.Err != "":
			b.t.Fatalf("send %s: %s %s", cmids[i], r.Err, r.Message)
		case used && (!r.Duplicate || r.Seq != want):
			b.t.Fatalf("retry of %s: duplicate %v seq %d, want the original seq %d (%s)", cmids[i], r.Duplicate, r.Seq, want, b.filterState())
		case !used && r.Duplicate:
			b.t.Fatalf("new %s taken for a retry of seq %d", cmids[i], r.Seq)
		case !used:
			b.seqOf[cmids[i]] = r.Seq
		}
	}
}

func (b *dedupBed) filterState() string {
	if f := b.e.dedup; f != nil {
		return fmt.Sprintf("filter of %d keys: %d scanned, %d added", f.capacity, f.scanned, f.added)
	}
	return "no filter"
}

// retryAll resends every client_msg_id used so far, in entries of 50.
func (b *dedupBed) retryAll() {
	b.t.Helper()
	var cmids []string
	for i := range b.next {
		if cmids = append(cmids, fmt.Sprintf("m%d", i)); len(cmids) == 50 || i == b.next-1 {
			b.check(cmids)
			cmids = nil
		}
	}
}

// waitBuilt waits until the filter being built is ready (the next entry
// makes it the current one).
func (b *dedupBed) waitBuilt() {
	b.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if f := b.e.dedupNext; f == nil || f.ready.Load() {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatal("the dedup filter's build did not finish")
		}
	}
}

// TestDedupFilterFindsEveryRetry: with a filter so small that it is
// rebuilt over and over, every retry still finds its original: keys written
// before a build (in its snapshot), while it scans (held here in the middle
// of the scan), in the entry that starts it, and after; in the memtable and
// in tables; across a restart.
func TestDedupFilterFindsEveryRetry(t *testing.T) {
	defer func(n int) { dedupFilterMin = n }(dedupFilterMin)
	dedupFilterMin = 16
	dir := filepath.Join(t.TempDir(), "state")
	b := newDedupBed(t, dir)

	var builds atomic.Int32
	dedupBuildScan = func() { builds.Add(1) }
	for range 100 {
		b.entry(1 + b.rng.IntN(12))
		b.waitBuilt()
	}
	dedupBuildScan = nil
	if builds.Load() < 3 {
		t.Fatalf("%d filter builds, want the small filter rebuilt several times", builds.Load())
	}
	if b.e.dedup == nil || b.e.dedup.capacity <= 16 {
		t.Fatalf("%s, want one grown past its first size", b.filterState())
	}
	if err := b.e.db.Flush(); err != nil {
		t.Fatal(err)
	}
	b.retryAll()

	// A build held before its scan while entries go on: their keys are
	// in neither its snapshot nor (until it is ready) the current filter's
	// successor, unless Apply adds them to both.
	b.waitBuilt()
	f := b.e.dedup
	f.added = f.capacity + f.scanned // due: the next entry starts a build
	release := make(chan struct{})
	dedupBuildScan = func() { <-release }
	b.entry(5) // starts the held build
	dedupBuildScan = nil
	held := b.e.dedupNext
	if held == nil || held.ready.Load() {
		t.Fatal("no build held")
	}
	for range 10 {
		b.entry(8)
	}
	close(release)
	b.waitBuilt()
	b.entry(3) // makes it current
	if b.e.dedup != held {
		t.Fatal("the held build did not become the current filter")
	}
	b.retryAll()

	// A restart: the filter starts empty and is built from the database.
	if err := b.e.Close(); err != nil {
		t.Fatal(err)
	}
	b.e = openEngine(t, dir)
	b.e.SetPublisher(b.rec)
	b.retryAll() // the first entries before the build is ready
	b.waitBuilt()
	b.retryAll()
	for range 10 {
		b.entry(10)
	}
	b.retryAll()
}

// TestDedupFilterAfterRestore: a replica that installs a snapshot drops
// the filter of the state it replaced; the snapshot's sends are found.
func TestDedupFilterAfterRestore(t *testing.T) {
	parent := t.TempDir()
	leader := newDedupBed(t, filepath.Join(parent, "a"))
	for range 5 {
		leader.entry(20)
	}
	snap := snapshotBytes(t, leader.e)

	// A replica with a built filter of other sends (other cmids).
	replica := newDedupBed(t, filepath.Join(parent, "b"))
	replica.next = 1000
	for range 3 {
		replica.entry(20)
		replica.waitBuilt()
	}
	if replica.e.dedup == nil {
		t.Fatal("the replica has no filter to drop")
	}
	if err := replica.e.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if err := leader.e.Close(); err != nil {
		t.Fatal(err)
	}
	leader.e = replica.e // the leader's entries go on on the replica
	leader.retryAll()
	leader.waitBuilt()
	leader.retryAll()
}
