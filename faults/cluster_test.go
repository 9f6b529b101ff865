package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"parley/client"
	"parley/internal/nodeproc"
	"parley/internal/testwait"
	"parley/wire"
)

// parleyBin is the node binary, built once by TestMain: the faults need real
// processes, to kill -9 them.
var parleyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	parleyBin = filepath.Join(dir, "parley")
	if err := nodeproc.BuildTo(parleyBin); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one node process. Peers reach its internal port through proxy,
// which the test can cut; the node advertises the proxy's address.
type daemon struct {
	*nodeproc.Node
	name  string
	proxy *linkProxy
}

// restart starts d again on its addresses and data (or on its addresses
// alone, if the test removed d.Dir()) once it was killed, and waits until
// it serves HTTP. A member is not ready until it has caught up with a
// leader, so readiness is not waited for.
func (d *daemon) restart(t testing.TB) {
	t.Helper()
	if err := d.Restart(); err != nil {
		t.Fatalf("%s: %v", d.name, err)
	}
	waitHealthy(t, d)
}

func waitHealthy(t testing.TB, d *daemon) {
	t.Helper()
	testwait.Eventually(t, d.name+" healthy", func() bool { return httpStatus(d.HTTPAddr, "/healthz") == http.StatusOK })
}

func httpStatus(addr, path string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// cluster is three daemons founded with the admin API.
type cluster struct {
	nodes []*daemon
	token string

	// What startCluster gave the voters, for the edges (edge_test.go).
	root, tokenFile, keyFile string
	extra                    []string
}

// startCluster starts three parleyBin processes on ports the kernel chose,
// each behind a linkProxy, with the flags extra, founds the cluster through
// the first, and waits until all three are ready.
func startCluster(t testing.TB, extra ...string) *cluster {
	t.Helper()
	root := t.TempDir()
	c := &cluster{token: "faults-admin-token-0123456789abcdef", root: root, extra: extra}
	tokenFile := filepath.Join(root, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(c.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(root, "cluster.key")
	if err := os.WriteFile(keyFile, []byte("faults-cluster-key-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.tokenFile, c.keyFile = tokenFile, keyFile
	for i := range 3 {
		name := fmt.Sprintf("n%d", i+1)
		proxy := newLinkProxy(t)
		n := nodeproc.Start(t, nodeproc.Options{
			Bin: parleyBin, Dir: filepath.Join(root, name), Name: name,
			Args: append([]string{"-id", name, "-advertise", proxy.addr(), "-bootstrap=false",
				"-admin-token-file", tokenFile, "-cluster-key-file", keyFile,
				"-trailing-logs", "64", "-snapshot-threshold", "256"}, extra...),
			NotReady: true, // a member waits for the cluster's init
		})
		proxy.setTarget(n.RaftBind)
		c.nodes = append(c.nodes, &daemon{Node: n, name: name, proxy: proxy})
	}
	// Kill rather than stop at the end: nothing is checked after the test,
	// and a cluster losing its members one by one is slow to shut down.
	t.Cleanup(func() {
		for _, d := range c.nodes {
			d.Kill9()
		}
	})
	for _, d := range c.nodes {
		waitHealthy(t, d)
	}
	var servers []wire.ClusterServer
	for _, d := range c.nodes {
		servers = append(servers, wire.ClusterServer{ID: d.name, Addr: d.proxy.addr()})
	}
	if err := c.admin(c.nodes[0]).Init(ctxFor(t, 30*time.Second), servers); err != nil {
		t.Fatalf("cluster init: %v", err)
	}
	for _, d := range c.nodes {
		if err := d.WaitReady(); err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
	}
	return c
}

func (c *cluster) admin(d *daemon) *client.Admin {
	return &client.Admin{Base: d.HTTP, Token: c.token, HTTP: &http.Client{Timeout: 3 * time.Second}}
}

func (c *cluster) status(t testing.TB, d *daemon) (*wire.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.admin(d).Status(ctx)
}

// leader returns the daemon that a running node names as leader, polling
// until one does.
func (c *cluster) leader(t testing.TB, among ...*daemon) *daemon {
	t.Helper()
	var found *daemon
	testwait.Eventually(t, "a leader", func() bool {
		for _, d := range among {
			st, err := c.status(t, d)
			if err != nil || st.State != "Leader" {
				continue
			}
			found = d
			return true
		}
		return false
	})
	return found
}

// converged waits until every node has applied what the leader had
// committed when it was called (so, once traffic stops, until all replicas
// are equal), and returns that index.
func (c *cluster) converged(t testing.TB, limit time.Duration) uint64 {
	t.Helper()
	lead := c.leader(t, c.nodes...)
	var commit uint64
	testwait.Eventually(t, "the leader's commit index", func() bool {
		st, err := c.status(t, lead)
		if err != nil {
			return false
		}
		commit = st.CommitIndex
		return true
	}, testwait.Limit(limit))
	for _, d := range c.nodes {
		testwait.Eventually(t, fmt.Sprintf("%s to apply index %d", d.name, commit), func() bool {
			st, err := c.status(t, d)
			return err == nil && st.AppliedIndex >= commit
		}, testwait.Limit(limit))
	}
	return commit
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// postJSON posts to a node's accounts API and decodes the answer.
func postJSON(addr, path string, in, out any) (int, error) {
	b, _ := json.Marshal(in)
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Post("http://"+addr+path, "application/json", bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, err
		}
	}
	return resp.StatusCode, nil
}

// user is an account, its home node and its client.
type user struct {
	id       uint64
	name     string
	token    string
	home     int
	cl       *client.Client
	convs    []uint64
	mu       sync.Mutex          // guards seen
	seen     map[uint64][]uint64 // conv -> seqs received, in order
	eventsWG sync.WaitGroup
}

func (u *user) record() {
	defer u.eventsWG.Done()
	for ev := range u.cl.Events() {
		u.mu.Lock()
		u.seen[ev.Conv] = append(u.seen[ev.Conv], ev.Seq)
		u.mu.Unlock()
	}
}

// maxSeen is the highest seq u received in conv.
func (u *user) maxSeen(conv uint64) uint64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	var m uint64
	for _, s := range u.seen[conv] {
		m = max(m, s)
	}
	return m
}

func (c *cluster) newUser(t testing.TB, name string, home int) *user {
	t.Helper()
	u := &user{name: name, home: home, seen: make(map[uint64][]uint64)}
	d := c.nodes[home]
	var reg struct {
		UserID uint64 `json:"user_id"`
	}
	if code, err := postJSON(d.HTTPAddr, "/v1/register", map[string]string{"username": name, "password": "pw-" + name}, &reg); err != nil || code != http.StatusCreated {
		t.Fatalf("register %s on %s: HTTP %d %v", name, d.name, code, err)
	}
	u.id = reg.UserID
	var login struct {
		Token string `json:"token"`
	}
	// The account is created through the log; the home node answers once it
	// applied it, so login there works at once.
	if code, err := postJSON(d.HTTPAddr, "/v1/login", map[string]string{"username": name, "password": "pw-" + name, "device": "dev-" + name}, &login); err != nil || code != http.StatusOK {
		t.Fatalf("login %s on %s: HTTP %d %v", name, d.name, code, err)
	}
	u.token = login.Token
	// The client starts at its home node and fails over to the others.
	var urls []string
	for i := range c.nodes {
		urls = append(urls, c.nodes[(home+i)%len(c.nodes)].WS)
	}
	cl, err := client.Dial(ctxFor(t, 30*time.Second), client.Config{URLs: urls, Token: u.token, ReconnectMax: 300 * time.Millisecond, RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("dial %s: %v", name, err)
	}
	u.cl = cl
	u.eventsWG.Add(1)
	go u.record()
	return u
}

// pinned dials one node only, as u.
func pinned(t testing.TB, d *daemon, token string) *client.Client {
	t.Helper()
	var cl *client.Client
	// A node that just restarted may answer 503 (retry) while it catches
	// up; only a refusal of the token is final.
	testwait.Eventually(t, "a connection to "+d.name, func() bool {
		var err error
		cl, err = client.Dial(ctxFor(t, 30*time.Second), client.Config{URLs: []string{d.WS}, Token: token, RequestTimeout: 3 * time.Second, ReconnectMax: 300 * time.Millisecond})
		if errors.Is(err, client.ErrUnauthorized) {
			t.Fatalf("dial %s: %v", d.name, err)
		}
		return err == nil
	}, testwait.Limit(60*time.Second))
	t.Cleanup(func() { cl.Close() })
	return cl
}

// traffic is the senders: every user sends to its conversations in turn,
// and every acknowledged send is recorded.
type traffic struct {
	mu     sync.Mutex // guards acks, byHome
	acks   []Ack
	byHome map[int]int // acks per home node of the sender
	stop   chan struct{}
	wg     sync.WaitGroup
}

// startTraffic starts every user's send loop; stop (safe to call twice)
// ends them and waits.
func startTraffic(t testing.TB, users []*user) (tr *traffic, stop func()) {
	tr = &traffic{byHome: make(map[int]int), stop: make(chan struct{})}
	for _, u := range users {
		tr.wg.Add(1)
		go tr.run(t, u)
	}
	var once sync.Once
	return tr, func() {
		once.Do(func() {
			close(tr.stop)
			tr.wg.Wait()
		})
	}
}

func (tr *traffic) acked(home int) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.byHome[home]
}

func (tr *traffic) run(t testing.TB, u *user) {
	defer tr.wg.Done()
	for i := 0; ; i++ {
		select {
		case <-tr.stop:
			return
		case <-time.After(15 * time.Millisecond):
		}
		conv := u.convs[i%len(u.convs)]
		cmid := fmt.Sprintf("%s-%d", u.name, i)
		body := "m " + cmid
		// A send is retried with its cmid until acknowledged or 60s pass,
		// through node deaths and elections.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		rep, err := u.cl.SendWithID(ctx, conv, cmid, body)
		cancel()
		if err != nil {
			// Unacknowledged: it may or may not be stored; the checker
			// only demands it is not stored twice.
			t.Logf("send %s not acknowledged: %v", cmid, err)
			continue
		}
		tr.mu.Lock()
		tr.acks = append(tr.acks, Ack{Conv: conv, Seq: rep.Seq, CMID: cmid, Body: body})
		tr.byHome[u.home]++
		tr.mu.Unlock()
	}
}

// waitProgress waits until the senders homed on one of homes got n more
// acks than they had.
func (tr *traffic) waitProgress(t testing.TB, what string, n int, homes ...int) {
	t.Helper()
	count := func() int {
		s := 0
		for _, h := range homes {
			s += tr.acked(h)
		}
		return s
	}
	start := count()
	testwait.Eventually(t, what, func() bool { return count() >= start+n }, testwait.Limit(60*time.Second))
}

// TestClusterFaults runs continuous 1:1 and group traffic from clients spread
// over three node processes through four faults, then checks every
// guarantee on the recorded history:
//  1. kill -9 the leader: a new one is elected, its clients move on;
//  2. restart it: it catches up;
//  3. cut a follower off (its peers cannot reach it): the majority goes on,
//     a write on the isolated node gets "unavailable", never an ack, and it
//     catches up when healed;
//  4. wipe a follower's data: it rejoins by snapshot.
func TestClusterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three node processes for about a minute")
	}
	c := startCluster(t)

	// Six users, two per node; a group of all and four 1:1s, two of which
	// cross nodes.
	var users []*user
	for i := range 6 {
		users = append(users, c.newUser(t, fmt.Sprintf("user%d", i), i%3))
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
	for _, p := range [][2]int{{0, 3}, {1, 4}, {2, 5}, {0, 1}} {
		dm, err := users[p[0]].cl.OpenDirect(ctx, users[p[1]].id)
		if err != nil {
			t.Fatal(err)
		}
		users[p[0]].convs = append(users[p[0]].convs, dm.ID)
		users[p[1]].convs = append(users[p[1]].convs, dm.ID)
	}

	tr, stopTraffic := startTraffic(t, users)
	defer stopTraffic()
	tr.waitProgress(t, "warm-up traffic", 100, 0, 1, 2)

	// 1. kill -9 the leader.
	old := c.leader(t, c.nodes...)
	oldIdx := indexOf(c.nodes, old)
	t.Logf("fault 1: kill -9 the leader %s", old.name)
	old.Kill9()
	others := without(c.nodes, old)
	c.leader(t, others...)
	// Its clients reconnected elsewhere: their sends are acknowledged while
	// it is down, as are everyone else's.
	tr.waitProgress(t, "acks from the dead node's clients", 20, oldIdx)
	tr.waitProgress(t, "acks from everyone", 100, 0, 1, 2)

	// 2. restart it: it catches up.
	t.Logf("fault 2: restart %s", old.name)
	old.restart(t)
	c.converged(t, 60*time.Second)
	tr.waitProgress(t, "traffic after the restart", 100, 0, 1, 2)

	// 3. cut a follower off.
	lead := c.leader(t, c.nodes...)
	iso := without(c.nodes, lead)[0]
	isoIdx := indexOf(c.nodes, iso)
	t.Logf("fault 3: cut %s off (leader %s)", iso.name, lead.name)
	probeUser := users[isoIdx] // homed on iso
	probe := pinned(t, iso, probeUser.token)
	iso.proxy.setCut(true)
	// The majority goes on.
	var majority []int
	for i := range c.nodes {
		if i != isoIdx {
			majority = append(majority, i)
		}
	}
	tr.waitProgress(t, "acks on the majority side", 100, majority...)
	// A write on the isolated node is refused, never acknowledged: first
	// perhaps "timeout" (forwarded before it noticed the leader is gone),
	// then "unavailable" once it knows it has no leader.
	probeConv := probeUser.convs[0]
	var codes []wire.Code
	testwait.Eventually(t, "an unavailable error from the isolated node", func() bool {
		rctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		cmid := fmt.Sprintf("probe-%d", len(codes))
		_, err := probe.Request(rctx, &wire.Request{Type: wire.TypeSend, Conv: probeConv, ClientMsgID: cmid, Body: "probe " + cmid})
		if errors.Is(err, context.DeadlineExceeded) && rctx.Err() != nil {
			return false // no answer in time (a loaded machine): not an ack either; ask again
		}
		var we *wire.Error
		if !errors.As(err, &we) {
			t.Fatalf("write on the isolated node: want a refusal, got %v", err)
		}
		if we.Code != wire.CodeUnavailable && we.Code != wire.CodeTimeout {
			t.Fatalf("write on the isolated node: code %s (%v), want unavailable or timeout", we.Code, err)
		}
		codes = append(codes, we.Code)
		return we.Code == wire.CodeUnavailable
	})
	t.Logf("isolated writes answered %v", codes)
	iso.proxy.setCut(false)
	// Healed: the same probe, retried with its cmid, is stored once.
	cmid := fmt.Sprintf("probe-%d", len(codes)-1)
	rep, err := probe.SendWithID(ctxFor(t, 60*time.Second), probeConv, cmid, "probe "+cmid)
	if err != nil {
		t.Fatalf("probe after healing: %v", err)
	}
	tr.mu.Lock()
	tr.acks = append(tr.acks, Ack{Conv: probeConv, Seq: rep.Seq, CMID: cmid, Body: "probe " + cmid})
	tr.mu.Unlock()
	c.converged(t, 60*time.Second)
	tr.waitProgress(t, "traffic after healing", 100, isoIdx)

	// 4. wipe a follower: it rejoins by snapshot, as the leader's log no
	// longer holds the start (trailing logs 64).
	lead = c.leader(t, c.nodes...)
	if _, err := c.admin(lead).Snapshot(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatalf("snapshot on the leader: %v", err)
	}
	wiped := without(c.nodes, lead)[0]
	t.Logf("fault 4: wipe %s", wiped.name)
	wiped.Kill9()
	if err := os.RemoveAll(wiped.Dir()); err != nil {
		t.Fatal(err)
	}
	tr.waitProgress(t, "traffic while a node is wiped", 100, 0, 1, 2)
	wiped.restart(t)
	testwait.Eventually(t, wiped.name+" installed a snapshot", func() bool {
		st, err := c.status(t, wiped)
		return err == nil && st.SnapshotIndex > 0 && st.AppliedIndex >= st.SnapshotIndex
	}, testwait.Limit(60*time.Second))
	c.converged(t, 60*time.Second)
	tr.waitProgress(t, "traffic after the rejoin", 100, 0, 1, 2)

	// Stop, let everything settle, then read every replica and check.
	stopTraffic()
	c.converged(t, 60*time.Second)
	rec := Record{
		Acks:     tr.acks,
		Replicas: make(map[string]map[uint64][]Stored),
		Seen:     make(map[string]map[uint64][]uint64),
		Deduped:  true, // the SDK delivers each seq once, across reconnects
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
	// Clients get the tail of every conversation (live, or by sync after a
	// reconnect); wait for it before reading what they saw.
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

// readHistory pages through conv's whole history on cl's node.
func readHistory(t testing.TB, cl *client.Client, conv uint64) []Stored {
	t.Helper()
	var out []Stored
	var after uint64
	for {
		evs, more, err := cl.History(ctxFor(t, 30*time.Second), conv, wire.DirAfter, after, wire.MaxHistoryLimit)
		if err != nil {
			t.Fatalf("history of %d: %v", conv, err)
		}
		for _, ev := range evs {
			out = append(out, Stored{Seq: ev.Seq, Kind: ev.Kind, From: ev.From, CMID: ev.ClientMsgID, Body: ev.Body})
			after = ev.Seq
		}
		if !more || len(evs) == 0 {
			return out
		}
	}
}

func indexOf(ds []*daemon, d *daemon) int {
	for i, x := range ds {
		if x == d {
			return i
		}
	}
	return -1
}

func without(ds []*daemon, d *daemon) []*daemon {
	var out []*daemon
	for _, x := range ds {
		if x != d {
			out = append(out, x)
		}
	}
	return out
}
