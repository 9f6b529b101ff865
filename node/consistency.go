package node

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"parley/engine"
	"parley/wire"
)

// Session consistency (docs/PROTOCOL.md, Consistency). Every reply to a
// write carries the log index (idx) of the entry that made it, and so does
// every event; a client keeps the highest idx it has seen and sends it as
// min_idx on its reads (WebSocket), or as the Parley-Min-Index header
// (HTTP). A node serves such a read only once its state has applied that
// index, waiting up to minIndexWait for replication to bring it there, and
// answers unavailable (retryable) if it does not. So a client reads its own
// writes, and everything it has seen, on whichever node it talks to.
//
// Logins and registrations, whose client has no index yet, ask the leader
// for its read index (raftlog.ReadIndex) when the local state says "no
// such user": a user registered through another node a moment ago is then
// found, never refused with a final 401.

// minIndexWait bounds how long a read waits for this node to apply its
// min_idx: far above the replication lag of a healthy cluster, below the
// HTTP write timeout.
const minIndexWait = 5 * time.Second

// MinIndexHeader is the HTTP request header carrying min_idx.
const MinIndexHeader = "Parley-Min-Index"

// appliedWatch lets goroutines wait for the state machine's applied index
// to reach a value. The apply goroutine calls advanced after every entry.
type appliedWatch struct {
	applied func() uint64

	mu sync.Mutex
	ch chan struct{} // closed by the next advance; nil while no one waits
}

func (a *appliedWatch) advanced() {
	a.mu.Lock()
	if a.ch != nil {
		close(a.ch)
		a.ch = nil
	}
	a.mu.Unlock()
}

// wait reports whether the applied index reached idx before one of the
// channels (nil ones never fire) ended the wait.
func (a *appliedWatch) wait(idx uint64, stop, done <-chan struct{}, timeout <-chan time.Time) bool {
	for {
		a.mu.Lock()
		if a.applied() >= idx {
			a.mu.Unlock()
			return true
		}
		if a.ch == nil {
			a.ch = make(chan struct{})
		}
		ch := a.ch
		a.mu.Unlock()
		select {
		case <-ch:
		case <-stop:
			return a.applied() >= idx
		case <-done:
			return a.applied() >= idx
		case <-timeout:
			return a.applied() >= idx
		}
	}
}

// errBehind is the answer to a read whose min_idx this node did not reach
// in time.
func errBehind(idx uint64) *wire.Error {
	return wire.Errorf(wire.CodeUnavailable, "this node has not applied index "+strconv.FormatUint(idx, 10)+" yet; retry")
}

// waitApplied waits, on the calling goroutine, until this node has applied
// idx; false when it gave up (minIndexWait, the node closing, or done).
// Tests replace the timer (minIndexTimer).
func (n *Node) waitApplied(idx uint64, done <-chan struct{}) bool {
	if idx <= n.engine.AppliedIndex() {
		return true
	}
	n.metrics.minIndexWaits.Inc()
	var timeout <-chan time.Time
	if hook := n.minIndexTimer.Load(); hook != nil {
		timeout = (*hook)()
	} else {
		t := time.NewTimer(minIndexWait)
		defer t.Stop()
		timeout = t.C
	}
	return n.applied.wait(idx, n.lagStop, done, timeout)
}

// readAfter runs the read f once this node has applied minIdx, off the
// event loop (a goroutine per lagging read: bounded by the connection's
// requests in flight); a wait that gives up answers unavailable. abandon
// releases what the read holds.
func (n *Node) readAfter(s *session, id, minIdx uint64, start func(), abandon func()) {
	n.lagging.Add(1)
	go func() {
		defer n.lagging.Done()
		if n.waitApplied(minIdx, nil) {
			start()
			return
		}
		abandon()
		n.replyError(s, id, errBehind(minIdx))
	}()
}

// httpMinIndex waits for the Parley-Min-Index of an HTTP request; it
// answers 400 or 503 itself and returns false when the handler must stop.
func (a *httpAPI) httpMinIndex(ctx context.Context, w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get(MinIndexHeader)
	if h == "" {
		return true
	}
	idx, err := strconv.ParseUint(h, 10, 64)
	if err != nil || idx > wire.MaxSafeInteger {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, MinIndexHeader+" must be an integer in 0..2^53-1")
		return false
	}
	if !a.waitApplied(idx, ctx.Done()) {
		writeWireError(w, errBehind(idx))
		return false
	}
	return true
}

// userByNameLinearizable is engine.UserByName that does not miss a user
// registered anywhere in the cluster before the call: when the local
// state knows no such user, it asks the leader for its read index and
// waits until this node has applied it, then looks again. A cluster
// without a leader, or a wait that gives up, answers from the local state
// and says so (sure false): the caller must not give a final "no" then.
func (a *httpAPI) userByNameLinearizable(ctx context.Context, name string) (u engine.User, found, sure bool) {
	if u, found = a.engine.UserByName(name); found {
		return u, true, true
	}
	rctx, cancel := context.WithTimeout(ctx, minIndexWait)
	defer cancel()
	idx, err := a.raft.ReadIndex(rctx)
	if err != nil || !a.waitApplied(idx, rctx.Done()) {
		return u, false, false
	}
	u, found = a.engine.UserByName(name)
	return u, found, true
}
