package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"parley/wire"
)

func TestMixedValidate(t *testing.T) {
	def := DefaultMixed()
	if err := def.Validate(); err != nil {
		t.Fatalf("the default mixed: %v", err)
	}
	var zero Mixed
	if zero.Validate() == nil {
		t.Fatal("a zero mixed validated")
	}
	for _, c := range []struct {
		change func(*Mixed)
		want   string
	}{
		{func(m *Mixed) { m.Users = 1 }, "users"},
		{func(m *Mixed) { m.GroupMin = 2 }, "group sizes"},
		{func(m *Mixed) { m.GroupMin, m.GroupMax = 10, 5 }, "group sizes"},
		{func(m *Mixed) { m.GroupMax = 101 }, "group sizes"},
		{func(m *Mixed) { m.Groups = -1 }, "groups"},
		{func(m *Mixed) { m.Directs = math.NaN() }, "directs"},
		{func(m *Mixed) { m.Groups, m.Directs = 0, 0 }, "nobody to talk to"},
		{func(m *Mixed) { m.Rate = 0 }, "rate"},
		{func(m *Mixed) { m.TypeFor = -time.Second }, "type-for"},
		{func(m *Mixed) { m.ReadDelay = time.Hour }, "read delay"},
		{func(m *Mixed) { m.Reconnect = 61 }, "reconnect"},
		{func(m *Mixed) { m.Offline = 0 }, "offline"},
		{func(m *Mixed) { m.BodyBytes = 10 }, "body"},
		{func(m *Mixed) { m.Warmup = -time.Second }, "warmup"},
		{func(m *Mixed) { m.Drain = time.Hour }, "drain"},
	} {
		m := DefaultMixed()
		c.change(&m)
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: Validate() = %v, want a mention of %q", m, err, c.want)
		}
	}
}

func TestMixedGraph(t *testing.T) {
	for _, c := range []struct {
		n                int
		groups, directs  float64
		groupMin, maxSz  int
		wantMemberships  float64 // per user, about
		wantDirectsAbout float64 // per user
	}{
		{2000, 2, 2, 3, 20, 2, 2},
		{1000, 1.5, 0.5, 3, 20, 1.5, 0.5},
		{7, 1, 1, 3, 3, 6.0 / 7, 6.0 / 7}, // 7 = two groups of 3 + one left out; three pairs
		{10, 0, 3, 3, 20, 0, 3},
	} {
		m := DefaultMixed()
		m.Groups, m.Directs, m.GroupMin, m.GroupMax = c.groups, c.directs, c.groupMin, c.maxSz
		groups, directs := m.graph(c.n, rand.New(rand.NewPCG(1, 2)))
		name := fmt.Sprintf("n=%d groups=%v directs=%v", c.n, c.groups, c.directs)

		memberships := 0
		for _, g := range groups {
			if len(g) < m.GroupMin || len(g) > m.GroupMax {
				t.Fatalf("%s: a group of %d", name, len(g))
			}
			seen := map[int]bool{}
			for _, u := range g {
				if u < 0 || u >= c.n || seen[u] {
					t.Fatalf("%s: group %v", name, g)
				}
				seen[u] = true
			}
			memberships += len(g)
		}
		// Each round leaves out fewer than GroupMin users.
		rounds := math.Ceil(c.groups)
		if got, want := float64(memberships), c.wantMemberships*float64(c.n); got > want+0.5 || got < want-rounds*float64(m.GroupMin) {
			t.Errorf("%s: %d memberships, want about %.0f", name, memberships, want)
		}

		pairs := map[[2]int]bool{}
		for _, d := range directs {
			if d[0] >= d[1] || d[0] < 0 || d[1] >= c.n || pairs[d] {
				t.Fatalf("%s: pair %v (seen %v)", name, d, pairs[d])
			}
			pairs[d] = true
		}
		// Pairs met twice are skipped: a few fewer than n*directs/2.
		if got, want := float64(len(directs)), c.wantDirectsAbout*float64(c.n)/2; got > want+0.5 || got < 0.8*want-1 {
			t.Errorf("%s: %d 1:1s, want about %.0f", name, len(directs), want)
		}
	}

	// The same seed draws the same graph; another seed another.
	m := DefaultMixed()
	g1, d1 := m.graph(100, rand.New(rand.NewPCG(1, 0)))
	g2, d2 := m.graph(100, rand.New(rand.NewPCG(1, 0)))
	g3, _ := m.graph(100, rand.New(rand.NewPCG(2, 0)))
	if fmt.Sprint(g1, d1) != fmt.Sprint(g2, d2) || fmt.Sprint(g1) == fmt.Sprint(g3) {
		t.Fatal("the graph does not follow the seed")
	}
}

