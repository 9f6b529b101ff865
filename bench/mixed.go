package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"parley/client"
	"parley/wire"
)

// Mixed is a realistic blend of chat: Users users, each on a connection of
// its own (the Go SDK), in small groups and 1:1s, chatting at a modest
// rate. It measures committed messages, deliveries, the latency from a
// send to each member's delivery, receipts and typing events per second,
// reconnects, and the server's CPU and memory over the measured window: the
// load minus its first Warmup.
//
// # The social graph
//
// Users are split over the workers, and every conversation stays inside
// one worker, so that each delivery is checked and timed on the clock of
// its send. Within a worker, seeded by Seed: Groups rounds of groups (a
// fractional last round covers that fraction of the users), each round a
// shuffle of the users cut into groups of GroupMin to GroupMax members (a
// remainder too small for a group sits the round out); and Directs rounds
// of 1:1s, each a shuffle paired off (a pair already met is skipped). So a
// user is in about Groups groups and Directs 1:1s.
//
// # The load
//
// Messages are scheduled at a fixed interval over each worker (Rate per
// user per minute): each goes to a random idle connected user, who picks
// one of their conversations, types (a typing start, TypeFor on average,
// uniform from half to one and a half of it), sends the message, and stops
// typing (a typing stop). A member who receives a message reports it
// delivered at once and read ReadDelay after the conversation's first
// unread message (receipts are cursors: one request per conversation
// covers every message up to it). Reconnects are scheduled the same way
// (Reconnect of the users per minute): the user closes the connection,
// stays away for Offline and dials again with the cursor it had, so the
// server resumes it by sync; what was sent meanwhile arrives by that sync.
// A user does one thing at a time (a message, or a reconnect).
//
// # What is measured
//
// "deliver" is the latency from the send (a stamp in the body) to a
// member's receipt of the message, for members connected when it was sent;
// messages that reach a reconnected user through sync are counted as
// caught up, not timed. "ack" is the send to the sender's ack; "resume" the
// reconnect (dial, hello, the initial sync from the cursor). Latencies and
// rates cover the window (sends, acks and events inside it); the check that
// every acked message reached every other member covers the whole load,
// after a drain of up to Drain.
type Mixed struct {
	Users     int           `json:"users"`
	Groups    float64       `json:"groups"`     // group memberships per user, on average
	GroupMin  int           `json:"group_min"`  // members of a group, at least
	GroupMax  int           `json:"group_max"`  // members of a group, at most
	Directs   float64       `json:"directs"`    // 1:1s per user, on average
	Rate      float64       `json:"rate"`       // messages per user per minute
	TypeFor   time.Duration `json:"type_for"`   // typing before a message, on average; 0: no typing
	ReadDelay time.Duration `json:"read_delay"` // from a conversation's first unread message to its read receipt
	Reconnect float64       `json:"reconnect"`  // fraction of the users that reconnect per minute
	Offline   time.Duration `json:"offline"`    // how long a reconnecting user stays away
	BodyBytes int           `json:"body_bytes"`
	Warmup    time.Duration `json:"warmup"` // load before the measured window
	Drain     time.Duration `json:"drain"`  // wait for deliveries after the load
	Seed      uint64        `json:"seed"`   // of the social graph
}

// DefaultMixed is the blend of the issue: 2,000 users, each in about two
// groups of 3 to 20 and two 1:1s, sending 4 messages a minute, 5% of them
// reconnecting per minute.
func DefaultMixed() Mixed {
	return Mixed{
		Users:     2000,
		Groups:    2,
		GroupMin:  3,
		GroupMax:  20,
		Directs:   2,
		Rate:      4,
		TypeFor:   2 * time.Second,
		ReadDelay: 3 * time.Second,
		Reconnect: 0.05,
		Offline:   2 * time.Second,
		BodyBytes: 100,
		Warmup:    5 * time.Second,
		Drain:     10 * time.Second,
		Seed:      1,
	}
}

