// Package node is Parley's composition root: it wires the engine (state
// machine), raftlog (replication), netpoll (WebSocket event loop) and the
// HTTP API into one running node, and owns sessions, auth, the local
// delivery hub, metrics and config.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/net/netutil"

	"parley/engine"
	"parley/netpoll"
	"parley/raftlog"
)

// Node is one running Parley server.
type Node struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	tokens  *tokenSigner
	engine  *engine.Engine
	raft    *raftlog.Node
	ws      *netpoll.Server
	hub     *hub
	storage *storageGuard // free space of DataDir's disk (storage.go)

	httpLn  net.Listener // as bound; served through a netutil.LimitListener
	httpSrv *http.Server
	httpAPI *httpAPI // the handlers httpSrv serves (http.go)

	signals   *signals  // presence, typing, last_seen, receipts (signals.go)
	notifier  *notifier // nil: no push provider configured (notify.go)
	fanout    *fanout   // delivers applied events off the apply goroutine (fanout.go)
	writeHold writeHold // an entry's replies and events in one write (writehold.go)

	// expireNext is when the leader next sweeps old dedup records
	// (expiry.go); owned by the signal loop. expireInflight: one sweep at a
	// time.
	expireNext     time.Time
	expireInflight atomic.Bool
	// retentionNext, retentionInflight: the same for MessageRetention.
	retentionNext     time.Time
	retentionInflight atomic.Bool
	mediaSweep        mediaSweep // the leader's sweep of expired media (media.go)

	queries chan func()   // reads waiting for a query worker
	reads   readAdmission // expensive reads in flight per connection and user
	stop    chan struct{} // closed by Close: ends the signal loop

	// applied wakes reads waiting for a min_idx (consistency.go);
	// minIndexTimer, set by tests only, stands in for their timeout.
	// lagging counts the goroutines of those reads; lagStop ends them.
	applied       appliedWatch
	minIndexTimer atomic.Pointer[func() <-chan time.Time]
	lagging       sync.WaitGroup
	lagStop       chan struct{}

	// nextTokenSweep (Unix ms) is when closeExpired looks again; the
	// signal loop owns it.
	nextTokenSweep int64
	workers        sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Open starts a node: state, Raft, the WebSocket loop and the HTTP API. It