func mixedTestLoad(t *testing.T, n int) *mixedLoad {
	t.Helper()
	cfg := DefaultMixed()
	cfg.Users, cfg.GroupMax = n, 5
	accounts := make([]Account, n)
	for i := range accounts {
		accounts[i] = Account{Name: "u" + strconv.Itoa(i), User: uint64(100 + i), Token: "t"}
	}
	raw, err := json.Marshal(mixedShard{Config: cfg, WS: []string{"ws://127.0.0.1:1/v1/ws"}, Accounts: accounts})
	if err != nil {
		t.Fatal(err)
	}
	ld, err := new(Mixed).NewLoad(raw)
	if err != nil {
		t.Fatal(err)
	}
	l := ld.(*mixedLoad)
	l.live = new(Live)
	return l
}

func TestMixedNewLoad(t *testing.T) {
	l := mixedTestLoad(t, 40)
	if len(l.users) != 40 || len(l.convs) == 0 {
		t.Fatalf("%d users, %d conversations", len(l.users), len(l.convs))
	}
	for _, cv := range l.convs {
		for _, m := range cv.members {
			if !slices.Contains(m.convs, cv) {
				t.Fatalf("%s: member %s does not list it", cv.name, m.Name)
			}
		}
		if cv.group != (len(cv.members) > 2) && cv.group {
			t.Fatalf("%s: group of %d", cv.name, len(cv.members))
		}
	}
	for name, raw := range map[string]string{
		"no URL":     `{"config":` + mustJSON(t, DefaultMixed()) + `,"accounts":[{"name":"a"},{"name":"b"}]}`,
		"one user":   `{"config":` + mustJSON(t, DefaultMixed()) + `,"ws":["ws://x:1"],"accounts":[{"name":"a"}]}`,
		"bad config": `{"config":{"users":1},"ws":["ws://x:1"],"accounts":[{"name":"a"},{"name":"b"}]}`,
		"not JSON":   `{`,
	} {
		if _, err := new(Mixed).NewLoad(json.RawMessage(raw)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMixedOnEvent checks the receiving side without a server: dedupe by
// (conv, seq), live deliveries timed and caught-up ones counted, receipts
// made due.
func TestMixedOnEvent(t *testing.T) {
	l := mixedTestLoad(t, 10)
	now := time.Now()
	l.from.Store(now.Add(-time.Minute).UnixNano())
	l.until.Store(now.Add(time.Minute).UnixNano())
	u := l.users[0]
	u.connectedAt.Store(now.Add(-time.Second).UnixNano())
	msg := func(seq uint64, from uint64, sent time.Time) *wire.Event {
		return &wire.Event{Conv: 7, Seq: seq, Kind: wire.KindMessage, From: from,
			Body: strconv.FormatInt(sent.UnixNano(), 10) + " hello"}
	}
	l.onEvent(u, &wire.Event{Conv: 7, Seq: 1, Kind: wire.KindCreated, From: 101})
	l.onEvent(u, msg(2, 101, now.Add(-2*time.Second)))       // sent while away: caught up
	l.onEvent(u, msg(3, 101, now.Add(-10*time.Millisecond))) // live
	l.onEvent(u, msg(3, 101, now.Add(-10*time.Millisecond))) // again: a duplicate
	l.onEvent(u, msg(4, u.User, now))                        // its own echo
	l.onEvent(u, &wire.Event{Conv: 7, Seq: 5, Kind: wire.KindMessage, From: 102, Body: "no stamp"})

	if got := u.received.Load(); got != 3 {
		t.Fatalf("received %d, want 3", got)
	}
	if cnt := l.counts.snapshot(); cnt[cntMixedCaughtUp] != 1 || cnt[cntMixedDupDeliveries] != 1 ||
		l.badBodies.Load() != 1 || cnt[cntMixedDeliveries] != 3 {
		t.Fatalf("caught up %d, duplicates %d, bad bodies %d, deliveries %d", cnt[cntMixedCaughtUp],
			cnt[cntMixedDupDeliveries], l.badBodies.Load(), cnt[cntMixedDeliveries])
	}
	if h := l.lat["deliver"].merged(); h.Count() != 1 || h.Quantile(50) < 10*time.Millisecond {
		t.Fatalf("deliver latency: %d values, p50 %v", h.Count(), h.Quantile(50))
	}
	st := u.receipts[7]
	if st.seen != 5 || st.delivered != 5 || st.readDue.IsZero() {
		t.Fatalf("receipt state %+v", st)
	}
	select {
	case <-u.kick:
	default:
		t.Fatal("the receipt goroutine was not woken")
	}
}

func TestMixedReport(t *testing.T) {
	m := DefaultMixed()
	m.Users, m.Warmup = 100, 5*time.Second
	t0 := time.Now()
	res := &Result{
		Workers: 1, Conns: 100, Sent: 500, Acked: 500, Delivered: 2500, Undelivered: 3,
		Start: t0, End: t0.Add(10 * time.Second),
		Counters: map[string]int64{cntMixedAcked: 250, cntMixedDeliveries: 1250, cntMixedReceipts: 500,
			cntTyping: 1000, cntReconnects: 10, cntReconnectFailures: 1},
	}
	rep := reportWith(&m, res,
		ServerSample{Phase: "baseline", RSSBytes: 100 << 20},
		ServerSample{Phase: phaseWindowStart, At: t0.Add(5 * time.Second), CPUSeconds: 10},
		ServerSample{Phase: phaseWindowEnd, At: t0.Add(10 * time.Second), CPUSeconds: 12, RSSBytes: 110 << 20})
	for name, want := range map[string]float64{
		"messages acked": 50, "deliveries to members": 250, "deliveries per message": 5,
		"receipts sent (delivered or read)": 100, "typing events received": 200, "reconnects": 2,
		"server CPU in the window": 40, "server RSS per connected user": float64(10<<20) / 100,
	} {
		if v, ok := figure(rep, name); !ok || math.Abs(v-want) > 1e-9 {
			t.Errorf("%s = %v (%v), want %v", name, v, ok, want)
		}
	}
	if v, _ := figure(rep, "server CPU per message (with its deliveries, receipts, typing)"); math.Abs(v-8000) > 1e-6 {
		t.Errorf("cpu per message %v µs", v)
	}
	fails := strings.Join(rep.Failures, "|")
	if !strings.Contains(fails, "3 deliveries") || !strings.Contains(fails, "1 reconnecting users") {
		t.Fatalf("failures %q", rep.Failures)
	}
}

func TestMixedEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	node := startNode(t)
	m := DefaultMixed()
	m.Users, m.GroupMax, m.Groups, m.Directs = 30, 6, 1.5, 1
	m.Rate = 60 // a message per user per second
	m.TypeFor, m.ReadDelay = 200*time.Millisecond, 300*time.Millisecond
	m.Reconnect, m.Offline = 6, 300*time.Millisecond // three reconnects a second
	m.Warmup, m.Drain = time.Second, 30*time.Second
	opts := Options{
		HTTP:           []string{node.http},
		WS:             []string{node.ws},
		Settle:         100 * time.Millisecond,
		Duration:       4 * time.Second,
		ConnsPerWorker: 15, // two worker processes
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, &m, opts)
	if err != nil {
		t.Fatal(err)
	}
	res, cnt := rep.Result, rep.Result.Counters
	if rep.Failed() || res.Workers != 2 || res.Conns != 30 || res.Acked == 0 || res.Sent != res.Acked || res.Undelivered != 0 {
		t.Fatalf("failures %q, errors %q, result %+v", rep.Failures, res.Errors, res)
	}
	// Every acked message reached every other member: at least one each,
	// and more in groups.
	if res.Delivered < res.Acked {
		t.Fatalf("%d delivered for %d acked", res.Delivered, res.Acked)
	}
	for _, name := range []string{cntMixedAcked, cntMixedDeliveries, cntMixedReceipts, cntMixedReads,
		cntTypingStarts, cntTyping, cntReconnects} {
		if cnt[name] == 0 {
			t.Errorf("counter %q is 0: %v", name, cnt)
		}
	}
	for _, name := range []string{"deliver", "ack", latResume} {
		if s := rep.Latency[name]; s.Count == 0 || s.Max < s.P50 {
			t.Errorf("latency %s: %+v", name, s)
		}
		if len(rep.Timeline[name]) == 0 {
			t.Errorf("no timeline for %s", name)
		}
	}
	if _, ok := figure(rep, "server CPU in the window"); !ok {
		t.Fatalf("figures %+v", rep.Figures)
	}
	var svg bytes.Buffer
	if err := WriteChart(&svg, rep); err != nil {
		t.Fatal(err)
	}
	if doc := parseSVG(t, svg.Bytes()); len(doc.series["deliver p99"]) == 0 || len(doc.series["resume spectrum"]) == 0 {
		t.Fatalf("chart series %v", doc.series)
	}
}