const (
	maxMixedUsers     = 1_000_000
	minMixedGroup     = 3
	maxMixedGroup     = 100 // the server's default TypingMaxMembers: larger groups get no typing
	maxMixedRounds    = 50  // groups or 1:1s per user
	maxMixedRate      = 600 // ten messages per user per second
	maxMixedReconnect = 60
	maxMixedTypeFor   = time.Minute
	maxMixedReadDelay = 10 * time.Minute
	maxMixedOffline   = 10 * time.Minute
	maxMixedDrain     = 5 * time.Minute

	mixedDialers     = 16  // connections and conversations set up at once per worker
	mixedClaimTries  = 8   // random picks before a scheduled action is skipped
	mixedEventBuffer = 256 // the SDK's event and signal buffers; a reader drains them at once
)

// Names of the mixed scenario's counters (Result.Counters) and histograms.
// Counts marked "window" are of events inside the measured window. It
// shares cntTypingStarts, cntTyping, cntTypingFailed, cntReconnects,
// cntReconnectFailures and cntSkipped with Storm.
const (
	cntMixedAcked         = "messages_acked"       // window, by ack time
	cntMixedDeliveries    = "deliveries"           // window: messages received by members, live or caught up
	cntMixedCaughtUp      = "caught_up"            // messages a reconnected member got by sync (any time)
	cntMixedDupDeliveries = "duplicate_deliveries" // a (conv, seq) seen twice (any time)
	cntMixedReceipts      = "receipts_sent"        // window: receipt requests (delivered and/or read)
	cntMixedReads         = "read_receipts_sent"   // window: … that moved the read cursor
	cntMixedReceiptEvents = "receipt_events"       // window: receipt and read-count frames received
	cntMixedReceiptLost   = "receipts_lost"        // receipt requests cut by a planned reconnect (any time)
	cntMixedReceiptFailed = "receipts_failed"      // receipt requests that failed otherwise (any time)

	latResume = "resume"
)

func (*Mixed) Name() string { return "mixed" }

// MeasureAfter makes Mixed Windowed: the window starts after Warmup.
func (m *Mixed) MeasureAfter() time.Duration { return m.Warmup }

func (m *Mixed) Validate() error {
	p := problems{scenario: "mixed"}
	if m.Users < 2 || m.Users > maxMixedUsers {
		p.add("users %d out of range [2, %d]", m.Users, maxMixedUsers)
	}
	if m.GroupMin < minMixedGroup || m.GroupMax > maxMixedGroup || m.GroupMin > m.GroupMax {
		p.add("group sizes %d..%d: want %d <= min <= max <= %d", m.GroupMin, m.GroupMax, minMixedGroup, maxMixedGroup)
	}
	if !(m.Groups >= 0 && m.Groups <= maxMixedRounds) || !(m.Directs >= 0 && m.Directs <= maxMixedRounds) {
		p.add("groups %v and directs %v per user: each in [0, %d]", m.Groups, m.Directs, maxMixedRounds)
	} else if m.Groups == 0 && m.Directs == 0 {
		p.add("no groups and no 1:1s: nobody to talk to")
	}
	if !(m.Rate > 0 && m.Rate <= maxMixedRate) {
		p.add("rate %v out of range (0, %d] messages per user per minute", m.Rate, maxMixedRate)
	}
	if m.TypeFor < 0 || m.TypeFor > maxMixedTypeFor {
		p.add("type-for %v out of range [0, %v]", m.TypeFor, maxMixedTypeFor)
	}
	if m.ReadDelay < 0 || m.ReadDelay > maxMixedReadDelay {
		p.add("read delay %v out of range [0, %v]", m.ReadDelay, maxMixedReadDelay)
	}
	if !(m.Reconnect >= 0 && m.Reconnect <= maxMixedReconnect) {
		p.add("reconnect %v out of range [0, %d] per minute", m.Reconnect, maxMixedReconnect)
	}
	if m.Offline <= 0 || m.Offline > maxMixedOffline {
		p.add("offline %v out of range (0, %v]", m.Offline, maxMixedOffline)
	}
	if m.BodyBytes < minDirectBody || m.BodyBytes > wire.MaxBodyBytes {
		p.add("body %d bytes out of range [%d, %d]", m.BodyBytes, minDirectBody, wire.MaxBodyBytes)
	}
	if m.Warmup < 0 {
		p.add("warmup %v is negative", m.Warmup)
	}
	if m.Drain < 0 || m.Drain > maxMixedDrain {
		p.add("drain %v out of range [0, %v]", m.Drain, maxMixedDrain)
	}
	return p.err()
}

