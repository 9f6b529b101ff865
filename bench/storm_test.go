package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestStormValidate(t *testing.T) {
	def := DefaultStorm()
	if err := def.Validate(); err != nil {
		t.Fatalf("the default storm: %v", err)
	}
	quiet := def
	quiet.Flap, quiet.Typing, quiet.Warmup = 0, 0, 0
	if err := quiet.Validate(); err != nil {
		t.Fatalf("no flapping, no typing: %v", err)
	}
	var zero Storm
	if zero.Validate() == nil {
		t.Fatal("a zero storm validated")
	}
	for _, c := range []struct {
		change func(*Storm)
		want   string
	}{
		{func(s *Storm) { s.Users = 1 }, "users"},
		{func(s *Storm) { s.Users = 10_001 }, "not a multiple of the circle"},
		{func(s *Storm) { s.Circle = 2 }, "circle"},
		{func(s *Storm) { s.Circle = 101 }, "circle"},
		{func(s *Storm) { s.Watch = 0 }, "watch"},
		{func(s *Storm) { s.Watch = 257 }, "watch"},
		{func(s *Storm) { s.Users, s.Watch = 10, 10 }, "watch"},
		{func(s *Storm) { s.Graph = "ring" }, "graph"},
		{func(s *Storm) { s.Flap = -0.1 }, "flap"},
		{func(s *Storm) { s.Flap = math.NaN() }, "flap"},
		{func(s *Storm) { s.Offline = 0 }, "offline"},
		{func(s *Storm) { s.Typing = 601 }, "typing"},
		{func(s *Storm) { s.Warmup = -time.Second }, "warmup"},
	} {
		s := DefaultStorm()
		c.change(&s)
		if err := s.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: Validate() = %v, want a mention of %q", s, err, c.want)
		}
	}
}

func TestStormWatchLists(t *testing.T) {
	const n = 1000
	for _, graph := range []string{GraphRandom, GraphNeighbours} {
		for _, watch := range []int{1, 50, 51, 256} {
			s := Storm{Graph: graph, Watch: watch, Seed: 7}
			watches := make([]map[int]bool, n)
			for i := range n {
				list := s.watchList(i, n)
				watches[i] = make(map[int]bool, watch)
				for _, j := range list {
					if j == i || j < 0 || j >= n || watches[i][j] {
						t.Fatalf("%s watch %d: user %d watches %v", graph, watch, i, list)
					}
					watches[i][j] = true
				}
				if len(list) != watch {
					t.Fatalf("%s: user %d watches %d, want %d", graph, i, len(list), watch)
				}
				if again := s.watchList(i, n); !slices.Equal(again, list) {
					t.Fatalf("%s: user %d's list changed: %v then %v", graph, i, list, again)
				}
			}
			if graph != GraphNeighbours {
				continue
			}
			for i := range n {
				for j := range watches[i] {
					dist := min((j-i+n)%n, (i-j+n)%n)
					if dist > (watch+1)/2 {
						t.Fatalf("neighbours watch %d: user %d watches %d, %d away", watch, i, j, dist)
					}
					if watch%2 == 0 && !watches[j][i] {
						t.Fatalf("neighbours watch %d: %d watches %d but not the other way", watch, i, j)
					}
				}
			}
		}
	}
	// Random lists differ by seed and spread over everyone.
	a, b := Storm{Graph: GraphRandom, Watch: 50, Seed: 1}, Storm{Graph: GraphRandom, Watch: 50, Seed: 2}
	if slices.Equal(a.watchList(3, n), b.watchList(3, n)) {
		t.Fatal("the seed does not change the random lists")
	}
	inDegree := make([]int, n)
	for i := range n {
		for _, j := range a.watchList(i, n) {
			inDegree[j]++
		}
	}
	if slices.Min(inDegree) == 0 || slices.Max(inDegree) > 150 {
		t.Fatalf("random in-degrees from %d to %d for a mean of 50", slices.Min(inDegree), slices.Max(inDegree))
	}
	// The smallest ring: everyone watches everyone else.
	small := Storm{Graph: GraphNeighbours, Watch: 4}
	if got := fmt.Sprint(small.watchList(0, 5)); got != "[1 4 2 3]" {
		t.Fatalf("ring of 5, watch 4: %s", got)
	}
}

