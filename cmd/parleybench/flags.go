package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"parley/bench"
)

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

// A scenario's command line: what it does (for the usage), and a function
// that defines its flags on its own FlagSet and returns the scenario they
// fill. done, when not nil, runs after parsing with the names of the flags
// given: it settles the options that depend on them (the scenario's own
// default -duration) or refuses the line, having said why on out.
type scenarioCmd struct {
	about    string
	duration string // the help of -duration: what it times here, and its default
	flags    func(fs *flag.FlagSet, opts *bench.Options) (sc bench.Scenario, done func(set map[string]bool, out io.Writer) error)
}

// Default loads of the scenarios whose load is not the harness's 10 s.
const (
	// stormDuration is long enough for per-minute rates to mean something
	// after the warmup.
	stormDuration = 2 * time.Minute
	// reconnectDuration bounds the wait for the drops and the resyncs; the
	// load ends as soon as every client resynced.
	reconnectDuration = 2 * time.Minute
	// mixedDuration is mixed's warmup and 25 seconds of window.
	mixedDuration = 30 * time.Second
)

var scenarioCmds = map[string]scenarioCmd{
	"abuse": {
		duration: "does not apply: the run lasts -phase × (attacks + 1) + -recovery × attacks",
		about: "a canary pair chats at -rate (20/s) while attacks run one at a time, each for -phase, then -recovery;\n" +
			"the canary's latency and losses per phase, /healthz throughout, what each attack got (-attacks)",
		flags: abuseFlags,
	},
	"connect": {
		duration: "holding the connections from the first dial (default 10s, or the ramp plus 5s)",
		about: "open -conns connections at -connect-rate/s (0: all at once), hold them for -duration; connect latency,\n" +
			"errors by kind, time until all connected, server RSS and CPU per connection",
		flags: connectFlags,
	},
	"direct": {
		duration: "load duration: sending (default 10s)",
		about:    "1:1 chat: -senders pairs send for -duration; msg/s, send→deliver latency; -slow receivers stop reading",
		flags:    directFlags,
	},
	"group": {
		duration: "load duration: sending, -warmup included (default 10s)",
		about: "one group of -members (bare connections) and -senders; deliveries/s, send→last member (fan-out) and\n" +
			"send→delivery latency, server CPU per delivery and RSS over time; -slow members stop reading",
		flags: groupFlags,
	},
	"idle": {
		duration: "holding the connections (default 10s)",
		about:    "hold -conns authenticated connections; server memory and CPU per connection",
		flags:    idleFlags,
	},
	"mixed": {
		duration: "load duration, -warmup included (default 30s)",
		about: "-users in small groups and 1:1s, each sending -send-rate messages a minute, typing first,\n" +
			"sending receipts, -reconnect of them resuming by cursor per minute; msg/s, latency, receipts/s, server CPU/RSS",
		flags: mixedFlags,
	},
	"reconnect": {
		duration: "the wait for the drops and the resyncs (default 2m)",
		about: "hold -conns clients with cursors, run -restart-cmd (or wait for a restart), time until every client\n" +
			"has reconnected and resynced (per client and in all), within -duration",
		flags: reconnectFlags,
	},
	"storm": {
		duration: "storming, -warmup included (default 2m)",
		about:    "-users watching -watch others each, -flap of them reconnecting per minute, typing; events/s, server CPU",
		flags:    stormFlags,
	},
}

// harnessFlags defines the flags every scenario takes, before or after its
// name: the nodes, the output and the run's options. duration is the help
// of -duration, which means something else in each scenario.
func harnessFlags(fs *flag.FlagSet, inv *invocation, duration string) (httpURLs, wsURLs *string) {
	httpURLs = fs.String("http", "http://127.0.0.1:7070", "nodes' HTTP API base URLs, comma-separated (accounts on the first; metrics from each)")
	wsURLs = fs.String("ws", "ws://127.0.0.1:7071/v1/ws", "nodes' WebSocket URLs, comma-separated")
	fs.BoolVar(&inv.asJSON, "json", false, "print the report as JSON instead of a table")
	fs.BoolVar(&inv.progress, "progress", true, "show progress (only when stdout is a terminal)")
	fs.StringVar(&inv.chart, "chart", "", "write an SVG chart of the latencies to this file: p50/p99/max per second, and the percentile spectrum")
	fs.DurationVar(&inv.opts.Duration, "duration", 0, duration)
	fs.DurationVar(&inv.opts.Settle, "settle", 0, "pause before each server sample (default 2s)")
	fs.IntVar(&inv.opts.ConnsPerWorker, "conns-per-worker", 0, "connections per worker process (default 5000)")
	fs.IntVar(&inv.opts.AccountParallel, "account-parallel", 0, "account requests in flight (default 64)")
	fs.StringVar(&inv.opts.CPUProfile, "cpuprofile", "", "write a CPU profile of each worker's load to this file (worker i > 0: FILE.i)")
	return httpURLs, wsURLs
}

