package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"parley/client"
	"parley/wire"
)

// Storm is the presence and typing storm: Users users, each on a
// connection of its own (the Go SDK) and watching the presence of Watch
// others, while a fraction Flap of them per minute disconnect and come back
// Offline later, and every user starts typing Typing times a minute in one
// of their conversations. It measures the presence and typing events the
// clients receive per second, the flap transitions that caused them, the
// latencies from a flapper's reconnect (and disconnect) to a watcher's
// online (offline) event and from a typing start to the other members'
// indicator, and the server's CPU and memory over the measured window: the
// load minus its first Warmup.
//
// # The social graph
//
// Users are numbered 0..Users-1 and sit in circles of Circle consecutive
// users. A circle shares one group conversation, and each member has a 1:1
// with the next member of the circle (cyclically): one group and two 1:1s
// per user, where the typing happens. A circle never spans two workers.
// Watch lists, by Graph:
//
//   - "random": Watch distinct others drawn uniformly, the same on every run
//     with the same Seed: no locality, a watcher's in-degree about Watch;
//   - "neighbours": the Watch nearest users on a ring of all users, half
//     after and half before (one more after when Watch is odd): a "friends"
//     graph in which watching is mutual and circle-mates watch each other.
//
// # The load
//
// Flaps are scheduled at a fixed interval over each worker (Flap*users per
// minute); each picks a random user that is connected and idle. The flapper
// closes its connection (the server sees the socket close), stays away for
// Offline, dials again (syncing from its cursor) and sends its watch list
// again. Watchers see a flap only if Offline exceeds the server's presence
// grace (node Config.PresenceGrace, 5 s by default and not a flag of
// cmd/parley): shorter absences are what the grace hides. Typing starts are
// scheduled the same way (Typing*users per minute): a random idle user sends
// a start in one of their three conversations, then a stop stormTypingFor
// later. A user does one thing at a time, so a typist never flaps mid-burst.
//
// # Latency, where it is honest
//
// A latency needs both ends on one clock and in one memory, so it is
// measured between users of the same worker process: typing always (a
// circle is in one worker), presence for the watcher/flapper pairs that
// share a worker (all of them with one worker; with random watch lists and
// k workers about 1/k of them; with neighbours nearly all). Online latency
// runs from the start of the reconnect (TCP connect, WebSocket upgrade,
// authentication, then the fan-out) to the watcher's event; offline latency
// from the close to the event, so it includes the grace and the server's
// sweep tick. Only transitions and typing starts inside the window are
// timed; events are counted when they arrive inside it.
//
// Flap and Typing may be 0 (no flapping, no typing), so a zero Storm is not
// the default one: start from DefaultStorm.
type Storm struct {
	Users   int           `json:"users"`
	Watch   int           `json:"watch"`   // presence watch list per user
	Graph   string        `json:"graph"`   // "random" or "neighbours"
	Flap    float64       `json:"flap"`    // fraction of the users that flap per minute
	Offline time.Duration `json:"offline"` // how long a flapper stays away
	Typing  float64       `json:"typing"`  // typing starts per user per minute
	Circle  int           `json:"circle"`  // users per circle: one group, 1:1s with circle-mates
	Warmup  time.Duration `json:"warmup"`  // load before the measured window
	Seed    uint64        `json:"seed"`    // of the random watch lists
}

// DefaultStorm is the storm of the issue: 10,000 users watching 50 others
// each, 10% of them flapping per minute.
func DefaultStorm() Storm {
	return Storm{
		Users:   10_000,
		Watch:   50,
		Graph:   GraphRandom,
		Flap:    0.10,
		Offline: 10 * time.Second,
		Typing:  2,
		Circle:  5,
		Warmup:  20 * time.Second,
		Seed:    1,
	}
}

// Watch graphs.
const (
	GraphRandom     = "random"
	GraphNeighbours = "neighbours"
)

const (
	maxStormUsers   = 1_000_000
	minStormCircle  = 3
	maxStormCircle  = 100 // the server's default TypingMaxMembers: larger groups get no typing
	maxStormFlap    = 60  // a flap per user per second
	maxStormTyping  = 600 // ten starts per user per second
	maxStormOffline = 10 * time.Minute

	// stormTypingFor is how long a typist types before the stop: under
	// the server's throttle (3 s), so a start and a stop per burst.
	stormTypingFor   = 2 * time.Second
	stormDialers     = 16 // circles set up at once per worker
	stormClaimTries  = 8  // random picks before a scheduled action is skipped
	stormEventBuffer = 64 // the SDK's event and signal buffers; a reader drains them at once
)

