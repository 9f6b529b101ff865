package raftlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// request is one command waiting in the proposer's queue: submitted here
// (from is nil) or forwarded by a follower (from is its session, which
// hears about refusals).
type request struct {
	cmd      []byte
	tag      Tag
	from     *fwdSession
	enqueued time.Duration // on the node's clock (n.now), for admission
}

// pendingEntry is an entry handed to raft, waiting for the waiter, or (with
// a nil future) commands the proposer refused, to be failed with err.
type pendingEntry struct {
	future raft.ApplyFuture
	err    error
	reqs   []request // in entry order, commands dropped
	start  time.Time
}

// Submit hands cmd to the leader and returns at once: it never blocks, so
// it can be called from a network event loop. On the leader the command
// goes to the proposer's queue; on a follower, to the forwarding link
// (forward.go), which sends it to the leader's proposer.
//
// It returns ErrClosed after Close, ErrNotLeader when no leader is known,
// ErrTooLarge for a command over MaxBatchBytes, ErrStorageFull while this
// node's disk is nearly full (SetStorage), and ErrBusy when the queue is
// full. When it returns nil, done is called exactly once:
//   - with the command's result and its entry's index, once this node's
//     own state machine has applied the entry (so a caller reads its own
//     write here), from raft's FSM goroutine, in log order;
//   - or with an error: ErrNotLeader, ErrBusy, ErrTooLarge,
//     ErrStorageFull (the leader refused it: not appended), ErrTimeout (no outcome within
//     SubmitTimeout: it may still commit), ErrClosed (Close ran first: it
//     may have committed), or another error; from one of the node's
//     goroutines.
//
// Any error may hide a command that committed after all, so callers retry
// commands that are idempotent; no error ever hides a success. Callbacks
// of different commands may run concurrently. done must not block, since
// it delays the application of later entries; it may call Submit.
//
// Commands submitted from one goroutine to one node land in the log in
// submission order, as long as the leader does not change meanwhile. cmd
// must not be modified after the call.
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
	if n.storageFull() {
		return ErrStorageFull
	}
	leader := false
	switch n.raft.State() {
	case raft.Leader:
		leader = true
	case raft.Shutdown: // removed from the cluster
		return ErrNotLeader
	default:
		if addr, _ := n.raft.LeaderWithID(); addr == "" {
			return ErrNotLeader
		}
	}
	seq, ok := n.waits.add(done)
	if !ok {
		return ErrClosed
	}
	if leader {
		now := n.now()
		if n.admit.admits(len(n.queue), now) {
			select {
			case n.queue <- request{cmd: cmd, tag: Tag{Origin: n.origin, Seq: seq}, enqueued: now}:
				return nil
			default:
			}
		}
	} else if n.fsm.own.admits(int(n.waits.pending.Load())-1, n.waits.now()) { // -1: this one
		select {
		case n.fwdQueue <- fwdCommand{seq: seq, cmd: cmd}:
			return nil
		default:
		}
	}
	n.stats.commandsRejected.Add(1)
	if n.waits.take(seq) == nil {
		// The sweeper expired it in between and has called done.
		return nil
	}
	a := n.admit
	if !leader {
		a = n.fsm.own
	}
	a.refused.Add(1)
	return &BusyError{RetryAfter: a.retryAfter()}
}

// enqueueLocal hands a command of this node to the local proposer, for a
// command that was queued for forwarding when this node became the
// leader. Called without submitMu held.
func (n *Node) enqueueLocal(c fwdCommand) error {
	n.submitMu.RLock()
	defer n.submitMu.RUnlock()
	if n.closed {
		return ErrClosed
	}
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	select {
	case n.queue <- request{cmd: c.cmd, tag: Tag{Origin: n.origin, Seq: c.seq}, enqueued: n.now()}:
		return nil
	default:
		n.stats.commandsRejected.Add(1)
		return ErrBusy
	}
}