// durationAll is the help of -duration before a scenario is named.
const durationAll = "load duration (default 10s; a scenario's -h tells what it times there and its own default)"

// parseArgs parses the arguments (after the program name). Flags may come
// before and after the scenario name; each scenario has a FlagSet of its
// own, with the harness's flags and its own. Errors and the usage go to
// out.
func parseArgs(args []string, out io.Writer) (*invocation, error) {
	i := scenarioArg(args)
	if i < 0 || scenarioCmds[args[i]].flags == nil {
		// No scenario, or an unknown one: the harness's flags before it
		// are checked first, then the general usage or the complaint.
		var inv invocation
		fs := flag.NewFlagSet("parleybench", flag.ContinueOnError)
		fs.SetOutput(out)
		harnessFlags(fs, &inv, durationAll)
		fs.Usage = func() { usage(fs) }
		pre := args
		if i >= 0 {
			pre = args[:i]
		}
		if err := fs.Parse(pre); err != nil {
			return nil, errUsage
		}
		if i < 0 {
			fs.Usage()
		} else {
			fmt.Fprintf(out, "parleybench: unknown scenario %q (have %s)\n", args[i], strings.Join(bench.ScenarioNames(), ", "))
		}
		return nil, errUsage
	}

	name, cmd := args[i], scenarioCmds[args[i]]
	var inv invocation
	fs := flag.NewFlagSet("parleybench "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	httpURLs, wsURLs := harnessFlags(fs, &inv, cmd.duration)
	sc, done := cmd.flags(fs, &inv.opts)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: parleybench [flags] %s [flags]\n\n", name)
		for _, line := range strings.Split(cmd.about, "\n") {
			fmt.Fprintf(fs.Output(), "  %s\n", line)
		}
		fmt.Fprintln(fs.Output())
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, errUsage
	}
	if fs.NArg() < 1 || fs.Arg(0) != name {
		fs.Usage()
		return nil, errUsage
	}
	if err := fs.Parse(fs.Args()[1:]); err != nil {
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(out, "parleybench: unexpected arguments %q\n", fs.Args())
		return nil, errUsage
	}
	if done != nil {
		set := make(map[string]bool)
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if err := done(set, out); err != nil {
			return nil, err
		}
	}
	inv.sc = sc
	inv.opts.HTTP = splitList(*httpURLs)
	inv.opts.WS = splitList(*wsURLs)
	return &inv, nil
}

// scenarioArg returns the index of the scenario's name in args, the first
// argument that is neither a flag nor a flag's value, or -1. Every flag
// takes a value except the harness's boolean ones (and -h), as the flag
// package reads them: -name=value and -name value, one dash or two, "--"
// ending the flags.
func scenarioArg(args []string) int {
	var probe invocation
	bools := flag.NewFlagSet("", flag.ContinueOnError)
	harnessFlags(bools, &probe, "")
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				return i + 1
			}
			return -1
		}
		if len(a) < 2 || a[0] != '-' {
			return i
		}
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") || name == "h" || name == "help" {
			continue
		}
		if f := bools.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
				continue
			}
		}
		i++ // the flag's value
	}
	return -1
}

// usage is the general usage: the scenarios, then the harness's flags.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "usage: parleybench [flags] %s [flags]\n\n", strings.Join(bench.ScenarioNames(), "|"))
	for _, name := range bench.ScenarioNames() {
		for k, line := range strings.Split(scenarioCmds[name].about, "\n") {
			if k == 0 {
				fmt.Fprintf(w, "  %-9s %s\n", name, line)
			} else {
				fmt.Fprintf(w, "            %s\n", line)
			}
		}
	}
	fmt.Fprintf(w, "\nparleybench SCENARIO -h lists a scenario's own flags.\n")
	fmt.Fprintf(w, "parleybench table NAME=REPORT.json... prints a Markdown summary of -json reports (make bench)\n\n")
	fs.PrintDefaults()
}