// returns once every listener is bound; WaitLeader tells when writes work.
func Open(cfg Config) (_ *Node, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	adminToken := cfg.AdminToken
	if adminToken == "" {
		if adminToken, err = loadOrCreateSecret(filepath.Join(cfg.DataDir, "admin.token"), "admin token", minAdminTokenLen); err != nil {
			return nil, err
		}
	}
	clusterKey := cfg.ClusterKey
	if len(clusterKey) == 0 {
		// Only right for a one-node cluster: members must share one key.
		key, err := loadOrCreateSecret(filepath.Join(cfg.DataDir, "cluster.key"), "cluster key", raftlog.MinClusterKeyLen)
		if err != nil {
			return nil, err
		}
		clusterKey = []byte(key)
	}
	var keyCandidate []byte
	if len(cfg.JWTKey) == 0 {
		if keyCandidate, err = signingKeyCandidate(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	n := &Node{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: newMetrics(),
		tokens:  newTokenSigner(cfg.TokenTTL, cfg.Clock),
		hub:     newHub(),
		queries: make(chan func(), cfg.QueryQueue),
		stop:    make(chan struct{}),
		lagStop: make(chan struct{}),
	}
	n.signals = newSignals(&n.cfg, n.log, n.metrics, n.hub)
	defer func() {
		if err != nil {
			n.Close()
		}
	}()

	// Measure free space before Pebble writes anything: start refusing
	// writes if it is low, or refuse to open if Pebble could not even
	// replay its logs.
	n.storage = newStorageGuard(&cfg)
	if err := n.storage.openCheck(); err != nil {
		return nil, err
	}

	// One block cache for both Pebble DBs; each Open takes its own reference.
	cache := pebble.NewCache(cfg.CacheBytes)
	defer cache.Unref()
	if n.engine, err = engine.Open(filepath.Join(cfg.DataDir, "state"), cache); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	n.fanout = startFanout(n.deliver)
	n.engine.SetPublisher(n)
	n.signals.engine = n.engine
	onNewer := cfg.OnNewerVersion
	if onNewer == nil {
		onNewer = n.stopForNewerVersion
	}
	n.engine.SetIncompatible(onNewer)
	n.applied.applied = n.engine.AppliedIndex
	if n.raft, err = raftlog.Open(raftlog.Config{
		ID:            cfg.NodeID,
		Dir:           filepath.Join(cfg.DataDir, "raft"),
		BindAddr:      cfg.RaftAddr,
		AdvertiseAddr: cfg.RaftAdvertise,
		Bootstrap:     cfg.Bootstrap,
		Edge:          cfg.Edge,
		Region:        cfg.Region,
		Cache:         cache,
		Peers:         peerHandler{n.signals}, // presence and typing across the cluster (peers.go)
		ClusterKey:    clusterKey,
		Storage:       n.storage.current(),

		OnNewerEntry:      onNewer,
		SnapshotThreshold: cfg.SnapshotThreshold,
		TrailingLogs:      cfg.TrailingLogs,
		CommitTimeout:     cfg.RaftCommitTimeout,
		MaxRPCsInFlight:   cfg.RaftRPCsInFlight,
	}, stateMachine{n.engine, &n.applied, &n.writeHold}); err != nil {
		return nil, fmt.Errorf("open raft: %w", err)
	}
	n.signals.raft = n.raft
	n.storage.start(n.raft.SetStorage)
	n.workers.Add(1)
	go func() {
		defer n.workers.Done()
		n.storage.run(cfg.StorageCheckEvery, n.stop)
	}()
	if len(cfg.JWTKey) != 0 {
		n.tokens.setKey(cfg.JWTKey)
	} else {
		n.workers.Add(1)
		go n.signingKeyLoop(keyCandidate)
	}
	if err := n.startNotifier(); err != nil {
		return nil, err
	}
	n.workers.Add(1)
	go n.signalLoop()
	for range cfg.QueryWorkers {
		n.workers.Add(1)
		go n.queryWorker()
	}
	caps := resolveWSCaps(&cfg, nofileLimit(), n.log)
	if n.ws, err = netpoll.NewServer(netpoll.Config{
		Addr:           cfg.WSAddr,
		Path:           cfg.WSPath,
		SendQueueBytes: cfg.SendQueueBytes,
		PingInterval:   cfg.PingInterval,
		IdleTimeout:    cfg.IdleTimeout,
		Logger:         n.log,

		MaxConnections:       caps.conns,
		MaxConnectionsPerKey: caps.perUser,
		MaxConnectionsPerIP:  caps.perIP,
	}, wsHandler{n}); err != nil {
		return nil, err
	}
	n.writeHold.ws.Store(n.ws)
	if err = n.ws.Start(); err != nil {
		return nil, fmt.Errorf("websocket listener: %w", err)
	}
	if n.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("http listener: %w", err)
	}
	n.httpAPI = &httpAPI{
		cfg:     &n.cfg,
		log:     n.log,
		metrics: n.metrics,
		hasher:  newPasswordHasher(cfg.Argon2, cfg.HashConcurrency),
		limits:  newAuthThrottle(cfg.AuthLimits, cfg.Clock),
		tokens:  n.tokens,
		admin:   newAdminAuth(adminToken),
		engine:  n.engine,
		raft:    n.raft,
		ws:      n.ws,
		storage: n.storage,

		propose:     n.propose,
		waitApplied: n.waitApplied,
	}
	// Every connection is bounded in time (a slow or silent client cannot
	// hold one) and their number is bounded (a flood waits in the listen
	// backlog instead of taking the descriptors the WebSocket port needs).
	// ReadHeaderTimeout is left zero: the headers share ReadTimeout.
	n.httpSrv = &http.Server{
		Handler:      n.httpAPI.handler(),
		ReadTimeout:  cfg.HTTPReadTimeout,
		WriteTimeout: cfg.HTTPWriteTimeout,
		IdleTimeout:  cfg.HTTPIdleTimeout,
		ConnState:    n.httpAPI.trackConn,
	}
	var perAddr net.Listener = n.httpLn
	if cfg.HTTPMaxConnsPerIP > 0 {
		perAddr = newAddrCapListener(n.httpLn, cfg.HTTPMaxConnsPerIP, cfg.AuthLimits.TrustedProxies, func() { n.httpAPI.refused.Add(1) })
	}
	// The per-address cap is checked first, so a refused connection never
	// waits for one of the HTTPMaxConns slots.
	httpLn := netutil.LimitListener(perAddr, cfg.HTTPMaxConns)
	go func() {
		if err := n.httpSrv.Serve(httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server", "err", err)
		}
	}()
	n.metrics.reg.MustRegister(newStatsCollector(n), newCPUWait("/proc/self/task"))
	if c := newCPUSystem(); c != nil {
		n.metrics.reg.MustRegister(c)
	}
	n.metrics.reg.MustRegister(n.storage.collectors()...)
	return n, nil
}

// HTTPURL is the base URL of the accounts API.
func (n *Node) HTTPURL() string { return "http://" + n.httpLn.Addr().String() }

// WSURL is the WebSocket endpoint clients connect to.
func (n *Node) WSURL() string { return "ws://" + n.ws.Addr() + n.cfg.WSPath }

// RaftAddr is the node's Raft address as peers dial it (the advertised
// address, or the bound one with the port picked for port 0): the address
// to give to init and join.
func (n *Node) RaftAddr() string { return n.raft.Addr() }

// WaitLeader blocks until the node can serve clients: its Raft group has a
// leader and the token signing key is known here (until then nobody can
// log in on this node), or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	if err := n.raft.WaitLeader(ctx); err != nil {
		return err
	}
	select {
	case <-n.tokens.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the token signing key: %w", ctx.Err())
	}
}