// Names of the storm's counters (Result.Counters) and histograms.
const (
	cntPresence          = "presence_events"    // presence frames received in the window
	cntPresenceOnline    = "presence_online"    // … of them online
	cntPresenceOffline   = "presence_offline"   // … of them offline
	cntTyping            = "typing_events"      // typing frames received in the window (on and off)
	cntTypingStarts      = "typing_starts"      // typing starts sent in the window
	cntTypingFailed      = "typing_failed"      // typing requests that failed (any time)
	cntDisconnects       = "disconnects"        // flappers that closed in the window
	cntReconnects        = "reconnects"         // flappers that began to reconnect in the window
	cntReconnectFailures = "reconnect_failures" // flappers that could not come back
	cntSkipped           = "skipped"            // scheduled actions with no idle user found

	latOnline  = "online"
	latOffline = "offline"
	latTyping  = "typing"
)

func (*Storm) Name() string { return "storm" }

// MeasureAfter makes Storm Windowed: the window starts after Warmup.
func (s *Storm) MeasureAfter() time.Duration { return s.Warmup }

func (s *Storm) Validate() error {
	p := problems{scenario: "storm"}
	if s.Users < 2 || s.Users > maxStormUsers {
		p.add("users %d out of range [2, %d]", s.Users, maxStormUsers)
	}
	if s.Circle < minStormCircle || s.Circle > maxStormCircle {
		p.add("circle %d out of range [%d, %d]", s.Circle, minStormCircle, maxStormCircle)
	} else if s.Users%s.Circle != 0 {
		p.add("users %d is not a multiple of the circle %d", s.Users, s.Circle)
	}
	if s.Watch < 1 || s.Watch > wire.MaxPresenceWatch || s.Watch >= s.Users {
		p.add("watch %d out of range [1, min(%d, users-1)]", s.Watch, wire.MaxPresenceWatch)
	}
	if s.Graph != GraphRandom && s.Graph != GraphNeighbours {
		p.add("graph %q: want %s or %s", s.Graph, GraphRandom, GraphNeighbours)
	}
	if !(s.Flap >= 0 && s.Flap <= maxStormFlap) { // also refuses NaN
		p.add("flap %v out of range [0, %d] per minute", s.Flap, maxStormFlap)
	}
	if s.Offline <= 0 || s.Offline > maxStormOffline {
		p.add("offline %v out of range (0, %v]", s.Offline, maxStormOffline)
	}
	if !(s.Typing >= 0 && s.Typing <= maxStormTyping) {
		p.add("typing %v out of range [0, %d] per user per minute", s.Typing, maxStormTyping)
	}
	if s.Warmup < 0 {
		p.add("warmup %v is negative", s.Warmup)
	}
	return p.err()
}

func (s *Storm) Params() map[string]any {
	return map[string]any{
		"users": s.Users, "watch": s.Watch, "graph": s.Graph, "flap_per_min": s.Flap,
		"offline": s.Offline.String(), "typing_per_min": s.Typing, "circle": s.Circle,
		"warmup": s.Warmup.String(), "seed": s.Seed,
	}
}

// stormShard is one worker's part: whole circles of users, every user's id
// (for the watch lists) and the configuration.
type stormShard struct {
	Config   Storm     `json:"config"`
	WS       []string  `json:"ws"`
	IDs      []uint64  `json:"ids"`      // every user's id, by index
	First    int       `json:"first"`    // index of Accounts[0]
	Accounts []Account `json:"accounts"` // this worker's users
}

func (s *Storm) Plan(ctx context.Context, env *Env) ([]json.RawMessage, error) {
	accounts, err := env.CreateAccounts(ctx, s.Users)
	if err != nil {
		return nil, err
	}
	ids := make([]uint64, len(accounts))
	for i, a := range accounts {
		ids[i] = a.User
	}
	return planShards(splitWhole(s.Users, s.Circle, env.ConnsPerWorker()), func(_, first, n int) any {
		return stormShard{Config: *s, WS: env.WS(), IDs: ids, First: first, Accounts: accounts[first : first+n]}
	})
}

// watchList returns the users (by index) that user i of n watches.
func (s *Storm) watchList(i, n int) []int {
	out := make([]int, 0, s.Watch)
	if s.Graph == GraphNeighbours {
		for d := 1; d <= s.Watch; d++ {
			off := (d + 1) / 2 // +1, -1, +2, -2, …
			if d%2 == 0 {
				off = -off
			}
			out = append(out, ((i+off)%n+n)%n)
		}
		return out
	}
	// A sparse Fisher–Yates shuffle of the n-1 others (index v stands for
	// v, or v+1 from i on), stopped after Watch draws.
	r := rand.New(rand.NewPCG(s.Seed, uint64(i)))
	m := n - 1
	moved := make(map[int]int, 2*s.Watch)
	at := func(k int) int {
		if v, ok := moved[k]; ok {
			return v
		}
		return k
	}
	for k := range s.Watch {
		j := k + r.IntN(m-k)
		vj := at(j)
		moved[j] = at(k)
		if vj >= i {
			vj++
		}
		out = append(out, vj)
	}
	return out
}