func (m *Mixed) Params() map[string]any {
	return map[string]any{
		"users": m.Users, "groups_per_user": m.Groups, "group_size": fmt.Sprintf("%d-%d", m.GroupMin, m.GroupMax),
		"directs_per_user": m.Directs, "msgs_per_user_min": m.Rate, "type_for": m.TypeFor.String(),
		"read_delay": m.ReadDelay.String(), "reconnect_per_min": m.Reconnect, "offline": m.Offline.String(),
		"body_bytes": m.BodyBytes, "warmup": m.Warmup.String(), "drain": m.Drain.String(), "seed": m.Seed,
	}
}

// mixedShard is one worker's part: its users and the configuration; the
// worker draws the social graph of its users from the seed.
type mixedShard struct {
	Config   Mixed     `json:"config"`
	WS       []string  `json:"ws"`
	First    int       `json:"first"` // global index of Accounts[0]
	Accounts []Account `json:"accounts"`
}

func (m *Mixed) Plan(ctx context.Context, env *Env) ([]json.RawMessage, error) {
	sizes := splitSizes(m.Users, env.ConnsPerWorker())
	if sizes[len(sizes)-1] < 2 {
		return nil, fmt.Errorf("bench: mixed: %d users over workers of %d leave one alone", m.Users, env.ConnsPerWorker())
	}
	accounts, err := env.CreateAccounts(ctx, m.Users)
	if err != nil {
		return nil, err
	}
	return planShards(sizes, func(_, first, n int) any {
		return mixedShard{Config: *m, WS: env.WS(), First: first, Accounts: accounts[first : first+n]}
	})
}

// graph draws the conversations of n users (by index) from r: the groups'
// members and the 1:1 pairs (see Mixed).
func (m *Mixed) graph(n int, r *rand.Rand) (groups [][]int, directs [][2]int) {
	cover := func(round int, per float64) int { // users in this round
		if float64(round+1) <= per {
			return n
		}
		return int(math.Round((per - float64(round)) * float64(n)))
	}
	for round := 0; float64(round) < m.Groups; round++ {
		rest := r.Perm(n)[:cover(round, m.Groups)]
		for len(rest) >= m.GroupMin {
			size := min(m.GroupMin+r.IntN(m.GroupMax-m.GroupMin+1), len(rest))
			if left := len(rest) - size; left > 0 && left < m.GroupMin {
				// Do not leave a remainder too small for a group.
				if len(rest) <= m.GroupMax {
					size = len(rest)
				} else if len(rest)-m.GroupMin >= m.GroupMin {
					size = len(rest) - m.GroupMin
				}
			}
			groups = append(groups, rest[:size])
			rest = rest[size:]
		}
	}
	met := make(map[[2]int]bool)
	for round := 0; float64(round) < m.Directs; round++ {
		perm := r.Perm(n)[:cover(round, m.Directs)]
		for k := 0; k+1 < len(perm); k += 2 {
			p := [2]int{min(perm[k], perm[k+1]), max(perm[k], perm[k+1])}
			if !met[p] {
				met[p] = true
				directs = append(directs, p)
			}
		}
	}
	return groups, directs
}