func directFlags(fs *flag.FlagSet, _ *bench.Options) (bench.Scenario, func(map[string]bool, io.Writer) error) {
	d := new(bench.Direct)
	fs.IntVar(&d.Senders, "senders", 1, "sender/receiver pairs")
	messageFlags(fs, &d.Rate, &d.Window, &d.BodyBytes, &d.Drain)
	fs.Float64Var(&d.Slow, "slow", 0, "fraction of the receivers that stop reading their sockets when the load starts (slow consumers)")
	return d, nil
}

func groupFlags(fs *flag.FlagSet, _ *bench.Options) (bench.Scenario, func(map[string]bool, io.Writer) error) {
	g := new(bench.Group)
	fs.IntVar(&g.Members, "members", 1000, "receiving members (bare connections); the -senders are members too")
	fs.IntVar(&g.Senders, "senders", 1, "sending members")
	messageFlags(fs, &g.Rate, &g.Window, &g.BodyBytes, &g.Drain)
	fs.DurationVar(&g.Warmup, "warmup", 0, "load before the measured window")
	fs.Float64Var(&g.Slow, "slow", 0, "fraction of the receiving members that stop reading their sockets when the load starts (slow consumers)")
	return g, nil
}

// messageFlags are the sending flags of direct and group.
func messageFlags(fs *flag.FlagSet, rate *float64, window, body *int, drain *time.Duration) {
	fs.Float64Var(rate, "rate", 0, "total messages per second; 0 is flat out")
	fs.IntVar(window, "window", 0, "sends in flight per sender (default 1 flat out, 64 at a fixed rate)")
	fs.IntVar(body, "body", 100, "message body bytes")
	fs.DurationVar(drain, "drain", 0, "wait for deliveries after the load (default 10s)")
}

func idleFlags(fs *flag.FlagSet, _ *bench.Options) (bench.Scenario, func(map[string]bool, io.Writer) error) {
	i := new(bench.Idle)
	fs.IntVar(&i.Conns, "conns", 1000, "connections")
	return i, nil
}

func connectFlags(fs *flag.FlagSet, opts *bench.Options) (bench.Scenario, func(map[string]bool, io.Writer) error) {
	c := new(bench.Connect)
	fs.IntVar(&c.Conns, "conns", 1000, "connections")
	fs.Float64Var(&c.Rate, "connect-rate", 0, "new connections per second over all workers; 0 opens them all at once (a storm)")
	fs.IntVar(&c.Attempts, "attempts", 0, "attempts per connection before it counts as failed (default 3)")
	return c, func(set map[string]bool, _ io.Writer) error {
		if !set["duration"] {
			opts.Duration = max(10*time.Second, c.RampDuration()+5*time.Second)
		}
		return nil
	}
}

func reconnectFlags(fs *flag.FlagSet, opts *bench.Options) (bench.Scenario, func(map[string]bool, io.Writer) error) {
	r := new(bench.Reconnect)
	fs.IntVar(&r.Conns, "conns", 1000, "connections (even)")
	fs.StringVar(&r.RestartCmd, "restart-cmd", "", "shell command, run once every client is connected, that restarts the node; empty: wait for a restart by someone else")
	fs.IntVar(&r.Backlog, "backlog", 0, "messages per pair of clients after their cursors, which each resync fetches (default 5)")
	return r, func(set map[string]bool, _ io.Writer) error {
		if !set["duration"] {
			opts.Duration = reconnectDuration
		}
		return nil
	}
}

func stormFlags(fs *flag.FlagSet, opts *bench.Options) (bench.Scenario, func(map[string]bool, io.Writer) error) {
	s := bench.DefaultStorm()
	fs.IntVar(&s.Users, "users", s.Users, "connected users, one connection each")
	fs.IntVar(&s.Watch, "watch", s.Watch, "users whose presence each user watches")
	fs.StringVar(&s.Graph, "graph", s.Graph, "watch lists: random (distinct others) or neighbours (nearest on a ring, mutual)")
	fs.Float64Var(&s.Flap, "flap", s.Flap, "fraction of the users that disconnect and reconnect per minute")
	fs.DurationVar(&s.Offline, "offline", s.Offline, "how long a flapper stays away (must exceed the server's presence grace, 5s)")
	fs.Float64Var(&s.Typing, "typing", s.Typing, "typing starts per user per minute")
	fs.IntVar(&s.Circle, "circle", s.Circle, "users per circle (one group, and a 1:1 with each neighbour in the circle)")
	fs.DurationVar(&s.Warmup, "warmup", s.Warmup, "load before the measured window")
	fs.Uint64Var(&s.Seed, "seed", s.Seed, "seed of the random watch lists")
	return &s, func(set map[string]bool, _ io.Writer) error {
		if !set["duration"] {
			opts.Duration = stormDuration
		}
		return nil
	}
}