// Close stops accepting, closes every connection, and shuts Raft and the
// state DB down cleanly. Safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.httpSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, n.httpSrv.Shutdown(ctx))
			cancel()
		} else if n.httpLn != nil {
			n.httpLn.Close()
		}
		if n.ws != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, n.ws.Stop(ctx))
			cancel()
		}
		if n.raft != nil {
			errs = append(errs, n.raft.Close())
		}
		if n.fanout != nil {
			n.fanout.stop() // after Raft: nothing is applied any more
		}
		close(n.lagStop) // reads waiting for an index give up, before the queue closes
		n.lagging.Wait()
		close(n.queries)
		close(n.stop)
		n.workers.Wait()
		if n.engine != nil {
			errs = append(errs, n.engine.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// stateMachine adapts the engine to raftlog.StateMachine; the two packages
// know nothing of each other. It wakes the reads waiting for an index.
type stateMachine struct {
	*engine.Engine
	applied *appliedWatch
	hold    *writeHold
}

// EntryDone ends the apply goroutine's write hold of the entry, if any.
func (s stateMachine) EntryDone(uint64) { s.hold.entryDone() }

func (s stateMachine) Apply(index uint64, ts int64, cmds [][]byte) []any {
	res := s.Engine.Apply(index, ts, cmds)
	s.applied.advanced()
	return res
}

func (s stateMachine) Restore(r io.Reader) error {
	err := s.Engine.Restore(r)
	s.applied.advanced()
	return err
}

func (s stateMachine) Snapshot() (raftlog.Snapshot, error) { return s.Engine.Snapshot() }

// Snapshot makes Raft snapshot the state now and truncate its log.
func (n *Node) Snapshot() error { return n.raft.Snapshot() }

// ExitNewerVersion is the exit status of a node that met, in the
// replicated log, what only a newer build reads: 76 is EX_PROTOCOL of
// sysexits.h.
const ExitNewerVersion = 76

// stopForNewerVersion stops the process with one clear line: a replica
// that applied around an entry it cannot read would diverge from those
// that can. Restarted on a build that reads it, the node applies the
// entry then (its state was not changed by it).
func (n *Node) stopForNewerVersion(index uint64, err error) {
	n.log.Error("this node cannot read the replicated log at this entry: a newer version of Parley wrote it. "+
		"It stops rather than diverge: upgrade this node to the version the others run, then start it again (docs/OPERATIONS.md, Upgrades)",
		"index", index, "err", err)
	os.Exit(ExitNewerVersion)
}
