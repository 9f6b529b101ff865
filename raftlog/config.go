package raftlog

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
)

// Config configures a Node. Zero fields take the defaults below; Validate
// reports every remaining problem at once.
type Config struct {
	// ID names this server in the raft configuration; stable across restarts.
	ID string
	// Dir holds the log database (Dir/log) and raft snapshots (Dir/snapshots).
	Dir string
	// BindAddr is the node's internal TCP address: raft's RPCs, the
	// forwarding link and admin calls share it (transport.go). "127.0.0.1:0"
	// picks a free port; a cluster member needs a stable address, since the
	// raft configuration records it.
	BindAddr string
	// AdvertiseAddr is the address peers dial, when BindAddr is not dialable
	// (e.g. 0.0.0.0:7000). Default: the bound address.
	AdvertiseAddr string
	// Bootstrap makes a node with an empty log bootstrap a cluster with itself
	// as the only voter. Ignored when there is existing state. Members of a
	// multi-node cluster leave it false and are bootstrapped with
	// Node.Bootstrap or added with Node.Join / Node.AddVoter.
	Bootstrap bool
	// Edge makes this node an edge (edge.go): a nonvoter for life, which
	// receives and applies the log, serves its own clients and forwards
	// their writes, and which the cluster never promotes. Recorded in the
	// log store on the first Open with it, so that the node stays an edge
	// when later opened without it. An edge cannot Bootstrap.
	Edge bool
	// Region is an operator's label for where the node runs ("eu-west"),
	// shown in Status; it has no effect on replication.
	Region string
	// Cache is shared with the engine's state database; nil gives the log
	// database a private cache.
	Cache *pebble.Cache

	// Group commit: the proposer packs up to MaxBatchCommands commands or
	// MaxBatchBytes command bytes into one log entry. MaxBatchBytes is also
	// the largest command Submit accepts.
	MaxBatchCommands int // default 1024
	MaxBatchBytes    int // default 1 MiB
	// MaxInflightEntries bounds the entries handed to raft and not yet
	// applied (pipelining). Default 8: while they are in flight, commands
	// gather in the queue and go in the next entry, so entries grow with
	// the load instead of the count of entries, each of which every
	// replica encodes, stores, replicates and applies. Three nodes at 10k
	// msg/s offered, four alternated runs each: with 8, 9.8k-9.9k msg/s
	// delivered, 125-136 µs of CPU a message (summed over the nodes), p90
	// 183-279 ms; with 64, 9.2k-9.9k, 133-152 µs, 217-804 ms. One node at
	// 80k offered: 30.4k against 27.1k msg/s delivered.
	MaxInflightEntries int
	// QueueLength bounds the commands waiting for the proposer; Submit
	// returns ErrBusy beyond it. Default 65536.
	QueueLength int
	// Admission (admission.go): once commands have waited for the proposer
	// longer than AdmissionTarget throughout an AdmissionInterval, Submit
	// refuses with ErrBusy those that would wait longer than about
	// AdmissionTarget, however short the queue. Defaults 20ms and 100ms.
	AdmissionTarget   time.Duration
	AdmissionInterval time.Duration
	// EnqueueTimeout bounds how long the proposer waits for raft to accept an
	// entry. Default 10s.
	EnqueueTimeout time.Duration
	// SubmitTimeout bounds how long a submitted command waits for its
	// outcome: applied by this node's state machine, or refused. After it
	// the callback gets ErrTimeout: the command may still commit, and
	// callers retry (commands are idempotent). Default 5s: above a leader
	// election (1-3s with the default timing), so a command appended before
	// a leader crash usually still succeeds.
	SubmitTimeout time.Duration

	// ReportInterval: how often a follower reports its applied and last
	// indexes to the leader over the internal link (Status, catch-up before
	// promotion). Default 250ms.
	ReportInterval time.Duration
	// CatchUpMaxLag: Promote makes a nonvoter a voter once the leader sees
	// its applied index within this many entries of the commit index.
	// Default 1024.
	CatchUpMaxLag uint64

	// Raft snapshots: checked every SnapshotInterval (randomized up to 2x),
	// taken when SnapshotThreshold entries were added since the last one,
	// after which all but TrailingLogs entries are deleted from the log.
	SnapshotThreshold uint64        // default 8192
	TrailingLogs      uint64        // default 4096
	SnapshotInterval  time.Duration // default 2m
	SnapshotRetain    int           // snapshot files kept, default 2

	// Raft timing. A follower starts an election after hearing nothing from
	// the leader for HeartbeatTimeout to 2x HeartbeatTimeout; the leader
	// sends heartbeats every HeartbeatTimeout/10 on a connection of their
	// own, and steps down after LeaderLeaseTimeout without a quorum. The
	// defaults (1s, 1s, 500ms) sit far above fsync and scheduling stalls of
	// a loaded 2-core machine (BenchmarkClusterPropose fails if the term
	// moves at full load), while a dead leader is replaced in 1-3s. A node
	// that is the only voter, or that Node.Bootstrap seeded, campaigns at
	// once.
	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms
	CommitTimeout      time.Duration // default 5ms (raft's is 50ms)
	MaxAppendEntries   int           // entries per AppendEntries RPC, default 64, max 1024
	// LogCacheEntries recent entries are kept in memory for replication
	// (each up to about MaxBatchBytes). Default 128.
	LogCacheEntries int

	TransportMaxPool int // pooled connections per peer, default 3
	// MaxRPCsInFlight bounds the AppendEntries requests the leader has in
	// flight to one follower (hashicorp/raft's pipelining). 0: raft's
	// default, 2, best on a LAN. A follower far away (an edge in another
	// region) gets entries only as fast as 2 per round trip, and its
	// commit notices queue behind them: there, 16 or more delivers each
	// entry one one-way delay after it commits (docs/BENCHMARKS.md, "Edge
	// nodes"). It applies to every follower of this leader.
	MaxRPCsInFlight  int
	TransportTimeout time.Duration // default 10s, also bounds a dialer's handshake

	// ClusterKey, shared by every node of the cluster, authenticates each
	// internal connection in both directions (handshake.go): raft RPCs,
	// forwarded commands, the peer channel and membership calls are only
	// taken from, and sent to, a peer that proves it holds the key. It does
	// not encrypt. At least MinClusterKeyLen bytes. Empty: no handshake,
	// anyone who reaches BindAddr is trusted; for tests and trusted
	// networks only.
	ClusterKey []byte

	// Peers receives the peer channel's messages and link events
	// (peers.go); nil leaves the node out of the peer channel, and
	// Broadcast does nothing. PeerQueueLength bounds the messages queued
	// for each peer; Broadcast drops beyond it. Default 4096.
	Peers           PeerHandler
	PeerQueueLength int

	// Storage is the storage state at start (see StorageState); the
	// node's owner changes it with Node.SetStorage. Zero: StorageOK.
	Storage StorageState

	// OnNewerEntry is called when a committed entry was written by a newer
	// build (ErrNewerEntry): it must stop the process, so that the node
	// restarts upgraded and applies the entry then. Nil, or if it returns:
	// a panic with the same message.
	OnNewerEntry func(index uint64, err error)

	// Logger receives raft's and Pebble's messages. When nil, a logger at
	// LogLevel writing to LogOutput (default os.Stderr) is made.
	Logger    hclog.Logger
	LogOutput io.Writer
	LogLevel  string // trace, debug, info, warn, error; default warn
}