func (*Storm) NewLoad(raw json.RawMessage) (Load, error) {
	var sh stormShard
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	cfg := sh.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := len(sh.IDs)
	switch {
	case len(sh.WS) == 0 || len(sh.Accounts) == 0:
		return nil, errors.New("no WebSocket URL or no accounts")
	case n != cfg.Users:
		return nil, fmt.Errorf("%d user ids for %d users", n, cfg.Users)
	case sh.First < 0 || sh.First+len(sh.Accounts) > n || sh.First%cfg.Circle != 0 || len(sh.Accounts)%cfg.Circle != 0:
		return nil, fmt.Errorf("accounts %d..%d are not whole circles of %d users", sh.First, sh.First+len(sh.Accounts), n)
	}
	l := &stormLoad{
		cfg:   cfg,
		shard: sh,
		local: make(map[uint64]*stormUser, len(sh.Accounts)),
		lat:   map[string]*recorder{latOnline: newRecorder(), latOffline: newRecorder(), latTyping: newRecorder()},
		log:   sdkLogger(),
	}
	for k, a := range sh.Accounts {
		i := sh.First + k
		if a.User != sh.IDs[i] {
			return nil, fmt.Errorf("account %s is not user %d", a.Name, i)
		}
		u := &stormUser{idx: i, Account: a}
		for _, j := range cfg.watchList(i, n) {
			u.watch = append(u.watch, sh.IDs[j])
		}
		l.users = append(l.users, u)
		l.local[a.User] = u
	}
	return l, nil
}

// stormLoad is a worker's share of Storm.
//
// Goroutines: Connect sets circles up from a bounded group. Every client
// then has a reader goroutine (read: drains its events, handles its
// signals) until the client closes. Run starts two schedulers (flaps and
// typing starts), each spawning one goroutine per action; Run waits for all
// of them. users, local and the users' watch lists are fixed by NewLoad;
// a user's convs by Connect. Everything else the goroutines share is
// atomic, a recorder or the tally.
type stormLoad struct {
	cfg   Storm
	shard stormShard
	log   *slog.Logger // for the SDK: errors only, to the worker's stderr
	users []*stormUser
	local map[uint64]*stormUser // this worker's users by id
	live  *Live

	measureWindow // set by Run before the load

	lat      map[string]*recorder // fixed keys; recorders lock themselves
	counters counterSet
	tally    tally

	readers sync.WaitGroup // client readers
	actions sync.WaitGroup // flaps and typing bursts

	start, end time.Time // written by Run, read by Finish
	dropped    int64
}

// stormUser is one user of this worker.
//
// c is the user's client, nil while a flap keeps the user away (or after
// a reconnect failed). It is written by Connect and then only by whoever
// holds busy, which also makes flaps and typing bursts exclusive; Run and
// Finish read it once every action has ended.
type stormUser struct {
	Account
	idx   int      // global index
	watch []uint64 // user ids
	convs []uint64 // the circle's group, then the 1:1s with the next and the previous member

	busy
	c *client.Client

	// The user's latest flap transition and typing start, read by the
	// readers of the other users' clients to time what they receive.
	transition atomic.Pointer[stormMark]
	typing     atomic.Pointer[stormMark]
}

// stormMark is a transition (online or offline) or a typing start (conv).
type stormMark struct {
	at     time.Time
	online bool
	conv   uint64
}

// countIn counts name if t falls in the measured window.
func (l *stormLoad) countIn(name string, t time.Time) {
	if l.inWindow(t) {
		l.counters.add(name, 1)
	}
}

// timed reports whether a transition or start at t is one the window times.
func (l *stormLoad) timed(t time.Time) bool {
	from := l.from.Load()
	return from != 0 && t.UnixNano() >= from
}

func (l *stormLoad) Connect(ctx context.Context, live *Live) error {
	l.live = live
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(stormDialers)
	for k := 0; k < len(l.users); k += l.cfg.Circle {
		g.Go(func() error { return l.setUpCircle(gctx, l.users[k:k+l.cfg.Circle]) })
	}
	return g.Wait()
}

