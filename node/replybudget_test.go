package node_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/vmihailenco/msgpack/v5"

	"parley/internal/testwait"
	"parley/node"
	"parley/wire"
)

// The security finding: a history page or a sync since 0 over a few
// conversations of 16 KiB messages used to be larger than the 1 MiB send
// queue, so the reader was closed as a slow consumer every time and could
// never catch up; anyone who could add a victim to groups could do it.
// Pages are now bounded in bytes (hello's max_reply).

// ctxLimit bounds the waits for a condition (generous: -race on two cores).
const ctxLimit = 60 * time.Second

// dialRawHello is dialRaw, returning the hello as well.
func dialRawHello(t *testing.T, url, token string) (*rawConn, wire.Hello) {
	t.Helper()
	r := &rawConn{frames: make(chan []byte, 1024), closed: make(chan error, 1)}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	conn, _, err := gws.NewClient(r, &gws.ClientOption{Addr: url, RequestHeader: h, ReadMaxPayloadSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { conn.NetConn().Close() })
	var hello wire.Hello
	if err := wire.Unmarshal(r.next(t), &hello); err != nil || hello.Type != wire.TypeHello {
		t.Fatalf("first frame: %+v, %v", hello, err)
	}
	return r, hello
}

// call sends req and returns its reply and the reply frame's size, failing
// on an error reply.
func (r *rawConn) call(t *testing.T, req *wire.Request) (wire.Reply, int) {
	t.Helper()
	b, err := msgpack.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r.write(t, b)
	for {
		f := r.next(t)
		var rep wire.Reply
		if err := wire.Unmarshal(f, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Type != wire.TypeOK && rep.Type != wire.TypeError || rep.ID != req.ID {
			continue // an event
		}
		if rep.Type == wire.TypeError {
			t.Fatalf("%s: %s %s", req.Type, rep.Code, rep.Message)
		}
		return rep, len(f)
	}
}

// attackSetup makes the attacker add the victim to groups and post msgs
// messages of 16 KiB into each, and returns the groups.
func attackSetup(t *testing.T, n *node.Node, attacker, victim account, groups, msgs int) []uint64 {
	t.Helper()
	ctx := ctxT(t)
	ca := dial(t, []string{n.WSURL()}, login(t, n, attacker, "phone"), 0)
	big := strings.Repeat("x", wire.MaxBodyBytes)
	ids := make([]uint64, groups)
	for i := range ids {
		g, err := ca.CreateGroup(ctx, fmt.Sprintf("g%d", i), []uint64{victim.user})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = g.ID
	}
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for _, g := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range msgs {
				body := fmt.Sprintf("%d:", i) + big[len(fmt.Sprintf("%d:", i)):]
				if _, err := ca.Send(ctx, g, body); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

func TestVictimCatchesUpOnGroupsOfMaxSizeMessages(t *testing.T) {
	n := startNode(t, t.TempDir()) // the default 1 MiB send queue
	attacker, victim := register(t, n, "mallory"), register(t, n, "victim")
	const groups, msgs = 3, 50
	ids := attackSetup(t, n, attacker, victim, groups, msgs)

	r, hello := dialRawHello(t, n.WSURL(), login(t, n, victim, "laptop"))
	budget := hello.Limits.MaxReplyBytes
	if budget != wire.MaxReplyBytes || hello.Limits.Reads != wire.MaxReadsInFlight {
		t.Fatalf("hello limits %+v", hello.Limits)
	}
	got := map[[2]uint64]int{}
	id := uint64(0)
	frames := 0
	checkFrame := func(what string, size int) {
		t.Helper()
		frames++
		if size >= budget {
			t.Fatalf("%s: a reply frame of %d bytes, budget %d", what, size, budget)
		}
	}
	// sync since 0, paged, and each conversation's rest paged with history.
	var after, afterConv uint64
	for {
		id++
		rep, size := r.call(t, &wire.Request{Type: wire.TypeSync, ID: id, After: after, AfterConv: afterConv, Limit: wire.MaxSyncConvs})
		checkFrame("sync", size)
		for _, cs := range rep.Changes {
			if len(cs.Events) == 0 {
				t.Fatalf("conv %d: no events in its sync entry", cs.Info.ID)
			}
			for _, ev := range cs.Events {
				got[[2]uint64{cs.Info.ID, ev.Seq}]++
			}
			seq := cs.Events[len(cs.Events)-1].Seq
			for more := cs.More; more; {
				id++
				h, size := r.call(t, &wire.Request{Type: wire.TypeHistory, ID: id, Conv: cs.Info.ID, Dir: wire.DirAfter, Seq: seq, Limit: wire.MaxHistoryLimit})
				checkFrame("history", size)
				if len(h.Events) == 0 {
					t.Fatal("an empty history page with more")
				}
				for _, ev := range h.Events {
					got[[2]uint64{cs.Info.ID, ev.Seq}]++
				}
				seq, more = h.Events[len(h.Events)-1].Seq, h.More
			}
		}
		if !rep.More {
			break
		}
		after, afterConv = rep.Next, rep.NextConv
	}
	// Every event (the group's creation and its messages) exactly once.
	if len(got) != groups*(1+msgs) {
		t.Fatalf("%d distinct events, want %d", len(got), groups*(1+msgs))
	}
	for k, c := range got {
		if c != 1 {
			t.Fatalf("event %v received %d times", k, c)
		}
	}
	if frames < groups*(1+msgs)*wire.MaxBodyBytes/budget {
		t.Fatalf("only %d reply frames for %d bytes of messages", frames, groups*msgs*wire.MaxBodyBytes)
	}

	// History before the newest, paged back to the start, in the same bounds.
	for _, g := range ids {
		var anchor uint64
		seen := 0
		for more := true; more; {
			id++
			h, size := r.call(t, &wire.Request{Type: wire.TypeHistory, ID: id, Conv: g, Seq: anchor, Limit: wire.MaxHistoryLimit})
			checkFrame("history before", size)
			seen += len(h.Events)
			anchor, more = h.Events[len(h.Events)-1].Seq, h.More
		}
		if seen != 1+msgs {
			t.Fatalf("conv %d: %d events before, want %d", g, seen, 1+msgs)
		}
	}
	select {
	case err := <-r.closed:
		t.Fatalf("the victim's connection was closed: %v", err)
	default:
	}

	// The SDK catches up from 0 on one connection, each event once.
	c := dial(t, []string{n.WSURL()}, login(t, n, victim, "phone"), 0)
	evs := collect(t, c, "the catch-up", func(evs []wire.Event) bool { return len(evs) >= groups*(1+msgs) })
	checkOrder(t, evs)
	if len(messages(evs)) != groups*msgs {
		t.Fatalf("%d messages, want %d", len(messages(evs)), groups*msgs)
	}
	if st := c.State(); !st.Connected || st.Syncs != 1 {
		t.Fatalf("client state %+v: reconnected during the catch-up", st)
	}
	if v := metricValue(t, n, "parley_queue_overflows_total"); v != 0 {
		t.Fatalf("%v connections closed as slow consumers", v)
	}
}

// TestMaxSizeMessageAlwaysFitsAPage: with the smallest send queue allowed
// (64 KiB, a reply budget of 16 KiB: less than one 16 KiB message with its
// fields), a page still holds one message, and the reader is not closed.
func TestMaxSizeMessageAlwaysFitsAPage(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.SendQueueBytes = 64 << 10
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	ctx := ctxT(t)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	const msgs = 3
	for i := range msgs {
		if _, err := ca.Send(ctx, dm.ID, fmt.Sprint(i)+strings.Repeat("x", wire.MaxBodyBytes-1)); err != nil {
			t.Fatal(err)
		}
	}
	r, hello := dialRawHello(t, n.WSURL(), login(t, n, bob, "phone"))
	if hello.Limits.MaxReplyBytes != 16<<10 {
		t.Fatalf("max_reply %d, want a quarter of the queue", hello.Limits.MaxReplyBytes)
	}
	var seq uint64 = 1 // after the created event
	for i := range msgs {
		rep, size := r.call(t, &wire.Request{Type: wire.TypeHistory, ID: uint64(10 + i), Conv: dm.ID, Dir: wire.DirAfter, Seq: seq, Limit: wire.MaxHistoryLimit})
		if len(rep.Events) != 1 || rep.Events[0].Seq != seq+1 || len(rep.Events[0].Body) != wire.MaxBodyBytes {
			t.Fatalf("page %d: %d events", i, len(rep.Events))
		}
		if rep.More != (i < msgs-1) {
			t.Fatalf("page %d: more=%v", i, rep.More)
		}
		if size <= hello.Limits.MaxReplyBytes || size >= cfg.SendQueueBytes/2 {
			t.Fatalf("page %d: %d bytes", i, size)
		}
		seq++
	}
	rep, _ := r.call(t, &wire.Request{Type: wire.TypeSync, ID: 20})
	if len(rep.Changes) != 1 || len(rep.Changes[0].Events) != 1 || !rep.Changes[0].More || rep.More {
		t.Fatalf("sync: %d changes, more=%v", len(rep.Changes), rep.More)
	}
	// The SDK pages the same way.
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "tablet"), 0)
	evs := collect(t, cb, "the catch-up", func(evs []wire.Event) bool { return len(evs) >= 1+msgs })
	checkOrder(t, evs)
	select {
	case err := <-r.closed:
		t.Fatalf("closed: %v", err)
	default:
	}
}

// TestLoopingSyncDoesNotBlockOthers: connections that loop sync since 0 over
// large conversations, pipelining requests, get busy beyond their share of
// reads and never hold up another user's sends or reads.
func TestLoopingSyncDoesNotBlockOthers(t *testing.T) {
	n := startNode(t, t.TempDir())
	attacker, victim, friend := register(t, n, "mallory"), register(t, n, "victim"), register(t, n, "friend")
	attackSetup(t, n, attacker, attacker, 3, 20) // the attacker's own groups, 20 x 16 KiB each
	budget := wire.MaxReplyBytes

	const conns, burst = 4, 8
	stop := make(chan struct{})
	var cycles, busy, served atomic.Int64
	var wg sync.WaitGroup
	for i := range conns {
		r := dialRaw(t, n.WSURL(), login(t, n, attacker, fmt.Sprintf("bot%d", i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := uint64(0)
			for {
				select {
				case <-stop:
					return
				default:
				}
				for range burst {
					id++
					b, _ := msgpack.Marshal(&wire.Request{Type: wire.TypeSync, ID: id, Limit: wire.MaxSyncConvs})
					if err := r.conn.WriteMessage(gws.OpcodeBinary, b); err != nil {
						t.Error(err)
						return
					}
				}
				for range burst {
					var f []byte
					select {
					case f = <-r.frames:
					case err := <-r.closed:
						t.Errorf("an attacker connection was closed: %v", err)
						return
					}
					var rep wire.Reply
					if err := wire.Unmarshal(f, &rep); err != nil {
						t.Error(err)
						return
					}
					switch {
					case rep.Type == wire.TypeOK:
						served.Add(1)
						if len(f) >= budget {
							t.Errorf("a sync reply of %d bytes", len(f))
						}
					case rep.Code == wire.CodeBusy:
						busy.Add(1)
					default:
						t.Errorf("reply %s %s", rep.Code, rep.Message)
					}
				}
				cycles.Add(1)
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	testwait.Eventually(t, "the attack to run", func() bool { return cycles.Load() >= conns },
		testwait.Limit(ctxLimit), testwait.Detail(func() string { return fmt.Sprintf("%d cycles", cycles.Load()) }))

	// Meanwhile the victim sends and reads: every send is acked, and a read
	// is served, not refused (the victim's share is its own).
	ctx := ctxT(t)
	cv := dial(t, []string{n.WSURL()}, login(t, n, victim, "phone"), 0)
	dm, err := cv.OpenDirect(ctx, friend.user)
	if err != nil {
		t.Fatal(err)
	}
	const sends = 20
	for i := range sends {
		ack, err := cv.Send(ctx, dm.ID, fmt.Sprint("hello ", i))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if ack.Seq != uint64(i+2) {
			t.Fatalf("send %d acked with seq %d", i, ack.Seq)
		}
		rep, err := cv.Request(ctx, &wire.Request{Type: wire.TypeHistory, Conv: dm.ID, Limit: 1})
		if err != nil {
			t.Fatalf("history %d: %v", i, err)
		}
		if len(rep.Events) != 1 || rep.Events[0].Seq != ack.Seq {
			t.Fatalf("history %d: %+v", i, rep.Events)
		}
	}
	during := cycles.Load()
	testwait.Eventually(t, "the attack to go on after the victim's sends", func() bool { return cycles.Load() > during },
		testwait.Limit(ctxLimit), testwait.Detail(func() string { return fmt.Sprintf("%d cycles", cycles.Load()) }))
	if served.Load() == 0 {
		t.Fatal("no sync of the attacker was served")
	}
	t.Logf("attacker: %d cycles, %d syncs served, %d busy", cycles.Load(), served.Load(), busy.Load())
	if st := cv.State(); !st.Connected || st.Syncs != 1 {
		t.Fatalf("victim state %+v", st)
	}
}
