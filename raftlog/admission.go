package raftlog

import (
	"sync/atomic"
	"time"
)

// admission keeps the proposer's queue short in time, not only in length.
//
// A queue bounded by length alone (QueueLength, 65,536 commands) holds
// seconds of work once commands arrive faster than the log commits them:
// every command then waits behind that backlog, most outlive SubmitTimeout
// and are answered "timeout" after the node spent the work of queueing them
// (accepted, then abandoned), and clients retry into the same backlog, so
// the useful rate collapses. admission refuses at once (ErrBusy) what would
// wait too long, so what the node takes it commits within about Target, and
// a refused client retries later instead of waiting.
//
// It follows CoDel (Nichols and Jacobson, "Controlling Queue Delay"): a
// burst that drains quickly is good queueing and passes, a standing queue is
// not. The proposer measures each command's sojourn, from Submit to the
// moment it takes the command into an entry. When the smallest sojourn over
// an Interval stays above Target, the queue has stood for the whole
// interval, and Submit admits only as many queued commands as the proposer
// took in Target at the rate it drained them in that interval (at least
// minAdmitted): the queue shrinks to about Target of work without emptying,
// so the log keeps full batches and the throughput holds. An interval whose
// smallest sojourn is under Target lifts the limit again.
//
// The proposer alone calls taken and idle; Submit calls admits from any
// goroutine. Times are durations on the node's monotonic clock.
type admission struct {
	target   time.Duration
	interval time.Duration
	maxQueue int  // QueueLength: the limit when no queue stands
	noStall  bool // never refuse for want of progress (see lastTaken)

	// Owned by the proposer.
	windowStart time.Duration
	minSojourn  time.Duration // smallest sojourn in the window; -1: none yet
	drained     int           // commands taken in the window
	idleSince   time.Duration // when the queue was last found empty
	// The retry hint's span: since it last changed, the commands refused
	// and taken. It is lowered on the span's counts, once the span has
	// lasted the hint itself (see retry).
	spanStart                time.Duration
	spanRefused, spanDrained int64

	limit atomic.Int64 // queued commands Submit admits
	// refused counts the commands refused in the window; retry is the
	// wait a refused caller is asked for. It is steered so that refusals
	// stay a small part of the work: it doubles after each window that
	// refused more than a quarter as many commands as it took; it halves
	// once it has stood for its own length and, over that span, refused
	// under a sixteenth; and it is an interval again after the queue has
	// stayed empty for as long as the hint (from one interval to
	// maxRetryFactor). A hint proportional to the refusals alone settles
	// where clients that obey it still send a refusal for each command
	// taken: each client holding its writes for the hint makes its own
	// refusals fewer, so the hint fell with them and the clients came back
	// sooner. Steering on the ratio keeps the hint up while it works, and
	// lowering it only on a span as long as itself keeps it up until the
	// clients it sent away have come back: lowered after any quiet 100 ms
	// window, a 2 s hint was back at an interval before they returned, and
	// most refusals of an overloaded cluster asked for 100-200 ms.
	refused atomic.Int64
	retry   atomic.Int64
	// lastTaken is when the proposer last took a command, or -1 while it
	// waits on an empty queue. A proposer that
	// takes nothing for stallIntervals intervals while commands wait (raft
	// stalled on its disk, a paused leader) makes Submit refuse as well:
	// the queue would only grow stale behind it. Several intervals, so that
	// a proposer merely starved of CPU for a moment refuses nothing.
	lastTaken atomic.Int64
}

// minAdmitted is the smallest limit: a few entries' worth of commands, so
// that a node whose drain rate was measured low (a stall) still takes some
// work and measures again.
const minAdmitted = 64

// stallIntervals: see lastTaken.
const stallIntervals = 10

// maxRetryFactor bounds retry: 20 intervals (2 s by default).
const maxRetryFactor = 20

// The retry hint doubles after a window that refused more than one command
// for every retryRaiseRatio taken, and halves (down to an interval) after
// a span as long as itself that refused fewer than one for every
// retryLowerRatio taken.
const (
	retryRaiseRatio = 4
	retryLowerRatio = 16
)

func newAdmission(target, interval time.Duration, maxQueue int, now time.Duration) *admission {
	a := &admission{target: target, interval: interval, maxQueue: maxQueue, windowStart: now, minSojourn: -1, spanStart: now}
	a.limit.Store(int64(maxQueue))
	a.lastTaken.Store(int64(now))
	a.retry.Store(int64(interval))
	return a
}

