package engine

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// Every send looks up its own dedup key ('k' + user + device +
// client_msg_id) to find a retry, and the key is almost never there. In
// Pebble that miss is a seek in every memtable and a bloom filter probe per
// level: 3.5 µs on the apply goroutine, 40% of applying a send
// (BenchmarkApplySend). A dedupFilter answers most of those misses in
// memory, in one cache line.
//
// The filter holds every dedup key in the database, and others: a key it
// does not hold is certainly absent, and for a key it holds Apply asks
// Pebble as before. So the filter only changes how fast Apply is, never
// what it decides; replicas whose filters differ (built at other times, or
// not built yet) still apply every entry alike. Apply adds each dedup key it
// writes; keys that expiry deletes stay in it, as false positives, until the
// next rebuild.
//
// It is a blocked Bloom filter: a key sets dedupFilterProbes bits in one
// 512-bit block. At dedupFilterBitsPerKey bits a key about 1-2% of misses
// still go to Pebble.
type dedupFilter struct {
	blocks   []dedupBlock
	capacity int // keys it is sized for; past that its false positives grow

	// Set by the builder (see Engine.startDedupBuild) before ready.
	scanned int
	ready   atomic.Bool // every key of the builder's snapshot is in
	stop    atomic.Bool // the engine is closing or replacing the database

	added int // keys Apply added; Apply's goroutine only
}

type dedupBlock [8]atomic.Uint64 // 512 bits: one cache line

const (
	dedupFilterBitsPerKey = 10
	dedupFilterProbes     = 7 // 7 × 9 bits of the hash: a bit of the block each
	// dedupFilterMinKeys and dedupFilterMaxBytes bound its size: past
	// dedupFilterMaxBytes (about 210 million keys) the filter stops growing
	// and lets more misses through to Pebble.
	dedupFilterMinKeys  = 1 << 16
	dedupFilterMaxBytes = 256 << 20
)

// dedupFilterMin is dedupFilterMinKeys; tests lower it to rebuild often.
// dedupBuildScan, if set, runs in the builder before its scan (tests hold
// a build there while Apply goes on).
var (
	dedupFilterMin = dedupFilterMinKeys
	dedupBuildScan func()
)

func newDedupFilter(capacity int) *dedupFilter {
	capacity = max(capacity, dedupFilterMin)
	n := (capacity*dedupFilterBitsPerKey + 511) / 512
	n = min(n, dedupFilterMaxBytes/64)
	return &dedupFilter{blocks: make([]dedupBlock, n), capacity: n * 512 / dedupFilterBitsPerKey}
}

// dedupHash hashes a dedup key; the seed is the process's (the filter is
// never stored nor compared across nodes).
func dedupHash(seed maphash.Seed, key []byte) uint64 {
	return maphash.Bytes(seed, key)
}

// block picks the key's block from the hash's bits mixed (the low 63 bits
// choose the bits within it).
func (f *dedupFilter) block(h uint64) *dedupBlock {
	m := h * 0x9e3779b97f4a7c15
	hi, _ := bits.Mul64(m^(m>>29), uint64(len(f.blocks)))
	return &f.blocks[hi]
}

// masks spreads the key's probes over the block's eight words.
func dedupMasks(h uint64) (m [8]uint64) {
	for range dedupFilterProbes {
		bit := h & 511
		m[bit>>6] |= 1 << (bit & 63)
		h >>= 9
	}
	return m
}

// add puts the key of hash h in the filter. Apply's goroutine and the
// builder may add at the same time.
func (f *dedupFilter) add(h uint64) {
	b := f.block(h)
	for i, m := range dedupMasks(h) {
		if m != 0 && b[i].Load()&m != m {
			b[i].Or(m)
		}
	}
}

// mayContain is false if the key of hash h is certainly not in the filter.
func (f *dedupFilter) mayContain(h uint64) bool {
	b := f.block(h)
	for i, m := range dedupMasks(h) {
		if b[i].Load()&m != m {
			return false
		}
	}
	return true
}

// due reports whether the filter should be rebuilt: it holds more keys
// than it was sized for (counting the ones expiry has deleted since it was
// built), or, at its largest size, it has taken as many keys again as its
// build found, so that a rebuild, a scan of every key, comes at most once
// per that many sends.
func (f *dedupFilter) due() bool {
	return f.added > max(f.capacity-f.scanned, f.scanned)
}

// dedupMayExist is false if no dedup key of hash h (dedupHash with
// e.dedupSeed) is in the database as of the entries Apply has committed;
// Apply then skips Pebble. Called by Apply, with applyMu held.
func (e *Engine) dedupMayExist(h uint64) bool {
	f := e.dedup
	return f == nil || f.mayContain(h)
}

// dedupAdded records that Apply writes the dedup key of hash h (to the
// batch it is about to commit). Called with applyMu held.
func (e *Engine) dedupAdded(h uint64) {
	if f := e.dedup; f != nil {
		f.add(h)
		f.added++
	}
	if f := e.dedupNext; f != nil {
		f.add(h)
		f.added++
	}
}

// dedupRotate makes a built filter the current one, and starts a rebuild
// when there is none or the current one is due. Called by Apply before an
// entry's first command (a build started inside an entry would miss the
// keys the entry wrote before it), with applyMu held.
func (e *Engine) dedupRotate() {
	if next := e.dedupNext; next != nil {
		if !next.ready.Load() {
			return
		}
		e.dedup, e.dedupNext = next, nil
	}
	switch f := e.dedup; {
	case f == nil:
		e.startDedupBuild(dedupFilterMin)
	case f.due():
		e.startDedupBuild(2 * (f.scanned + f.added))
	}
}

// startDedupBuild starts a filter sized for capacity keys: a goroutine adds
// every dedup key of a snapshot of the database taken now, while Apply adds
// the keys it writes from now on, so that once the goroutine is done the
// filter holds every key. Called with applyMu held (no entry commits
// between the filter's installation and the snapshot), and e.db open.
func (e *Engine) startDedupBuild(capacity int) {
	f := newDedupFilter(capacity)
	e.dedupNext = f
	snap := e.db.NewSnapshot()
	seed, hook := e.dedupSeed, dedupBuildScan
	e.dedupBuilders.Add(1)
	go func() {
		defer e.dedupBuilders.Done()
		defer func() { _ = snap.Close() }()
		lower, upper := prefixBounds(prefixDedup)
		it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			return // never ready: lookups go on through Pebble
		}
		if hook != nil {
			hook()
		}
		n := 0
		for valid := it.First(); valid; valid = it.Next() {
			if n%1024 == 0 && f.stop.Load() {
				break
			}
			f.add(dedupHash(seed, it.Key()))
			n++
		}
		if err := it.Close(); err != nil || f.stop.Load() {
			return
		}
		f.scanned = n
		f.ready.Store(true)
	}()
}

// stopDedupBuild stops the filter's builder and drops the filters: the
// database they describe is closing or being replaced. Called with applyMu
// held.
func (e *Engine) stopDedupBuild() {
	if e.dedupNext != nil {
		e.dedupNext.stop.Store(true)
	}
	e.dedupBuilders.Wait()
	e.dedup, e.dedupNext = nil, nil
}
