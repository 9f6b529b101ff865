package raftlog

import (
	"errors"
	"fmt"
	"syscall"
)

// StorageState is how much room is left on the disk under Config.Dir, as
// the node's owner measures it: raftlog does not measure free space, it
// acts on what SetStorage tells it (Config.Storage at start).
//
// A full disk must never reach Pebble: Pebble cannot continue after a
// failed WAL or MANIFEST write and calls Logger.Fatalf (pebble v2.1.7
// db.go:885 "fatal commit error", version_set.go:671), so the states
// below stop the growth of the log well before that:
//
//   - StorageFull: this node refuses new commands. Submit returns
//     ErrStorageFull, and as the leader it refuses the commands followers
//     forward with ErrStorageFull too (so, with a full leader, the whole
//     cluster refuses writes). Raft itself goes on: entries already
//     proposed commit, heartbeats, votes and replication to and from this
//     node continue, so the cluster keeps its consensus.
//   - StorageCritical: in addition the log store refuses to append
//     entries (StoreLogs fails with ErrStorageFull). A follower then
//     answers the leader's AppendEntries with a failure, the leader retries
//     with raft's backoff (up to ~10 s), and the follower catches up by
//     itself once SetStorage lifts the state; a leader steps down (raft's
//     answer to a failed local append). Term and vote updates (a few bytes)
//     and log truncation are still written: refusing them would make raft
//     panic. This is what keeps a follower whose disk fills through
//     replication, which StorageFull does not stop, from reaching Pebble's
//     fatal path.
type StorageState uint32

const (
	StorageOK StorageState = iota
	StorageFull
	StorageCritical
)

func (s StorageState) String() string {
	switch s {
	case StorageOK:
		return "ok"
	case StorageFull:
		return "full"
	case StorageCritical:
		return "critical"
	}
	return fmt.Sprintf("StorageState(%d)", uint32(s))
}

// ErrStorageFull: the disk of this node, or of the leader the command was
// forwarded to, is nearly full (StorageFull), and the command was not
// appended. Retry later, on this node or another; nothing was written.
var ErrStorageFull = errors.New("raftlog: storage full, new writes refused")

// SetStorage sets the storage state (see StorageState); the node's owner
// calls it whenever its measure of free space crosses a threshold. Safe
// for concurrent use; takes effect for the next Submit, forwarded command
// and append.
func (n *Node) SetStorage(s StorageState) {
	n.storage.Store(uint32(s))
	n.logs.refuseAppends.Store(s >= StorageCritical)
}

// Storage is the state SetStorage (or Config.Storage) set last.
func (n *Node) Storage() StorageState { return StorageState(n.storage.Load()) }

func (n *Node) storageFull() bool { return n.storage.Load() >= uint32(StorageFull) }

// ExitStorageFailure is the exit status of a process whose log store (or
// state database) hit a write error Pebble cannot continue from: 74 is
// EX_IOERR of sysexits.h.
const ExitStorageFailure = 74

// ioErrno returns the system error under one of args (Pebble's Fatalf
// arguments), if there is one: the failed write of a full disk
// (ENOSPC, EDQUOT), a failing disk (EIO), a file system remounted
// read-only (EROFS).
func ioErrno(args []any) (syscall.Errno, bool) {
	for _, a := range args {
		err, ok := a.(error)
		if !ok {
			continue
		}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return errno, true
		}
	}
	return 0, false
}

// storageHint tells an operator what to do about a fatal write error.
func storageHint(errno syscall.Errno) string {
	switch errno {
	case syscall.ENOSPC, syscall.EDQUOT:
		return "the disk of the data directory is full: free space on it, then restart"
	}
	return "the disk of the data directory failed a write: check it (dmesg, SMART, mount options) and restart"
}
