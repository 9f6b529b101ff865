package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"time"

	"parley/engine"
	"parley/netpoll"
	"parley/push"
	"parley/raftlog"
)

// Config is everything a node needs. Zero fields take the defaults of
// DefaultConfig through withDefaults; flags live in cmd/ only.
type Config struct {
	NodeID   string // unique in the cluster
	DataDir  string // state DB, Raft log, snapshots, the admin token, the cluster key
	HTTPAddr string // accounts API, admin API, /healthz, /readyz, /metrics
	WSAddr   string // WebSocket event loop
	WSPath   string
	RaftAddr string // Raft transport (TCP), as bound
	// RaftAdvertise is the Raft address peers dial, when RaftAddr is not
	// dialable (e.g. 0.0.0.0:7072). Empty: the bound address. The cluster
	// configuration records it, so it must stay stable.
	RaftAdvertise string

	// Bootstrap makes a node with empty data found a one-voter cluster.
	// Members of a multi-node cluster leave it false: they wait for the
	// admin API's init (sent to one of them) or join (sent to a member).
	Bootstrap bool

	// Edge makes this node an edge (raftlog/edge.go): a non-voter for
	// life that holds client connections, delivers to them from its own
	// replica, serves reads from it and forwards writes to the leader; it
	// never votes, so it neither slows commits nor changes the quorum. It
	// waits, with empty data, for the admin API's join with "edge" sent to
	// a member (Bootstrap is ignored). The role is recorded with the Raft
	// log, so the node stays an edge when restarted without it.
	Edge bool
	// Region labels where the node runs ("eu-west"), shown by the admin
	// API's status. It changes nothing in replication.
	Region string
	// RaftCommitTimeout: how soon an idle leader tells its followers
	// that an entry committed when no other entry follows it (raft's
	// CommitTimeout; followers, edges included, apply and deliver an entry
	// only once they know). 0: 5 ms. RaftRPCsInFlight: the leader's
	// AppendEntries in flight per follower (0: raft's 2); raise it for
	// edges in far regions. Both matter on the voters, which lead
	// (docs/OPERATIONS.md, "Edge nodes and regions").
	RaftCommitTimeout time.Duration
	RaftRPCsInFlight  int

	// JWTKey, when set, signs and checks device tokens on this node instead
	// of the cluster's replicated key (then every node needs the same one).
	// When empty, the node uses the key in the replicated state, proposing
	// one when the cluster has none (see signingKeyLoop).
	JWTKey   []byte
	TokenTTL time.Duration

	// AdminToken authorizes the admin API (/v1/admin/, Bearer token). When
	// empty the node keeps a random one in DataDir/admin.token, created on
	// first start. Nodes of a cluster may share one.
	AdminToken string

	// ClusterKey authenticates the internal (Raft) port: every connection
	// between nodes starts with a challenge-response on it, both ways
	// (raftlog/handshake.go). It authenticates, it does not encrypt. When
	// empty the node keeps a random one in DataDir/cluster.key, created on
	// first start, which suits a one-node cluster only: the nodes of a
	// cluster must share one key (cmd/parley -cluster-key-file).
	ClusterKey []byte

	Argon2          Argon2Params
	HashConcurrency int // argon2id computations at once

	// AuthLimits throttle failed logins (per username, per client address)
	// and registrations (per client address); see throttle.go. Their clock
	// is Clock.
	AuthLimits AuthLimits

	// MaxDevices caps a user's active devices: a login beyond it revokes
	// the user's oldest devices. Every login also revokes the user's
	// devices whose token has expired (created over TokenTTL + 1 h ago):
	// a device's only token is made at its login. See OpAddDevice.
	MaxDevices int

	CacheBytes int64 // Pebble block cache shared by the state and log DBs

	// Raft log compaction (zero: raftlog's defaults): a snapshot is taken
	// once SnapshotThreshold entries were added since the last one, and
	// TrailingLogs entries are kept behind it for followers that lag.
	// Lower them to make snapshot installs happen in tests.
	SnapshotThreshold uint64
	TrailingLogs      uint64

	// Per connection: request rate (token bucket), requests awaiting a reply,
	// and bytes queued for the socket before the connection is dropped as a
	// slow consumer.
	RatePerSecond      float64
	RateBurst          int
	MaxInflightPerConn int
	SendQueueBytes     int
	PingInterval       time.Duration
	IdleTimeout        time.Duration

	// QueryWorkers serve reads (history, sync) off the event loop.
	QueryWorkers int
	QueryQueue   int

	// Ephemeral signals. Clock drives their timers and the auth throttle's
	// buckets (tests replace it);
	// SignalTick is how often expiries are checked.
	Clock            func() time.Time
	SignalTick       time.Duration
	TypingThrottle   time.Duration // at most one typing start per user per conversation per this
	TypingTTL        time.Duration // an indicator not renewed for this long stops by itself
	TypingMaxMembers int           // no typing indicators in larger groups
	PresenceGrace    time.Duration // offline only this long after the last connection closed
	LastSeenEvery    time.Duration // last_seen written through Raft at most this often per user
	ReadCountsEvery  time.Duration // a group's read_counts update at most this often

	// SendRetention is how long a send's client_msg_id is remembered, so a
	// retry returns the original outcome; after it the dedup record is
	// deleted (a later retry would be a new message). Negative keeps them
	// for ever. The leader sweeps them every ExpireSendsEvery, examining
	// engine.ExpireSendsBudget records each time.
	SendRetention    time.Duration
	ExpireSendsEvery time.Duration

	// Media attachments (media.go). MediaMaxBytes bounds one file;
	// MediaQuotaBytes what one user stores (uploads in progress and files
	// they uploaded; negative: no quota). Uploads never committed, and
	// files no message references, are collected after MediaGrace; the
	// leader sweeps every MediaExpireEvery (engine.MediaExpireBudget
	// records each time). MediaThumbSide is a thumbnail's longer side.
	MediaMaxBytes    int64
	MediaQuotaBytes  int64
	MediaGrace       time.Duration
	MediaExpireEvery time.Duration
	MediaThumbSide   int

	// The HTTP API (accounts, admin API, health, metrics) bounds every
	// connection in time and in number. HTTPReadTimeout covers a request's
	// headers and body; HTTPWriteTimeout runs from the end of the headers to
	// the end of the response, and a handler's work gets three quarters of
	// it; HTTPIdleTimeout closes a keep-alive connection waiting for its next
	// request. At most HTTPMaxConns connections are served at once: further
	// ones wait in the listen backlog until one closes. The WebSocket port
	// is separate and not counted.
	HTTPReadTimeout  time.Duration
	HTTPWriteTimeout time.Duration
	HTTPIdleTimeout  time.Duration
	HTTPMaxConns     int
	// HTTPMaxConnsPerIP caps the HTTP connections of one client address
	// (IPv4, or IPv6 /64; trusted proxies exempt): one more is answered
	// 429 at once and closed, so that one address cannot hold every slot
	// of HTTPMaxConns. Default (0) a quarter of HTTPMaxConns, so that it
	// takes four addresses to fill them (a NAT's users share one);
	// negative turns it off.
	HTTPMaxConnsPerIP int

	// WebSocket connection caps, checked during the handshake before the
	// 101 (docs/PROTOCOL.md, docs/OPERATIONS.md "The descriptor budget").
	// WSMaxConns caps this node's connections (503); 0 derives it from
	// RLIMIT_NOFILE less HTTPMaxConns and a reserve for Pebble, Raft and
	// logs (wslimits.go). WSMaxConnsPerUser caps one user's connections on
	// this node, all devices together (429; default 20): a token can be
	// replayed on any number of sockets, and a login makes a new device.
	// WSMaxConnsPerIP caps those from one IPv4 address or IPv6 /64 (429;
	// default 5000; behind a reverse proxy every client has its address).
	// Negative: no cap.
	WSMaxConns        int
	WSMaxConnsPerUser int
	WSMaxConnsPerIP   int

	// The storage guard (storage.go) measures the free space of DataDir's
	// file system at start and every StorageCheckEvery. Below
	// StorageMinFree bytes the node refuses new writes with storage_full
	// (reads go on) until free space is back above 1.5x; below a quarter of
	// it the Raft log refuses appends too. Negative: never refuse (free
	// space is still measured for /metrics). StorageProbe measures it
	// (tests replace it); nil: statfs.
	StorageMinFree    int64
	StorageCheckEvery time.Duration
	StorageProbe      func(dir string) (free uint64, err error)

	// Push notifications (notify.go): Push names each provider's
	// credentials (nil sections: not configured); PushSender replaces the
	// providers (tests). With neither, push.set is refused and nothing is
	// sent. PushWorkers send at once; PushQueue deliveries wait for them
	// (beyond, the newest are dropped); a delivery that keeps failing is
	// dropped PushMaxAge after its message (also the providers' TTL); the
	// leader reports its progress every PushProgressEvery.
	// MessageRetention: messages (and the other events) older than this
	// are deleted, by the leader's sweep every ExpireSendsEvery through
	// Raft (engine/retention.go). 0: kept for ever.
	MessageRetention time.Duration

	// OnNewerVersion is called when the replicated log holds what only a
	// newer build can read (an entry format, a command version or an
	// operation): nil logs one line saying so and exits with
	// ExitNewerVersion; tests replace it.
	OnNewerVersion func(index uint64, err error)

	Push              push.Config
	PushSender        push.Sender
	PushWorkers       int
	PushQueue         int
	PushMaxAge        time.Duration
	PushProgressEvery time.Duration

	// Pprof serves net/http/pprof under /debug/pprof/ on the HTTP API: for
	// profiling by operators, off by default.
	Pprof bool

	// WebWSURLs are the WebSocket URLs the web app (GET /) connects to,
	// served at GET /v1/config: absolute (ws://host:7071/v1/ws), or a path
	// of the page's origin (/v1/ws, behind a reverse proxy); "@file" reads
	// them from a file, one per line, at each request. Empty: this node's
	// WebSocket port on the host the page was loaded from (webapp.go).
	WebWSURLs []string

	Logger *slog.Logger
}

