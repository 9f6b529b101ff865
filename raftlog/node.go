package raftlog

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Errors returned by Submit, or passed to its callback, and by the
// membership calls. Anything else is wrapped with "raftlog: ".
var (
	// ErrNotLeader: no leader is known or reachable, or the leader refused
	// the command because it lost leadership: the command was not appended
	// to the log. The cluster is unavailable for writes from this node right
	// now; retry later.
	ErrNotLeader = errors.New("raftlog: no leader available")
	// ErrBusy: the proposal queue is full, or its commands would wait
	// longer than about Config.AdmissionTarget (admission.go), here or on
	// the leader (backpressure). The command was not appended; retry after
	// about Config.AdmissionInterval.
	ErrBusy = errors.New("raftlog: proposal queue full or too slow")
	// ErrClosed: the node is closed or closing.
	ErrClosed = errors.New("raftlog: node closed")
	// ErrTimeout: the outcome is unknown. The command was not confirmed
	// within SubmitTimeout (or raft did not take it within EnqueueTimeout);
	// it may still commit. Retry idempotently.
	ErrTimeout = errors.New("raftlog: not confirmed in time, outcome unknown")
	// ErrTooLarge: the command is larger than MaxBatchBytes.
	ErrTooLarge = errors.New("raftlog: command larger than MaxBatchBytes")
	// ErrNothingToSnapshot: nothing was applied since this node started, or
	// a membership change is newer than the last applied command; either way
	// the next write makes a snapshot possible.
	ErrNothingToSnapshot = errors.New("raftlog: nothing new to snapshot")
	// ErrUnknownServer: the server ID is not in the cluster configuration.
	ErrUnknownServer = errors.New("raftlog: no such server in the configuration")
	// ErrNotCaughtUp: Promote gave up before the nonvoter caught up with
	// the leader; it stays a nonvoter.
	ErrNotCaughtUp = errors.New("raftlog: server has not caught up with the leader")
	// ErrAlreadyBootstrapped: Bootstrap on a node that already has a
	// different cluster configuration.
	ErrAlreadyBootstrapped = errors.New("raftlog: node already belongs to a cluster")
)

// DoneFunc receives the outcome of a submitted command: its result and the
// index of its log entry, or an error.
type DoneFunc func(result any, index uint64, err error)

