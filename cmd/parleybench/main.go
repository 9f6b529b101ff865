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
	"path/filepath"
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
	if len(os.Args) > 1 && os.Args[1] == "table" {
		return table(os.Args[2:], os.Stdout, os.Stderr)
	}
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
	if inv.chart != "" {
		if err := bench.WriteChartFile(inv.chart, rep); err != nil {
			fmt.Fprintln(os.Stderr, "parleybench: chart:", err)
			return 1
		}
	}
	if rep.Failed() {
		return 1
	}
	return 0
}

// table is "parleybench table NAME=REPORT.json ...": a Markdown summary of
// -json reports, each linked to its chart DIR/NAME.svg when -charts DIR is
// given and the chart exists (the link relative to the document -doc). A
// file that holds no report (a run that failed before reporting) gets a
// row that says so, with the last line of NAME.err beside it if there is
// one (the run's stderr).
func table(args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("parleybench table", flag.ContinueOnError)
	fs.SetOutput(errOut)
	charts := fs.String("charts", "", "directory of the charts NAME.svg; empty: no links")
	doc := fs.String("doc", "docs/BENCHMARKS.md", "the document the table goes into, for the charts' links")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: parleybench table [-charts DIR -doc FILE] NAME=REPORT.json...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	var runs []bench.SuiteRun
	for _, arg := range fs.Args() {
		name, path, ok := strings.Cut(arg, "=")
		if !ok || name == "" || path == "" {
			fmt.Fprintf(errOut, "parleybench table: %q is not NAME=REPORT.json\n", arg)
			return 2
		}
		run := bench.SuiteRun{Name: name}
		if b, err := os.ReadFile(path); err != nil {
			run.Err = err.Error()
		} else if err := json.Unmarshal(b, &run.Report); err != nil || run.Report == nil || run.Report.Scenario == "" {
			run.Report, run.Err = nil, "no JSON report in "+path
			if last := lastLine(strings.TrimSuffix(path, ".json") + ".err"); last != "" {
				run.Err = last
			}
		} else if chart := filepath.Join(*charts, name+".svg"); *charts != "" && fileExists(chart) {
			if rel, err := filepath.Rel(filepath.Dir(*doc), chart); err == nil {
				run.Chart = filepath.ToSlash(rel)
			}
		}
		runs = append(runs, run)
	}
	if err := bench.WriteSuiteMarkdown(out, runs); err != nil {
		fmt.Fprintln(errOut, "parleybench table:", err)
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
	chart    string // SVG file for the latency chart; "" for none
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
	fs.StringVar(&inv.chart, "chart", "", "write an SVG chart of the latencies to this file: p50/p99/max per second, and the percentile spectrum")
	fs.DurationVar(&opts.Duration, "duration", 0, "load duration: sending (direct, group), holding (idle, connect), storming with warmup (storm), the wait for drops and resyncs (reconnect) (default 10s; storm, reconnect 2m; connect 10s or the ramp plus 5s)")
	fs.DurationVar(&opts.Settle, "settle", 0, "pause before each server sample (default 2s)")
	fs.IntVar(&opts.ConnsPerWorker, "conns-per-worker", 0, "connections per worker process (default 5000)")
	fs.IntVar(&opts.AccountParallel, "account-parallel", 0, "account requests in flight (default 64)")
	fs.IntVar(&direct.Senders, "senders", 1, "direct: sender/receiver pairs; group: sending members")
	fs.Float64Var(&direct.Rate, "rate", 0, "direct, group: total messages per second; 0 is flat out")
	fs.IntVar(&direct.Window, "window", 0, "direct, group: sends in flight per sender (default 1 flat out, 64 at a fixed rate)")
	fs.IntVar(&direct.BodyBytes, "body", 100, "direct, group: message body bytes")
	fs.DurationVar(&direct.Drain, "drain", 0, "direct, group: wait for deliveries after the load (default 10s)")
	fs.IntVar(&idle.Conns, "conns", 1000, "idle, connect, reconnect: connections (reconnect: even)")
	fs.IntVar(&storm.Users, "users", storm.Users, "storm: connected users, one connection each")
	fs.IntVar(&storm.Watch, "watch", storm.Watch, "storm: users whose presence each user watches")
	fs.StringVar(&storm.Graph, "graph", storm.Graph, "storm: watch lists: random (distinct others) or neighbours (nearest on a ring, mutual)")
	fs.Float64Var(&storm.Flap, "flap", storm.Flap, "storm: fraction of the users that disconnect and reconnect per minute")
	fs.DurationVar(&storm.Offline, "offline", storm.Offline, "storm: how long a flapper stays away (must exceed the server's presence grace, 5s)")
	fs.Float64Var(&storm.Typing, "typing", storm.Typing, "storm: typing starts per user per minute")
	fs.IntVar(&storm.Circle, "circle", storm.Circle, "storm: users per circle (one group, and a 1:1 with each neighbour in the circle)")
	fs.DurationVar(&storm.Warmup, "warmup", storm.Warmup, "storm, group: load before the measured window (group: default 0)")
	fs.Uint64Var(&storm.Seed, "seed", storm.Seed, "storm: seed of the random watch lists")
	// connect, group and reconnect also take -conns, -senders, -rate,
	// -window, -body, -drain and -warmup (see groupShared).
	var (
		connect   bench.Connect
		group     bench.Group
		reconnect bench.Reconnect
		slow      float64
	)
	fs.Float64Var(&connect.Rate, "connect-rate", 0, "connect: new connections per second over all workers; 0 opens them all at once (a storm)")
	fs.IntVar(&connect.Attempts, "attempts", 0, "connect: attempts per connection before it counts as failed (default 3)")
	fs.IntVar(&group.Members, "members", 1000, "group: receiving members (bare connections); the -senders are members too")
	fs.Float64Var(&slow, "slow", 0, "direct, group: fraction of the receivers that stop reading their sockets when the load starts (slow consumers)")
	fs.StringVar(&reconnect.RestartCmd, "restart-cmd", "", "reconnect: shell command, run once every client is connected, that restarts the node; empty: wait for a restart by someone else")
	fs.IntVar(&reconnect.Backlog, "backlog", 0, "reconnect: messages per pair of clients after their cursors, which each resync fetches (default 5)")
	// mixed also takes -users, -offline, -warmup, -seed (the social graph),
	// -drain and -body, with its own defaults (see mixedShared).
	mixed := bench.DefaultMixed()
	fs.Float64Var(&mixed.Groups, "groups", mixed.Groups, "mixed: group memberships per user, on average")
	fs.IntVar(&mixed.GroupMin, "group-min", mixed.GroupMin, "mixed: members of a group, at least")
	fs.IntVar(&mixed.GroupMax, "group-max", mixed.GroupMax, "mixed: members of a group, at most")
	fs.Float64Var(&mixed.Directs, "directs", mixed.Directs, "mixed: 1:1 conversations per user, on average")
	fs.Float64Var(&mixed.Rate, "send-rate", mixed.Rate, "mixed: messages each user sends per minute")
	fs.DurationVar(&mixed.TypeFor, "type-for", mixed.TypeFor, "mixed: typing before each message, on average (0: no typing)")
	fs.DurationVar(&mixed.ReadDelay, "read-delay", mixed.ReadDelay, "mixed: from a conversation's first unread message to its read receipt")
	fs.Float64Var(&mixed.Reconnect, "reconnect", mixed.Reconnect, "mixed: fraction of the users that reconnect (resume by cursor) per minute")
	// abuse also takes -rate (its canary's, default 20) and -drain.
	var abuse bench.Abuse
	fs.DurationVar(&abuse.Phase, "phase", 0, "abuse: length of each phase, the baseline's too (default 15s)")
	fs.DurationVar(&abuse.Recovery, "recovery", 0, "abuse: pause without attack after each attack (default 5s)")
	fs.StringVar(&abuse.Attacks, "attacks", "all", "abuse: comma-separated attacks to run, in their fixed order: "+strings.Join(bench.AbuseAttacks, ","))
	fs.StringVar(&abuse.From, "attack-from", "", "abuse: source IP of the attackers' sockets (127.0.0.2: the node tells them from the canary); empty: the system's choice")
	fs.IntVar(&abuse.BombConns, "bomb-conns", 0, "abuse: length-bomb connections (default 4)")
	fs.IntVar(&abuse.FloodConns, "flood-conns", 0, "abuse: malformed-flood connections at once (default 4)")
	fs.IntVar(&abuse.ConnAttempts, "conn-attempts", 0, "abuse: conn-flood handshakes on one token (default 2000)")
	fs.IntVar(&abuse.Slowloris, "slowloris", 0, "abuse: http-slowloris connections sending a body a byte a second (default 200)")
	fs.IntVar(&abuse.KeepAlives, "keepalives", 0, "abuse: http-slowloris idle keep-alive connections (default 50)")
	fs.IntVar(&abuse.Guesses, "guesses", 0, "abuse: login-guess attempts with wrong passwords (default 1000)")
	fs.IntVar(&abuse.ReadConns, "read-conns", 0, "abuse: big-replies attacker connections reading (default 4)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: parleybench [flags] %s [flags]\n\n", strings.Join(bench.ScenarioNames(), "|"))
		fmt.Fprintln(fs.Output(), "  abuse     a canary pair chats at -rate (20/s) while attacks run one at a time, each for -phase, then -recovery;")
		fmt.Fprintln(fs.Output(), "            the canary's latency and losses per phase, /healthz throughout, what each attack got (-attacks)")
		fmt.Fprintln(fs.Output(), "  connect   open -conns connections at -connect-rate/s (0: all at once), hold them for -duration; connect latency,")
		fmt.Fprintln(fs.Output(), "            errors by kind, time until all connected, server RSS and CPU per connection")
		fmt.Fprintln(fs.Output(), "  direct    1:1 chat: -senders pairs send for -duration; msg/s, send→deliver latency; -slow receivers stop reading")
		fmt.Fprintln(fs.Output(), "  group     one group of -members (bare connections) and -senders; deliveries/s, send→last member (fan-out) and")
		fmt.Fprintln(fs.Output(), "            send→delivery latency, server CPU per delivery and RSS over time; -slow members stop reading")
		fmt.Fprintln(fs.Output(), "  idle      hold -conns authenticated connections; server memory and CPU per connection")
		fmt.Fprintln(fs.Output(), "  mixed     -users (default 2000) in small groups and 1:1s, each sending -send-rate messages a minute, typing first,")
		fmt.Fprintln(fs.Output(), "            sending receipts, -reconnect of them resuming by cursor per minute; msg/s, latency, receipts/s, server CPU/RSS")
		fmt.Fprintln(fs.Output(), "            (shares -users, -offline (2s), -warmup (5s), -seed, -drain, -body; -duration defaults to 30s)")
		fmt.Fprintln(fs.Output(), "  reconnect hold -conns clients with cursors, run -restart-cmd (or wait for a restart), time until every client")
		fmt.Fprintln(fs.Output(), "            has reconnected and resynced (per client and in all), within -duration")
		fmt.Fprintf(fs.Output(), "  storm     -users watching -watch others each, -flap of them reconnecting per minute, typing; events/s, server CPU\n\n")
		fmt.Fprintf(fs.Output(), "parleybench table NAME=REPORT.json... prints a Markdown summary of -json reports (make bench)\n\n")
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
	case "abuse":
		if flagSet(fs, "duration") {
			fmt.Fprintln(out, "parleybench: abuse: -duration does not apply: the run lasts -phase × (attacks + 1) + -recovery × attacks")
			return nil, errUsage
		}
		if flagSet(fs, "rate") {
			abuse.Rate = direct.Rate
		}
		if flagSet(fs, "drain") {
			abuse.Drain = direct.Drain
		}
		inv.sc = &abuse
		opts.Duration = abuse.PlannedDuration()
	case "direct":
		direct.Slow = slow
		inv.sc = &direct
	case "connect":
		connect.Conns = idle.Conns
		inv.sc = &connect
		if !flagSet(fs, "duration") {
			opts.Duration = max(10*time.Second, connect.RampDuration()+5*time.Second)
		}
	case "group":
		groupShared(fs, &group, &direct, &storm)
		group.Slow = slow
		inv.sc = &group
	case "reconnect":
		reconnect.Conns = idle.Conns
		inv.sc = &reconnect
		if !flagSet(fs, "duration") {
			opts.Duration = reconnectDuration
		}
	case "idle":
		inv.sc = &idle
	case "storm":
		inv.sc = &storm
		durationSet := false
		fs.Visit(func(f *flag.Flag) { durationSet = durationSet || f.Name == "duration" })
		if !durationSet {
			opts.Duration = stormDuration
		}
	case "mixed":
		inv.sc = &mixed
		mixedShared(fs, &mixed, &storm, &direct, opts)
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

// reconnectDuration is the reconnect scenario's default deadline for the
// drops and the resyncs; the load ends as soon as every client resynced.
const reconnectDuration = 2 * time.Minute

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// groupShared gives group the message flags it shares with direct (whose
// defaults are group's too) and -warmup when it was given (storm's default
// is not group's).
func groupShared(fs *flag.FlagSet, group *bench.Group, direct *bench.Direct, storm *bench.Storm) {
	group.Senders, group.Rate, group.Window = direct.Senders, direct.Rate, direct.Window
	group.BodyBytes, group.Drain = direct.BodyBytes, direct.Drain
	if flagSet(fs, "warmup") {
		group.Warmup = storm.Warmup
	}
}

// mixedDuration is the mixed scenario's default load: its warmup and
// 25 seconds of window.
const mixedDuration = 30 * time.Second

// mixedShared gives mixed the flags it shares with storm and direct, when
// they were given, and its own defaults otherwise.
func mixedShared(fs *flag.FlagSet, mixed *bench.Mixed, storm *bench.Storm, direct *bench.Direct, opts *bench.Options) {
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["users"] {
		mixed.Users = storm.Users
	}
	if set["offline"] {
		mixed.Offline = storm.Offline
	}
	if set["warmup"] {
		mixed.Warmup = storm.Warmup
	}
	if set["seed"] {
		mixed.Seed = storm.Seed
	}
	if set["drain"] {
		mixed.Drain = direct.Drain
	}
	if set["body"] {
		mixed.BodyBytes = direct.BodyBytes
	}
	if !set["duration"] {
		opts.Duration = mixedDuration
	}
}

// lastLine returns the last non-blank line of a file, or "".
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
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
