package client

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"parley/internal/testwait"
	"parley/wire"
)

// outcome is what Go's done got.
type outcome struct {
	rep *wire.Reply
	err error
}

// goAsync calls c.Go and returns the channel its done answers on, failing
// the test if done is called twice.
func goAsync(t *testing.T, c *Client, req *wire.Request) <-chan outcome {
	t.Helper()
	ch := make(chan outcome, 2)
	var once sync.Once
	c.Go(req, func(rep *wire.Reply, err error) {
		called := false
		once.Do(func() { called = true })
		if !called {
			t.Errorf("done called twice for %s (%v)", req.Type, err)
		}
		ch <- outcome{rep, err}
	})
	return ch
}

// Many requests in flight at once through Go, replies out of order: each
// done gets its own reply, once.
func TestGoMatchesReplies(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	c := dial(t, testConfig(tok, cl.nodes[0].url))

	const n = 200
	var chans []<-chan outcome
	for i := range n {
		chans = append(chans, goAsync(t, c, &wire.Request{Type: wire.TypeSend, Conv: g, ClientMsgID: fmt.Sprintf("go-%d", i), Body: "x"}))
	}
	seqs := make(map[uint64]bool)
	for i, ch := range chans {
		o := <-ch
		if o.err != nil || o.rep.ClientMsgID != fmt.Sprintf("go-%d", i) || seqs[o.rep.Seq] {
			t.Fatalf("send %d: %+v, %v", i, o.rep, o.err)
		}
		seqs[o.rep.Seq] = true
	}
	if c.MinIndex() < uint64(n) {
		t.Fatalf("MinIndex %d after %d acked sends", c.MinIndex(), n)
	}

	// Errors come as Request returns them: a *wire.Error from the server,
	// a local one for an invalid request (before Go returns).
	o := <-goAsync(t, c, &wire.Request{Type: wire.TypeUserGet, User: 999})
	var we *wire.Error
	if !errors.As(o.err, &we) || we.Code != wire.CodeNotFound {
		t.Fatalf("unknown user: %v", o.err)
	}
	select {
	case o = <-goAsync(t, c, &wire.Request{Type: wire.TypeSend, Conv: g}):
		if !errors.As(o.err, &we) || we.Code != wire.CodeInvalid {
			t.Fatalf("empty body: %v", o.err)
		}
	default:
		t.Fatal("an invalid request was not refused before Go returned")
	}
}

// A request in flight when the connection drops fails with
// ErrDisconnected; one that gets no reply times out; at Close, ErrClosed.
func TestGoFailures(t *testing.T) {
	cl := newCluster(t, 1)
	_, tok := cl.addUser("alice")
	n := cl.nodes[0]
	cfg := testConfig(tok, n.url)
	cfg.RequestTimeout = 200 * time.Millisecond
	c := dial(t, cfg)

	n.muted.Store(true) // requests are never answered
	ch := goAsync(t, c, &wire.Request{Type: wire.TypePing})
	testwait.Eventually(t, "the request to be in flight", func() bool { return n.ignored.Load() == 1 })
	n.dropConns()
	if o := <-ch; !errors.Is(o.err, ErrDisconnected) || !Retryable(o.err) {
		t.Fatalf("in-flight request: %v, want ErrDisconnected", o.err)
	}
	testwait.Eventually(t, "reconnection", func() bool { return c.State().Connected })

	// Twice: the session's sweep stops when nothing is pending and starts
	// again with the next request.
	for range 2 {
		if o := <-goAsync(t, c, &wire.Request{Type: wire.TypePing}); !errors.Is(o.err, ErrRequestTimeout) {
			t.Fatalf("unanswered request: %v, want ErrRequestTimeout", o.err)
		}
	}

	ch = goAsync(t, c, &wire.Request{Type: wire.TypePing})
	testwait.Eventually(t, "the request to be in flight", func() bool { return n.ignored.Load() == 4 })
	_ = c.Close()
	if o := <-ch; !errors.Is(o.err, ErrClosed) {
		t.Fatalf("request at Close: %v, want ErrClosed", o.err)
	}
	if o := <-goAsync(t, c, &wire.Request{Type: wire.TypePing}); !errors.Is(o.err, ErrClosed) {
		t.Fatalf("request after Close: %v, want ErrClosed", o.err)
	}
}

// While the client reconnects, Go waits for the connection, as Request
// does.
func TestGoWaitsForReconnection(t *testing.T) {
	cl := newCluster(t, 2)
	_, tok := cl.addUser("alice")
	c := dial(t, testConfig(tok, cl.nodes[0].url, cl.nodes[1].url))
	cl.nodes[0].kill()
	testwait.Eventually(t, "the client to notice", func() bool { return !c.State().Connected || c.State().URL == cl.nodes[1].url })
	if o := <-goAsync(t, c, &wire.Request{Type: wire.TypePing}); o.err != nil {
		t.Fatalf("ping while reconnecting: %v", o.err)
	}
}

// A NoEvents client neither syncs nor queues events, and still follows
// the index it sees.
func TestNoEvents(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	cl.post(bob, g, "before dial")
	cfg := testConfig(tok, cl.nodes[0].url)
	cfg.NoEvents = true
	c := dial(t, cfg)
	ev := cl.post(bob, g, "live")
	testwait.Eventually(t, "the live event to be seen", func() bool { return c.MinIndex() >= ev.Index })
	if o := <-goAsync(t, c, &wire.Request{Type: wire.TypeSend, Conv: g, ClientMsgID: "n1", Body: "x"}); o.err != nil {
		t.Fatal(o.err)
	}
	c.inbox.mu.Lock()
	queued := len(c.inbox.queue)
	c.inbox.mu.Unlock()
	if n := len(c.Events()); n != 0 || queued != 0 {
		t.Fatalf("%d events delivered, %d queued", n, queued)
	}
	if syncs := cl.get(func(cl *testCluster) int { return cl.syncCalls }); syncs != 0 || c.State().Synced {
		t.Fatalf("%d syncs, state %+v", syncs, c.State())
	}
	_ = c.Close()
	if _, open := <-c.Events(); open {
		t.Fatal("Events not closed by Close")
	}
}

// OnEvent gets what Events() would: the backlog, live events, gaps filled,
// each once and in order; Events() stays empty.
func TestOnEvent(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	cl.post(bob, g, "before dial")
	var mu sync.Mutex
	var got []wire.Event
	cfg := testConfig(tok, cl.nodes[0].url)
	cfg.OnEvent = func(ev wire.Event) {
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	}
	c := dial(t, cfg)
	cl.set(func(cl *testCluster) { cl.dupPush = true })
	cl.post(bob, g, "live, pushed twice")
	cl.set(func(cl *testCluster) {
		cl.dupPush = false
		cl.skipPush = func(*wire.Event) bool { return true }
	})
	cl.post(bob, g, "not pushed: a gap")
	cl.set(func(cl *testCluster) { cl.skipPush = nil })
	cl.post(bob, g, "after the gap")
	testwait.Eventually(t, "five events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 5
	})
	_ = c.Close()
	mu.Lock()
	defer mu.Unlock()
	expectSeqs(t, got, g, 1, 5)
	if n := len(c.Events()); n != 0 {
		t.Fatalf("%d events on Events() too", n)
	}
}
