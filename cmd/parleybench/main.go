// Command parleybench loads Parley nodes and reports throughput, latency
// and the cost of connections. Run it with -h for the flags; docs/BENCHMARKS.md
// has the reference runs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/term"

	"parley/bench"
)

func main() {
	// The harness re-executes this binary as its worker processes.
	if len(os.Args) > 1 && os.Args[1] == bench.WorkerArg {
		os.Exit(bench.WorkerMain())
	}
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("parleybench", flag.ContinueOnError)
	var (
		httpURLs = fs.String("http", "http://127.0.0.1:7070", "nodes' HTTP API base URLs, comma-separated (accounts on the first; metrics from each)")
		wsURLs   = fs.String("ws", "ws://127.0.0.1:7071/v1/ws", "nodes' WebSocket URLs, comma-separated")
		asJSON   = fs.Bool("json", false, "print the report as JSON instead of a table")
		progress = fs.Bool("progress", true, "show progress (only when stdout is a terminal)")

		opts   bench.Options
		direct bench.Direct
		idle   bench.Idle
	)
	fs.DurationVar(&opts.Duration, "duration", 0, "load duration: sending (direct) or holding (idle) (default 10s)")
	fs.DurationVar(&opts.Settle, "settle", 0, "pause before each server sample (default 2s)")
	fs.IntVar(&opts.ConnsPerWorker, "conns-per-worker", 0, "connections per worker process (default 5000)")
	fs.IntVar(&opts.AccountParallel, "account-parallel", 0, "account requests in flight (default 64)")
	fs.IntVar(&direct.Senders, "senders", 1, "direct: sender/receiver pairs")
	fs.Float64Var(&direct.Rate, "rate", 0, "direct: total messages per second; 0 is flat out")
	fs.IntVar(&direct.Window, "window", 0, "direct: sends in flight per sender (default 1 flat out, 64 at a fixed rate)")
	fs.IntVar(&direct.BodyBytes, "body", 100, "direct: message body bytes")
	fs.DurationVar(&direct.Drain, "drain", 0, "direct: wait for deliveries after the load (default 10s)")
	fs.IntVar(&idle.Conns, "conns", 1000, "idle: connections to hold")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: parleybench [flags] %s [flags]\n\n", strings.Join(bench.ScenarioNames(), "|"))
		fmt.Fprintln(fs.Output(), "  direct  1:1 chat: -senders pairs send for -duration; msg/s, send→deliver latency")
		fmt.Fprintf(fs.Output(), "  idle    hold -conns authenticated connections; server memory and CPU per connection\n\n")
		fs.PrintDefaults()
	}

	// Flags may come before and after the scenario name.
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return 2
	}
	name := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "parleybench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	var sc bench.Scenario
	switch name {
	case "direct":
		sc = &direct
	case "idle":
		sc = &idle
	default:
		fmt.Fprintf(os.Stderr, "parleybench: unknown scenario %q (have %s)\n", name, strings.Join(bench.ScenarioNames(), ", "))
		return 2
	}
	opts.HTTP = splitList(*httpURLs)
	opts.WS = splitList(*wsURLs)
	if *progress && term.IsTerminal(int(os.Stdout.Fd())) && term.IsTerminal(int(os.Stderr.Fd())) {
		opts.Progress = bench.NewBarProgress(os.Stderr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, sc, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parleybench:", err)
		return 1
	}
	rep.Command = "parleybench " + strings.Join(os.Args[1:], " ")
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parleybench:", err)
		return 1
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
