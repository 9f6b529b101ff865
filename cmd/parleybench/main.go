// Command parleybench loads Parley nodes and reports throughput, latency
// and the cost of connections. Run it with -h for the flags; docs/BENCHMARKS.md
// has the reference runs.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

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
	inv, err := parseArgs(os.Args[1:], os.Stderr)
	if err != nil {
		return 2
	}
	sc, opts := inv.sc, inv.opts
	if inv.progress && term.IsTerminal(int(os.Stdout.Fd())) && term.IsTerminal(int(os.Stderr.Fd())) {
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
	if inv.asJSON {
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

// invocation is a parsed command line.
type invocation struct {
	sc       bench.Scenario
	opts     bench.Options
	asJSON   bool
	progress bool
}

// errUsage is a command line that cannot run; the reason is already
// written out.
var errUsage = errors.New("parleybench: bad command line")

// parseArgs parses the arguments (after the program name). Flags may come
// before and after the scenario name. Errors and the usage go to out.
func parseArgs(args []string, out io.Writer) (*invocation, error) {
	fs := flag.NewFlagSet("parleybench", flag.ContinueOnError)
	fs.SetOutput(out)
	var (
		httpURLs = fs.String("http", "http://127.0.0.1:7070", "nodes' HTTP API base URLs, comma-separated (accounts on the first; metrics from each)")
		wsURLs   = fs.String("ws", "ws://127.0.0.1:7071/v1/ws", "nodes' WebSocket URLs, comma-separated")

		inv    invocation
		opts   = &inv.opts
		direct bench.Direct
		idle   bench.Idle
		storm  = bench.DefaultStorm()
	)
	fs.BoolVar(&inv.asJSON, "json", false, "print the report as JSON instead of a table")
	fs.BoolVar(&inv.progress, "progress", true, "show progress (only when stdout is a terminal)")
	fs.DurationVar(&opts.Duration, "duration", 0, "load duration: sending (direct), holding (idle), storming with warmup (storm) (default 10s; storm 2m)")
	fs.DurationVar(&opts.Settle, "settle", 0, "pause before each server sample (default 2s)")
	fs.IntVar(&opts.ConnsPerWorker, "conns-per-worker", 0, "connections per worker process (default 5000)")
	fs.IntVar(&opts.AccountParallel, "account-parallel", 0, "account requests in flight (default 64)")
	fs.IntVar(&direct.Senders, "senders", 1, "direct: sender/receiver pairs")
	fs.Float64Var(&direct.Rate, "rate", 0, "direct: total messages per second; 0 is flat out")
	fs.IntVar(&direct.Window, "window", 0, "direct: sends in flight per sender (default 1 flat out, 64 at a fixed rate)")
	fs.IntVar(&direct.BodyBytes, "body", 100, "direct: message body bytes")
	fs.DurationVar(&direct.Drain, "drain", 0, "direct: wait for deliveries after the load (default 10s)")
	fs.IntVar(&idle.Conns, "conns", 1000, "idle: connections to hold")
	fs.IntVar(&storm.Users, "users", storm.Users, "storm: connected users, one connection each")
	fs.IntVar(&storm.Watch, "watch", storm.Watch, "storm: users whose presence each user watches")
	fs.StringVar(&storm.Graph, "graph", storm.Graph, "storm: watch lists: random (distinct others) or neighbours (nearest on a ring, mutual)")
	fs.Float64Var(&storm.Flap, "flap", storm.Flap, "storm: fraction of the users that disconnect and reconnect per minute")
	fs.DurationVar(&storm.Offline, "offline", storm.Offline, "storm: how long a flapper stays away (must exceed the server's presence grace, 5s)")
	fs.Float64Var(&storm.Typing, "typing", storm.Typing, "storm: typing starts per user per minute")
	fs.IntVar(&storm.Circle, "circle", storm.Circle, "storm: users per circle (one group, and a 1:1 with each neighbour in the circle)")
	fs.DurationVar(&storm.Warmup, "warmup", storm.Warmup, "storm: load before the measured window")
	fs.Uint64Var(&storm.Seed, "seed", storm.Seed, "storm: seed of the random watch lists")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: parleybench [flags] %s [flags]\n\n", strings.Join(bench.ScenarioNames(), "|"))
		fmt.Fprintln(fs.Output(), "  direct  1:1 chat: -senders pairs send for -duration; msg/s, send→deliver latency")
		fmt.Fprintln(fs.Output(), "  idle    hold -conns authenticated connections; server memory and CPU per connection")
		fmt.Fprintf(fs.Output(), "  storm   -users watching -watch others each, -flap of them reconnecting per minute, typing; events/s, server CPU\n\n")
		fs.PrintDefaults()
	}

	if err := fs.Parse(args); err != nil {
		return nil, errUsage
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return nil, errUsage
	}
	name := fs.Arg(0)
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(out, "parleybench: unexpected arguments %q\n", fs.Args())
		return nil, errUsage
	}
	switch name {
	case "direct":
		inv.sc = &direct
	case "idle":
		inv.sc = &idle
	case "storm":
		inv.sc = &storm
		durationSet := false
		fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
		if !durationSet {
			opts.Duration = stormDuration
		}
	default:
		fmt.Fprintf(out, "parleybench: unknown scenario %q (have %s)\n", name, strings.Join(bench.ScenarioNames(), ", "))
		return nil, errUsage
	}
	opts.HTTP = splitList(*httpURLs)
	opts.WS = splitList(*wsURLs)
	return &inv, nil
}

// stormDuration is the storm's default load: long enough for per-minute
// rates to mean something after the warmup.
const stormDuration = 2 * time.Minute

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
