package raftlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// request is one submitted command waiting in the queue.
type request struct {
	cmd  []byte
	done DoneFunc
}

// pendingEntry is an entry handed to raft, waiting for the waiter, or (with
// a nil future) commands the proposer refused, to be failed with err.
type pendingEntry struct {
	future raft.ApplyFuture
	err    error
	dones  []DoneFunc // one per command, in entry order
	start  time.Time
}

// Submit enqueues cmd for the proposer and returns at once: it never blocks,
// so it can be called from a network event loop.
//
// It returns ErrClosed after Close, ErrNotLeader when this node is not the
// leader, ErrTooLarge for a command over MaxBatchBytes, and ErrBusy when the
// queue is full. When it returns nil, done is called exactly once, from the
// node's waiter goroutine, which runs all callbacks in log order: after the
// entry holding cmd has been committed and applied by the local state
// machine, with the command's result and the entry's index, or with an
// error (ErrNotLeader, ErrLeadershipLost, ErrTimeout, ErrClosed, or a
// wrapped raft error). done must not block, since it delays every later
// callback; it may call Submit.
//
// Commands submitted from one goroutine land in the log in submission order.
// cmd must not be modified after the call.
func (n *Node) Submit(cmd []byte, done DoneFunc) error {
	if done == nil {
		panic("raftlog: Submit with a nil DoneFunc")
	}
	if len(cmd) > n.cfg.MaxBatchBytes {
		return ErrTooLarge
	}
	n.submitMu.RLock()
	defer n.submitMu.RUnlock()
	if n.closed {
		return ErrClosed
	}
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	select {
	case n.queue <- request{cmd: cmd, done: done}:
		return nil
	default:
		n.stats.commandsRejected.Add(1)
		return ErrBusy
	}
}

type proposeOutcome struct {
	result any
	index  uint64
	err    error
}

// Propose submits cmd and waits for its outcome: the result and the index of
// its entry. It fails at once with Submit's errors (including ErrBusy). If
// ctx ends first it returns ctx.Err(), and the command may still commit.
func (n *Node) Propose(ctx context.Context, cmd []byte) (any, uint64, error) {
	ch := make(chan proposeOutcome, 1)
	err := n.Submit(cmd, func(result any, index uint64, err error) {
		ch <- proposeOutcome{result, index, err}
	})
	if err != nil {
		return nil, 0, err
	}
	select {
	case o := <-ch:
		return o.result, o.index, o.err
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
}

// runProposer is the only reader of n.queue and the only writer of
// n.pending. Each round it takes an in-flight slot, waits for one request,
// then takes whatever else is already queued, up to the batch limits, and
// proposes it as one entry. It never waits for more requests to arrive:
// batches grow from concurrency (requests that queue while raft is busy and
// all slots are taken), not from a timer.
func (n *Node) runProposer() {
	defer close(n.pending)
	var (
		batch    []request // reused; cleared after each entry
		carry    request   // a request taken from the queue that did not fit
		hasCarry bool
	)
	for {
		select {
		case <-n.stop:
			n.failQueued(carry, hasCarry)
			return
		default:
		}
		select {
		case n.slots <- struct{}{}:
		case <-n.stop:
			n.failQueued(carry, hasCarry)
			return
		}
		first := carry
		if !hasCarry {
			select {
			case first = <-n.queue:
			case <-n.stop:
				<-n.slots
				n.failQueued(request{}, false)
				return
			}
		}
		hasCarry = false
		batch = append(batch[:0], first)
		size := len(first.cmd)
	fill:
		for len(batch) < n.cfg.MaxBatchCommands {
			select {
			case req := <-n.queue:
				if size+len(req.cmd) > n.cfg.MaxBatchBytes {
					carry, hasCarry = req, true
					break fill
				}
				batch = append(batch, req)
				size += len(req.cmd)
			default:
				break fill
			}
		}
		n.propose(batch)
		clear(batch) // drop references to the commands and callbacks
	}
}

// propose encodes batch into one entry, stamps the leader's clock, hands it
// to raft and passes it to the waiter. Called by the proposer only, with an
// in-flight slot held; the waiter releases the slot.
func (n *Node) propose(batch []request) {
	now := time.Now()
	size := entryFixedHeader + uvarintLen(uint64(len(batch)))
	for i := range batch {
		size += uvarintLen(uint64(len(batch[i].cmd))) + len(batch[i].cmd)
	}
	// A fresh buffer per entry: raft keeps the entry (in its log cache and
	// inflight list) after the future resolves, so it cannot be reused.
	data := make([]byte, 0, size)
	data = appendEntryHeader(data, now.UnixMilli(), len(batch))
	dones := make([]DoneFunc, len(batch))
	for i := range batch {
		data = appendEntryCommand(data, batch[i].cmd)
		dones[i] = batch[i].done
	}
	future := n.raft.Apply(data, n.cfg.EnqueueTimeout)
	n.stats.entriesProposed.Add(1)
	n.stats.commandsProposed.Add(uint64(len(batch)))
	// Never blocks: the channel holds MaxInflightEntries and the slot held
	// for this entry is one of them.
	n.pending <- pendingEntry{future: future, dones: dones, start: now}
}

// failQueued hands every request still queued (and carry) to the waiter,
// to be failed with ErrClosed after the entries in flight. Called by the
// proposer after stop; Close has set closed before closing stop, so the
// queue only shrinks now. The send may block until the waiter catches up,
// which it always does.
func (n *Node) failQueued(carry request, hasCarry bool) {
	var dones []DoneFunc
	if hasCarry {
		dones = append(dones, carry.done)
	}
drain:
	for {
		select {
		case req := <-n.queue:
			dones = append(dones, req.done)
		default:
			break drain
		}
	}
	if len(dones) > 0 {
		n.pending <- pendingEntry{err: ErrClosed, dones: dones}
	}
}

// runWaiter resolves the proposed entries in log order, calls their
// callbacks and releases their in-flight slots. It exits when the proposer
// closes n.pending.
func (n *Node) runWaiter() {
	defer close(n.waiterDone)
	for p := range n.pending {
		if p.future == nil {
			n.fail(p.dones, p.err)
			continue
		}
		err := p.future.Error()
		n.stats.entriesResolved.Add(1)
		<-n.slots
		if err != nil {
			n.fail(p.dones, mapRaftError(err))
			continue
		}
		n.stats.commitTime.observe(time.Since(p.start))
		index := p.future.Index()
		results, ok := p.future.Response().([]any)
		if !ok || len(results) != len(p.dones) {
			// The state machine skipped an entry it believes it had applied:
			// its applied index is ahead of the log.
			n.fail(p.dones, fmt.Errorf("raftlog: state machine skipped new entry %d (applied index ahead of the log)", index))
			continue
		}
		n.stats.entriesCommitted.Add(1)
		n.stats.commandsCommitted.Add(uint64(len(p.dones)))
		for i, done := range p.dones {
			done(results[i], index, nil)
		}
	}
}

func (n *Node) fail(dones []DoneFunc, err error) {
	n.stats.commandsFailed.Add(uint64(len(dones)))
	for _, done := range dones {
		done(nil, 0, err)
	}
}

// mapRaftError maps raft's errors to the package's own.
func mapRaftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost):
		return ErrLeadershipLost
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrTimeout
	}
	return fmt.Errorf("raftlog: %w", err)
}
