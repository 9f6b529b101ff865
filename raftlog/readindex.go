package raftlog

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// ReadIndex returns an index such that every command committed before the
// call is at or below it: once this node's state machine has applied it,
// a read of the local state sees every write acknowledged anywhere in the
// cluster before the call (linearizable reads, as etcd's ReadIndex).
//
// The leader answers: it commits a barrier entry (which proves it still
// leads, as VerifyLeader would, and that it knows every entry committed
// before its term) and waits for its own state machine to apply
// everything before it, then returns the index of the last command entry
// it applied. That is a command entry's index (or the state machine's
// applied index), never a barrier's or a noop's, so the caller can wait
// for its own StateMachine.AppliedIndex to reach it. Called on a
// follower, it asks the leader over the admin link (the redirects and
// retries of membership calls). It costs one log entry; it is meant for
// the rare read that must not miss a write made through another node
// (a login of a user this replica does not know yet).
func (n *Node) ReadIndex(ctx context.Context) (uint64, error) {
	reply, err := n.onLeader(ctx, "", adminRequest{Op: opReadIndex})
	if err != nil {
		return 0, err
	}
	if err := errFromReply(reply); err != nil {
		return 0, err
	}
	return reply.Index, nil
}

// readIndex is ReadIndex on the leader.
func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	timeout := n.cfg.TransportTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrLeadershipLost) {
			return 0, ErrNotLeader // the caller asks the new leader
		}
		return 0, mapRaftError(err)
	}
	return n.fsm.lastIndex.Load(), nil
}
