// Package raftlog owns the hashicorp/raft node of a Parley server. It
// replicates opaque commands to a StateMachine and knows nothing of what
// they mean.
//
// The path of a command:
//
//	Submit (any goroutine, never blocks)
//	  -> bounded queue
//	  -> proposer: packs the queued commands into one entry (entry.go),
//	     stamps the leader's clock, raft.Apply; up to MaxInflightEntries
//	     entries in flight
//	  -> raft: appends to the Pebble log (logstore.go, one fsynced batch per
//	     write), commits, calls the FSM adapter (fsm.go) on every node
//	  -> StateMachine.Apply(index, ts, cmds) -> one result per command
//	  -> waiter: resolves entries in log order, calls each command's DoneFunc
//
// Group commit comes from concurrency only: the proposer never waits for
// more commands. Commands that arrive while raft is busy queue up and go
// into the next entry; raft itself writes all entries that queued during an
// fsync with one StoreLogs.
//
// Restart: the state machine's store is persistent and records its applied
// index with its state, so raft does not restore a snapshot over it on start
// (NoSnapshotRestoreOnStart). Raft sets its applied index to the latest
// snapshot's and, once the first entry of the new term commits, replays the
// log after it; the state machine skips the entries it already has. When
// the state machine is behind the latest snapshot, Open lets raft restore
// that snapshot first. Configuration and noop entries never reach the state
// machine.
//
// Today the node runs as a single voter that bootstraps itself. It already
// uses the TCP transport and stable IDs, so more voters are a configuration
// change (AddVoter); forwarding proposals to the leader is not built yet:
// a follower's Submit returns ErrNotLeader.
package raftlog
