package faults

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"parley/client"
	"parley/internal/nodeproc"
	"parley/internal/testwait"
	"parley/wire"
)

// addEdge starts an edge process (parley -edge) behind its own linkProxy,
// joins it with the admin API (join with edge, sent to a voter), waits
// until it is ready, and appends it to c.nodes.
func (c *cluster) addEdge(t testing.TB, name, region string) *daemon {
	t.Helper()
	proxy := newLinkProxy(t)
	n := nodeproc.Start(t, nodeproc.Options{
		Bin: parleyBin, Dir: filepath.Join(c.root, name), Name: name,
		Args: append([]string{"-id", name, "-advertise", proxy.addr(), "-edge", "-region", region,
			"-admin-token-file", c.tokenFile, "-cluster-key-file", c.keyFile,
			"-trailing-logs", "64", "-snapshot-threshold", "256"}, c.extra...),
		NotReady: true, // it waits for the join
	})
	proxy.setTarget(n.RaftBind)
	d := &daemon{Node: n, name: name, proxy: proxy}
	waitHealthy(t, d)
	j := wire.ClusterJoin{ClusterServer: wire.ClusterServer{ID: name, Addr: proxy.addr()}, Edge: true}
	testwait.Eventually(t, name+" to join as an edge", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := (&clientAdmin{c}).join(ctx, j)
		if err != nil {
			t.Logf("join %s: %v", name, err)
		}
		return err == nil
	}, testwait.Limit(90*time.Second))
	if err := d.WaitReady(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	c.nodes = append(c.nodes, d)
	return d
}

// clientAdmin joins through the first voter, with a client timeout long
// enough for the join's wait.
type clientAdmin struct{ c *cluster }

func (a *clientAdmin) join(ctx context.Context, j wire.ClusterJoin) error {
	adm := a.c.admin(a.c.nodes[0])
	adm.HTTP.Timeout = 40 * time.Second
	return adm.Join(ctx, j)
}

