package raftlog

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Stats is a point-in-time reading of the node's counters. Counters only
// grow; the rest are gauges. Reading it takes no lock.
type Stats struct {
	State        string // raft state: Follower, Candidate, Leader, Shutdown
	Leader       bool
	Term         uint64
	LastIndex    uint64 // last index in the log (or last snapshot)
	CommitIndex  uint64
	AppliedIndex uint64 // last command entry handed to the state machine

	QueueLength   int // commands waiting for the proposer
	QueueCapacity int
	Inflight      int // entries handed to raft and not yet resolved

	// The proposer (on the leader: commands of every node).
	EntriesProposed  uint64 // entries handed to raft.Apply
	CommandsProposed uint64 // commands in those entries
	EntriesCommitted uint64 // of those, entries committed and applied locally
	CommandsReceived uint64 // commands followers forwarded and the proposer queued

	// This node's callers (Submit).
	CommandsForwarded uint64 // commands sent to the leader over the forwarding link
	CommandsCommitted uint64 // commands whose callback got a result
	CommandsFailed    uint64 // commands whose callback got an error, timeouts included
	CommandsTimedOut  uint64 // of those, ErrTimeout: outcome unknown
	CommandsRejected  uint64 // commands refused for a full queue (ErrBusy), here or by the leader
	Waiting           int    // commands whose outcome is not known yet

	// HandshakeFailures counts internal connections closed because the
	// cluster-key handshake failed (transport.go): inbound ones that did
	// not prove the key in time (strangers, another key), outbound ones to
	// a peer that did not prove it or refused our proof.
	HandshakeFailures uint64

	// CommitLatency: from raft.Apply to the entry applied locally, per entry
	// proposed here.
	CommitLatency Histogram
	// ApplyLatency: time spent in StateMachine.Apply, per entry.
	ApplyLatency Histogram
}

// Histogram is a latency distribution in the shape Prometheus wants:
// Counts[i] is the number of observations <= Bounds[i] seconds (cumulative);
// Count and Sum cover all observations, including those above the last bound.
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Count  uint64
	Sum    float64 // seconds
}

const (
	histBase    = 100 * time.Microsecond
	histBuckets = 16 // upper bounds 100µs·2^0 .. 100µs·2^15 (≈3.3s)
)

// latencyHistogram is a lock-free histogram of durations with power-of-two
// buckets; observe is a handful of atomic adds, safe from any goroutine.
type latencyHistogram struct {
	buckets [histBuckets + 1]atomic.Uint64 // the last one counts overflows
	count   atomic.Uint64
	sumNs   atomic.Uint64
}

func (h *latencyHistogram) observe(d time.Duration) {
	if d < 0 {
		d = 0
	}
	i := 0
	if d > 0 {
		// smallest i with d <= histBase<<i
		i = bits.Len64(uint64((d - 1) / histBase))
	}
	if i > histBuckets {
		i = histBuckets
	}
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sumNs.Add(uint64(d))
}

func (h *latencyHistogram) read() Histogram {
	out := Histogram{
		Bounds: make([]float64, histBuckets),
		Counts: make([]uint64, histBuckets),
	}
	var cum uint64
	for i := range histBuckets {
		cum += h.buckets[i].Load()
		out.Bounds[i] = (histBase << i).Seconds()
		out.Counts[i] = cum
	}
	// Read Count after the buckets so that Count >= Counts[last] even while
	// observations race with the read.
	out.Count = max(h.count.Load(), cum)
	out.Sum = time.Duration(h.sumNs.Load()).Seconds()
	return out
}

// nodeStats are the node's counters, written by the proposer, the waiter,
// the forwarding goroutines and the FSM adapter.
type nodeStats struct {
	entriesProposed   atomic.Uint64
	commandsProposed  atomic.Uint64
	entriesResolved   atomic.Uint64 // committed or failed
	entriesCommitted  atomic.Uint64
	commandsReceived  atomic.Uint64
	commandsForwarded atomic.Uint64
	commandsCommitted atomic.Uint64
	commandsFailed    atomic.Uint64
	commandsTimedOut  atomic.Uint64
	commandsRejected  atomic.Uint64
	commitTime        latencyHistogram
}