// Node is a raft server replicating opaque commands to a StateMachine, one
// member of a cluster whose every node accepts writes (Submit).
//
// Goroutines (all started by Open, all stopped by Close):
//   - the proposer (runProposer) drains the queue into entries and hands
//     them to raft.Apply; it runs on every node and has work on the leader;
//   - the waiter (runWaiter) waits for those entries in log order and
//     fails the commands raft refused;
//   - the forwarder (runForwarder) keeps the link to the leader while this
//     node follows: sends it this node's commands and index reports, reads
//     its refusals;
//   - the sweeper (runSweeper) fails commands past SubmitTimeout;
//   - the observer (runObserver) turns raft's state changes into wake-ups
//     for WaitLeader and the forwarder;
//   - the mux (transport.go): the internal listener and one goroutine per
//     forward session (followers' links, on the leader), admin call or
//     inbound peer connection;
//   - with Config.Peers, the peer channel's manager and one goroutine per
//     outbound peer link (peers.go);
//   - raft's own goroutines, which call the StateMachine and, through the
//     FSM adapter, the callbacks of successful commands.
type Node struct {
	cfg    Config
	logger hclog.Logger
	addr   string // this node's internal address, as peers dial it
	origin uint64 // this incarnation's Tag.Origin: random, never 0
	edge   bool   // an edge: Config.Edge, or recorded by an earlier Open (edge.go)

	raft     *raft.Raft
	logs     *LogStore
	fsm      *fsmAdapter
	mux      *mux
	observer *raft.Observer
	waits    *waitList
	progress progressTable // followers' reports, kept while leading
	peers    *peerChannel  // nil without Config.Peers

	// submitMu guards closed against Submit and the forward sessions: they
	// hold it for reading while they check closed and enqueue, Close takes
	// it for writing to set closed. After that no request can enter a queue
	// behind the final drains, so every accepted command gets its outcome.
	submitMu sync.RWMutex
	closed   bool

	queue    chan request      // Submit and forward sessions -> proposer, bounded (QueueLength)
	admit    *admission        // and bounded in time (admission.go)
	epoch    time.Time         // the clock of admission: n.now()
	fwdQueue chan fwdCommand   // Submit on a follower -> forwarder, bounded (QueueLength)
	slots    chan struct{}     // entries in flight, a counting semaphore (MaxInflightEntries)
	pending  chan pendingEntry // proposer -> waiter, in log order; closed by the proposer
	stop     chan struct{}     // closed by Close: every goroutine of the node stops
	life     context.Context   // canceled by Close; bounds admin calls served here
	endLife  context.CancelFunc

	waiterDone   chan struct{}
	fwdDone      chan struct{}
	sweeperDone  chan struct{}
	obsStop      chan struct{}
	observerDone chan struct{}

	// leaderMu guards leaderChanged, a channel closed and replaced on every
	// raft state or leader change, which wakes WaitLeader and the forwarder.
	leaderMu      sync.Mutex
	leaderChanged chan struct{}

	stats nodeStats

	storage atomic.Uint32 // a StorageState (storage.go)

	closeOnce sync.Once
	closeErr  error

	// swallowForwardedForTest makes this leader neither propose nor refuse
	// forwarded commands, as a paused one would (tests only).
	swallowForwardedForTest atomic.Bool
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
	edge, err := loadEdge(logs, cfg.Edge)
	if err != nil {
		return nil, err
	}
	if edge && !cfg.Edge {
		logger.Info("this node is an edge (recorded in its log store)")
	}
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
	m, err := newMux(cfg.BindAddr, advertise, cfg.ClusterKey, logger.Named("mux"))
	if err != nil {
		return nil, fmt.Errorf("raftlog: listen on %s: %w", cfg.BindAddr, err)
	}
	cleanup = append(cleanup, func() { _ = m.Close() })
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  newRaftStream(m),
		MaxPool: cfg.TransportMaxPool,

		MaxRPCsInFlight: cfg.MaxRPCsInFlight,
		Timeout:         cfg.TransportTimeout,
		Logger:          logger.Named("transport"),
	})
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

	if cfg.Bootstrap && edge {
		// Opened without Config.Edge: the role recorded wins.
		logger.Warn("this node is an edge (recorded in its log store): Bootstrap ignored")
		cfg.Bootstrap = false
	}
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

	origin, err := newOrigin()
	if err != nil {
		return nil, err
	}
	stop := make(chan struct{})
	n := &Node{
		cfg:           cfg,
		logger:        logger,
		addr:          string(trans.LocalAddr()),
		origin:        origin,
		edge:          edge,
		logs:          logs,
		mux:           m,
		waits:         newWaitList(cfg.SubmitTimeout),
		queue:         make(chan request, cfg.QueueLength),
		epoch:         time.Now(),
		fwdQueue:      make(chan fwdCommand, cfg.QueueLength),
		slots:         make(chan struct{}, cfg.MaxInflightEntries),
		pending:       make(chan pendingEntry, cfg.MaxInflightEntries),
		stop:          stop,
		waiterDone:    make(chan struct{}),
		fwdDone:       make(chan struct{}),
		sweeperDone:   make(chan struct{}),
		obsStop:       make(chan struct{}),
		observerDone:  make(chan struct{}),
		leaderChanged: make(chan struct{}),
	}
	n.admit = newAdmission(cfg.AdmissionTarget, cfg.AdmissionInterval, cfg.QueueLength, 0)
	n.SetStorage(cfg.Storage) // before raft starts: it may append at once
	n.life, n.endLife = context.WithCancel(context.Background())
	n.fsm = newFSMAdapter(sm, applied, origin, n.waits, &n.stats)
	n.fsm.onNewer = cfg.OnNewerEntry
	n.fsm.own = ownAdmission(cfg)
	r, err := raft.NewRaft(rc, n.fsm, cachedLogs, logs, snaps, trans)
	if err != nil {
		n.endLife()
		return nil, fmt.Errorf("raftlog: start raft: %w", err)
	}
	n.raft = r

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
	go n.runForwarder()
	go n.runSweeper()
	if cfg.Peers != nil {
		n.peers = newPeerChannel(n, cfg.Peers, cfg.PeerQueueLength)
		go n.peers.run()
	}
	m.serve(n.serveInternal)
	n.campaignIfSoleVoter()
	return n, nil
}

// newOrigin draws this incarnation's Tag.Origin. It is random rather than
// derived from the ID so that it never repeats: a restarted or wiped node
// replays entries of its earlier lives, whose tags must not match the
// commands it is waiting for now.
func newOrigin() (uint64, error) {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("raftlog: origin: %w", err)
		}
		if o := binary.LittleEndian.Uint64(b[:]); o != 0 {
			return o, nil
		}
	}
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
	n.hurryElection()
}