// setUpCircle connects a circle's members, then the first creates the
// group and each opens the 1:1 with the next.
func (l *stormLoad) setUpCircle(ctx context.Context, members []*stormUser) error {
	for _, u := range members {
		c, err := l.connectUser(ctx, u, 0)
		if err != nil {
			return fmt.Errorf("bench: connect %s: %w", u.Name, err)
		}
		u.c = c
		l.live.Conns.Add(1)
	}
	others := make([]uint64, 0, len(members)-1)
	for _, u := range members[1:] {
		others = append(others, u.User)
	}
	g, err := members[0].c.CreateGroup(ctx, fmt.Sprintf("storm %d", members[0].idx/l.cfg.Circle), others)
	if err != nil {
		return fmt.Errorf("bench: create the group of %s: %w", members[0].Name, err)
	}
	directs := make([]uint64, len(members)) // directs[k]: member k with member k+1
	for k, u := range members {
		next := members[(k+1)%len(members)]
		info, err := u.c.OpenDirect(ctx, next.User)
		if err != nil {
			return fmt.Errorf("bench: open direct %s → %s: %w", u.Name, next.Name, err)
		}
		directs[k] = info.ID
	}
	for k, u := range members {
		u.convs = []uint64{g.ID, directs[k], directs[(k+len(members)-1)%len(members)]}
	}
	return nil
}

// connectUser dials u (syncing from cursor), starts the client's reader
// and sends u's watch list (dialRetrying).
func (l *stormLoad) connectUser(ctx context.Context, u *stormUser, cursor uint64) (*client.Client, error) {
	cfg := client.Config{
		URLs:        rotate(l.shard.WS, u.idx),
		Token:       u.Token,
		Cursor:      cursor,
		EventBuffer: stormEventBuffer,
		Logger:      l.log,
	}
	return dialRetrying(ctx, cfg, func(c *client.Client) error {
		l.readers.Go(func() { l.read(c) })
		_, err := c.WatchPresence(ctx, u.watch)
		return err
	})
}

// read is a client's reader goroutine: it drains the conversation events
// (the circle's setup; not measured) and handles the signals until the
// client closes.
func (l *stormLoad) read(c *client.Client) {
	events, signals := c.Events(), c.Signals()
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		case sig := <-signals:
			now := time.Now()
			switch {
			case sig.Presence != nil:
				l.onPresence(sig.Presence, now)
			case sig.Typing != nil:
				l.onTyping(sig.Typing, now)
			}
		}
	}
}

func (l *stormLoad) onPresence(p *wire.Presence, now time.Time) {
	l.live.Delivered.Add(1)
	if l.inWindow(now) {
		l.counters.add(cntPresence, 1)
		if p.Online {
			l.counters.add(cntPresenceOnline, 1)
		} else {
			l.counters.add(cntPresenceOffline, 1)
		}
	}
	u := l.local[p.User]
	if u == nil {
		return // a user of another worker: no shared clock
	}
	// Events before any flap (the connect phase) have no transition.
	if tr := u.transition.Load(); tr != nil && tr.online == p.Online && l.timed(tr.at) {
		name := latOffline
		if p.Online {
			name = latOnline
		}
		l.lat[name].record(u.idx, now.Sub(tr.at))
	}
}

func (l *stormLoad) onTyping(t *wire.Typing, now time.Time) {
	l.live.Delivered.Add(1)
	l.countIn(cntTyping, now)
	if !t.On {
		return
	}
	if u := l.local[t.User]; u != nil {
		if m := u.typing.Load(); m != nil && m.conv == t.Conv && l.timed(m.at) {
			l.lat[latTyping].record(u.idx, now.Sub(m.at))
		}
	}
}

func (l *stormLoad) Run(ctx context.Context, start, until time.Time, _ *Live) error {
	l.setWindow(start.Add(l.cfg.Warmup), until)
	if !sleepCtx(ctx, time.Until(start)) {
		return ctx.Err()
	}
	l.start = start
	n := float64(len(l.users))
	runActivities(ctx, start, until, &l.actions, &l.counters, l.claim,
		activity[*stormUser]{l.cfg.Flap * n, l.flap}, activity[*stormUser]{l.cfg.Typing * n, l.typeBurst})
	l.actions.Wait() // the last flappers are back, the last typists stopped
	for _, u := range l.users {
		if u.c == nil || !u.c.State().Connected {
			l.dropped++
		}
	}
	l.end = time.Now()
	return ctx.Err()
}

// claim picks a random connected user that is doing nothing and marks it
// busy; false when a few picks found none.
func (l *stormLoad) claim() (*stormUser, bool) {
	return claimIdle(l.users, stormClaimTries, func(u *stormUser) bool { return u.c != nil })
}

