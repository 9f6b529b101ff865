package raftlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Errors returned by Submit, or passed to its callback. Anything else is
// wrapped with "raftlog: ".
var (
	// ErrNotLeader: this node is not the leader; the command was not
	// appended to the log and may be retried elsewhere.
	ErrNotLeader = errors.New("raftlog: not the leader")
	// ErrLeadershipLost: leadership was lost after the entry was appended;
	// it may or may not commit. Retry idempotently.
	ErrLeadershipLost = errors.New("raftlog: leadership lost, outcome unknown")
	// ErrBusy: the proposal queue is full (backpressure).
	ErrBusy = errors.New("raftlog: proposal queue full")
	// ErrClosed: the node is closed or closing.
	ErrClosed = errors.New("raftlog: node closed")
	// ErrTimeout: raft did not accept the entry within EnqueueTimeout; the
	// command was not appended.
	ErrTimeout = errors.New("raftlog: timed out handing the entry to raft")
	// ErrTooLarge: the command is larger than MaxBatchBytes.
	ErrTooLarge = errors.New("raftlog: command larger than MaxBatchBytes")
	// ErrNothingToSnapshot: nothing was applied since the last snapshot
	// (or since the node started).
	ErrNothingToSnapshot = errors.New("raftlog: nothing new to snapshot")
)

// DoneFunc receives the outcome of a submitted command: its result and the
// index of its log entry, or an error.
type DoneFunc func(result any, index uint64, err error)

// Node is a raft server replicating opaque commands to a StateMachine.
//
// Goroutines (all started by Open, all stopped by Close):
//   - the proposer (runProposer) drains the queue into entries and hands
//     them to raft.Apply;
//   - the waiter (runWaiter) resolves those entries in log order and calls
//     the callbacks;
//   - the observer (runObserver) turns raft's state changes into wake-ups
//     for WaitLeader;
//   - raft's own goroutines, which call the StateMachine.
type Node struct {
	cfg    Config
	logger hclog.Logger
	addr   string // this node's transport address

	raft     *raft.Raft
	logs     *LogStore
	fsm      *fsmAdapter
	observer *raft.Observer

	// submitMu guards closed against Submit: Submit holds it for reading
	// while it checks closed and enqueues, Close takes it for writing to set
	// closed. After that no request can enter the queue behind the
	// proposer's final drain, so every accepted request gets its callback.
	submitMu sync.RWMutex
	closed   bool

	queue   chan request      // Submit -> proposer, bounded (QueueLength)
	slots   chan struct{}     // entries in flight, a counting semaphore (MaxInflightEntries)
	pending chan pendingEntry // proposer -> waiter, in log order; closed by the proposer
	stop    chan struct{}     // closed by Close: the proposer stops

	waiterDone   chan struct{}
	obsStop      chan struct{}
	observerDone chan struct{}

	// leaderMu guards leaderChanged, a channel closed and replaced on every
	// raft state or leader change, which wakes WaitLeader.
	leaderMu      sync.Mutex
	leaderChanged chan struct{}

	stats proposerStats

	closeOnce sync.Once
	closeErr  error
}

