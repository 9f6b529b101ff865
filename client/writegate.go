package client

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"parley/wire"
)

// writeGate holds a client's writes for the wait a busy refusal asked for.
//
// A write refused `busy` with retry_ms says more than that this write
// failed: the cluster takes fewer writes than it is sent, and a write sent
// before retry_ms has passed would most likely be refused too. Each such
// refusal costs the node a read, a decode and a reply on the cores it
// needs for the writes it took. So after such a reply the client holds
// every write (reads are not admitted on the write queue) until the wait
// has passed, plus up to half of it again so that the clients refused
// together do not return together (PROTOCOL.md section 5).
//
// Then it sends the held writes in the order they were issued, clocked by
// their replies as TCP's slow start is: one first, and one more for each
// reply that is not a refusal, so at most twice as many each round trip.
// A client that held many writes does not send them all into a node that
// may take a few: a refusal shuts the gate again at the cost of the few
// writes out, not of all those held.
type writeGate struct {
	start   func(*wire.Request, func(*wire.Reply, error)) // sends a write (Client.goNow)
	engaged atomic.Bool                                   // not plainly open: hold must look

	mu        sync.Mutex
	until     time.Time     // writes wait while now is before it
	held      []heldWrite   // Go's writes waiting, in issue order
	out       int           // held writes sent and not answered
	credit    int           // how many may be out; reset to one at each wait's end
	releasing bool          // release is sending; the rest queue behind it
	timer     *time.Timer   // fires at until
	opened    chan struct{} // closed when the gate is plainly open again (Request waits on it)
}

// heldWrite is a write issued with Go while the gate was not open.
type heldWrite struct {
	req  wire.Request
	done func(*wire.Reply, error)
}

// refused shuts the gate for retry (busy's retry_ms) plus jitter, capped
// at limit (a client's writes never wait longer on the server's word than
// a request may take), from now. A gate shut longer already stays so.
func (g *writeGate) refused(retry, limit time.Duration, now time.Time) {
	if retry <= 0 {
		return
	}
	until := now.Add(min(retry+rand.N(retry/2+1), limit))
	g.mu.Lock()
	defer g.mu.Unlock()
	if !until.After(g.until) {
		return
	}
	g.until = until
	g.engaged.Store(true)
	if g.timer == nil {
		g.timer = time.AfterFunc(until.Sub(now), g.fire)
	} else {
		g.timer.Reset(until.Sub(now))
	}
}

// hold keeps a write issued with Go, to be sent when the gate opens, and
// reports whether it did: it does while the gate is shut, and while writes
// held earlier have not all been sent (issue order is kept).
func (g *writeGate) hold(req *wire.Request, done func(*wire.Reply, error)) bool {
	if !g.engaged.Load() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.openLocked(time.Now()) {
		return false
	}
	g.held = append(g.held, heldWrite{req: *req, done: done})
	return true
}

// openLocked reports whether the gate is plainly open at now, and if so
// marks it so and wakes the Requests waiting on it.
func (g *writeGate) openLocked(now time.Time) bool {
	if now.Before(g.until) || g.releasing || len(g.held) != 0 {
		return false
	}
	g.engaged.Store(false)
	if g.opened != nil {
		close(g.opened)
		g.opened = nil
	}
	return true
}

// fire runs on the timer at the end of a wait: the held writes go, one
// first.
func (g *writeGate) fire() {
	g.mu.Lock()
	g.credit = 1
	g.mu.Unlock()
	g.release()
}

// answered follows the reply to a write the gate sent: one more may go,
// unless it was refused (session.onReply has shut the gate again before
// its waiter ran).
func (g *writeGate) answered(err error) {
	g.mu.Lock()
	g.out--
	if RetryAfter(err) == 0 {
		g.credit++
	}
	g.mu.Unlock()
	g.release()
}

// release sends held writes, in order, while the gate's wait is over and
// the credit allows; at a wait's end it rearms the timer. It sends outside
// the lock (done may run at once) with the gate marked releasing, so that
// writes issued meanwhile, and other calls of release, queue behind.
func (g *writeGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.releasing {
		return // the running release sees what changed when it next looks
	}
	g.releasing = true
	for {
		now := time.Now()
		if now.Before(g.until) {
			g.timer.Reset(g.until.Sub(now))
			break
		}
		if len(g.held) == 0 || g.out >= g.credit {
			break
		}
		w := g.held[0]
		g.held[0] = heldWrite{}
		g.held = g.held[1:]
		g.out++
		g.mu.Unlock()
		g.start(&w.req, func(rep *wire.Reply, err error) {
			w.done(rep, err)
			g.answered(err)
		})
		g.mu.Lock()
	}
	g.releasing = false
	if len(g.held) == 0 {
		g.held = nil // let a long backlog's array go
	}
	g.openLocked(time.Now())
}

// drop opens the gate and sends the held writes at once: the client is
// closing, and g.start fails them with the reason.
func (g *writeGate) drop() {
	g.mu.Lock()
	g.until = time.Time{}
	g.credit = math.MaxInt
	g.mu.Unlock()
	g.release()
}

// wait blocks a write made with Request until the gate is plainly open, or
// ctx ends (its error then). It sleeps on the gate's opened channel as well
// as on the wait's end: drop opens the gate before the wait is over.
func (g *writeGate) wait(ctx context.Context) error {
	for {
		if !g.engaged.Load() {
			return nil
		}
		g.mu.Lock()
		now := time.Now()
		if g.openLocked(now) {
			g.mu.Unlock()
			return nil
		}
		if g.opened == nil {
			g.opened = make(chan struct{})
		}
		opened, wait := g.opened, g.until.Sub(now)
		g.mu.Unlock()
		if err := waitOpened(ctx, opened, wait); err != nil {
			return err
		}
	}
}

// waitOpened waits until opened is closed, or wait has passed if it is
// positive, or ctx ends (its error then).
func waitOpened(ctx context.Context, opened <-chan struct{}, wait time.Duration) error {
	var waitEnd <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		waitEnd = t.C
	}
	select {
	case <-opened:
	case <-waitEnd:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
