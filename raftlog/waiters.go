package raftlog

import (
	"sync"
	"sync/atomic"
	"time"
)

// waitList holds the callbacks of the commands this node submitted until
// their outcome is known. Each callback is taken out exactly once, by
// whichever comes first:
//   - the FSM adapter, when the local state machine applied the command
//     (its tag carries this node's origin): success;
//   - a definite refusal: Submit's own checks, the leader's proposer, or a
//     refusal frame from the leader over the forwarding link;
//   - the sweeper, when the command's deadline passed: ErrTimeout;
//   - Close: ErrClosed.
//
// Sequence numbers are handed out in order and every command gets the same
// timeout, so deadlines grow with seq: the list is a FIFO window
// [first, first+len(items)) and expiry only ever pops its front.
type waitList struct {
	epoch   time.Time     // deadlines are offsets from it (monotonic clock)
	timeout time.Duration // per command

	mu     sync.Mutex // guards the fields below; never held while a callback runs
	first  uint64     // seq of items[0]; seqs start at 1
	items  []waitItem // a resolved item has a nil done until it leaves the front
	closed bool       // closeAll ran: add fails

	pending atomic.Int64 // items with a non-nil done; written under mu, read by Stats without it
}

type waitItem struct {
	done     DoneFunc
	deadline time.Duration // since epoch
}

func newWaitList(timeout time.Duration) *waitList {
	return &waitList{epoch: time.Now(), timeout: timeout, first: 1}
}

// add registers done and returns the command's seq; ok is false after
// closeAll.
func (w *waitList) add(done DoneFunc) (seq uint64, ok bool) {
	deadline := time.Since(w.epoch) + w.timeout
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, false
	}
	seq = w.first + uint64(len(w.items))
	w.items = append(w.items, waitItem{done: done, deadline: deadline})
	w.pending.Add(1)
	return seq, true
}

// take removes and returns the callback of seq, or nil when it was already
// taken.
func (w *waitList) take(seq uint64) DoneFunc {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.takeLocked(seq)
}

func (w *waitList) takeLocked(seq uint64) DoneFunc {
	if seq < w.first || seq-w.first >= uint64(len(w.items)) {
		return nil
	}
	it := &w.items[seq-w.first]
	done := it.done
	if done == nil {
		return nil
	}
	it.done = nil
	w.pending.Add(-1)
	// Drop the resolved prefix; commands mostly resolve in order.
	for len(w.items) > 0 && w.items[0].done == nil {
		w.items = w.items[1:]
		w.first++
	}
	if len(w.items) == 0 {
		w.items = w.items[:0:0] // let a grown array go
	}
	return done
}

// resolved is a callback with the result it is to be called with.
type resolved struct {
	done     DoneFunc
	result   any
	err      error
	enqueued time.Duration // when it was submitted, on the list's clock (now)
}

// now is the list's clock: submit times and deadlines are on it.
func (w *waitList) now() time.Duration { return time.Since(w.epoch) }

// takeApplied appends to dst the callbacks of the commands of one applied
// entry that carry origin, paired with their results (nil results: the
// state machine skipped the entry, each gets errSkipped), under one lock.
func (w *waitList) takeApplied(dst []resolved, origin uint64, tags []Tag, results []any, errSkipped error) []resolved {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, tag := range tags {
		if tag.Origin != origin {
			continue
		}
		var enqueued time.Duration
		if tag.Seq >= w.first && tag.Seq-w.first < uint64(len(w.items)) {
			enqueued = w.items[tag.Seq-w.first].deadline - w.timeout
		}
		done := w.takeLocked(tag.Seq)
		if done == nil {
			continue
		}
		if results == nil {
			dst = append(dst, resolved{done: done, err: errSkipped, enqueued: enqueued})
		} else {
			dst = append(dst, resolved{done: done, result: results[i], enqueued: enqueued})
		}
	}
	return dst
}

// expire removes the callbacks whose deadline passed and appends them to
// dst.
func (w *waitList) expire(dst []DoneFunc) []DoneFunc {
	now := time.Since(w.epoch)
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.items) > 0 && w.items[0].deadline <= now {
		if done := w.items[0].done; done != nil {
			dst = append(dst, done)
			w.pending.Add(-1)
		}
		w.items = w.items[1:]
		w.first++
	}
	// The new front may be resolved already.
	for len(w.items) > 0 && w.items[0].done == nil {
		w.items = w.items[1:]
		w.first++
	}
	return dst
}

// closeAll makes add fail from now on and returns every callback still
// waiting.
func (w *waitList) closeAll() []DoneFunc {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	var dones []DoneFunc
	for _, it := range w.items {
		if it.done != nil {
			dones = append(dones, it.done)
		}
	}
	w.first += uint64(len(w.items))
	w.items = nil
	w.pending.Store(0)
	return dones
}

// stillWaiting keeps in seqs those whose outcome is not known yet.
func (w *waitList) stillWaiting(seqs []uint64) []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := seqs[:0]
	for _, seq := range seqs {
		if seq >= w.first && seq-w.first < uint64(len(w.items)) && w.items[seq-w.first].done != nil {
			out = append(out, seq)
		}
	}
	return out
}

// waiting is the number of commands whose outcome is not known yet.
func (w *waitList) waiting() int { return int(w.pending.Load()) }