// Open starts the node: it opens the log store and snapshot store in
// cfg.Dir, binds the transport, bootstraps a one-voter cluster when asked
// and the log is empty, and starts raft. It returns before an election; use
// WaitLeader.
//
// Restart: sm's state is persistent, so raft does not restore a snapshot
// over it on start (raft.Config.NoSnapshotRestoreOnStart). Raft then replays
// the log entries after its latest snapshot, and sm skips the ones it has
// already applied. Only when sm is behind the latest snapshot (its state was
// lost or is older) does raft restore that snapshot first.
func Open(cfg Config, sm StateMachine) (_ *Node, err error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sm == nil {
		return nil, errors.New("raftlog: nil StateMachine")
	}
	logger := cfg.logger()

	// Undo what was opened if a later step fails.
	var cleanup []func()
	defer func() {
		if err != nil {
			for i := len(cleanup) - 1; i >= 0; i-- {
				cleanup[i]()
			}
		}
	}()

	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	logs, err := OpenLogStore(filepath.Join(cfg.Dir, "log"), cfg.Cache, logger.Named("pebble"))
	if err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { _ = logs.Close() })
	cachedLogs, err := raft.NewLogCache(cfg.LogCacheEntries, logs)
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, logger.Named("snapshot"))
	if err != nil {
		return nil, fmt.Errorf("raftlog: snapshot store: %w", err)
	}
	var advertise net.Addr
	if cfg.AdvertiseAddr != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("raftlog: AdvertiseAddr: %w", err)
		}
	}
	trans, err := raft.NewTCPTransportWithLogger(cfg.BindAddr, advertise,
		cfg.TransportMaxPool, cfg.TransportTimeout, logger.Named("transport"))
	if err != nil {
		return nil, fmt.Errorf("raftlog: transport on %s: %w", cfg.BindAddr, err)
	}
	cleanup = append(cleanup, func() { _ = trans.Close() })

	// Decide how the state machine's persistent state meets raft's.
	applied := sm.AppliedIndex()
	lastLog, err := logs.LastIndex()
	if err != nil {
		return nil, err
	}
	snapshots, err := snaps.List() // newest first
	if err != nil {
		return nil, fmt.Errorf("raftlog: list snapshots: %w", err)
	}
	var latestSnap uint64
	if len(snapshots) > 0 {
		latestSnap = snapshots[0].Index
	}
	if applied > 0 && lastLog == 0 && latestSnap == 0 {
		// Raft would start again at index 1 and sm would skip every entry up
		// to its applied index, silently dropping new commands.
		return nil, fmt.Errorf("raftlog: state machine has applied index %d but %s holds no log and no snapshot", applied, cfg.Dir)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = logger
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.SnapshotInterval = cfg.SnapshotInterval
	// Let the proposer's entries queue up while the leader fsyncs, so raft
	// writes them with one StoreLogs.
	rc.BatchApplyCh = true
	rc.NoSnapshotRestoreOnStart = latestSnap <= applied

	if cfg.Bootstrap {
		hasState, err := raft.HasExistingState(cachedLogs, logs, snaps)
		if err != nil {
			return nil, fmt.Errorf("raftlog: %w", err)
		}
		if !hasState {
			conf := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: rc.LocalID, Address: trans.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(rc, cachedLogs, logs, snaps, trans, conf); err != nil {
				return nil, fmt.Errorf("raftlog: bootstrap: %w", err)
			}
		}
	}

	fsm := newFSMAdapter(sm, applied)
	r, err := raft.NewRaft(rc, fsm, cachedLogs, logs, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("raftlog: start raft: %w", err)
	}

	n := &Node{
		cfg:           cfg,
		logger:        logger,
		addr:          string(trans.LocalAddr()),
		raft:          r,
		logs:          logs,
		fsm:           fsm,
		queue:         make(chan request, cfg.QueueLength),
		slots:         make(chan struct{}, cfg.MaxInflightEntries),
		pending:       make(chan pendingEntry, cfg.MaxInflightEntries),
		stop:          make(chan struct{}),
		waiterDone:    make(chan struct{}),
		obsStop:       make(chan struct{}),
		observerDone:  make(chan struct{}),
		leaderChanged: make(chan struct{}),
	}
	// Non-blocking: a dropped observation is harmless, because the ones still
	// buffered when it was dropped wake WaitLeader later and it re-reads the
	// current state.
	obsCh := make(chan raft.Observation, 64)
	n.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	r.RegisterObserver(n.observer)
	go n.runObserver(obsCh)
	go n.runProposer()
	go n.runWaiter()
	n.campaignIfSoleVoter()
	return n, nil
}

