package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/lxzan/gws"
	"golang.org/x/sync/errgroup"

	"parley/wire"
)

// Slow consumers. A fraction of a scenario's receivers (Direct.Slow,
// Group.Slow) stop reading their sockets when the load starts: the
// connection stays open, the harness still writes to it, but it never reads
// another byte until the load is over. The server must bound what it queues
// for them and drop them (guarantee 9 of docs/DESIGN.md) without slowing
// anyone else; the others are measured as usual.
//
// A slow receiver is a bare connection (see bareConn) over a gatedConn,
// whose Read blocks while the gate is shut: gws's read loop stops at the
// socket, so the kernel's receive buffer fills, TCP's window closes and the
// server's send queue grows. Its socket receive buffer is made small
// (slowSocketBuffer), so that what fills up is the server's queue rather
// than the kernel's buffers. When the load is over (in Finish) the gate
// opens again and the receiver sends an application ping: a reply means the
// server kept the connection; the connection ending first means the server
// dropped it, and the close frame, if it gets through, says why (1008
// "slow consumer" for a queue overflow; an idle timeout is also possible
// when the load outlasts the server's idle timeout, since a paused
// connection answers no ping).
//
// Receivers are chosen by index, spread evenly (see isSlow), so they fall
// on every node and worker in proportion.

const (
	slowSocketBuffer = 8 << 10          // SO_RCVBUF of a slow receiver's socket
	maxReceiveBuffer = 64 << 20         // the most a scenario's ReceiveBuffer may ask for
	slowProbeTimeout = 10 * time.Second // for all the probes of a worker
	slowProbers      = 1024             // probes at once
)

// Outcomes of a slow receiver, as result counters.
const (
	cntSlowDisconnected = "slow: disconnected by the server"
	cntSlowAlive        = "slow: still connected"
	cntSlowUnknown      = "slow: outcome unknown"
	cntSlowClosePrefix  = "slow: closed with " // + closeReason: the disconnections by reason
)

// isSlow reports whether receiver i of a scenario is slow when fraction
// frac of them are: every receiver at which the running count
// floor((i+1)*frac) steps up, so that floor(n*frac) of the first n are
// slow, evenly spread.
func isSlow(i int, frac float64) bool {
	if frac <= 0 {
		return false
	}
	return int64(float64(i+1)*frac) > int64(float64(i)*frac)
}

// countSlow is the number of slow receivers among the first n.
func countSlow(n int, frac float64) int {
	k := 0
	for i := range n {
		if isSlow(i, frac) {
			k++
		}
	}
	return k
}

func validSlow(frac float64) bool { return frac >= 0 && frac <= 1 } // also refuses NaN

// validReceiveBuffer checks a scenario's ReceiveBuffer: 0 (the kernel's
// autotuned default) or at least a slow receiver's.
func validReceiveBuffer(n int) bool {
	return n == 0 || (n >= slowSocketBuffer && n <= maxReceiveBuffer)
}

// gatedConn is a net.Conn whose reads can be stopped and started again.
// A Read that has already reached the socket when the gate shuts completes
// normally (it returns what arrives); the next one waits for the gate.
// Close opens every waiting Read with net.ErrClosed.
type gatedConn struct {
	net.Conn

	mu     sync.Mutex    // guards gate and shut
	gate   chan struct{} // closed while reads may proceed
	shut   bool
	closed chan struct{} // closed by Close
	once   sync.Once
}

func newGatedConn(c net.Conn) *gatedConn {
	g := &gatedConn{Conn: c, gate: make(chan struct{}), closed: make(chan struct{})}
	close(g.gate)
	return g
}

func (g *gatedConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	select {
	case <-gate:
	case <-g.closed:
		return 0, net.ErrClosed
	}
	return g.Conn.Read(p)
}

// pause shuts the gate: reads from now on wait.
func (g *gatedConn) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.shut {
		g.shut = true
		g.gate = make(chan struct{})
	}
}

// resume opens the gate.
func (g *gatedConn) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shut {
		g.shut = false
		close(g.gate)
	}
}

func (g *gatedConn) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.Conn.Close()
}

// slowOutcome is how a slow receiver's connection fared.
type slowOutcome struct {
	counter string // one of cntSlowDisconnected, cntSlowAlive, cntSlowUnknown
	reason  string // for a disconnection: the close code and reason, or the error
}

// probeSlow opens c's gate and finds out whether the server kept the
// connection: it sends an application ping, whose reply comes after every
// frame the server had queued. It waits at most slowProbeTimeout (and ctx).
func probeSlow(ctx context.Context, c *bareConn) slowOutcome {
	ctx, cancel := context.WithTimeout(ctx, slowProbeTimeout)
	defer cancel()
	c.sock.resume()
	if _, err := c.request(ctx, &wire.Request{Type: wire.TypePing}); err == nil {
		return slowOutcome{counter: cntSlowAlive}
	}
	select {
	case <-c.gone:
		return slowOutcome{counter: cntSlowDisconnected, reason: closeReason(c.closeErr)}
	case <-ctx.Done():
		return slowOutcome{counter: cntSlowUnknown}
	}
}

// probeAll probes the slow receivers conns at once (see probeSlow), within
// one slowProbeTimeout, and counts the outcomes and the reasons of the
// disconnections.
func probeAll(ctx context.Context, conns []*bareConn, counters *counterSet) {
	ctx, cancel := context.WithTimeout(ctx, slowProbeTimeout)
	defer cancel()
	var probes errgroup.Group
	probes.SetLimit(slowProbers)
	for _, c := range conns {
		probes.Go(func() error {
			out := probeSlow(ctx, c)
			counters.add(out.counter, 1)
			if out.reason != "" {
				counters.add(cntSlowClosePrefix+out.reason, 1)
			}
			return nil
		})
	}
	_ = probes.Wait()
}

// closeReason names why a connection ended: the close frame's code and
// reason when one arrived, else the error.
func closeReason(err error) string {
	var ce *gws.CloseError
	switch {
	case err == nil:
		return "closed"
	case errors.As(err, &ce):
		if len(ce.Reason) > 0 {
			return fmt.Sprintf("close %d %s", ce.Code, ce.Reason)
		}
		return fmt.Sprintf("close %d", ce.Code)
	default:
		return connErrorKind(err)
	}
}

// reportSlow adds the slow receivers' figures and verdicts: how many there
// were, how many the server dropped (as the harness saw it, and as the
// nodes' overflow counters say) and why.
func reportSlow(rep *Report, slow int) {
	if slow == 0 {
		return
	}
	cnt := rep.Result.Counters
	rep.AddFigure("slow receivers", float64(slow), "")
	rep.AddFigure("slow receivers disconnected by the server", float64(cnt[cntSlowDisconnected]), "")
	if c, e, ok := phaseDelta(rep, "connected", "loaded"); ok {
		rep.AddFigure("server queue overflows during the load", e.Overflows-c.Overflows, "")
		if n := e.IdleTimeouts - c.IdleTimeouts; n > 0 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf(
				"the server closed %.0f connections as idle: a paused receiver answers no ping, so a load longer than the idle timeout ends that way", n))
		}
	}
	if n := cnt[cntSlowAlive]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"%d of %d slow receivers were still connected after the load: their backlog fit in the server's queue and the socket buffers (send more or larger messages)", n, slow))
	}
	if n := cnt[cntSlowUnknown]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d slow receivers neither answered a ping nor closed within %v", n, slowProbeTimeout))
	}
}
