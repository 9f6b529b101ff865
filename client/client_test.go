package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"parley/internal/testwait"
	"parley/wire"
)

const waitLimit = 15 * time.Second // generous: -race on two shared cores

func testConfig(tok string, urls ...string) Config {
	return Config{
		URLs:           urls,
		Token:          tok,
		RequestTimeout: 5 * time.Second,
		DialTimeout:    2 * time.Second,
		ReconnectMin:   5 * time.Millisecond,
		ReconnectMax:   50 * time.Millisecond,
	}
}

func dial(t testing.TB, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// next reads n events or fails.
func next(t *testing.T, c *Client, n int) []wire.Event {
	t.Helper()
	out := make([]wire.Event, 0, n)
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for len(out) < n {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("Events closed after %d of %d events", len(out), n)
			}
			out = append(out, ev)
		case <-timeout.C:
			t.Fatalf("got %d of %d events: %s", len(out), n, describe(out))
		}
	}
	return out
}

func describe(evs []wire.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "%d/%d ", ev.Conv, ev.Seq)
	}
	return b.String()
}

// expectSeqs checks that evs are exactly conv's events from seq first to
// last, in order.
func expectSeqs(t *testing.T, evs []wire.Event, conv, first, last uint64) {
	t.Helper()
	want := first
	for _, ev := range evs {
		if ev.Conv != conv {
			continue
		}
		if ev.Seq != want {
			t.Fatalf("conv %d: got seq %d, want %d (stream: %s)", conv, ev.Seq, want, describe(evs))
		}
		want++
	}
	if want != last+1 {
		t.Fatalf("conv %d: stream ended at seq %d, want %d (stream: %s)", conv, want-1, last, describe(evs))
	}
}