// flap disconnects u, keeps it away for Offline and brings it back.
func (l *stormLoad) flap(ctx context.Context, u *stormUser) {
	cursor := u.c.Cursor()
	off := time.Now()
	u.transition.Store(&stormMark{at: off})
	_ = u.c.Close() // never fails; the client's reader ends
	u.c = nil
	l.live.Conns.Add(-1)
	l.countIn(cntDisconnects, off)
	if !sleepCtx(ctx, l.cfg.Offline) {
		return // cancelled: the user stays away
	}
	on := time.Now()
	u.transition.Store(&stormMark{at: on, online: true})
	l.countIn(cntReconnects, on)
	c, err := l.connectUser(ctx, u, cursor)
	if err != nil {
		l.counters.add(cntReconnectFailures, 1)
		l.tally.error(fmt.Errorf("reconnect: %w", err))
		return
	}
	u.c = c
	l.live.Conns.Add(1)
}

// typeBurst types in one of u's conversations for stormTypingFor.
func (l *stormLoad) typeBurst(ctx context.Context, u *stormUser) {
	conv := u.convs[rand.N(len(u.convs))]
	at := time.Now()
	u.typing.Store(&stormMark{at: at, conv: conv})
	if err := u.c.Typing(ctx, conv, true); err != nil {
		l.typingFailed(err)
		return
	}
	l.countIn(cntTypingStarts, at)
	if !sleepCtx(ctx, stormTypingFor) {
		return
	}
	if err := u.c.Typing(ctx, conv, false); err != nil {
		l.typingFailed(err)
	}
}

func (l *stormLoad) typingFailed(err error) {
	l.counters.add(cntTypingFailed, 1)
	l.tally.error(fmt.Errorf("typing (%s): %w", errorCode(err), err))
}

func (l *stormLoad) Finish(context.Context) *Result {
	res := &Result{}
	clients := make([]*client.Client, 0, len(l.users))
	for _, u := range l.users {
		clients = append(clients, u.c)
	}
	res.Conns = closeClients(clients)
	l.readers.Wait() // each ends when its client's Events closes

	res.Dropped = l.dropped
	res.Start, res.End = l.start, l.end
	res.Latency = mergeRecorders(l.lat)
	res.Counters = l.counters.snapshot()
	l.tally.fill(res)
	return res
}

func (s *Storm) Report(rep *Report) {
	res := rep.Result
	cnt := res.Counters
	window := rep.Duration - s.Warmup.Seconds()
	if window > 0 {
		rep.AddFigure("presence events received", float64(cnt[cntPresence])/window, "events/s")
		rep.AddFigure("typing events received", float64(cnt[cntTyping])/window, "events/s")
		rep.AddFigure("flap transitions (disconnects + reconnects)", float64(cnt[cntDisconnects]+cnt[cntReconnects])/window, "/s")
		rep.AddFigure("typing starts sent", float64(cnt[cntTypingStarts])/window, "/s")
	}
	if tr := cnt[cntDisconnects] + cnt[cntReconnects]; tr > 0 {
		rep.AddFigure("presence events per transition", float64(cnt[cntPresence])/float64(tr), "")
	}
	if n := cnt[cntTypingStarts]; n > 0 {
		rep.AddFigure("typing events per start (on + off)", float64(cnt[cntTyping])/float64(n), "")
	}
	reportWindowServer(rep, s.Users, "event received", cnt[cntPresence]+cnt[cntTyping])

	if res.Conns < int64(s.Users) {
		rep.Failures = append(rep.Failures, fmt.Sprintf("only %d of %d users were connected at the end", res.Conns, s.Users))
	}
	if res.Dropped > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d users were not connected at the end of the load", res.Dropped))
	}
	if n := cnt[cntReconnectFailures]; n > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d flappers could not reconnect", n))
	}
	if n := cnt[cntTypingFailed]; n > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d typing requests failed", n))
	}
	if cnt[cntDisconnects] > 0 && cnt[cntPresence] == 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf(
			"%d flaps and no presence event: is -offline (%v) longer than the server's presence grace?", cnt[cntDisconnects], s.Offline))
	}
	if cnt[cntTypingStarts] > 0 && cnt[cntTyping] == 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d typing starts and no typing event", cnt[cntTypingStarts]))
	}
	if n := cnt[cntSkipped]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"%d scheduled flaps or typing starts found no idle user and were skipped: the offered load was not fully applied", n))
	}
	reportOverflows(rep)
	if c, e, ok := loadDelta(rep); ok {
		if n := e.IdleTimeouts - c.IdleTimeouts; n > 0 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("the server closed %.0f idle connections", n))
		}
	}
}