// hurryElection makes a follower that has never heard from a leader
// campaign now rather than after its heartbeat timeout.
func (n *Node) hurryElection() {
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

// runObserver owns obsCh: each observation wakes the WaitLeader callers
// and the forwarder.
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

// leaderChanges returns a channel that is closed at the next raft state or
// leader change.
func (n *Node) leaderChanges() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderChanged
}

// WaitLeader blocks until a leader is known (this node or, in a cluster,
// another one), the context ends, or the node closes.
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		changed := n.leaderChanges()
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

// LeaderAddr is the internal address of the known leader, "" if none.
func (n *Node) LeaderAddr() string {
	addr, _ := n.raft.LeaderWithID()
	return string(addr)
}

// LeaderID is the server ID of the known leader, "" if none.
func (n *Node) LeaderID() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// ID is this node's server ID.
func (n *Node) ID() string { return n.cfg.ID }

// Addr is this node's internal address, as peers dial it: AdvertiseAddr,
// or the bound address (with the port picked when BindAddr asked for 0).
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
		CommandsReceived:  s.commandsReceived.Load(),
		CommandsForwarded: s.commandsForwarded.Load(),
		CommandsCommitted: s.commandsCommitted.Load(),
		CommandsFailed:    s.commandsFailed.Load(),
		CommandsTimedOut:  s.commandsTimedOut.Load(),
		CommandsRejected:  s.commandsRejected.Load(),
		HandshakeFailures: n.mux.authFailures.Load(),
		Waiting:           n.waits.waiting(),
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
	case strings.Contains(err.Error(), "wait until the configuration entry"):
		// raft refuses to snapshot while the newest configuration entry is
		// above the last command applied (a snapshot cannot represent it).
		// raft has no sentinel for it, hence the match on its text. There
		// is nothing new worth a snapshot: the next write makes it possible.
		return fmt.Errorf("%w: a membership change is newer than the last applied command (%v)", ErrNothingToSnapshot, err)
	}
	return fmt.Errorf("raftlog: snapshot: %w", err)
}

// Close shuts the node down: Submit fails with ErrClosed from now on, the
// commands still queued get ErrClosed (or, forwarded by followers, a
// refusal), the entries this node already handed to raft as leader
// resolve, then the link to the leader, the peer links, raft, the internal
// listener and the stores close; commands still waiting for their outcome
// (forwarded, or appended and not yet applied) get ErrClosed. Calling it
// from a DoneFunc deadlocks. Later calls return the first call's result.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.submitMu.Lock()
		n.closed = true
		n.submitMu.Unlock()
		close(n.stop)
		n.endLife()
		<-n.fwdDone
		<-n.waiterDone // the proposer drained the queue; the waiter saw the in-flight entries resolve

		// The observer keeps draining until raft has stopped: Shutdown itself
		// reports a state change.
		err := n.raft.Shutdown().Error() // also closes the transport
		n.raft.DeregisterObserver(n.observer)
		close(n.obsStop)
		<-n.observerDone
		err = errors.Join(err, n.mux.Close()) // ends the forward sessions, admin calls and inbound peer links
		if n.peers != nil {
			<-n.peers.done // stop closed its links; the mux cut a write blocked on one
		}
		<-n.sweeperDone
		// No entry is applied any more: nothing else can resolve these.
		n.failAll(n.waits.closeAll(), ErrClosed)
		n.closeErr = errors.Join(err, n.logs.Close())
	})
	return n.closeErr
}

// runSweeper fails the commands whose SubmitTimeout passed with ErrTimeout.
func (n *Node) runSweeper() {
	defer close(n.sweeperDone)
	t := time.NewTicker(min(max(n.cfg.SubmitTimeout/20, time.Millisecond), 100*time.Millisecond))
	defer t.Stop()
	var expired []DoneFunc
	for {
		select {
		case <-t.C:
			expired = n.waits.expire(expired[:0])
			n.stats.commandsTimedOut.Add(uint64(len(expired)))
			n.failAll(expired, ErrTimeout)
			clear(expired)
		case <-n.stop:
			return
		}
	}
}

func (n *Node) failAll(dones []DoneFunc, err error) {
	n.stats.commandsFailed.Add(uint64(len(dones)))
	for _, done := range dones {
		done(nil, 0, err)
	}
}
