// Package raftlog owns the hashicorp/raft node of a Parley server: the
// Pebble log store, the internal transport, the proposer, leader
// forwarding and membership. It replicates opaque commands to a
// StateMachine and knows nothing of what they mean.
//
// The path of a command submitted on any node:
//
//	Submit (any goroutine, never blocks): a seq and a waiting callback
//	  -> on the leader: the proposer's queue, bounded in length and, once a
//	     queue stands, in time (admission.go: ErrBusy at once for what
//	     would wait longer than AdmissionTarget)
//	  -> on a follower: the forwarder's queue -> one connection to the
//	     leader, many commands per write (forward.go) -> the leader's
//	     proposer queue; the leader answers refusals only
//	  -> proposer: packs queued commands into one entry, each tagged with
//	     (origin, seq) of the node that submitted it (entry.go), stamps the
//	     leader's clock, raft.Apply; up to MaxInflightEntries in flight
//	  -> raft: appends to the Pebble log (logstore.go, one fsynced batch per
//	     write), replicates, commits, calls the FSM adapter (fsm.go) on
//	     every node
//	  -> StateMachine.Apply(index, ts, cmds) -> one result per command
//	  -> on each node, the FSM adapter hands the results of that node's
//	     own commands (tag origin = its own) to their callbacks.
//
// So a node acknowledges a command only after applying it itself, and
// results never cross the network. A command's callback gets an error
// instead when the leader refused it (it was not appended), or ErrTimeout
// when no outcome arrived within SubmitTimeout (leader died, link broke):
// then it may or may not have committed, and the caller retries; commands
// are idempotent in the state machine. Nothing is ever resent by this
// package, so one Submit puts its command in the log at most once.
//
// Group commit comes from concurrency only: the proposer never waits for
// more commands. Commands that arrive while raft is busy queue up and go
// into the next entry; raft itself writes all entries that queued during an
// fsync with one StoreLogs.
//
// Transport: one internal TCP port per node. With Config.ClusterKey set,
// both ends of every connection first prove they hold the key
// (handshake.go). Then the dialer's first byte says what a connection
// carries (transport.go): raft RPCs, a forwarding link, the peer channel
// or an admin call. Membership (membership.go) is changed the safe way: a
// new server is added as a nonvoter, promoted once the leader sees it
// caught up (followers report their indexes over the forwarding link), and
// any node takes membership calls, sending them to the leader. An edge
// (edge.go) is a nonvoter for life: its role is recorded in its own log
// store and told to every leader on its forwarding link, and the leader
// never promotes it.
//
// Read index (readindex.go): ReadIndex returns an index that covers every
// command committed before the call (the leader commits a barrier, then
// answers its last applied command index; followers ask it over the admin
// link), for the rare read that must not miss a write made through
// another node.
//
// Storage: the node's owner measures free disk space and calls SetStorage
// (storage.go). While full, the node refuses new commands (ErrStorageFull),
// as leader for the whole cluster; while critical, the log store refuses
// appends too. A write Pebble fails anyway ends the process with one log
// line and ExitStorageFailure (logstore.go): Pebble cannot continue after it.
//
// Restart: the state machine's store is persistent and records its applied
// index with its state, so raft does not restore a snapshot over it on start
// (NoSnapshotRestoreOnStart). Raft sets its applied index to the latest
// snapshot's and, once the first entry of the new term commits, replays the
// log after it; the state machine skips the entries it already has. When
// the state machine is behind the latest snapshot, Open lets raft restore
// that snapshot first. A follower too far behind the leader's log (new,
// wiped) receives the leader's snapshot through the transport and
// Restores it. Configuration and noop entries never reach the state
// machine.
package raftlog