func (*Mixed) NewLoad(raw json.RawMessage) (Load, error) {
	var sh mixedShard
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	cfg := sh.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(sh.WS) == 0 || len(sh.Accounts) < 2 {
		return nil, errors.New("no WebSocket URL or fewer than two accounts")
	}
	l := &mixedLoad{
		cfg:     cfg,
		shard:   sh,
		lat:     map[string]*recorder{"deliver": newRecorder(), "ack": newRecorder(), latResume: newRecorder()},
		padding: strings.Repeat("x", cfg.BodyBytes),
		log:     sdkLogger(),
	}
	for i, a := range sh.Accounts {
		l.users = append(l.users, &mixedUser{Account: a, idx: sh.First + i, kick: make(chan struct{}, 1),
			receipts: make(map[uint64]*receiptState)})
	}
	groups, directs := cfg.graph(len(l.users), rand.New(rand.NewPCG(cfg.Seed, uint64(sh.First))))
	add := func(group bool, members []int) {
		cv := &mixedConv{group: group, name: fmt.Sprintf("mixed %d.%d", sh.First, len(l.convs))}
		for _, k := range members {
			u := l.users[k]
			cv.members = append(cv.members, u)
			u.convs = append(u.convs, cv)
		}
		l.convs = append(l.convs, cv)
	}
	for _, g := range groups {
		add(true, g)
	}
	for _, d := range directs {
		add(false, d[:])
	}
	return l, nil
}

// mixedLoad is a worker's share of Mixed.
//
// Goroutines: Connect dials users and then creates conversations from
// bounded groups. Every client has a reader goroutine (read) until the
// client closes; every user a receipt goroutine (sendReceipts) from Connect
// to Finish. Run starts two schedulers (messages and reconnects), each
// spawning one goroutine per action, and waits for all of them. users,
// convs and the conversations' members are fixed by NewLoad, conversation
// ids by Connect; everything else the goroutines share is atomic, a
// recorder, the tally, or guarded by a user's mu.
type mixedLoad struct {
	cfg     Mixed
	shard   mixedShard
	log     *slog.Logger // for the SDK: errors only, to the worker's stderr
	padding string       // BodyBytes of filler, sliced per message
	users   []*mixedUser
	convs   []*mixedConv
	live    *Live

	measureWindow // set by Run before the load

	lat    map[string]*recorder // fixed keys; recorders lock themselves
	counts counterSet
	tally  tally

	sent, acked, duplicates, delivered, badBodies atomic.Int64

	bg         context.Context // receipts; cancelled by Finish
	cancelBg   context.CancelFunc
	readers    sync.WaitGroup // client readers
	receipters sync.WaitGroup // one per user
	actions    sync.WaitGroup // messages and reconnects

	start, end           time.Time // written by Run, read by Finish
	dropped, undelivered int64
}

// mixedConv is a conversation of the worker's users; id is set by Connect.
type mixedConv struct {
	id      uint64
	group   bool
	name    string
	members []*mixedUser
}

// mixedUser is one user of this worker.
//
// c is the user's client, nil while a reconnect keeps the user away (or
// after it failed). It is replaced only by Connect and by whoever holds
// busy, which also makes messages and reconnects exclusive; readerDone
// (the current reader's end) likewise.
type mixedUser struct {
	Account
	idx   int // global index
	convs []*mixedConv

	busy
	c           atomic.Pointer[client.Client]
	readerDone  chan struct{}
	connectedAt atomic.Int64 // Unix ns at which the current connection was up
	nextMsg     atomic.Uint64

	expected atomic.Int64 // messages acked by others in this user's conversations
	received atomic.Int64 // distinct messages of others received

	kick     chan struct{} // capacity 1: receipts are due
	mu       sync.Mutex    // guards receipts
	receipts map[uint64]*receiptState
}

