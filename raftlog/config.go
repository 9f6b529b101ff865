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
	// BindAddr is the TCP address raft listens on; "127.0.0.1:0" picks a free
	// port (fine for one node; a cluster needs stable addresses).
	BindAddr string
	// AdvertiseAddr is the address peers dial, when BindAddr is not dialable
	// (e.g. 0.0.0.0:7000). Default: the bound address.
	AdvertiseAddr string
	// Bootstrap makes a node with an empty log bootstrap a cluster with itself
	// as the only voter. Ignored when there is existing state.
	Bootstrap bool
	// Cache is shared with the engine's state database; nil gives the log
	// database a private cache.
	Cache *pebble.Cache

	// Group commit: the proposer packs up to MaxBatchCommands commands or
	// MaxBatchBytes command bytes into one log entry. MaxBatchBytes is also
	// the largest command Submit accepts.
	MaxBatchCommands int // default 1024
	MaxBatchBytes    int // default 1 MiB
	// MaxInflightEntries bounds the entries handed to raft and not yet
	// applied (pipelining). Default 64.
	MaxInflightEntries int
	// QueueLength bounds the commands waiting for the proposer; Submit
	// returns ErrBusy beyond it. Default 65536.
	QueueLength int
	// EnqueueTimeout bounds how long the proposer waits for raft to accept an
	// entry. Default 10s.
	EnqueueTimeout time.Duration

	// Raft snapshots: checked every SnapshotInterval (randomized up to 2x),
	// taken when SnapshotThreshold entries were added since the last one,
	// after which all but TrailingLogs entries are deleted from the log.
	SnapshotThreshold uint64        // default 8192
	TrailingLogs      uint64        // default 4096
	SnapshotInterval  time.Duration // default 2m
	SnapshotRetain    int           // snapshot files kept, default 2

	// Raft timing. The defaults suit a loaded 2-core machine; a node that is
	// the only voter campaigns at once on start instead of waiting for
	// HeartbeatTimeout.
	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms
	CommitTimeout      time.Duration // default 50ms
	MaxAppendEntries   int           // entries per AppendEntries RPC, default 64, max 1024
	// LogCacheEntries recent entries are kept in memory for replication
	// (each up to about MaxBatchBytes). Default 128.
	LogCacheEntries int

	TransportMaxPool int           // pooled connections per peer, default 3
	TransportTimeout time.Duration // default 10s

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
	DefaultMaxInflightEntries = 64
	DefaultQueueLength        = 65536
	DefaultEnqueueTimeout     = 10 * time.Second
	DefaultSnapshotThreshold  = 8192
	DefaultTrailingLogs       = 4096
	DefaultSnapshotInterval   = 2 * time.Minute
	DefaultSnapshotRetain     = 2
	DefaultHeartbeatTimeout   = time.Second
	DefaultElectionTimeout    = time.Second
	DefaultLeaderLeaseTimeout = 500 * time.Millisecond
	DefaultCommitTimeout      = 50 * time.Millisecond
	DefaultMaxAppendEntries   = 64
	DefaultLogCacheEntries    = 128
	DefaultTransportMaxPool   = 3
	DefaultTransportTimeout   = 10 * time.Second
	DefaultLogLevel           = "warn"

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
	setDefault(&c.EnqueueTimeout, DefaultEnqueueTimeout)
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
	positive("SnapshotRetain", c.SnapshotRetain)
	positive("LogCacheEntries", c.LogCacheEntries)
	positive("TransportMaxPool", c.TransportMaxPool)
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