// TestEdgeFaults: three voter processes and two edge processes. Clients on
// the edges send and receive (their writes are forwarded to the leader,
// their deliveries come from the edge's own replica); presence of a user
// on an edge is seen from a voter; status shows the edges with their lag.
// Then, under continuous traffic:
//  1. kill -9 an edge: its clients resume on another node, and their sends
//     are acknowledged while it is down;
//  2. restart it: it catches up;
//  3. wipe the other edge: it catches up by snapshot when it restarts;
//  4. cut an edge off: reads and presence go on there, writes are refused
//     (unavailable), and it catches up once healed.
//
// At the end the checker reads every replica, edges included: nothing
// acknowledged lost or stored twice, every replica identical, every client
// saw everything.
func TestEdgeFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs five node processes for about a minute")
	}
	c := startCluster(t)
	e1 := c.addEdge(t, "e1", "eu")
	e2 := c.addEdge(t, "e2", "us")
	e1Idx, e2Idx := indexOf(c.nodes, e1), indexOf(c.nodes, e2)

	// Status, asked on a voter, shows both edges, caught up.
	testwait.Eventually(t, "the edges in the status", func() bool {
		st, err := c.status(t, c.nodes[0])
		if err != nil || st.Warning != "" {
			return false
		}
		edges := 0
		for _, m := range st.Members {
			if m.Edge && m.Suffrage == "Nonvoter" && m.Lag >= 0 && m.Lag < 10 &&
				(m.ID == "e1" && m.Region == "eu" || m.ID == "e2" && m.Region == "us") {
				edges++
			}
		}
		return edges == 2
	})

	// A user registered through a voter logs in on an edge at once: the
	// edge, not knowing the name yet, asks the leader for a read index and
	// waits for its replica to get there.
	if code, err := postJSON(c.nodes[0].HTTPAddr, "/v1/register", map[string]string{"username": "fresh", "password": "pw-fresh"}, nil); err != nil || code != http.StatusCreated {
		t.Fatalf("register on n1: HTTP %d %v", code, err)
	}
	if code, err := postJSON(e2.HTTPAddr, "/v1/login", map[string]string{"username": "fresh", "password": "pw-fresh", "device": "d"}, nil); err != nil || code != http.StatusOK {
		t.Fatalf("login on e2 right after the registration on n1: HTTP %d %v", code, err)
	}

	// Eight users: two homed on each edge, one on each voter, plus one more
	// on e1. Clients list every node, their home first.
	homes := []int{e1Idx, e1Idx, e1Idx, e2Idx, e2Idx, 0, 1, 2}
	var users []*user
	for i, h := range homes {
		users = append(users, c.newUser(t, fmt.Sprintf("user%d", i), h))
	}
	ctx := ctxFor(t, 5*time.Minute)
	var ids []uint64
	for _, u := range users {
		ids = append(ids, u.id)
	}
	group, err := users[0].cl.CreateGroup(ctx, "all", ids[1:])
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		u.convs = append(u.convs, group.ID)
	}
	// 1:1s across the edges, and between an edge and a voter.
	for _, p := range [][2]int{{0, 3}, {1, 5}, {4, 6}, {2, 7}} {
		dm, err := users[p[0]].cl.OpenDirect(ctx, users[p[1]].id)
		if err != nil {
			t.Fatal(err)
		}
		users[p[0]].convs = append(users[p[0]].convs, dm.ID)
		users[p[1]].convs = append(users[p[1]].convs, dm.ID)
	}

	// Presence: a user connected to e2 is online as seen from a voter's
	// client (the edges take part in the peer channel).
	watcher := pinned(t, c.nodes[0], users[5].token)
	testwait.Eventually(t, "presence of a user on an edge, seen on a voter", func() bool {
		ps, err := watcher.WatchPresence(ctxFor(t, 10*time.Second), []uint64{users[3].id})
		return err == nil && len(ps) == 1 && ps[0].Online
	})

	tr, stopTraffic := startTraffic(t, users)
	defer stopTraffic()
	tr.waitProgress(t, "warm-up traffic from the edges' clients", 60, e1Idx, e2Idx)
	tr.waitProgress(t, "warm-up traffic from the voters' clients", 30, 0, 1, 2)

	// 1. kill -9 an edge under load: its three clients move on.
	t.Logf("fault 1: kill -9 the edge e1")
	e1.Kill9()
	tr.waitProgress(t, "acks from the dead edge's clients, resumed elsewhere", 30, e1Idx)
	tr.waitProgress(t, "acks from everyone else", 60, e2Idx, 0, 1, 2)

	// 2. restart it: it catches up.
	t.Logf("fault 2: restart e1")
	e1.restart(t)
	c.converged(t, 60*time.Second)
	tr.waitProgress(t, "traffic after the restart", 60, e1Idx, e2Idx, 0, 1, 2)

	// 3. wipe the other edge: it catches up by snapshot (trailing logs 64).
	lead := c.leader(t, c.nodes...)
	if _, err := c.admin(lead).Snapshot(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatalf("snapshot on the leader: %v", err)
	}
	t.Logf("fault 3: wipe the edge e2")
	e2.Kill9()
	if err := os.RemoveAll(e2.Dir()); err != nil {
		t.Fatal(err)
	}
	tr.waitProgress(t, "traffic while an edge is wiped", 100, e1Idx, e2Idx, 0, 1, 2)
	// A wiped edge has lost its role with its data: it starts with -edge
	// again (its flags), and is still in the configuration as a nonvoter.
	e2.restart(t)
	testwait.Eventually(t, "e2 installed a snapshot", func() bool {
		st, err := c.status(t, e2)
		return err == nil && st.SnapshotIndex > 0 && st.AppliedIndex >= st.SnapshotIndex && st.Edge
	}, testwait.Limit(60*time.Second))
	c.converged(t, 60*time.Second)
	tr.waitProgress(t, "traffic after the rejoin", 60, e1Idx, e2Idx, 0, 1, 2)

	// 4. cut e1's region off: the leader can no longer reach it (its
	// inbound links are cut; a real WAN cut also stops what it sends,
	// which raftlog's BenchmarkEdgeWAN/cut_off covers). Its clients still
	// read and see presence from the edge; their writes are refused,
	// "unavailable" once the edge knows it has no leader; it catches up
	// when the link returns.
	reader := pinned(t, e1, users[0].token)
	local := pinned(t, e1, users[1].token)
	t.Logf("fault 4: cut the edge e1 off")
	e1.proxy.setCut(true)
	tr.waitProgress(t, "acks elsewhere while e1 is cut off", 60, e2Idx, 0, 1, 2)
	if evs := readHistory(t, reader, group.ID); len(evs) == 0 {
		t.Fatal("history on the cut-off edge: empty")
	}
	testwait.Eventually(t, "presence on the cut-off edge", func() bool {
		ps, err := local.WatchPresence(ctxFor(t, 10*time.Second), []uint64{users[0].id})
		return err == nil && len(ps) == 1 && ps[0].Online
	})
	var codes []wire.Code
	testwait.Eventually(t, "an unavailable error from the cut-off edge", func() bool {
		rctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		cmid := fmt.Sprintf("cut-%d", len(codes))
		_, err := reader.Request(rctx, &wire.Request{Type: wire.TypeSend, Conv: group.ID, ClientMsgID: cmid, Body: "cut " + cmid})
		if errors.Is(err, context.DeadlineExceeded) && rctx.Err() != nil {
			return false // no answer in time: not an ack either; ask again
		}
		var we *wire.Error
		if !errors.As(err, &we) {
			t.Fatalf("write on the cut-off edge: want a refusal, got %v", err)
		}
		if we.Code != wire.CodeUnavailable && we.Code != wire.CodeTimeout {
			t.Fatalf("write on the cut-off edge: code %s (%v), want unavailable or timeout", we.Code, err)
		}
		codes = append(codes, we.Code)
		return we.Code == wire.CodeUnavailable
	})
	t.Logf("cut-off writes answered %v", codes)
	e1.proxy.setCut(false)
	cmid := fmt.Sprintf("cut-%d", len(codes)-1)
	rep, err := reader.SendWithID(ctxFor(t, 60*time.Second), group.ID, cmid, "cut "+cmid)
	if err != nil {
		t.Fatalf("write on the edge after healing: %v", err)
	}
	tr.mu.Lock()
	tr.acks = append(tr.acks, Ack{Conv: group.ID, Seq: rep.Seq, CMID: cmid, Body: "cut " + cmid})
	tr.mu.Unlock()
	c.converged(t, 60*time.Second)

	stopTraffic()
	c.converged(t, 60*time.Second)
	// Still two edges, never promoted, and three voters.
	st, err := c.status(t, c.nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, m := range st.Members {
		switch {
		case m.Suffrage == "Voter":
			voters++
		case m.ID == "e1" || m.ID == "e2":
		default:
			t.Errorf("unexpected member %+v", m)
		}
		if (m.ID == "e1" || m.ID == "e2") && (m.Suffrage != "Nonvoter" || !m.Edge) {
			t.Errorf("edge %s is %s (edge %v)", m.ID, m.Suffrage, m.Edge)
		}
	}
	if voters != 3 {
		t.Errorf("%d voters, want 3", voters)
	}
	checkHistory(t, c, users, tr)
}