func TestStormSplit(t *testing.T) {
	for _, c := range []struct {
		users, circle, per int
		want               string
	}{
		{10_000, 5, 5000, "[5000 5000]"},
		{10_000, 5, 4999, "[3335 3335 3330]"},
		{40, 5, 20, "[20 20]"},
		{40, 5, 3, "[5 5 5 5 5 5 5 5]"}, // a circle is never split, even over the per-worker bound
		{30, 3, 1000, "[30]"},
	} {
		sizes := splitWhole(c.users, c.circle, c.per)
		if got := fmt.Sprint(sizes); got != c.want {
			t.Errorf("splitWhole(%d, %d, %d) = %s, want %s", c.users, c.circle, c.per, got, c.want)
		}
		sum := 0
		for _, n := range sizes {
			sum += n
			if n%c.circle != 0 {
				t.Errorf("splitWhole(%d, %d, %d): a shard of %d splits a circle", c.users, c.circle, c.per, n)
			}
		}
		if sum != c.users {
			t.Errorf("splitWhole(%d, %d, %d) covers %d users", c.users, c.circle, c.per, sum)
		}
	}
}

func TestStormNewLoadRefusesBadShards(t *testing.T) {
	cfg := DefaultStorm()
	cfg.Users, cfg.Watch = 10, 3
	ids := make([]uint64, 10)
	accounts := make([]Account, 10)
	for i := range ids {
		ids[i] = uint64(100 + i)
		accounts[i] = Account{Name: fmt.Sprint("u", i), User: ids[i], Token: "t"}
	}
	good := stormShard{Config: cfg, WS: []string{"ws://127.0.0.1:1/v1/ws"}, IDs: ids, First: 5, Accounts: accounts[5:]}
	shard := func(change func(*stormShard)) json.RawMessage {
		sh := good
		change(&sh)
		b, err := json.Marshal(sh)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ld, err := new(Storm).NewLoad(shard(func(*stormShard) {}))
	if err != nil {
		t.Fatal(err)
	}
	l := ld.(*stormLoad)
	if len(l.users) != 5 || l.users[0].idx != 5 || len(l.users[0].watch) != 3 || l.local[105] != l.users[0] {
		t.Fatalf("load users %+v", l.users[0])
	}
	for name, change := range map[string]func(*stormShard){
		"no URL":        func(sh *stormShard) { sh.WS = nil },
		"ids":           func(sh *stormShard) { sh.IDs = ids[:9] },
		"split circle":  func(sh *stormShard) { sh.First, sh.Accounts = 3, accounts[3:8] },
		"past the end":  func(sh *stormShard) { sh.First = 10 },
		"wrong account": func(sh *stormShard) { sh.Accounts = accounts[:5] },
		"bad config":    func(sh *stormShard) { sh.Config.Graph = "x" },
	} {
		if _, err := new(Storm).NewLoad(shard(change)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestEvery(t *testing.T) {
	// The count is fixed by the schedule, not by how fast the loop runs:
	// calls that come late still come.
	first := time.Now().Add(-time.Second) // all due already
	var n atomic.Int64
	every(context.Background(), first, first.Add(100*time.Millisecond), 10*time.Millisecond, func() { n.Add(1) })
	if n.Load() != 10 {
		t.Fatalf("%d calls, want 10", n.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n.Store(0)
	every(ctx, time.Now(), time.Now().Add(time.Hour), time.Millisecond, func() { n.Add(1) })
	if n.Load() > 1 {
		t.Fatalf("%d calls after a cancel", n.Load())
	}
}

func TestStormReport(t *testing.T) {
	s := DefaultStorm()
	s.Users, s.Warmup = 100, 10*time.Second // the report's duration is 10s more
	rep := newReport(&s, &Options{Duration: 20 * time.Second})
	t0 := time.Now()
	rep.finish(&Result{
		Conns: 100,
		Counters: map[string]int64{
			cntPresence: 5000, cntTyping: 800, cntDisconnects: 50, cntReconnects: 50, cntTypingStarts: 200,
		},
	}, []ServerSample{
		{Phase: "baseline", RSSBytes: 10 << 20},
		{Phase: "connected", RSSBytes: 20 << 20},
		{Phase: phaseWindowStart, At: t0, CPUSeconds: 100, RSSBytes: 20 << 20},
		{Phase: phaseWindowEnd, At: t0.Add(10 * time.Second), CPUSeconds: 103, RSSBytes: 30 << 20},
		{Phase: "loaded", RSSBytes: 30 << 20},
	})
	s.Report(rep)
	for name, want := range map[string]float64{
		"presence events received":                    500,
		"typing events received":                      80,
		"flap transitions (disconnects + reconnects)": 10,
		"presence events per transition":              50,
		"typing events per start (on + off)":          4,
		"server CPU in the window":                    30,
		"server CPU per event received":               3.0 / 5800 * 1e6,
		"server RSS per connected user":               float64(20<<20) / 100,
	} {
		if got, ok := figure(rep, name); !ok || math.Abs(got-want) > 1e-6*want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if rep.Failed() || len(rep.Warnings) > 0 {
		t.Errorf("failures %q, warnings %q", rep.Failures, rep.Warnings)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"counts", "presence_events 5000", "window-start", "server CPU in the window"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the text report lacks %q:\n%s", want, text.String())
		}
	}

	broken := newReport(&s, &Options{Duration: 20 * time.Second})
	broken.finish(&Result{
		Conns: 90, Dropped: 3,
		Counters: map[string]int64{cntDisconnects: 5, cntTypingStarts: 5, cntReconnectFailures: 2, cntTypingFailed: 1, cntSkipped: 4},
	}, nil)
	s.Report(broken)
	want := []string{"only 90 of 100", "3 users were not connected", "2 flappers", "1 typing requests", "no presence event", "no typing event"}
	if len(broken.Failures) != len(want) {
		t.Fatalf("failures %q", broken.Failures)
	}
	for i, w := range want {
		if !strings.Contains(broken.Failures[i], w) {
			t.Errorf("failure %d = %q, want a mention of %q", i, broken.Failures[i], w)
		}
	}
	if len(broken.Warnings) != 1 || !strings.Contains(broken.Warnings[0], "skipped") {
		t.Errorf("warnings %q", broken.Warnings)
	}
}

// windowedFake is the fake scenario with a measured window: workers run
// the fake load; the coordinator samples the window's edges.
type windowedFake struct{ fakeScenario }

func (*windowedFake) MeasureAfter() time.Duration { return 50 * time.Millisecond }

func TestRunSamplesTheWindow(t *testing.T) {
	opts := fakeOptions(t, true)
	rep, err := Run(context.Background(), &windowedFake{fakeScenario{Shards: 2}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	var phases []string
	for _, s := range rep.Server {
		phases = append(phases, s.Phase)
	}
	if got := strings.Join(phases, " "); got != "baseline connected window-start window-end loaded" {
		t.Fatalf("phases %s", got)
	}
	w0, _ := rep.Sample(phaseWindowStart)
	w1, _ := rep.Sample(phaseWindowEnd)
	if !w1.At.After(w0.At) || w1.CPUSeconds <= w0.CPUSeconds {
		t.Fatalf("window samples %+v then %+v", w0, w1)
	}

	opts.Duration = 50 * time.Millisecond
	if _, err := Run(context.Background(), &windowedFake{fakeScenario{Shards: 1}}, opts); err == nil ||
		!strings.Contains(err.Error(), "warmup") {
		t.Fatalf("a warmup as long as the load: %v", err)
	}
}

// TestStormEndToEnd runs a small storm against a real node: 40 users over
// two worker processes, each watching 5 others, flapping fast enough that
// flaps land in a short window.
func TestStormEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	node := startNode(t)
	s := Storm{
		Users: 40, Watch: 5, Graph: GraphRandom, Circle: 5, Seed: 1,
		Flap:    1.5,             // 1 flap a second over 40 users
		Offline: 6 * time.Second, // over the node's 5 s presence grace
		Typing:  6,               // 4 starts a second
		Warmup:  time.Second,
	}
	opts := Options{
		HTTP:           []string{node.http},
		WS:             []string{node.ws},
		Settle:         100 * time.Millisecond,
		Duration:       13 * time.Second,
		ConnsPerWorker: 20, // two worker processes
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, &s, opts)
	if err != nil {
		t.Fatal(err)
	}
	res, cnt := rep.Result, rep.Result.Counters
	var text strings.Builder
	_ = rep.WriteText(&text)
	if rep.Failed() || res.Workers != 2 || res.Conns != 40 || res.Dropped != 0 {
		t.Fatalf("failures %q, result %+v\n%s", rep.Failures, res, text.String())
	}
	// Flaps happened, were seen online and offline, and some were timed
	// (watchers in the flapper's worker).
	if cnt[cntDisconnects] == 0 || cnt[cntReconnects] == 0 || cnt[cntPresenceOnline] == 0 || cnt[cntPresenceOffline] == 0 {
		t.Fatalf("counters %v\n%s", cnt, text.String())
	}
	online, offline := rep.Latency[latOnline], rep.Latency[latOffline]
	if online.Count == 0 || offline.Count == 0 {
		t.Fatalf("latencies %+v\n%s", rep.Latency, text.String())
	}
	// The server holds a user online for its grace (5 s) after the close.
	if offline.P50 < (5 * time.Second).Microseconds() {
		t.Fatalf("offline latency %+v is shorter than the grace", offline)
	}
	// Typing reached the other members and was timed.
	if cnt[cntTypingStarts] == 0 || cnt[cntTyping] == 0 || rep.Latency[latTyping].Count == 0 {
		t.Fatalf("typing: counters %v, latency %+v\n%s", cnt, rep.Latency[latTyping], text.String())
	}
	if _, ok := figure(rep, "server CPU in the window"); !ok {
		t.Fatalf("figures %+v", rep.Figures)
	}
	conn, _ := rep.Sample("connected")
	if conn.Connections != 40 {
		t.Fatalf("the node counts %v connections", conn.Connections)
	}
	t.Log("\n" + text.String())
}