// receiptState is what a user has seen and reported of one conversation.
type receiptState struct {
	seen      uint64    // highest seq received (any kind): later copies are duplicates
	delivered uint64    // highest message seq of others received
	reported  uint64    // highest delivered seq reported
	readDue   time.Time // when to report it read; zero when nothing is unread
}

func (l *mixedLoad) countIn(name string, t time.Time) {
	if l.inWindow(t) {
		l.counts.add(name, 1)
	}
}

// timed reports whether something that started at t is in the window's
// latencies: it started in the window (and may end after it).
func (l *mixedLoad) timed(t time.Time) bool { return l.inWindow(t) }

func (l *mixedLoad) Connect(ctx context.Context, live *Live) error {
	l.live = live
	l.bg, l.cancelBg = context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(mixedDialers)
	for _, u := range l.users {
		g.Go(func() error {
			c, err := l.dial(gctx, u, 0)
			if err != nil {
				return fmt.Errorf("bench: connect %s: %w", u.Name, err)
			}
			l.attach(u, c)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, u := range l.users {
		l.receipters.Go(func() { l.sendReceipts(u) })
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(mixedDialers)
	for _, cv := range l.convs {
		g.Go(func() error { return l.create(gctx, cv) })
	}
	return g.Wait()
}

// create makes conversation cv on the server, by its first member.
func (l *mixedLoad) create(ctx context.Context, cv *mixedConv) error {
	owner := cv.members[0]
	c := owner.c.Load()
	var info *wire.ConvInfo
	var err error
	if cv.group {
		others := make([]uint64, 0, len(cv.members)-1)
		for _, m := range cv.members[1:] {
			others = append(others, m.User)
		}
		info, err = c.CreateGroup(ctx, cv.name, others)
	} else {
		info, err = c.OpenDirect(ctx, cv.members[1].User)
	}
	if err != nil {
		return fmt.Errorf("bench: %s creates %s: %w", owner.Name, cv.name, err)
	}
	cv.id = info.ID
	return nil
}

// dial connects u, syncing from cursor (dialRetrying).
func (l *mixedLoad) dial(ctx context.Context, u *mixedUser, cursor uint64) (*client.Client, error) {
	cfg := client.Config{
		URLs:        rotate(l.shard.WS, u.idx),
		Token:       u.Token,
		Cursor:      cursor,
		EventBuffer: mixedEventBuffer,
		Logger:      l.log,
	}
	return dialRetrying(ctx, cfg, nil)
}

// attach makes c u's client: what it delivers from now on is live, and a
// reader handles it.
func (l *mixedLoad) attach(u *mixedUser, c *client.Client) {
	u.connectedAt.Store(time.Now().UnixNano())
	done := make(chan struct{})
	u.readerDone = done
	l.readers.Go(func() {
		defer close(done)
		l.read(u, c)
	})
	u.c.Store(c)
	l.live.Conns.Add(1)
	u.wake() // receipts held while away
}

// wake tells u's receipt goroutine that receipts may be due.
func (u *mixedUser) wake() {
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// read is a client's reader goroutine: it handles the conversation events
// and counts the signals until the client closes.
func (l *mixedLoad) read(u *mixedUser, c *client.Client) {
	events, signals := c.Events(), c.Signals()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			l.onEvent(u, &ev)
		case sig := <-signals:
			now := time.Now()
			switch {
			case sig.Typing != nil:
				l.countIn(cntTyping, now)
			case sig.Receipt != nil, sig.ReadCounts != nil:
				l.countIn(cntMixedReceiptEvents, now)
			}
		}
	}
}

func (l *mixedLoad) onEvent(u *mixedUser, ev *wire.Event) {
	now := time.Now()
	message := ev.Kind == wire.KindMessage && ev.From != u.User // not its own echo
	u.mu.Lock()
	st := u.receipts[ev.Conv]
	if st == nil {
		st = new(receiptState)
		u.receipts[ev.Conv] = st
	}
	dup := ev.Seq <= st.seen
	if !dup {
		st.seen = ev.Seq
		if message {
			st.delivered = ev.Seq
			if st.readDue.IsZero() {
				st.readDue = now.Add(l.cfg.ReadDelay)
			}
		}
	}
	u.mu.Unlock()
	if !message {
		return
	}
	if dup {
		l.counts.add(cntMixedDupDeliveries, 1)
		return
	}
	u.received.Add(1)
	l.delivered.Add(1)
	l.live.Delivered.Add(1)
	l.countIn(cntMixedDeliveries, now)
	switch stamp, ok := parseStamp(ev.Body); {
	case !ok:
		l.badBodies.Add(1)
	case stamp.UnixNano() < u.connectedAt.Load():
		l.counts.add(cntMixedCaughtUp, 1) // sent while u was away
	case l.timed(stamp):
		l.lat["deliver"].record(u.idx, now.Sub(stamp))
	}
	u.wake()
}

// sendReceipts is a user's receipt goroutine, from Connect to Finish: it
// reports what is due whenever the reader kicks it or a read comes due.
func (l *mixedLoad) sendReceipts(u *mixedUser) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-u.kick:
		case <-timer.C:
		case <-l.bg.Done():
			return
		}
		if next := l.flushReceipts(u); !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// flushReceipts sends u's due receipts, one request per conversation, and
// returns when the next read comes due (zero: none pending). While u is
// away nothing is sent; the reconnect kicks again.
func (l *mixedLoad) flushReceipts(u *mixedUser) (next time.Time) {
	c := u.c.Load()
	if c == nil {
		return time.Time{}
	}
	type item struct{ conv, delivered, read uint64 }
	var items []item
	now := time.Now()
	u.mu.Lock()
	for conv, st := range u.receipts {
		it := item{conv: conv}
		if st.delivered > st.reported {
			it.delivered = st.delivered
		}
		if !st.readDue.IsZero() {
			if now.Before(st.readDue) {
				if next.IsZero() || st.readDue.Before(next) {
					next = st.readDue
				}
			} else {
				it.delivered, it.read = st.delivered, st.delivered
				st.readDue = time.Time{}
			}
		}
		if it.delivered != 0 {
			st.reported = st.delivered
			items = append(items, it)
		}
	}
	u.mu.Unlock()
	for _, it := range items {
		err := c.Receipt(l.bg, it.conv, it.delivered, it.read)
		switch {
		case err == nil:
			at := time.Now()
			l.countIn(cntMixedReceipts, at)
			if it.read != 0 {
				l.countIn(cntMixedReads, at)
			}
		case errors.Is(err, client.ErrClosed) || l.bg.Err() != nil:
			l.counts.add(cntMixedReceiptLost, 1) // a reconnect or the end: cursors move on with the next message
		default:
			l.counts.add(cntMixedReceiptFailed, 1)
			l.tally.error(fmt.Errorf("receipt (%s): %w", errorCode(err), err))
		}
	}
	return next
}

func (l *mixedLoad) Run(ctx context.Context, start, until time.Time, _ *Live) error {
	l.setWindow(start.Add(l.cfg.Warmup), until)
	if !sleepCtx(ctx, time.Until(start)) {
		return ctx.Err()
	}
	l.start = start
	n := float64(len(l.users))
	runActivities(ctx, start, until, &l.actions, &l.counts, l.claim,
		activity[*mixedUser]{l.cfg.Rate * n, l.chat}, activity[*mixedUser]{l.cfg.Reconnect * n, l.reconnect})
	l.actions.Wait() // the last messages acked, the last users back
	l.end = time.Now()
	if ctx.Err() != nil {
		return ctx.Err()
	}

	if err := waitDrained(ctx, l.cfg.Drain, l.drained); err != nil {
		return err
	}
	for _, u := range l.users {
		if missing := u.expected.Load() - u.received.Load(); missing > 0 {
			l.undelivered += missing
		}
		if c := u.c.Load(); c == nil || !c.State().Connected {
			l.dropped++
		}
	}
	return nil
}

// drained reports whether every connected user has received every message
// acked in their conversations.
func (l *mixedLoad) drained() bool {
	for _, u := range l.users {
		if u.c.Load() != nil && u.received.Load() < u.expected.Load() {
			return false
		}
	}
	return true
}

// claim picks a random connected user with a conversation that is doing
// nothing and marks it busy; false when a few picks found none.
func (l *mixedLoad) claim() (*mixedUser, bool) {
	return claimIdle(l.users, mixedClaimTries, func(u *mixedUser) bool { return len(u.convs) > 0 && u.c.Load() != nil })
}

// chat is one message of u: type, send, stop typing.
func (l *mixedLoad) chat(ctx context.Context, u *mixedUser) {
	cv := u.convs[rand.N(len(u.convs))]
	c := u.c.Load() // not nil: claimed, and only u's action replaces it
	typing := l.cfg.TypeFor > 0
	if typing {
		at := time.Now()
		if err := c.Typing(ctx, cv.id, true); err != nil {
			l.typingFailed(ctx, err)
		} else {
			l.countIn(cntTypingStarts, at)
		}
		if !sleepCtx(ctx, l.cfg.TypeFor/2+rand.N(l.cfg.TypeFor+1)) {
			return
		}
	}
	l.send(ctx, u, c, cv)
	if typing {
		if err := c.Typing(ctx, cv.id, false); err != nil {
			l.typingFailed(ctx, err)
		}
	}
}

func (l *mixedLoad) typingFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // the run was cancelled
	}
	l.counts.add(cntTypingFailed, 1)
	l.tally.error(fmt.Errorf("typing (%s): %w", errorCode(err), err))
}

