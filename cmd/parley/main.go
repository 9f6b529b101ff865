// Command parley runs one Parley node.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"parley/node"
)

func main() {
	cfg := node.DefaultConfig()
	var argonTime, argonMemory uint
	flag.StringVar(&cfg.NodeID, "id", cfg.NodeID, "node id, unique in the cluster")
	flag.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory")
	flag.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP API address (accounts, admin API, /healthz, /readyz, /metrics)")
	flag.StringVar(&cfg.WSAddr, "ws", cfg.WSAddr, "WebSocket address")
	flag.StringVar(&cfg.RaftAddr, "raft", cfg.RaftAddr, "Raft transport address to bind")
	flag.StringVar(&cfg.RaftAdvertise, "advertise", "", "Raft address peers dial, when the -raft address is not dialable (default: the -raft address)")
	flag.BoolVar(&cfg.Edge, "edge", false,
		"run as an edge node: a non-voter for good that holds client connections and forwards writes; with empty data it waits for 'parleyctl cluster join --edge' (-bootstrap is ignored). Kept with the data")
	flag.StringVar(&cfg.Region, "region", "", "a label for where this node runs (e.g. eu-west), shown by 'parleyctl cluster status'")
	flag.DurationVar(&cfg.RaftCommitTimeout, "raft-commit-timeout", 0,
		"how soon an idle leader tells followers and edges that an entry committed (0: 5ms); they ack and deliver an entry only once they know")
	flag.IntVar(&cfg.RaftRPCsInFlight, "raft-rpcs-in-flight", 0,
		"AppendEntries the leader keeps in flight per follower (0: 2, best on a LAN); 16 or more for edges in far regions")
	flag.BoolVar(&cfg.Bootstrap, "bootstrap", cfg.Bootstrap,
		"found a one-node cluster if the data directory is empty; false: wait for 'parleyctl cluster init' or 'join'")
	adminTokenFile := flag.String("admin-token-file", "",
		"file holding the admin API token (nodes may share one); default: <data>/admin.token, created on first start")
	clusterKeyFile := flag.String("cluster-key-file", "",
		"file holding the cluster key that authenticates the internal port (at least 16 characters; every node of a cluster needs the same one); "+
			"default: <data>/cluster.key, created on first start, fit for a one-node cluster only")
	flag.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", 0, "Raft log entries between automatic snapshots (0: raftlog's default)")
	flag.Uint64Var(&cfg.TrailingLogs, "trailing-logs", 0, "Raft log entries kept behind a snapshot for lagging followers (0: raftlog's default)")
	flag.DurationVar(&cfg.TokenTTL, "token-ttl", cfg.TokenTTL, "lifetime of device tokens")
	flag.DurationVar(&cfg.SendRetention, "send-retention", cfg.SendRetention, "how long a send's client_msg_id is remembered for retries (negative: for ever)")
	flag.DurationVar(&cfg.MessageRetention, "retention", 0, "delete messages older than this, in every conversation (e.g. 2160h for 90 days; 0: keep them for ever)")
	flag.UintVar(&argonTime, "argon2-time", uint(cfg.Argon2.Time), "argon2id passes for password hashing")
	flag.UintVar(&argonMemory, "argon2-memory", uint(cfg.Argon2.MemoryKiB), "argon2id memory in KiB (lower only for load tests)")
	flag.Float64Var(&cfg.RatePerSecond, "conn-rate", cfg.RatePerSecond, "requests per second allowed per connection")
	flag.IntVar(&cfg.RateBurst, "conn-burst", cfg.RateBurst, "request burst allowed per connection")
	flag.IntVar(&cfg.WSMaxConns, "ws-max-conns", cfg.WSMaxConns,
		"WebSocket connections on this node, beyond them upgrades get 503 (0: derived from the descriptor limit, see docs/OPERATIONS.md; negative: no cap)")
	flag.IntVar(&cfg.WSMaxConnsPerUser, "ws-max-conns-per-user", cfg.WSMaxConnsPerUser,
		"WebSocket connections of one user on this node, all devices together, beyond them 429 (negative: no cap)")
	flag.IntVar(&cfg.WSMaxConnsPerIP, "ws-max-conns-per-ip", cfg.WSMaxConnsPerIP,
		"WebSocket connections from one IPv4 address or IPv6 /64, beyond them 429 (negative: no cap; behind a reverse proxy all clients share its address)")
	flag.DurationVar(&cfg.HTTPReadTimeout, "http-read-timeout", cfg.HTTPReadTimeout, "HTTP API: time to read a request's headers and body")
	flag.DurationVar(&cfg.HTTPWriteTimeout, "http-write-timeout", cfg.HTTPWriteTimeout, "HTTP API: time to handle a request and write its response (a handler gets 3/4 of it)")
	flag.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", cfg.HTTPIdleTimeout, "HTTP API: a keep-alive connection without a request for this long is closed")
	flag.IntVar(&cfg.HTTPMaxConns, "http-max-conns", cfg.HTTPMaxConns, "HTTP API: connections served at once; more wait in the listen backlog (the WebSocket port is not counted)")
	flag.IntVar(&cfg.HTTPMaxConnsPerIP, "http-max-conns-per-ip", cfg.HTTPMaxConnsPerIP, "HTTP API: connections of one client address (IPv6: its /64; -trusted-proxies exempt); one more gets 429 at once (0: a quarter of -http-max-conns; negative: no cap)")
	authThrottle := flag.Bool("auth-throttle", true,
		"throttle failed logins (per username and per client address) and registrations (per address); false only for load tests that create many accounts from one address")
	flag.IntVar(&cfg.AuthLimits.UserFailures, "login-user-failures", cfg.AuthLimits.UserFailures, "failed logins allowed per username at once")
	flag.DurationVar(&cfg.AuthLimits.UserFailureEvery, "login-user-every", cfg.AuthLimits.UserFailureEvery, "then one more failed login per username every")
	flag.IntVar(&cfg.AuthLimits.IPFailures, "login-ip-failures", cfg.AuthLimits.IPFailures, "failed logins allowed per client address at once")
	flag.DurationVar(&cfg.AuthLimits.IPFailureEvery, "login-ip-every", cfg.AuthLimits.IPFailureEvery, "then one more failed login per client address every")
	flag.IntVar(&cfg.AuthLimits.IPRegisters, "register-ip-burst", cfg.AuthLimits.IPRegisters, "registrations allowed per client address at once")
	flag.DurationVar(&cfg.AuthLimits.IPRegisterEvery, "register-ip-every", cfg.AuthLimits.IPRegisterEvery, "then one more registration per client address every")
	flag.IntVar(&cfg.MaxDevices, "max-devices", cfg.MaxDevices,
		"active devices per user: a login beyond them revokes the user's oldest device")
	storageMinFreeMiB := flag.Int64("storage-min-free-mib", cfg.StorageMinFree>>20,
		"free space (MiB) the data directory's file system keeps: below it new writes are refused with storage_full until 1.5x is free again, "+
			"below a quarter of it the Raft log refuses appends too (negative: never refuse)")
	flag.DurationVar(&cfg.StorageCheckEvery, "storage-check-every", cfg.StorageCheckEvery, "how often free space is measured")
	trustedProxies := flag.String("trusted-proxies", "",
		"comma-separated addresses or CIDR prefixes of reverse proxies whose X-Forwarded-For names the client (default: none, the TCP peer is the client)")
	flag.Int64Var(&cfg.MediaMaxBytes, "media-max-bytes", cfg.MediaMaxBytes, "largest file accepted by POST /v1/media (413 too_large beyond)")
	flag.Int64Var(&cfg.MediaQuotaBytes, "media-quota-bytes", cfg.MediaQuotaBytes,
		"bytes of files one user may store: uploads in progress and files uploaded (413 quota_exceeded beyond; negative: no quota)")
	flag.DurationVar(&cfg.MediaGrace, "media-grace", cfg.MediaGrace,
		"uploads never committed, and files no message carries, are deleted after this long")
	flag.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/ on the HTTP address")
	webWSURLs := flag.String("web-ws-urls", "",
		"comma-separated WebSocket URLs the web app at / connects to (GET /v1/config): absolute, or a path such as /v1/ws on the page's origin behind a reverse proxy; @file reads them from a file, one per line (default: this node's WebSocket port on the host the page came from)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	pushFlags := definePushFlags()
	flag.IntVar(&cfg.PushWorkers, "push-workers", cfg.PushWorkers, "push notifications sent at once (on the leader)")
	flag.IntVar(&cfg.PushQueue, "push-queue", cfg.PushQueue, "push notifications waiting for a worker; beyond, the newest are dropped")
	flag.DurationVar(&cfg.PushMaxAge, "push-max-age", cfg.PushMaxAge,
		"a notification still failing this long after its message is dropped; also the providers' time to live")
	configFile := flag.String("config", "", "a TOML file of settings: each key a flag's name, tables prefixing theirs ([push] fcm-key = -push-fcm-key); flags on the command line win")
	printCfg := flag.Bool("print-config", false, "write the settings in effect (flags and -config) as a configuration file, and exit")
	flag.Parse()
	if *configFile != "" {
		if err := applyConfigFile(flag.CommandLine, *configFile); err != nil {
			fmt.Fprintln(os.Stderr, "parley: -config:", err)
			os.Exit(2)
		}
	}
	if *printCfg {
		if err := printConfig(os.Stdout, flag.CommandLine); err != nil {
			fmt.Fprintln(os.Stderr, "parley:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	for _, u := range strings.Split(*webWSURLs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			cfg.WebWSURLs = append(cfg.WebWSURLs, u)
		}
	}
	cfg.Push = pushFlags.config()
	cfg.Argon2.Time, cfg.Argon2.MemoryKiB = uint32(argonTime), uint32(argonMemory)
	cfg.AuthLimits.Disabled = !*authThrottle
	if cfg.StorageMinFree = *storageMinFreeMiB << 20; *storageMinFreeMiB < 0 {
		cfg.StorageMinFree = -1
	}
	proxies, err := node.ParseTrustedProxies(*trustedProxies)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley: -trusted-proxies:", err)
		os.Exit(2)
	}
	cfg.AuthLimits.TrustedProxies = proxies

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "parley: bad -log-level:", err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	tokenWhere := filepath.Join(cfg.DataDir, "admin.token")
	if *adminTokenFile != "" {
		b, err := os.ReadFile(*adminTokenFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "parley: -admin-token-file:", err)
			os.Exit(2)
		}
		cfg.AdminToken, tokenWhere = strings.TrimSpace(string(b)), *adminTokenFile
		if cfg.AdminToken == "" {
			fmt.Fprintln(os.Stderr, "parley: -admin-token-file:", *adminTokenFile, "is empty")
			os.Exit(2)
		}
	}
	keyWhere := filepath.Join(cfg.DataDir, "cluster.key")
	if *clusterKeyFile != "" {
		b, err := os.ReadFile(*clusterKeyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "parley: -cluster-key-file:", err)
			os.Exit(2)
		}
		// The key is the file's text, white space around it ignored, so
		// that "openssl rand -base64 32 > cluster.key" makes one.
		cfg.ClusterKey, keyWhere = []byte(strings.TrimSpace(string(b))), *clusterKeyFile
		if len(cfg.ClusterKey) == 0 {
			fmt.Fprintln(os.Stderr, "parley: -cluster-key-file:", *clusterKeyFile, "is empty")
			os.Exit(2)
		}
	}

	n, err := node.Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
	fmt.Printf("parley %s running, data in %s\n  HTTP API   %s\n  WebSocket  %s\n  Raft       %s\n  metrics    %s/metrics\n  admin token in %s\n  cluster key in %s\n",
		cfg.NodeID, cfg.DataDir, n.HTTPURL(), n.WSURL(), n.RaftAddr(), n.HTTPURL(), tokenWhere, keyWhere)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() { // report readiness; a new cluster member may wait for init a long time
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := n.WaitLeader(wctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			cfg.Logger.Warn("not ready: no leader or no token signing key yet; a new cluster member waits for 'parleyctl cluster init' or 'join'")
			err = n.WaitLeader(ctx)
		}
		if err == nil {
			cfg.Logger.Info("ready: leader known, token signing key applied")
		}
	}()
	<-ctx.Done()
	stop()
	fmt.Println("parley: shutting down")
	if err := n.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "parley: close:", err)
		os.Exit(1)
	}
}