// DefaultConfig is one node on loopback with data in ./data.
func DefaultConfig() Config {
	return Config{
		NodeID:             "node1",
		DataDir:            "./data",
		HTTPAddr:           "127.0.0.1:7070",
		WSAddr:             "127.0.0.1:7071",
		WSPath:             "/v1/ws",
		RaftAddr:           "127.0.0.1:7072",
		Bootstrap:          true,
		TokenTTL:           7 * 24 * time.Hour,
		Argon2:             DefaultArgon2,
		AuthLimits:         DefaultAuthLimits,
		MaxDevices:         100,
		HashConcurrency:    runtime.GOMAXPROCS(0),
		CacheBytes:         256 << 20,
		RatePerSecond:      100,
		RateBurst:          200,
		MaxInflightPerConn: 256,
		SendQueueBytes:     1 << 20,
		PingInterval:       25 * time.Second,
		IdleTimeout:        60 * time.Second,
		QueryWorkers:       4 * runtime.GOMAXPROCS(0),
		QueryQueue:         4096,
		Clock:              time.Now,
		SignalTick:         500 * time.Millisecond,
		TypingThrottle:     3 * time.Second,
		TypingTTL:          6 * time.Second,
		TypingMaxMembers:   100,
		PresenceGrace:      5 * time.Second,
		LastSeenEvery:      time.Minute,
		ReadCountsEvery:    time.Second,
		SendRetention:      7 * 24 * time.Hour,
		ExpireSendsEvery:   5 * time.Second,
		MediaMaxBytes:      100 << 20,
		MediaQuotaBytes:    1 << 30,
		MediaGrace:         24 * time.Hour,
		MediaExpireEvery:   10 * time.Second,
		MediaThumbSide:     320,
		HTTPReadTimeout:    10 * time.Second,
		HTTPWriteTimeout:   40 * time.Second,
		HTTPIdleTimeout:    30 * time.Second,
		HTTPMaxConns:       256,
		WSMaxConnsPerUser:  defaultWSMaxConnsPerUser,
		WSMaxConnsPerIP:    defaultWSMaxConnsPerIP,
		StorageMinFree:     DefaultStorageMinFree,
		StorageCheckEvery:  DefaultStorageCheckEvery,
		PushWorkers:        16,
		PushQueue:          100_000,
		PushMaxAge:         time.Hour,
		PushProgressEvery:  time.Second,
	}
}

