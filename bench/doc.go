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
// as goroutines (Options.InProcess), over the same protocol.
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
// # Adding a scenario
//
// Implement Scenario (and Load), register it in registry, and give it
// flags in cmd/parleybench. Anything a worker needs travels in its shard.
package bench