// send posts one message stamped with its send time and retries it, with
// the same cmid, on retryable errors until directSendTimeout. Once acked,
// every other member of cv expects it.
func (l *mixedLoad) send(ctx context.Context, u *mixedUser, c *client.Client, cv *mixedConv) {
	stamp := time.Now()
	req := wire.Request{
		Type:        wire.TypeSend,
		Conv:        cv.id,
		ClientMsgID: "x" + strconv.FormatUint(u.nextMsg.Add(1), 10),
		Body:        stampBody(stamp, l.padding),
	}
	l.sent.Add(1)
	l.live.Sent.Add(1)
	rep, code, err := sendRetrying(ctx, c, &req, nil, l.tally.retry)
	if err != nil {
		if ctx.Err() == nil {
			l.tally.fail(code, fmt.Errorf("send: %w", err))
		}
		return
	}
	now := time.Now()
	if l.timed(stamp) {
		l.lat["ack"].record(u.idx, now.Sub(stamp))
	}
	if rep.Duplicate {
		l.duplicates.Add(1)
	}
	for _, m := range cv.members {
		if m != u {
			m.expected.Add(1)
		}
	}
	l.acked.Add(1)
	l.live.Acked.Add(1)
	l.countIn(cntMixedAcked, now)
}

// reconnect closes u's connection, keeps u away for Offline and dials again
// from the cursor u had.
func (l *mixedLoad) reconnect(ctx context.Context, u *mixedUser) {
	old := u.c.Load()
	cursor := old.Cursor()
	u.c.Store(nil)
	_ = old.Close() // never fails; Events closes
	// The old reader handles what the old client delivered before the new
	// one starts, so each (conv, seq) is counted once, in order.
	<-u.readerDone
	l.live.Conns.Add(-1)
	l.countIn(cntReconnects, time.Now())
	if !sleepCtx(ctx, l.cfg.Offline) {
		return // cancelled: the user stays away
	}
	t0 := time.Now()
	c, err := l.dial(ctx, u, cursor)
	if err != nil {
		if ctx.Err() == nil {
			l.counts.add(cntReconnectFailures, 1)
			l.tally.error(fmt.Errorf("reconnect: %w", err))
		}
		return
	}
	if l.timed(t0) {
		l.lat[latResume].record(u.idx, time.Since(t0))
	}
	l.attach(u, c)
}