// failSeq fails this node's command seq with err, unless its outcome is
// already known.
func (n *Node) failSeq(seq uint64, err error) {
	if done := n.waits.take(seq); done != nil {
		n.stats.commandsFailed.Add(1)
		done(nil, 0, err)
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
			default:
				n.admit.idle(n.now()) // no queue stands
				select {
				case first = <-n.queue:
				case <-n.stop:
					<-n.slots
					n.failQueued(request{}, false)
					return
				}
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
		now := n.now()
		for i := range batch {
			n.admit.taken(batch[i].enqueued, now)
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
		size += entryCommandSize(batch[i].tag, len(batch[i].cmd))
	}
	// A fresh buffer per entry: raft keeps the entry (in its log cache and
	// inflight list) after the future resolves, so it cannot be reused.
	data := make([]byte, 0, size)
	data = appendEntryHeader(data, now.UnixMilli(), len(batch))
	reqs := make([]request, len(batch))
	for i := range batch {
		data = appendEntryCommand(data, batch[i].tag, batch[i].cmd)
		reqs[i] = request{tag: batch[i].tag, from: batch[i].from}
	}
	future := n.raft.Apply(data, n.cfg.EnqueueTimeout)
	n.stats.entriesProposed.Add(1)
	n.stats.commandsProposed.Add(uint64(len(batch)))
	// Never blocks: the channel holds MaxInflightEntries and the slot held
	// for this entry is one of them.
	n.pending <- pendingEntry{future: future, reqs: reqs, start: now}
}

// failQueued hands every request still queued (and carry) to the waiter,
// to be failed with ErrClosed after the entries in flight. Called by the
// proposer after stop; Close has set closed before closing stop, so the
// queue only shrinks now. The send may block until the waiter catches up,
// which it always does.
func (n *Node) failQueued(carry request, hasCarry bool) {
	var reqs []request
	if hasCarry {
		reqs = append(reqs, carry)
	}
drain:
	for {
		select {
		case req := <-n.queue:
			reqs = append(reqs, req)
		default:
			break drain
		}
	}
	if len(reqs) > 0 {
		n.pending <- pendingEntry{err: ErrClosed, reqs: reqs}
	}
}

// runWaiter waits for the proposed entries in log order, releases their
// in-flight slots, and fails the commands of entries raft refused. It does
// not report successes: each node's FSM adapter resolves its own commands
// when it applies them. It exits when the proposer closes n.pending.
func (n *Node) runWaiter() {
	defer close(n.waiterDone)
	for p := range n.pending {
		if p.future == nil {
			n.refuse(p.reqs, p.err)
			continue
		}
		err := p.future.Error()
		n.stats.entriesResolved.Add(1)
		<-n.slots
		if err == nil {
			n.stats.commitTime.observe(time.Since(p.start))
			n.stats.entriesCommitted.Add(1)
			continue
		}
		if definite := refusedByRaft(err); definite != nil {
			n.refuse(p.reqs, definite)
			continue
		}
		// Appended but not known to be committed (leadership lost, shutdown):
		// the entry may still commit under the next leader, in which case the
		// submitting node's FSM adapter resolves its commands; otherwise they
		// time out.
		n.logger.Debug("entry outcome unknown", "commands", len(p.reqs), "error", err)
	}
}

// refuse reports commands that were not appended to the log: to this
// node's callers, or to the followers that forwarded them.
func (n *Node) refuse(reqs []request, err error) {
	code := refusalCode(err)
	for _, r := range reqs {
		if r.from != nil {
			r.from.refuse(r.tag.Seq, code)
		} else {
			n.failSeq(r.tag.Seq, err)
		}
	}
}

// refusedByRaft maps the errors with which raft refuses an entry it did not
// append to the package's own; it returns nil when the entry may have been
// appended.
func refusedByRaft(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrTimeout
	}
	return nil
}

func refusalCode(err error) byte {
	switch {
	case errors.Is(err, ErrBusy):
		return refuseBusy
	case errors.Is(err, ErrTooLarge):
		return refuseTooLarge
	case errors.Is(err, ErrClosed):
		return refuseClosed
	case errors.Is(err, ErrTimeout):
		return refuseTimeout
	case errors.Is(err, ErrStorageFull):
		return refuseStorageFull
	}
	return refuseNotLeader
}

// mapRaftError maps raft's errors to the package's own.
func mapRaftError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return ErrNotLeader
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: leadership lost before the change committed", ErrTimeout)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrTimeout
	}
	return fmt.Errorf("raftlog: %w", err)
}
