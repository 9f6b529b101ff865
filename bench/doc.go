// Package bench is Parley's load harness. It is a client only: it creates
// accounts over the HTTP API, talks to nodes over WebSocket (the SDK of
// package client, or bare gws connections where the SDK would cost more than
// the thing measured) and reads the nodes' /metrics; it knows nothing of
// the server's internals.
//
// # A run
//
// Run drives one Scenario through fixed phases, the same for every
// scenario:
//
//  1. plan: on the coordinator (the parleybench process), the scenario
//     creates its accounts and splits the work into shards, one per worker;
//  2. baseline: after a settle pause, every node's metrics are sampled with
//     no connection open;
//  3. connect: one worker per shard opens its connections; then the nodes
//     are sampled again ("connected");
//  4. run: the workers apply the load from a common start time for
//     Options.Duration and drain; the nodes are sampled ("loaded") while the
//     connections are still open. A Windowed scenario measures only the
//     end of the load, after a warmup: the nodes are also sampled at the
//     edges of that window ("window-start", "window-end");
//  5. finish: the workers close their connections and send their results,
//     which the coordinator merges (Result.Merge: counts add up, HDR
//     histograms merge) into a Report; the scenario adds its figures and
//     verdicts.
//
// # Workers
//
// A process may open at most 20,000 files here, so the coordinator spreads
// connections over worker processes (Options.ConnsPerWorker each): it
// re-executes its own binary with WorkerArg and speaks JSON lines with it
// over stdin and stdout (see worker.go). A main that calls Run must hand
// control to WorkerMain when started with WorkerArg. Workers can also run
// as goroutines (Options.InProcess), over the same protocol. The harness's
// own cost is reported as the workers' CPU during the load; with
// Options.CPUProfile each worker also writes a CPU profile of its load.
//
// # Goroutines
//
// The coordinator is the goroutine that called Run: it owns the workers'
// command streams, the progress display and the samples; one reader
// goroutine per worker decodes that worker's events into the coordinator's
// inbox. Inside a worker, serveWorker's goroutine drives the Load; a reader
// goroutine decodes commands (its end of input cancels the worker); a
// progress goroutine reports the Live counters every 250 ms. Each Load
// documents its own goroutines.
//
// # Connections at scale: connect, group, reconnect, slow consumers
//
// Connect opens N connections at a rate, or all at once (a connection
// storm), from the common start of the load in every worker, and reports
// connect latency (from the due time, retries included, and from the
// successful attempt's dial), failed attempts by kind, the time until all
// had their hello, and the nodes' memory and CPU per connection. Group
// puts M members in one group, S of them sending, and reports deliveries
// per second, per-delivery latency and per-message fan-out latency: from
// the send to the last member's receipt over all workers (each worker
// exports its share per message through Result.Counters, which Report
// combines and removes). Reconnect holds N clients with cursors, runs a
// restart command (in the first worker, when the load starts) or waits for
// an external restart, and times each client from its drop to its hello
// and to the end of its resync from its cursor, and all of them to the
// last.
//
// These scenarios hold bare connections (bareConn in bare.go): a gws
// connection that authenticates, waits for hello, answers pings, matches
// replies to requests and hands frames to a callback, at a few KiB each.
// Latencies that cross workers (fan-out) compare wall clocks of processes
// on one machine: the harness does not run workers elsewhere.
//
// Direct and Group take a Slow fraction of their receivers that stop
// reading their sockets when the load starts (slow.go): the others are
// measured as usual, the nodes' memory is sampled throughout on the
// coordinator (serverSampler in sampler.go, started in Plan, stopped in
// Report), and
// after the load each slow receiver reads again and pings, which tells
// whether the server dropped it and why (close code 1008 "slow consumer").
//
// # Attacks
//
// Abuse (abuse.go) keeps a canary pair chatting at a fixed rate while
// hostile clients attack the node, one attack per phase, each followed by a
// recovery: length bombs, a flood of malformed frames, a WebSocket
// connection flood on one token, slowloris HTTP bodies and idle
// keep-alives, password guessing, and oversized reads against a victim
// that pages its sync. The attackers speak the protocol only as far as the
// attack needs: bare connections writing hand-made frames, raw sockets for
// the handshakes and HTTP. Its whole run is one shard in one worker; the
// per-phase counts and histograms travel in the Result under names
// "abuse|PHASE|NAME", which Report turns into Report.Tables and
// Abuse.Phases.
//
// # Files
//
// The core: run.go (the coordinator and its phases), worker.go (the
// worker processes and their protocol), scenario.go (Scenario, Load, the
// registry, defaults and validation), shard.go (splitting clients over
// workers), accounts.go, dial.go (SDK clients) and bare.go (bare
// connections), send.go (schedules and activities, stamped bodies, sends
// with retries, the drain), slow.go (slow consumers), histogram.go and
// timeline.go (latencies), metrics.go and sampler.go (the nodes'
// /metrics), result.go, report.go, chart.go and suite.go (what a run
// produces), progress.go.
//
// One file per scenario on it: abuse.go, connect.go, direct.go, group.go,
// idle.go, mixed.go, reconnect.go, storm.go.
//
// # Adding a scenario
//
// Write its file: a type that implements Scenario (and a Load), registered
// in registry; anything a worker needs travels in its shard. Then give it a
// command line in cmd/parleybench (flags.go: its own FlagSet).
package bench