// admits reports whether Submit may queue one more command behind queued
// others at now.
func (a *admission) admits(queued int, now time.Duration) bool {
	if queued == 0 {
		return true
	}
	if queued >= int(a.limit.Load()) {
		return false
	}
	// Commands wait; has the proposer taken any lately? (Negative: it is
	// waiting for work, and takes these at once.)
	last := a.lastTaken.Load()
	return a.noStall || last < 0 || now-time.Duration(last) < stallIntervals*a.interval
}

// taken records that the proposer took a command queued at enqueued into
// an entry at now.
func (a *admission) taken(enqueued, now time.Duration) {
	if a.lastTaken.Load() < 0 && now-a.idleSince >= a.retryAfter() {
		// The queue stayed empty for as long as the hint asks clients
		// to wait: whatever made it, it is over.
		a.setRetry(a.interval, now)
	}
	a.lastTaken.Store(int64(now))
	sojourn := now - enqueued
	if a.minSojourn < 0 || sojourn < a.minSojourn {
		a.minSojourn = sojourn
	}
	a.drained++
	if elapsed := now - a.windowStart; elapsed >= a.interval {
		a.endWindow(elapsed, now)
		a.windowStart = now
	}
}

// idle records that the proposer found the queue empty at now and waits
// for work: no queue stands, whatever the window measured so far, and
// however long it waits, it is not stalled. The retry hint stays: the
// clients it sent away may be what emptied the queue (taken puts it back
// to an interval once the queue has stayed empty as long as the hint).
func (a *admission) idle(now time.Duration) {
	a.limit.Store(int64(a.maxQueue))
	a.windowStart, a.minSojourn, a.drained = now, -1, 0
	if a.lastTaken.Swap(-1) >= 0 {
		a.idleSince = now
	}
	a.spanRefused += a.refused.Swap(0)
}

// setRetry sets the hint and starts its span at now.
func (a *admission) setRetry(retry, now time.Duration) {
	a.retry.Store(int64(retry))
	a.spanStart, a.spanRefused, a.spanDrained = now, 0, 0
}

func (a *admission) endWindow(elapsed, now time.Duration) {
	limit := a.maxQueue
	if a.minSojourn > a.target {
		// Commands the proposer drains in target at this window's rate.
		limit = int(int64(a.drained) * int64(a.target) / int64(elapsed))
		limit = min(max(limit, minAdmitted), a.maxQueue)
	}
	a.limit.Store(int64(limit))
	refused, drained := a.refused.Swap(0), int64(a.drained)
	a.spanRefused += refused
	a.spanDrained += drained
	retry := a.retryAfter()
	switch {
	case refused*retryRaiseRatio > max(drained, 1):
		a.setRetry(min(2*retry, a.interval*maxRetryFactor), now)
	case now-a.spanStart < retry:
		// The clients refused with this hint may not be back yet.
	case a.spanRefused*retryLowerRatio < max(a.spanDrained, 1):
		a.setRetry(max(retry/2, a.interval), now)
	default:
		a.setRetry(retry, now) // held: measure the next span
	}
	a.minSojourn, a.drained = -1, 0
}

// retryAfter is the wait a caller refused now is asked for.
func (a *admission) retryAfter() time.Duration { return time.Duration(a.retry.Load()) }

// BusyError is ErrBusy from this node's Submit, with the wait it asks for
// before a retry (admission: longer the more it refuses).
type BusyError struct{ RetryAfter time.Duration }

func (e *BusyError) Error() string        { return ErrBusy.Error() }
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// A follower's own commands wait for the leader and then for their entry to
// be applied here: on a follower short of CPU, applying fell seconds behind
// the leader, and its clients' sends timed out (114,613 timeouts with three
// nodes on two cores at 60k msg/s offered) although the leader had taken
// them. So a follower also admits its own commands on their whole wait,
// Submit to local apply (ownAdmission): once they have waited over
// SubmitTimeout/5 for a whole interval, it takes only what it resolves in
// that time and refuses the rest with ErrBusy. The target is long on
// purpose: it must stay above a far edge's round trip to the leader, or it
// would cut an edge's rate for its distance. It never refuses for want of
// progress: a follower's command can be lost with its leader, and the new
// leader's commands must not wait for it to time out.
func ownAdmission(cfg Config) *admission {
	a := newAdmission(cfg.SubmitTimeout/5, cfg.AdmissionInterval, cfg.QueueLength, 0)
	a.noStall = true
	return a
}

// now is the node's monotonic clock for admission.
func (n *Node) now() time.Duration { return time.Since(n.epoch) }