func mixedFlags(fs *flag.FlagSet, opts *bench.Options) (bench.Scenario, func(map[string]bool, io.Writer) error) {
	m := bench.DefaultMixed()
	fs.IntVar(&m.Users, "users", m.Users, "connected users, one connection each")
	fs.Float64Var(&m.Groups, "groups", m.Groups, "group memberships per user, on average")
	fs.IntVar(&m.GroupMin, "group-min", m.GroupMin, "members of a group, at least")
	fs.IntVar(&m.GroupMax, "group-max", m.GroupMax, "members of a group, at most")
	fs.Float64Var(&m.Directs, "directs", m.Directs, "1:1 conversations per user, on average")
	fs.Float64Var(&m.Rate, "send-rate", m.Rate, "messages each user sends per minute")
	fs.DurationVar(&m.TypeFor, "type-for", m.TypeFor, "typing before each message, on average (0: no typing)")
	fs.DurationVar(&m.ReadDelay, "read-delay", m.ReadDelay, "from a conversation's first unread message to its read receipt")
	fs.Float64Var(&m.Reconnect, "reconnect", m.Reconnect, "fraction of the users that reconnect (resume by cursor) per minute")
	fs.DurationVar(&m.Offline, "offline", m.Offline, "how long a reconnecting user stays away")
	fs.IntVar(&m.BodyBytes, "body", m.BodyBytes, "message body bytes")
	fs.DurationVar(&m.Warmup, "warmup", m.Warmup, "load before the measured window")
	fs.DurationVar(&m.Drain, "drain", m.Drain, "wait for deliveries after the load")
	fs.Uint64Var(&m.Seed, "seed", m.Seed, "seed of the social graph")
	return &m, func(set map[string]bool, _ io.Writer) error {
		if !set["duration"] {
			opts.Duration = mixedDuration
		}
		return nil
	}
}

func abuseFlags(fs *flag.FlagSet, opts *bench.Options) (bench.Scenario, func(map[string]bool, io.Writer) error) {
	a := new(bench.Abuse)
	fs.DurationVar(&a.Phase, "phase", 0, "length of each phase, the baseline's too (default 15s)")
	fs.DurationVar(&a.Recovery, "recovery", 0, "pause without attack after each attack (default 5s)")
	fs.Float64Var(&a.Rate, "rate", 0, "the canary's messages per second, both directions together (default 20)")
	fs.DurationVar(&a.Drain, "drain", 0, "wait for the canary's deliveries after the last phase (default 10s)")
	fs.StringVar(&a.Attacks, "attacks", "all", "comma-separated attacks to run, in their fixed order: "+strings.Join(bench.AbuseAttacks, ","))
	fs.StringVar(&a.From, "attack-from", "", "source IP of the attackers' sockets (127.0.0.2: the node tells them from the canary); empty: the system's choice")
	fs.IntVar(&a.BombConns, "bomb-conns", 0, "length-bomb connections (default 4)")
	fs.IntVar(&a.FloodConns, "flood-conns", 0, "malformed-flood connections at once (default 4)")
	fs.IntVar(&a.ConnAttempts, "conn-attempts", 0, "conn-flood handshakes on one token (default 2000)")
	fs.IntVar(&a.Slowloris, "slowloris", 0, "http-slowloris connections sending a body a byte a second (default 200)")
	fs.IntVar(&a.KeepAlives, "keepalives", 0, "http-slowloris idle keep-alive connections (default 50)")
	fs.IntVar(&a.Guesses, "guesses", 0, "login-guess attempts with wrong passwords (default 1000)")
	fs.IntVar(&a.ReadConns, "read-conns", 0, "big-replies attacker connections reading (default 4)")
	return a, func(set map[string]bool, out io.Writer) error {
		if set["duration"] {
			fmt.Fprintln(out, "parleybench: abuse: -duration does not apply: the run lasts -phase × (attacks + 1) + -recovery × attacks")
			return errUsage
		}
		opts.Duration = a.PlannedDuration()
		return nil
	}
}