// Defaults.
const (
	DefaultMaxBatchCommands   = 1024
	DefaultMaxBatchBytes      = 1 << 20
	DefaultMaxInflightEntries = 8
	DefaultQueueLength        = 65536
	DefaultAdmissionTarget    = 20 * time.Millisecond
	DefaultAdmissionInterval  = 100 * time.Millisecond
	DefaultEnqueueTimeout     = 10 * time.Second
	DefaultSubmitTimeout      = 5 * time.Second
	DefaultReportInterval     = 250 * time.Millisecond
	DefaultCatchUpMaxLag      = 1024
	DefaultSnapshotThreshold  = 8192
	DefaultTrailingLogs       = 4096
	DefaultSnapshotInterval   = 2 * time.Minute
	DefaultSnapshotRetain     = 2
	DefaultHeartbeatTimeout   = time.Second
	DefaultElectionTimeout    = time.Second
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond
	// A follower applies an entry, and acks its own client's command, only
	// once it learns that the entry committed: from the next append, or,
	// when none follows, after CommitTimeout. With raft's 50 ms a client on
	// a follower of a quiet cluster waited 80 ms a send (docs/BENCHMARKS.md,
	// "Edge nodes"); 5 ms costs an empty append per follower every 5-10 ms
	// while idle, about 1% of a core each.
	DefaultCommitTimeout    = 5 * time.Millisecond
	DefaultMaxAppendEntries = 64
	DefaultLogCacheEntries  = 128
	DefaultTransportMaxPool = 3
	DefaultTransportTimeout = 10 * time.Second
	DefaultPeerQueueLength  = 4096
	DefaultLogLevel         = "warn"

	// maxBatchBytesLimit keeps one entry well inside what raft replicates
	// comfortably in one RPC.
	maxBatchBytesLimit = 64 << 20
)

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	setDefault(&c.MaxBatchCommands, DefaultMaxBatchCommands)
	setDefault(&c.MaxBatchBytes, DefaultMaxBatchBytes)
	setDefault(&c.MaxInflightEntries, DefaultMaxInflightEntries)
	setDefault(&c.QueueLength, DefaultQueueLength)
	setDefault(&c.AdmissionTarget, DefaultAdmissionTarget)
	setDefault(&c.AdmissionInterval, DefaultAdmissionInterval)
	setDefault(&c.EnqueueTimeout, DefaultEnqueueTimeout)
	setDefault(&c.SubmitTimeout, DefaultSubmitTimeout)
	setDefault(&c.ReportInterval, DefaultReportInterval)
	setDefault(&c.CatchUpMaxLag, DefaultCatchUpMaxLag)
	setDefault(&c.SnapshotThreshold, DefaultSnapshotThreshold)
	setDefault(&c.TrailingLogs, DefaultTrailingLogs)
	setDefault(&c.SnapshotInterval, DefaultSnapshotInterval)
	setDefault(&c.SnapshotRetain, DefaultSnapshotRetain)
	setDefault(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	setDefault(&c.ElectionTimeout, DefaultElectionTimeout)
	setDefault(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	setDefault(&c.CommitTimeout, DefaultCommitTimeout)
	setDefault(&c.MaxAppendEntries, DefaultMaxAppendEntries)
	setDefault(&c.LogCacheEntries, DefaultLogCacheEntries)
	setDefault(&c.TransportMaxPool, DefaultTransportMaxPool)
	setDefault(&c.TransportTimeout, DefaultTransportTimeout)
	setDefault(&c.PeerQueueLength, DefaultPeerQueueLength)
	setDefault(&c.LogLevel, DefaultLogLevel)
	return c
}

func setDefault[T comparable](field *T, def T) {
	var zero T
	if *field == zero {
		*field = def
	}
}

// Validate reports every problem of the configuration with defaults applied.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("raftlog config: "+format, args...))
	}
	if c.ID == "" {
		bad("ID is empty")
	}
	if c.Dir == "" {
		bad("Dir is empty")
	}
	if c.Edge && c.Bootstrap {
		bad("an edge cannot bootstrap a cluster: it never votes")
	}
	if len(c.Region) > maxRegionLen {
		bad("Region is longer than %d bytes", maxRegionLen)
	}
	if host, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		bad("BindAddr %q: %v", c.BindAddr, err)
	} else if c.AdvertiseAddr == "" {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			bad("BindAddr %q binds every interface, which peers cannot dial; set AdvertiseAddr", c.BindAddr)
		}
	}
	if c.AdvertiseAddr != "" {
		if _, err := net.ResolveTCPAddr("tcp", c.AdvertiseAddr); err != nil {
			bad("AdvertiseAddr %q: %v", c.AdvertiseAddr, err)
		}
	}
	positive := func(name string, v int) {
		if v <= 0 {
			bad("%s is %d, must be positive", name, v)
		}
	}
	positive("MaxBatchCommands", c.MaxBatchCommands)
	positive("MaxBatchBytes", c.MaxBatchBytes)
	positive("MaxInflightEntries", c.MaxInflightEntries)
	positive("QueueLength", c.QueueLength)
	if c.AdmissionTarget <= 0 || c.AdmissionInterval <= 0 {
		bad("AdmissionTarget %v and AdmissionInterval %v must be positive", c.AdmissionTarget, c.AdmissionInterval)
	}
	positive("SnapshotRetain", c.SnapshotRetain)
	positive("LogCacheEntries", c.LogCacheEntries)
	positive("TransportMaxPool", c.TransportMaxPool)
	if c.MaxRPCsInFlight < 0 || c.MaxRPCsInFlight > 1024 {
		bad("MaxRPCsInFlight %d: want 0 (raft's default) to 1024", c.MaxRPCsInFlight)
	}
	positive("PeerQueueLength", c.PeerQueueLength)
	if n := len(c.ClusterKey); n > 0 && n < MinClusterKeyLen {
		bad("ClusterKey of %d bytes is below %d", n, MinClusterKeyLen)
	}
	if c.MaxBatchBytes > maxBatchBytesLimit {
		bad("MaxBatchBytes %d exceeds %d", c.MaxBatchBytes, maxBatchBytesLimit)
	}
	if c.MaxAppendEntries <= 0 || c.MaxAppendEntries > 1024 {
		bad("MaxAppendEntries %d is outside 1..1024", c.MaxAppendEntries)
	}
	atLeast := func(name string, d, min time.Duration) {
		if d < min {
			bad("%s %v is below %v", name, d, min)
		}
	}
	atLeast("EnqueueTimeout", c.EnqueueTimeout, time.Millisecond)
	atLeast("SubmitTimeout", c.SubmitTimeout, time.Millisecond)
	atLeast("ReportInterval", c.ReportInterval, time.Millisecond)
	atLeast("SnapshotInterval", c.SnapshotInterval, 5*time.Millisecond)
	atLeast("HeartbeatTimeout", c.HeartbeatTimeout, 5*time.Millisecond)
	atLeast("ElectionTimeout", c.ElectionTimeout, 5*time.Millisecond)
	atLeast("LeaderLeaseTimeout", c.LeaderLeaseTimeout, 5*time.Millisecond)
	atLeast("CommitTimeout", c.CommitTimeout, time.Millisecond)
	atLeast("TransportTimeout", c.TransportTimeout, time.Millisecond)
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("LeaderLeaseTimeout %v exceeds HeartbeatTimeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("ElectionTimeout %v is below HeartbeatTimeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	if c.Logger == nil && hclog.LevelFromString(c.LogLevel) == hclog.NoLevel {
		bad("LogLevel %q is not one of trace, debug, info, warn, error", c.LogLevel)
	}
	return errors.Join(errs...)
}

func (c Config) logger() hclog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   "raftlog",
		Level:  hclog.LevelFromString(c.LogLevel),
		Output: c.LogOutput, // nil means os.Stderr
	})
}
