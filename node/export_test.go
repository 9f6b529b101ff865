package node

import (
	"context"
	"sync"

	"parley/engine"
	"parley/netpoll"
	"parley/wire"
)

// WSStatsForTest returns the WebSocket server's counters.
func (n *Node) WSStatsForTest() netpoll.Stats { return n.ws.Stats() }

// IssueTokenForTest signs a device token with the node's key, for devices
// the tests make up.
func (n *Node) IssueTokenForTest(user, device uint64) string {
	tok, _, err := n.tokens.Issue(user, device)
	if err != nil {
		panic(err)
	}
	return tok
}

// HTTPConnsForTest is the number of HTTP connections the server holds open.
func (n *Node) HTTPConnsForTest() int64 { return n.httpAPI.conns.Load() }

// SetAccountsProposeForTest makes hook stand in for the proposals of the
// accounts API (register, login); hook is given the real propose. Nil
// restores it.
func (n *Node) SetAccountsProposeForTest(hook func(ctx context.Context, cmd *engine.Command, propose func(context.Context, *engine.Command) (*engine.Result, *wire.Error)) (*engine.Result, *wire.Error)) {
	if hook == nil {
		n.httpAPI.accountsPropose.Store(nil)
		return
	}
	n.httpAPI.accountsPropose.Store(&hook)
}

// StopWebSocketForTest stops the WebSocket server alone, as if its
// listener had died.
func (n *Node) StopWebSocketForTest(ctx context.Context) error { return n.ws.Stop(ctx) }

// EngineForTest is the node's engine, for checks of the replicated state.
func (n *Node) EngineForTest() *engine.Engine { return n.engine }

// PushCaughtUpForTest is the number of users who went offline whose
// catch-up the notifier has handled (their deliveries counted as pending).
func (n *Node) PushCaughtUpForTest() int {
	if n.notifier == nil {
		return 0
	}
	n.notifier.mu.Lock()
	defer n.notifier.mu.Unlock()
	return n.notifier.caughtUp
}

// InPresenceGraceForTest reports whether user's last session on this node
// has closed and their grace here has not ended.
func (n *Node) InPresenceGraceForTest(user uint64) bool {
	p := n.signals.presence
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.offAt[user]
	return ok
}

// PushPendingForTest is the number of notifications the notifier has yet
// to handle (0 without a notifier).
func (n *Node) PushPendingForTest() int {
	if n.notifier == nil {
		return 0
	}
	return n.notifier.pendingCount()
}

// ProposeForTest proposes cmd through Raft and waits for its result, as
// the accounts API does: for benchmarks that build large states quickly.
func (n *Node) ProposeForTest(ctx context.Context, cmd *engine.Command) (*engine.Result, *wire.Error) {
	return n.propose(ctx, cmd)
}

// StallQueryWorkersForTest occupies every query worker and fills their
// queue; the returned function frees them.
func (n *Node) StallQueryWorkersForTest() (release func()) {
	stop := make(chan struct{})
	for range n.cfg.QueryWorkers + n.cfg.QueryQueue {
		n.queries <- func() { <-stop }
	}
	var once sync.Once
	return func() { once.Do(func() { close(stop) }) }
}
