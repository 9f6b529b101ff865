package client

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"parley/internal/testwait"
	"parley/wire"
)

// gateSink stands for the connection behind a writeGate: it records the
// writes the gate sends and lets the test answer them.
type gateSink struct {
	mu   sync.Mutex
	sent []string                            // cmids, in the order sent
	done map[string]func(*wire.Reply, error) // unanswered
}

func newGate(t *testing.T) (*writeGate, *gateSink) {
	k := &gateSink{done: make(map[string]func(*wire.Reply, error))}
	g := &writeGate{start: func(r *wire.Request, done func(*wire.Reply, error)) {
		k.mu.Lock()
		k.sent = append(k.sent, r.ClientMsgID)
		k.done[r.ClientMsgID] = done
		k.mu.Unlock()
	}}
	t.Cleanup(func() {
		g.mu.Lock()
		if g.timer != nil {
			g.timer.Stop()
		}
		g.mu.Unlock()
	})
	return g, k
}

func (k *gateSink) sentNow() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.sent...)
}

// answer replies to the write cmid: ok, or busy with retry_ms when busy.
func (k *gateSink) answer(t *testing.T, cmid string, err error) {
	t.Helper()
	k.mu.Lock()
	done, ok := k.done[cmid]
	delete(k.done, cmid)
	k.mu.Unlock()
	if !ok {
		t.Fatalf("write %s was not sent, or was answered already", cmid)
	}
	if err != nil {
		done(nil, err)
	} else {
		done(&wire.Reply{Type: wire.TypeOK, ClientMsgID: cmid}, nil)
	}
}

func sendReq(i int) *wire.Request {
	return &wire.Request{Type: wire.TypeSend, Conv: 1, ClientMsgID: "w" + strconv.Itoa(i), Body: "x"}
}

// endWait makes the gate's wait over now, as its timer would find it.
func endWait(g *writeGate) {
	g.mu.Lock()
	g.until = time.Now().Add(-time.Millisecond)
	g.mu.Unlock()
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestWriteGateHoldsThenSendsClocked: an open gate holds nothing; after a
// busy refusal it holds every write until the wait is over, then sends
// them in issue order, one first and one more for each reply that is not
// a refusal; once all have gone it is open again.
func TestWriteGateHoldsThenSendsClocked(t *testing.T) {
	g, k := newGate(t)
	if g.hold(sendReq(0), func(*wire.Reply, error) {}) {
		t.Fatal("an open gate held a write")
	}
	g.refused(time.Hour, time.Hour, time.Now())
	var replies sync.WaitGroup
	for i := 1; i <= 7; i++ {
		replies.Add(1)
		if !g.hold(sendReq(i), func(*wire.Reply, error) { replies.Done() }) {
			t.Fatalf("write %d not held after a busy refusal", i)
		}
	}
	g.fire() // the timer, early: the wait is not over
	if s := k.sentNow(); len(s) != 0 {
		t.Fatalf("sent %v before the wait was over", s)
	}

	endWait(g)
	g.fire()
	if s := k.sentNow(); !equal(s, []string{"w1"}) {
		t.Fatalf("at the wait's end sent %v, want w1 alone", s)
	}
	k.answer(t, "w1", nil)
	if s := k.sentNow(); !equal(s, []string{"w1", "w2", "w3"}) {
		t.Fatalf("after w1's ack sent %v, want w2 and w3 next", s)
	}
	if !g.hold(sendReq(8), func(*wire.Reply, error) { replies.Done() }) {
		t.Fatal("a write issued while others were held went ahead of them")
	}
	replies.Add(1)
	k.answer(t, "w2", nil)
	k.answer(t, "w3", nil)
	if s := k.sentNow(); !equal(s, []string{"w1", "w2", "w3", "w4", "w5", "w6", "w7"}) {
		t.Fatalf("after w2 and w3 sent %v, want w4 to w7", s)
	}
	for _, c := range []string{"w4", "w5", "w6", "w7"} {
		k.answer(t, c, nil)
	}
	if s := k.sentNow(); len(s) != 8 || s[7] != "w8" {
		t.Fatalf("sent %v, want w8 last", s)
	}
	k.answer(t, "w8", nil)
	replies.Wait()
	if g.hold(sendReq(9), func(*wire.Reply, error) {}) {
		t.Fatal("the gate still holds writes after all went")
	}
}

// TestWriteGateRefusedAgain: a refusal of a write the gate sent shuts it
// again, and the writes still held wait for the next wait's end, which
// starts again with one.
func TestWriteGateRefusedAgain(t *testing.T) {
	g, k := newGate(t)
	g.refused(time.Hour, time.Hour, time.Now())
	for i := 1; i <= 4; i++ {
		g.hold(sendReq(i), func(*wire.Reply, error) {})
	}
	endWait(g)
	g.fire()
	k.answer(t, "w1", nil) // w2, w3 go
	busy := &wire.Error{Code: wire.CodeBusy, RetryMS: 100}
	g.refused(time.Hour, time.Hour, time.Now()) // what session.onReply does first
	k.answer(t, "w2", busy)
	k.answer(t, "w3", nil)
	if s := k.sentNow(); !equal(s, []string{"w1", "w2", "w3"}) {
		t.Fatalf("sent %v after a refusal shut the gate, want nothing more", s)
	}
	endWait(g)
	g.fire()
	if s := k.sentNow(); !equal(s, []string{"w1", "w2", "w3", "w4"}) {
		t.Fatalf("sent %v at the next wait's end, want w4", s)
	}
}

// TestWriteGateCapsTheWait: the wait is retry_ms plus at most half of it,
// and never longer than the cap the client gives.
func TestWriteGateCapsTheWait(t *testing.T) {
	for range 100 {
		g, _ := newGate(t)
		now := time.Now()
		g.refused(100*time.Millisecond, time.Hour, now)
		if d := g.until.Sub(now); d < 100*time.Millisecond || d > 150*time.Millisecond {
			t.Fatalf("wait %v for retry_ms 100", d)
		}
		g.refused(time.Hour, 2*time.Second, now)
		if d := g.until.Sub(now); d != 2*time.Second {
			t.Fatalf("wait %v for retry_ms of an hour under a 2s cap", d)
		}
	}
}

// TestWriteGateDrop: closing sends the held writes at once (to be failed
// by the closed client) and lets waiting Requests go.
func TestWriteGateDrop(t *testing.T) {
	g, k := newGate(t)
	g.refused(time.Hour, time.Hour, time.Now())
	for i := 1; i <= 3; i++ {
		g.hold(sendReq(i), func(*wire.Reply, error) {})
	}
	waited := make(chan error, 1)
	go func() { waited <- g.wait(context.Background()) }()
	// Drop only once the Request is waiting out the hour: drop must end
	// that wait, not only stop new ones.
	testwait.Eventually(t, "the Request to wait on the gate", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.opened != nil
	})
	g.drop()
	if s := k.sentNow(); !equal(s, []string{"w1", "w2", "w3"}) {
		t.Fatalf("drop sent %v", s)
	}
	if err := <-waited; err != nil {
		t.Fatalf("a Request waiting at drop: %v", err)
	}
}

// TestWriteGateWaitEndsWithCtx: a Request's wait ends with its context.
func TestWriteGateWaitEndsWithCtx(t *testing.T) {
	g, _ := newGate(t)
	g.refused(time.Hour, time.Hour, time.Now())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait on a shut gate with a done context: %v", err)
	}
}
