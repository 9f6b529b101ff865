package raftlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"parley/internal/testwait"
)

// ReadIndex, asked of the leader or of a follower, covers every command
// committed before the call, wherever it was submitted, and names a
// command entry (one the state machines apply, so a caller can wait for
// its own applied index to reach it).
func TestReadIndex(t *testing.T) {
	c := newCluster(t, 3, nil)
	leader := c.leader()
	var followers []*testNode
	for _, tn := range c.nodes {
		if tn != leader {
			followers = append(followers, tn)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, tn := range []*testNode{followers[0], leader, followers[1]} {
		_, written, err := tn.n.Propose(ctx, []byte(fmt.Sprintf("w%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		for _, asker := range []*testNode{leader, followers[0], followers[1]} {
			idx, err := asker.n.ReadIndex(ctx)
			if err != nil {
				t.Fatalf("ReadIndex on %s: %v", asker.id, err)
			}
			if idx < written {
				t.Fatalf("ReadIndex on %s = %d, below the write at %d", asker.id, idx, written)
			}
			// A command entry: the leader's state machine applied exactly it.
			leader.sm.mu.Lock()
			isCmd := false
			for _, c := range leader.sm.cmds {
				isCmd = isCmd || c.Index == idx
			}
			leader.sm.mu.Unlock()
			if !isCmd {
				t.Fatalf("ReadIndex %d is not the index of a command entry", idx)
			}
			testwait.Eventually(t, "the asker to apply the read index", func() bool { return asker.n.fsm.lastIndex.Load() >= idx })
		}
	}
}