// checkHistory reads every replica and what every client saw, and runs the
// checker.
func checkHistory(t *testing.T, c *cluster, users []*user, tr *traffic) {
	t.Helper()
	rec := Record{
		Acks:     tr.acks,
		Replicas: make(map[string]map[uint64][]Stored),
		Seen:     make(map[string]map[uint64][]uint64),
		Deduped:  true,
	}
	convMember := make(map[uint64]*user)
	for _, u := range users {
		for _, conv := range u.convs {
			convMember[conv] = u
		}
	}
	for _, d := range c.nodes {
		rec.Replicas[d.name] = make(map[uint64][]Stored)
		for conv, u := range convMember {
			rec.Replicas[d.name][conv] = readHistory(t, pinned(t, d, u.token), conv)
		}
	}
	ref := rec.Replicas[c.nodes[0].name]
	for _, u := range users {
		for _, conv := range u.convs {
			last := uint64(len(ref[conv]))
			testwait.Eventually(t, fmt.Sprintf("%s to see conv %d up to %d", u.name, conv, last), func() bool {
				return u.maxSeen(conv) >= last
			})
		}
		u.cl.Close()
		u.eventsWG.Wait()
		rec.Seen[u.name] = u.seen
	}
	violations := Check(rec)
	for _, v := range violations {
		t.Error(v)
	}
	t.Logf("checked %d acknowledged sends over %d conversations on %d replicas: %d violations",
		len(rec.Acks), len(convMember), len(rec.Replicas), len(violations))
}

// BenchmarkEdgeFailover measures, on three voter processes and two edges
// (fsync on), the time from kill -9 of an edge to the first write
// acknowledged to a client that was connected to it: the client lists the
// edge first, then the other edge and the voters (as a region's clients
// would), reconnects by itself (backoff up to 300 ms) and resumes by sync;
// it sends a probe every 10 ms from the moment of the kill (each attempt
// bounded to 250 ms). Each iteration restarts the edge afterwards.
//
//	go test -run '^$' -bench EdgeFailover -benchtime 5x ./faults
func BenchmarkEdgeFailover(b *testing.B) {
	c := startCluster(b)
	e1 := c.addEdge(b, "e1", "eu")
	e2 := c.addEdge(b, "e2", "eu")
	u := c.newUser(b, "prober", indexOf(c.nodes, e1))
	peer := c.newUser(b, "peer01", 0)
	dm, err := u.cl.OpenDirect(ctxFor(b, 30*time.Second), peer.id)
	if err != nil {
		b.Fatal(err)
	}
	urls := []string{e1.WS, e2.WS, c.nodes[0].WS, c.nodes[1].WS, c.nodes[2].WS}
	var samples []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		c.converged(b, 60*time.Second)
		cl, err := client.Dial(ctxFor(b, 30*time.Second), client.Config{URLs: urls, Token: u.token, ReconnectMax: 300 * time.Millisecond, RequestTimeout: 3 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := cl.SendWithID(ctxFor(b, 30*time.Second), dm.ID, fmt.Sprintf("before-%d", i), "before"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		t0 := time.Now()
		e1.Kill9()
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			cmid := fmt.Sprintf("edge-failover-%d-%d", i, attempt)
			_, err := cl.Request(ctx, &wire.Request{Type: wire.TypeSend, Conv: dm.ID, ClientMsgID: cmid, Body: cmid})
			cancel()
			if err == nil {
				break
			}
			if time.Since(t0) > time.Minute {
				b.Fatalf("no ack within a minute of killing e1: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		samples = append(samples, time.Since(t0))

		b.StopTimer()
		cl.Close()
		e1.restart(b)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(samples)
	b.ReportMetric(float64(samples[len(samples)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Milliseconds()), "max-ms")
	b.Logf("edge failover times: %v", samples)
}