// campaignIfSoleVoter starts an election now when this node is the only
// voter, instead of after HeartbeatTimeout (1-2s by default). Raft has no
// "campaign now" call, but ReloadConfig with a shorter HeartbeatTimeout
// makes a follower's heartbeat timer fire at once, and a follower that
// never heard from a leader then campaigns. The original timeout is put
// back right away (raising it does not re-arm the timer).
func (n *Node) campaignIfSoleVoter() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	if len(servers) != 1 || servers[0].ID != raft.ServerID(n.cfg.ID) || servers[0].Suffrage != raft.Voter {
		return
	}
	orig := n.raft.ReloadableConfig()
	nudge := orig
	nudge.HeartbeatTimeout -= time.Millisecond
	if err := n.raft.ReloadConfig(nudge); err != nil {
		n.logger.Debug("cannot hurry the election", "error", err)
		return
	}
	if err := n.raft.ReloadConfig(orig); err != nil {
		n.logger.Warn("cannot restore HeartbeatTimeout", "error", err)
	}
}

// runObserver owns obsCh: each observation wakes the WaitLeader callers.
func (n *Node) runObserver(obsCh <-chan raft.Observation) {
	defer close(n.observerDone)
	for {
		select {
		case <-obsCh:
			n.leaderMu.Lock()
			close(n.leaderChanged)
			n.leaderChanged = make(chan struct{})
			n.leaderMu.Unlock()
		case <-n.obsStop:
			return
		}
	}
}

// WaitLeader blocks until a leader is known (this node or, in a cluster,
// another one), the context ends, or the node closes.
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		n.leaderMu.Lock()
		changed := n.leaderChanged
		n.leaderMu.Unlock()
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-changed:
		case <-n.stop:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// IsLeader reports whether this node is the leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeaderAddr is the transport address of the known leader, "" if none.
func (n *Node) LeaderAddr() string {
	addr, _ := n.raft.LeaderWithID()
	return string(addr)
}

// Addr is this node's transport address (the bound port when BindAddr
// asked for port 0).
func (n *Node) Addr() string { return n.addr }

// Stats reads the node's counters and raft's gauges without locking.
func (n *Node) Stats() Stats {
	s := &n.stats
	state := n.raft.State()
	// Resolved before proposed, so that inflight is never negative.
	resolved := s.entriesResolved.Load()
	inflight := int(s.entriesProposed.Load() - resolved)
	return Stats{
		State:             state.String(),
		Leader:            state == raft.Leader,
		Term:              n.raft.CurrentTerm(),
		LastIndex:         n.raft.LastIndex(),
		CommitIndex:       n.raft.CommitIndex(),
		AppliedIndex:      n.fsm.lastIndex.Load(),
		QueueLength:       len(n.queue),
		QueueCapacity:     cap(n.queue),
		Inflight:          inflight,
		EntriesProposed:   s.entriesProposed.Load(),
		CommandsProposed:  s.commandsProposed.Load(),
		EntriesCommitted:  s.entriesCommitted.Load(),
		CommandsCommitted: s.commandsCommitted.Load(),
		CommandsFailed:    s.commandsFailed.Load(),
		CommandsRejected:  s.commandsRejected.Load(),
		CommitLatency:     s.commitTime.read(),
		ApplyLatency:      n.fsm.applyTime.read(),
	}
}

// Snapshot makes raft take a snapshot now and compact the log, and waits
// for it. It returns ErrNothingToSnapshot when no entry was applied since
// the last snapshot or since start.
func (n *Node) Snapshot() error {
	err := n.raft.Snapshot().Error()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNothingNewToSnapshot):
		return ErrNothingToSnapshot
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return fmt.Errorf("raftlog: snapshot: %w", err)
}

// Close shuts the node down: Submit fails with ErrClosed from now on, the
// queued commands' callbacks get ErrClosed, the entries already handed to
// raft resolve normally, then raft stops and the stores close. Calling it
// from a DoneFunc deadlocks. Later calls return the first call's result.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.submitMu.Lock()
		n.closed = true
		n.submitMu.Unlock()
		close(n.stop)
		<-n.waiterDone // the proposer drained the queue; the waiter resolved the in-flight entries

		// The observer keeps draining until raft has stopped: Shutdown itself
		// reports a state change.
		err := n.raft.Shutdown().Error() // also closes the transport
		n.raft.DeregisterObserver(n.observer)
		close(n.obsStop)
		<-n.observerDone
		n.closeErr = errors.Join(err, n.logs.Close())
	})
	return n.closeErr
}
