// Command parley runs one Parley node.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"parley/node"
)

func main() {
	cfg := node.DefaultConfig()
	var argonTime, argonMemory uint
	flag.StringVar(&cfg.NodeID, "id", cfg.NodeID, "node id, unique in the cluster")
	flag.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory")
	flag.StringVar(&cfg.HTTPAddr, "http", cfg.HTTPAddr, "HTTP API address (accounts, /healthz, /metrics)")
	flag.StringVar(&cfg.WSAddr, "ws", cfg.WSAddr, "WebSocket address")
	flag.StringVar(&cfg.RaftAddr, "raft", cfg.RaftAddr, "Raft transport address")
	flag.BoolVar(&cfg.Bootstrap, "bootstrap", cfg.Bootstrap, "found a one-node cluster if the data directory is empty")
	flag.DurationVar(&cfg.TokenTTL, "token-ttl", cfg.TokenTTL, "lifetime of device tokens")
	flag.UintVar(&argonTime, "argon2-time", uint(cfg.Argon2.Time), "argon2id passes for password hashing")
	flag.UintVar(&argonMemory, "argon2-memory", uint(cfg.Argon2.MemoryKiB), "argon2id memory in KiB (lower only for load tests)")
	flag.Float64Var(&cfg.RatePerSecond, "conn-rate", cfg.RatePerSecond, "requests per second allowed per connection")
	flag.IntVar(&cfg.RateBurst, "conn-burst", cfg.RateBurst, "request burst allowed per connection")
	flag.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof/ on the HTTP address")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	cfg.Argon2.Time, cfg.Argon2.MemoryKiB = uint32(argonTime), uint32(argonMemory)

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "parley: bad -log-level:", err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	n, err := node.Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = n.WaitLeader(ctx)
	cancel()
	if err != nil {
		cfg.Logger.Warn("no leader yet; writes will fail until one is elected", "err", err)
	}
	fmt.Printf("parley %s running, data in %s\n  HTTP API   %s\n  WebSocket  %s\n  metrics    %s/metrics\n",
		cfg.NodeID, cfg.DataDir, n.HTTPURL(), n.WSURL(), n.HTTPURL())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Println("parley: shutting down")
	if err := n.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "parley: close:", err)
		os.Exit(1)
	}
}