func (l *mixedLoad) Finish(context.Context) *Result {
	if l.cancelBg != nil {
		l.cancelBg()
	}
	l.receipters.Wait()
	res := &Result{}
	clients := make([]*client.Client, 0, len(l.users))
	for _, u := range l.users {
		clients = append(clients, u.c.Load())
	}
	res.Conns = closeClients(clients)
	l.readers.Wait() // each ends when its client's Events closes

	res.Sent, res.Acked, res.Duplicates = l.sent.Load(), l.acked.Load(), l.duplicates.Load()
	res.Delivered, res.BadBodies = l.delivered.Load(), l.badBodies.Load()
	res.Undelivered, res.Dropped = l.undelivered, l.dropped
	res.Start, res.End = l.start, l.end
	res.Latency = mergeRecorders(l.lat)
	res.Counters = l.counts.snapshot()
	l.tally.fill(res)
	return res
}

func (m *Mixed) Report(rep *Report) {
	res := rep.Result
	cnt := res.Counters
	window := rep.Duration - m.Warmup.Seconds()
	if window > 0 {
		per := func(name string) float64 { return float64(cnt[name]) / window }
		rep.AddFigure("messages acked", per(cntMixedAcked), "msg/s")
		rep.AddFigure("deliveries to members", per(cntMixedDeliveries), "msg/s")
		rep.AddFigure("receipts sent (delivered or read)", per(cntMixedReceipts), "/s")
		rep.AddFigure("read receipts sent", per(cntMixedReads), "/s")
		rep.AddFigure("receipt events received", per(cntMixedReceiptEvents), "events/s")
		rep.AddFigure("typing starts sent", per(cntTypingStarts), "/s")
		rep.AddFigure("typing events received", per(cntTyping), "events/s")
		rep.AddFigure("reconnects", per(cntReconnects), "/s")
	}
	if n := cnt[cntMixedAcked]; n > 0 {
		rep.AddFigure("deliveries per message", float64(cnt[cntMixedDeliveries])/float64(n), "")
	}
	rep.AddFigure("reconnects in the window", float64(cnt[cntReconnects]), "")
	rep.AddFigure("messages caught up by sync after a reconnect", float64(cnt[cntMixedCaughtUp]), "")
	reportWindowServer(rep, m.Users, "message (with its deliveries, receipts, typing)", cnt[cntMixedAcked])

	fail := func(format string, a ...any) { rep.Failures = append(rep.Failures, fmt.Sprintf(format, a...)) }
	if res.Conns < int64(m.Users) {
		fail("only %d of %d users were connected at the end", res.Conns, m.Users)
	}
	if res.Acked == 0 {
		fail("no message was acknowledged")
	}
	if res.Undelivered > 0 {
		fail("%d deliveries of acked messages to members were missing after the %v drain", res.Undelivered, m.Drain)
	}
	reportSendFailures(rep)
	if res.Dropped > 0 {
		fail("%d users were not connected at the end of the load", res.Dropped)
	}
	if n := cnt[cntReconnectFailures]; n > 0 {
		fail("%d reconnecting users could not come back", n)
	}
	if n := cnt[cntTypingFailed]; n > 0 {
		fail("%d typing requests failed", n)
	}
	if n := cnt[cntMixedReceiptFailed]; n > 0 {
		fail("%d receipt requests failed", n)
	}
	if n := cnt[cntSkipped]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"%d scheduled messages or reconnects found no idle user and were skipped: the offered load was not fully applied", n))
	}
	if n := res.Retries[string(wire.CodeRateLimited)]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the server's per-connection rate limit refused %d sends (retried)", n))
	}
	reportOverflows(rep)
}
