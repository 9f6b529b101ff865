package raftlog

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// StateMachine is the replicated state the node applies committed commands
// to. Raft calls Apply, Snapshot and Restore from one goroutine (raft's FSM
// goroutine), never concurrently with each other.
type StateMachine interface {
	// Apply applies the commands of one committed entry, in order. ts is the
	// leader's clock (unix milliseconds) stamped into the entry; Apply must be
	// deterministic and read no clock of its own. It returns one result per
	// command; the node that submitted command i hands result i (of its own
	// state machine) to the command's callback.
	//
	// The implementation itself skips entries whose index is <= its persisted
	// applied index (raft replays them after a restart) and then returns nil.
	//
	// cmds alias the log entry, which raft may keep in its cache: they must
	// not be modified, and may be retained read-only.
	Apply(index uint64, ts int64, cmds [][]byte) []any

	// AppliedIndex is the index of the last entry whose effects are
	// persisted. Open calls it before raft starts, to decide whether the
	// latest raft snapshot must be restored over the state; the node calls
	// it again after Restore, on the same goroutine as Restore.
	AppliedIndex() uint64

	// Snapshot captures a consistent point-in-time view quickly (e.g. a
	// Pebble checkpoint). The returned Snapshot is written out later from
	// another goroutine, concurrently with Apply.
	Snapshot() (Snapshot, error)

	// Restore replaces the whole state with the snapshot read from r,
	// including the applied index it was taken at.
	Restore(r io.Reader) error
}

// EntryDoneNotifier is implemented by a StateMachine that wants to know
// when an entry is fully handled: EntryDone is called on the apply
// goroutine after Apply of each command entry and after the callbacks of
// this node's commands in it (the node holds its socket writes from Apply
// to then, so that a command's reply and its events leave together).
type EntryDoneNotifier interface {
	EntryDone(index uint64)
}

// Snapshot is a point-in-time view of a StateMachine.
//
// WriteTo has the io.WriterTo signature (go vet insists on it for a method
// of that name); the byte count is informational.
type Snapshot interface {
	// WriteTo writes the snapshot to w; Restore reads the same bytes back.
	WriteTo(w io.Writer) (int64, error)
	// Release frees the snapshot's resources. Called exactly once, whether or
	// not WriteTo was called.
	Release()
}

// fsmAdapter implements raft.FSM on top of a StateMachine: it decodes the
// entry, calls StateMachine.Apply, measures it, and resolves the callers of
// this node's own commands (those whose tag carries its origin) with the
// results: a command is acknowledged only once this node has applied it.
// Raft only passes LogCommand entries to FSM.Apply (configuration, noop and
// barrier entries never reach it), and the adapter checks that again.
//
// All methods run on raft's FSM goroutine, which also runs the success
// callbacks; the atomics are read by Stats.
type fsmAdapter struct {
	sm     StateMachine
	origin uint64    // this node's incarnation (Tag.Origin)
	waits  *waitList // this node's callers
	stats  *nodeStats

	scratch []resolved        // reused per entry
	done    EntryDoneNotifier // sm, if it is one
	onNewer func(index uint64, err error)
	own     *admission // this node's commands, Submit to apply (ownAdmission); fed here only

	// lastIndex is the index of the last command entry handed to sm
	// (initially sm.AppliedIndex() as seen by Open).
	lastIndex atomic.Uint64
	applyTime latencyHistogram
}

var _ raft.FSM = (*fsmAdapter)(nil)

func newFSMAdapter(sm StateMachine, applied, origin uint64, waits *waitList, stats *nodeStats) *fsmAdapter {
	a := &fsmAdapter{sm: sm, origin: origin, waits: waits, stats: stats}
	a.done, _ = sm.(EntryDoneNotifier)
	a.lastIndex.Store(applied)
	return a
}

// Apply returns the []any results of the entry's commands, or nil when the
// state machine skipped an entry it had already applied.
func (a *fsmAdapter) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	e, err := DecodeEntry(l.Data)
	if err != nil && errors.Is(err, ErrNewerEntry) && a.onNewer != nil {
		a.onNewer(l.Index, err)
	}
	if err != nil {
		// Only the proposer writes command entries and Pebble checksums
		// them; a committed entry that does not decode is a bug or a newer
		// format. Applying around it would fork the replicas.
		panic(fmt.Sprintf("raftlog: committed entry %d does not decode: %v", l.Index, err))
	}
	start := time.Now()
	results := a.sm.Apply(l.Index, e.TS, e.Cmds)
	a.applyTime.observe(time.Since(start))
	a.lastIndex.Store(l.Index)
	if results != nil && len(results) != len(e.Cmds) {
		panic(fmt.Sprintf("raftlog: state machine returned %d results for the %d commands of entry %d",
			len(results), len(e.Cmds), l.Index))
	}
	if e.Tags != nil {
		a.resolve(l.Index, e.Tags, results)
	}
	if a.done != nil {
		a.done.EntryDone(l.Index)
	}
	if results == nil {
		return nil
	}
	return results
}

// resolve calls back this node's callers of the entry's commands.
func (a *fsmAdapter) resolve(index uint64, tags []Tag, results []any) {
	var errSkipped error
	if results == nil {
		// The state machine believes it applied this entry already: its
		// applied index is ahead of the log. Our own commands in it are new,
		// so they were not applied.
		errSkipped = fmt.Errorf("raftlog: state machine skipped new entry %d (applied index ahead of the log)", index)
	}
	a.scratch = a.waits.takeApplied(a.scratch[:0], a.origin, tags, results, errSkipped)
	if a.own != nil && len(a.scratch) > 0 {
		now := a.waits.now()
		for _, r := range a.scratch {
			a.own.taken(r.enqueued, now)
		}
		if a.waits.pending.Load() == 0 {
			a.own.idle(now)
		}
	}
	for _, r := range a.scratch {
		if r.err != nil {
			a.stats.commandsFailed.Add(1)
			r.done(nil, 0, r.err)
		} else {
			a.stats.commandsCommitted.Add(1)
			r.done(r.result, index, nil)
		}
	}
	clear(a.scratch) // drop the callbacks and results
}

func (a *fsmAdapter) Snapshot() (raft.FSMSnapshot, error) {
	s, err := a.sm.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{s}, nil
}

// Restore replaces the state. Raft closes rc itself.
func (a *fsmAdapter) Restore(rc io.ReadCloser) error {
	if err := a.sm.Restore(rc); err != nil {
		return err
	}
	a.lastIndex.Store(a.sm.AppliedIndex())
	return nil
}

// fsmSnapshot writes a Snapshot into raft's snapshot sink. Raft calls
// Persist from its snapshot goroutine, concurrently with Apply.
type fsmSnapshot struct{ s Snapshot }

func (f fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := f.s.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (f fsmSnapshot) Release() { f.s.Release() }