// withDefaults fills every zero field from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	set(&c.NodeID, d.NodeID)
	set(&c.DataDir, d.DataDir)
	if c.Edge {
		c.Bootstrap = false // an edge never founds a cluster
	}
	set(&c.HTTPAddr, d.HTTPAddr)
	set(&c.WSAddr, d.WSAddr)
	set(&c.WSPath, d.WSPath)
	set(&c.RaftAddr, d.RaftAddr)
	if c.TokenTTL == 0 {
		c.TokenTTL = d.TokenTTL
	}
	if c.Argon2 == (Argon2Params{}) {
		c.Argon2 = d.Argon2
	}
	c.AuthLimits = c.AuthLimits.withDefaults()
	if c.MaxDevices == 0 {
		c.MaxDevices = d.MaxDevices
	}
	if c.HashConcurrency == 0 {
		c.HashConcurrency = d.HashConcurrency
	}
	if c.CacheBytes == 0 {
		c.CacheBytes = d.CacheBytes
	}
	if c.RatePerSecond == 0 {
		c.RatePerSecond = d.RatePerSecond
	}
	if c.RateBurst == 0 {
		c.RateBurst = d.RateBurst
	}
	if c.MaxInflightPerConn == 0 {
		c.MaxInflightPerConn = d.MaxInflightPerConn
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = d.SendQueueBytes
	}
	if c.PingInterval == 0 {
		c.PingInterval = d.PingInterval
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.QueryWorkers == 0 {
		c.QueryWorkers = d.QueryWorkers
	}
	if c.QueryQueue == 0 {
		c.QueryQueue = d.QueryQueue
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = d.Clock
	}
	for _, f := range []struct {
		dst *time.Duration
		v   time.Duration
	}{
		{&c.SignalTick, d.SignalTick}, {&c.TypingThrottle, d.TypingThrottle}, {&c.TypingTTL, d.TypingTTL},
		{&c.PresenceGrace, d.PresenceGrace}, {&c.LastSeenEvery, d.LastSeenEvery},
		{&c.ReadCountsEvery, d.ReadCountsEvery}, {&c.SendRetention, d.SendRetention},
		{&c.ExpireSendsEvery, d.ExpireSendsEvery},
		{&c.MediaGrace, d.MediaGrace}, {&c.MediaExpireEvery, d.MediaExpireEvery},
		{&c.HTTPReadTimeout, d.HTTPReadTimeout}, {&c.HTTPWriteTimeout, d.HTTPWriteTimeout},
		{&c.HTTPIdleTimeout, d.HTTPIdleTimeout}, {&c.StorageCheckEvery, d.StorageCheckEvery},
		{&c.PushMaxAge, d.PushMaxAge}, {&c.PushProgressEvery, d.PushProgressEvery},
	} {
		if *f.dst == 0 {
			*f.dst = f.v
		}
	}
	if c.TypingMaxMembers == 0 {
		c.TypingMaxMembers = d.TypingMaxMembers
	}
	if c.MediaMaxBytes == 0 {
		c.MediaMaxBytes = d.MediaMaxBytes
	}
	if c.MediaQuotaBytes == 0 {
		c.MediaQuotaBytes = d.MediaQuotaBytes
	}
	if c.MediaThumbSide == 0 {
		c.MediaThumbSide = d.MediaThumbSide
	}
	if c.PushWorkers == 0 {
		c.PushWorkers = d.PushWorkers
	}
	if c.PushQueue == 0 {
		c.PushQueue = d.PushQueue
	}
	if c.HTTPMaxConns == 0 {
		c.HTTPMaxConns = d.HTTPMaxConns
	}
	if c.HTTPMaxConnsPerIP == 0 {
		c.HTTPMaxConnsPerIP = max(c.HTTPMaxConns/4, 1)
	}
	if c.WSMaxConnsPerUser == 0 {
		c.WSMaxConnsPerUser = d.WSMaxConnsPerUser
	}
	if c.WSMaxConnsPerIP == 0 {
		c.WSMaxConnsPerIP = d.WSMaxConnsPerIP
	}
	if c.StorageMinFree == 0 {
		c.StorageMinFree = d.StorageMinFree
	}
	return c
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for name, addr := range map[string]string{"http": c.HTTPAddr, "ws": c.WSAddr, "raft": c.RaftAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad("%s address %q: %v", name, addr, err)
		}
	}
	if c.RaftAdvertise != "" {
		if host, port, err := net.SplitHostPort(c.RaftAdvertise); err != nil || host == "" || port == "0" {
			bad("raft advertise address %q: want a dialable host:port", c.RaftAdvertise)
		}
	}
	if c.AdminToken != "" && len(c.AdminToken) < minAdminTokenLen {
		bad("admin token must be at least %d characters", minAdminTokenLen)
	}
	if len(c.ClusterKey) != 0 && len(c.ClusterKey) < raftlog.MinClusterKeyLen {
		bad("cluster key must be at least %d bytes", raftlog.MinClusterKeyLen)
	}
	if c.WSPath == "" || c.WSPath[0] != '/' {
		bad("ws path %q must start with /", c.WSPath)
	}
	if len(c.JWTKey) != 0 && (len(c.JWTKey) < engine.MinSigningKeyLen || len(c.JWTKey) > engine.MaxSigningKeyLen) {
		bad("jwt key must be %d to %d bytes", engine.MinSigningKeyLen, engine.MaxSigningKeyLen)
	}
	if c.TokenTTL < time.Minute {
		bad("token ttl %v is under a minute", c.TokenTTL)
	}
	if c.Argon2.Time < 1 || c.Argon2.MemoryKiB < 8 || c.Argon2.Threads < 1 {
		bad("argon2 parameters %+v out of range", c.Argon2)
	}
	c.AuthLimits.validate(bad)
	if c.MaxDevices < 1 {
		bad("max devices %d: want at least 1", c.MaxDevices)
	}
	if c.RatePerSecond < 0 || c.RateBurst < 1 {
		bad("rate %v/s burst %d out of range", c.RatePerSecond, c.RateBurst)
	}
	if c.IdleTimeout < c.PingInterval+2*netpoll.DefaultTickInterval {
		bad("idle timeout %v must be at least the ping interval %v plus %v (two ticks of the keepalive timer), or a pong may not arrive in time",
			c.IdleTimeout, c.PingInterval, 2*netpoll.DefaultTickInterval)
	}
	if c.SendQueueBytes < 64<<10 {
		bad("send queue %d bytes is under 64 KiB (one frame)", c.SendQueueBytes)
	}
	if c.SendRetention > 0 && c.SendRetention < time.Hour {
		bad("send retention %v is under an hour: clients retry sends for longer", c.SendRetention)
	}
	if c.ExpireSendsEvery < 0 {
		bad("expire-sends interval %v is negative", c.ExpireSendsEvery)
	}
	if c.MediaMaxBytes < 1 || c.MediaMaxBytes > engine.MaxMediaBytes {
		bad("media max bytes %d: want 1 to %d", c.MediaMaxBytes, int64(engine.MaxMediaBytes))
	}
	if c.MediaGrace < time.Minute || c.MediaExpireEvery < 0 {
		bad("media grace %v (at least a minute: an upload must commit within it) or sweep interval %v out of range", c.MediaGrace, c.MediaExpireEvery)
	}
	if c.MediaThumbSide < 16 || c.MediaThumbSide > 2048 {
		bad("media thumbnail side %d: want 16 to 2048", c.MediaThumbSide)
	}
	if c.TypingTTL <= c.TypingThrottle {
		bad("typing ttl %v must exceed the typing throttle %v", c.TypingTTL, c.TypingThrottle)
	}
	if c.HTTPReadTimeout < 0 || c.HTTPIdleTimeout < 0 {
		bad("http read timeout %v and idle timeout %v must be positive", c.HTTPReadTimeout, c.HTTPIdleTimeout)
	}
	if c.HTTPWriteTimeout < time.Second {
		bad("http write timeout %v is under a second: logins hash a password and commit a write within it", c.HTTPWriteTimeout)
	}
	if c.HTTPMaxConns < 1 {
		bad("http max connections %d: want at least 1", c.HTTPMaxConns)
	}
	if c.StorageCheckEvery < time.Millisecond {
		bad("storage check interval %v is under a millisecond", c.StorageCheckEvery)
	}
	return errors.Join(errs...)
}