// expectMarker posts a marker to conv and checks it is the very next event:
// nothing (no duplicate, no stray redelivery) sits before it.
func expectMarker(t *testing.T, cl *testCluster, c *Client, from, conv uint64) {
	t.Helper()
	m := cl.post(from, conv, "marker")
	ev := next(t, c, 1)[0]
	if ev.Conv != m.Conv || ev.Seq != m.Seq || ev.Body != "marker" {
		t.Fatalf("next event is %d/%d %q, want the marker %d/%d", ev.Conv, ev.Seq, ev.Body, m.Conv, m.Seq)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	cfg := Config{URLs: []string{"http://x", "ws://"}, RequestTimeout: -1, ReconnectMin: 2, ReconnectMax: 1, EventBuffer: -1}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"scheme", "no host", "Token", "RequestTimeout", "ReconnectMin", "EventBuffer"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
	good := testConfig("t", "ws://127.0.0.1:1")
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := good.withDefaults(); d.URLs[0] != "ws://127.0.0.1:1/v1/ws" || d.EventBuffer != defaultEventBuffer {
		t.Fatalf("defaults: %+v", d)
	}
}

func TestDialSyncsAndReportsState(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	cl.post(bob, g, "before dial")

	c := dial(t, testConfig(tok, cl.nodes[0].url))
	// The backlog is on Events when Dial returns.
	if n := len(c.Events()); n != 2 {
		t.Fatalf("%d events queued after Dial, want 2", n)
	}
	expectSeqs(t, next(t, c, 2), g, 1, 2)
	if c.Cursor() != cl.index() {
		t.Fatalf("cursor %d, want %d", c.Cursor(), cl.index())
	}
	st := c.State()
	if !st.Connected || st.URL != cl.nodes[0].url || st.Node != "n1" || st.User != alice || st.Err != nil {
		t.Fatalf("state %+v", st)
	}

	ctx := testCtx(t)
	u, err := c.UserByName(ctx, "bob")
	if err != nil || u.ID != bob {
		t.Fatalf("UserByName: %+v %v", u, err)
	}
	dm, err := c.OpenDirect(ctx, bob)
	if err != nil || dm.Kind != wire.ConvDirect {
		t.Fatalf("OpenDirect: %+v %v", dm, err)
	}
	ack, err := c.Send(ctx, dm.ID, "hi")
	if err != nil || ack.Seq != 2 || ack.Duplicate || len(ack.ClientMsgID) != 16 {
		t.Fatalf("Send: %+v %v", ack, err)
	}
	expectSeqs(t, next(t, c, 2), dm.ID, 1, 2)
	evs, more, err := c.History(ctx, dm.ID, wire.DirBefore, 0, 10)
	if err != nil || more || len(evs) != 2 || evs[0].Body != "hi" {
		t.Fatalf("History: %+v %v %v", evs, more, err)
	}
	convs, err := c.ConvList(ctx)
	if err != nil || len(convs) != 2 {
		t.Fatalf("ConvList: %+v %v", convs, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRequestReplyCorrelationUnderConcurrency(t *testing.T) {
	cl := newCluster(t, 1)
	const users = 20
	var tok string
	for i := range users {
		_, tok = cl.addUser(fmt.Sprintf("user%02d", i))
	}
	cl.set(func(cl *testCluster) { cl.slowUserGet = true }) // replies leave out of order
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	ctx := testCtx(t)

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			for i := range 40 {
				id := uint64((g*7+i)%users + 1)
				u, err := c.UserByID(ctx, id)
				if err != nil {
					errs <- err
					return
				}
				if u.ID != id || u.Username != fmt.Sprintf("user%02d", id-1) {
					errs <- fmt.Errorf("asked for user %d, got %+v", id, u)
					return
				}
				if i%5 == 0 {
					if err := c.Ping(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestErrorReplyIsWireError(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	carol, _ := cl.addUser("carol")
	g := cl.group(bob, "not alice's", carol)
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	ctx := testCtx(t)

	_, err := c.SendWithID(ctx, g, "cmid-x", "hello")
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeNotMember || Retryable(err) {
		t.Fatalf("got %v, want not_member", err)
	}
	if n := cl.get(func(cl *testCluster) int { return cl.sendsSeen["cmid-x"] }); n != 1 {
		t.Fatalf("a non-retryable error was retried: %d sends", n)
	}
	// Invalid requests fail locally, before reaching the server.
	_, err = c.Send(ctx, g, "")
	if !errors.As(err, &we) || we.Code != wire.CodeInvalid {
		t.Fatalf("empty body: %v", err)
	}
	_, err = c.Send(ctx, g, strings.Repeat("x", wire.MaxBodyBytes+1))
	if !errors.As(err, &we) || we.Code != wire.CodeTooLarge {
		t.Fatalf("long body: %v", err)
	}
	if _, err := c.UserByName(ctx, "nobody"); !errors.As(err, &we) || we.Code != wire.CodeNotFound {
		t.Fatalf("unknown user: %v", err)
	}
	_ = alice
}

func TestSendRetryAfterDroppedConnectionIsNotDuplicated(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	expectSeqs(t, next(t, c, 1), g, 1, 1)

	// The server applies the send, then the connection dies before the ack.
	cl.set(func(cl *testCluster) { cl.dropReply["retry-me"] = true })
	ack, err := c.SendWithID(testCtx(t), g, "retry-me", "once")
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate || ack.Seq != 2 || ack.ClientMsgID != "retry-me" {
		t.Fatalf("ack %+v, want the original seq 2 with dup", ack)
	}
	stored := 0
	cl.set(func(cl *testCluster) {
		for _, ev := range cl.convs[g].events {
			if ev.ClientMsgID == "retry-me" {
				stored++
			}
		}
	})
	if seen := cl.get(func(cl *testCluster) int { return cl.sendsSeen["retry-me"] }); seen != 2 || stored != 1 {
		t.Fatalf("server saw the cmid %d times and stored it %d times, want 2 and 1", seen, stored)
	}
	// The message reaches the event stream once, although it was pushed live
	// and synced again after the reconnection.
	evs := next(t, c, 1)
	expectSeqs(t, evs, g, 2, 2)
	expectMarker(t, cl, c, bob, g)
}

func TestSendRetriesRetryableCodes(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	c := dial(t, testConfig(tok, cl.nodes[0].url))

	for _, code := range []wire.Code{wire.CodeBusy, wire.CodeRateLimited, wire.CodeUnavailable, wire.CodeTimeout} {
		cmid := "c-" + string(code)
		cl.set(func(cl *testCluster) { cl.failSend[cmid] = code })
		ack, err := c.SendWithID(testCtx(t), g, cmid, "x")
		if err != nil || ack.Duplicate {
			t.Fatalf("%s: %+v %v", code, ack, err)
		}
		if n := cl.get(func(cl *testCluster) int { return cl.sendsSeen[cmid] }); n != 2 {
			t.Fatalf("%s: %d attempts, want 2", code, n)
		}
	}
	// A context that ends stops the retries and says why.
	cl.set(func(cl *testCluster) { cl.failSend["late"] = wire.CodeBusy })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.SendWithID(ctx, g, "late", "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled send: %v", err)
	}
}

func TestReconnectsToNextURLWhenNodeDies(t *testing.T) {
	cl := newCluster(t, 2)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	n1, n2 := cl.nodes[0], cl.nodes[1]
	c := dial(t, testConfig(tok, n1.url, n2.url))
	expectSeqs(t, next(t, c, 1), g, 1, 1)
	if st := c.State(); st.URL != n1.url || !st.Synced || st.Syncs != 1 {
		t.Fatalf("state after Dial %+v, want the first URL, synced once", st)
	}

	n1.kill()
	cl.post(bob, g, "while failing over")
	testwait.Eventually(t, "reconnection to the second node, synced", func() bool {
		st := c.State()
		return st.Connected && st.URL == n2.url && st.Synced && st.Syncs == 2
	})
	if st := c.State(); st.Node != "n2" {
		t.Fatalf("state %+v", st)
	}
	ack, err := c.Send(testCtx(t), g, "after failover")
	if err != nil {
		t.Fatal(err)
	}
	expectSeqs(t, next(t, c, 2), g, 2, ack.Seq)
	expectMarker(t, cl, c, bob, g)
}

func TestMissedEventsArriveOnceInOrder(t *testing.T) {
	cl := newCluster(t, 1)
	// Small pages: the catch-up needs several sync pages (More) and history
	// pages per conversation (ConvSync.More).
	cl.set(func(cl *testCluster) { cl.syncConvs, cl.syncEvents = 2, 3 })
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	var groups []uint64
	for i := range 5 {
		groups = append(groups, cl.group(bob, fmt.Sprintf("g%d", i), alice))
	}
	n := cl.nodes[0]
	c := dial(t, testConfig(tok, n.url))
	next(t, c, 5) // the created events
	cl.post(bob, groups[0], "live")
	expectSeqs(t, next(t, c, 1), groups[0], 2, 2)
	cursor := c.Cursor()

	n.refuse.Store(true)
	n.dropConns()
	testwait.Eventually(t, "the disconnection", func() bool { return !c.State().Connected })
	for i := range 8 {
		for _, g := range groups {
			cl.post(bob, g, fmt.Sprintf("missed %d", i))
		}
	}
	// A tail in one conversation: the last sync page flags it More, and only
	// history paging brings the rest.
	for i := range 10 {
		cl.post(bob, groups[4], fmt.Sprintf("tail %d", i))
	}
	n.refuse.Store(false)

	evs := next(t, c, 5*8+10)
	expectSeqs(t, evs, groups[0], 3, 10)
	for _, g := range groups[1:4] {
		expectSeqs(t, evs, g, 2, 9)
	}
	expectSeqs(t, evs, groups[4], 2, 19)
	testwait.Eventually(t, "the cursor to advance", func() bool { return c.Cursor() == cl.index() })
	if c.Cursor() <= cursor {
		t.Fatalf("cursor did not advance past %d", cursor)
	}
	expectMarker(t, cl, c, bob, groups[4])
}

func TestLiveDuplicatesAreDropped(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	next(t, c, 1)

	cl.set(func(cl *testCluster) { cl.dupPush = true })
	for i := range 20 {
		cl.post(bob, g, fmt.Sprint(i))
	}
	expectSeqs(t, next(t, c, 20), g, 2, 21)
	cl.set(func(cl *testCluster) { cl.dupPush = false })
	expectMarker(t, cl, c, bob, g)
}

func TestGapIsFilledFromHistory(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	next(t, c, 1)
	syncs := cl.get(func(cl *testCluster) int { return cl.syncCalls })

	// Seqs 3-5 are never pushed: seq 6 arrives with a gap behind it.
	cl.set(func(cl *testCluster) {
		cl.skipPush = func(ev *wire.Event) bool { return ev.Seq >= 3 && ev.Seq <= 5 }
	})
	for i := range 6 {
		cl.post(bob, g, fmt.Sprint(i))
	}
	evs := next(t, c, 6)
	expectSeqs(t, evs, g, 2, 7)
	if evs[2].Body != "2" {
		t.Fatalf("filled event has body %q", evs[2].Body)
	}
	if h := cl.get(func(cl *testCluster) int { return cl.historyCalls }); h == 0 {
		t.Fatal("the gap was not filled through history")
	}
	if s := cl.get(func(cl *testCluster) int { return cl.syncCalls }); s != syncs {
		t.Fatalf("the gap fill ran a sync (%d → %d), want history only", syncs, s)
	}
	cl.set(func(cl *testCluster) { cl.skipPush = nil })
	expectMarker(t, cl, c, bob, g)
}

func TestFullEventBufferBlocksOnlyTheDispatcher(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	cfg := testConfig(tok, cl.nodes[0].url)
	cfg.EventBuffer = 4
	c := dial(t, cfg)

	// Nobody drains Events while 60 events arrive: the channel and the live
	// queue overflow.
	for i := range 60 {
		cl.post(bob, g, fmt.Sprint(i))
	}
	testwait.Eventually(t, "a full event buffer", func() bool { return len(c.Events()) == cap(c.Events()) })
	// Requests still flow: the reader never waits on the app.
	ctx := testCtx(t)
	for range 10 {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing was lost or repeated.
	expectSeqs(t, next(t, c, 61), g, 1, 61)
	expectMarker(t, cl, c, bob, g)
}

func TestResumeFromCursor(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	cl.post(bob, g, "seen")
	c := dial(t, testConfig(tok, cl.nodes[0].url))
	next(t, c, 2)
	cursor := c.Cursor()
	_ = c.Close()
	if _, open := <-c.Events(); open {
		t.Fatal("Events still open after Close")
	}
	if err := c.Ping(testCtx(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close: %v", err)
	}

	cl.post(bob, g, "new 1")
	cl.post(bob, g, "new 2")
	cfg := testConfig(tok, cl.nodes[0].url)
	cfg.Cursor = cursor
	c2 := dial(t, cfg)
	// Only what came after the cursor, and the first of it is the baseline.
	expectSeqs(t, next(t, c2, 2), g, 3, 4)
	expectMarker(t, cl, c2, bob, g)
}

func TestUnauthorized(t *testing.T) {
	cl := newCluster(t, 2)
	_, tok := cl.addUser("alice")
	ctx := testCtx(t)
	_, err := Dial(ctx, testConfig("wrong", cl.nodes[0].url, cl.nodes[1].url))
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Dial: %v", err)
	}
	if a, b := cl.nodes[0].upgrades.Load(), cl.nodes[1].upgrades.Load(); a != 1 || b != 0 {
		t.Fatalf("handshakes %d and %d, want 1 and 0: a refused token is not retried", a, b)
	}

	// A token revoked while connected ends the client at the next reconnect.
	c := dial(t, testConfig(tok, cl.nodes[0].url, cl.nodes[1].url))
	cl.revoke(tok)
	cl.nodes[0].dropConns()
	testwait.Eventually(t, "the client to end", func() bool { return errors.Is(c.State().Err, ErrUnauthorized) })
	if _, open := <-c.Events(); open {
		t.Fatal("Events still open")
	}
	if err := c.Ping(ctx); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Ping: %v", err)
	}
}

func TestHungNodeIsDetectedByMissingPings(t *testing.T) {
	cl := newCluster(t, 2)
	n1, n2 := cl.nodes[0], cl.nodes[1]
	n1.pingMS = 50
	n1.startPings()
	_, tok := cl.addUser("alice")
	c := dial(t, testConfig(tok, n1.url, n2.url))

	// n1 keeps the socket open but stops answering and pinging.
	n1.muted.Store(true)
	testwait.Eventually(t, "failover away from the hung node", func() bool { return c.State().URL == n2.url })
	if err := c.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestRequestFailsFastWhenConnectionDrops(t *testing.T) {
	cl := newCluster(t, 1)
	_, tok := cl.addUser("alice")
	n := cl.nodes[0]
	c := dial(t, testConfig(tok, n.url))

	n.muted.Store(true) // the request will never be answered
	done := make(chan error, 1)
	go func() { done <- c.Ping(context.Background()) }()
	testwait.Eventually(t, "the request to be in flight", func() bool { return n.ignored.Load() == 1 })
	n.dropConns()
	if err := <-done; !errors.Is(err, ErrDisconnected) || !Retryable(err) {
		t.Fatalf("in-flight request: %v, want ErrDisconnected", err)
	}
	n.muted.Store(false)
	testwait.Eventually(t, "reconnection", func() bool { return c.State().Connected })

	// Close fails in-flight requests with ErrClosed.
	n.muted.Store(true)
	go func() { done <- c.Ping(context.Background()) }()
	testwait.Eventually(t, "the request to be in flight", func() bool { return n.ignored.Load() == 2 })
	_ = c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("request at Close: %v", err)
	}
}

func TestDialFailsWhenNoNodeAnswers(t *testing.T) {
	cl := newCluster(t, 2)
	_, tok := cl.addUser("alice")
	cl.nodes[0].kill()
	cl.nodes[1].kill()
	_, err := Dial(testCtx(t), testConfig(tok, cl.nodes[0].url, cl.nodes[1].url))
	if err == nil || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Dial: %v", err)
	}
}

func TestNewConversationWhileDisconnectedIsComplete(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	n := cl.nodes[0]
	c := dial(t, testConfig(tok, n.url))

	n.refuse.Store(true)
	n.dropConns()
	testwait.Eventually(t, "the disconnection", func() bool { return !c.State().Connected })
	// A conversation the client has never seen gets events while it is away,
	// and one more is pushed live the instant it reconnects, before its sync:
	// that live event must not become the baseline that hides the others.
	g := cl.group(bob, "new", alice)
	for i := range 3 {
		cl.post(bob, g, fmt.Sprint(i))
	}
	cl.set(func(cl *testCluster) { cl.afterHello = func() { cl.post(bob, g, "right after hello") } })
	n.refuse.Store(false)

	expectSeqs(t, next(t, c, 5), g, 1, 5)
	expectMarker(t, cl, c, bob, g)
}

// TestBusyHoldsTheClientsWrites: a send refused busy with retry_ms holds
// the client's other writes for that wait: none reaches the server before
// it has passed, reads go on meanwhile, and the held writes then arrive in
// the order they were issued, each acknowledged once.
func TestBusyHoldsTheClientsWrites(t *testing.T) {
	cl := newCluster(t, 1)
	alice, tok := cl.addUser("alice")
	bob, _ := cl.addUser("bob")
	g := cl.group(bob, "g", alice)
	c := dial(t, testConfig(tok, cl.nodes[0].url))

	const retry = 300 * time.Millisecond
	cl.set(func(cl *testCluster) {
		cl.failSend["first"] = wire.CodeBusy
		cl.failRetryMS = retry.Milliseconds()
	})
	refused := make(chan time.Time, 1)
	c.Go(&wire.Request{Type: wire.TypeSend, Conv: g, ClientMsgID: "first", Body: "x"}, func(_ *wire.Reply, err error) {
		if RetryAfter(err) != retry {
			t.Errorf("first send: %v, want busy with retry_ms", err)
		}
		refused <- time.Now()
	})
	ctx := testCtx(t)
	var at time.Time
	select {
	case at = <-refused:
	case <-ctx.Done():
		t.Fatal("no reply to the first send")
	}
	acks := make(chan string, 3)
	for _, cmid := range []string{"h1", "h2", "h3"} {
		c.Go(&wire.Request{Type: wire.TypeSend, Conv: g, ClientMsgID: cmid, Body: "x"}, func(rep *wire.Reply, err error) {
			if err != nil {
				t.Errorf("held send %s: %v", cmid, err)
			}
			acks <- cmid
		})
	}
	if _, err := c.Request(ctx, &wire.Request{Type: wire.TypeConvList}); err != nil {
		t.Fatalf("a read while writes are held: %v", err)
	}
	for i := range 3 {
		select {
		case <-acks:
		case <-ctx.Done():
			t.Fatalf("%d of the 3 held sends acknowledged", i)
		}
	}
	if waited := time.Since(at); waited < retry {
		t.Fatalf("held sends acknowledged %v after the refusal, before retry_ms %v", waited, retry)
	}
	var order []string
	cl.set(func(cl *testCluster) { order = append(order, cl.sendOrder...) })
	if want := []string{"first", "h1", "h2", "h3"}; fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("sends reached the server as %v, want %v", order, want)
	}
}
