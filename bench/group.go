package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"parley/client"
	"parley/wire"
)

// Group is the fan-out scenario: one group conversation of Members
// receiving members plus Senders sending ones, every member online on a
// connection of its own (members spread over the nodes and workers), the
// senders posting to the group at Rate messages per second over all of them
// or flat out. It measures:
//
//   - deliveries per second: message frames received by the receiving
//     members in the measured window (the load after Warmup), over the
//     window;
//   - fan-out latency, per message: from its send to the LAST receiving
//     member's receipt, over every worker (HDR histogram); a message that
//     some reading member never received is counted as incomplete rather
//     than timed;
//   - per-delivery latency: from the send to each member's receipt;
//   - the senders' ack latency, and the server's CPU per delivery and
//     memory over the run.
//
// Receiving members are bare connections (see bareConn): each decodes the
// routing fields of a frame, reads the send stamp in the body and counts,
// so that ten thousand of them fit in a worker or two. Senders use the SDK
// (retries, acks); they are members too and get their own messages back,
// which are not counted.
//
// # Clocks
//
// A message's body starts with its send time (Unix nanoseconds, the
// intended time at a fixed rate, so a stalled server is charged for the
// sends it delayed: no coordinated omission; see Direct). Workers are
// processes on the machine that runs the senders, so they read the same
// wall clock and every latency, across workers too, is a difference of
// two readings of one clock. The harness does not support workers on
// other machines.
//
// # Slow members
//
// With Slow > 0, that fraction of the receiving members stop reading their
// sockets when the load starts (see slow.go); the others are measured as
// usual, the slow ones are probed after the load, and the nodes' memory is
// sampled throughout.
type Group struct {
	Members   int           `json:"members"`    // receiving members; default 1000
	Senders   int           `json:"senders"`    // sending members; default 1
	Rate      float64       `json:"rate"`       // messages per second over all senders; 0 is flat out
	Window    int           `json:"window"`     // sends in flight per sender; default 1 flat out, 64 at a fixed rate
	BodyBytes int           `json:"body_bytes"` // default 100
	Warmup    time.Duration `json:"warmup"`     // load before the measured window; default 0
	Drain     time.Duration `json:"drain"`      // wait for deliveries after the load; default 10s
	Slow      float64       `json:"slow"`       // fraction of the receiving members that stop reading
	// ReceiveBuffer is the SO_RCVBUF of each reading member's socket; 0
	// leaves the kernel's autotuning. A buffer larger than all a member
	// will receive lets the kernel take every byte the server sends
	// however late the member's process runs, so that only slow members
	// can overflow the server's queue (the harness's own tests use it).
	ReceiveBuffer int `json:"receive_buffer,omitempty"`

	sampler *serverSampler // coordinator only: Plan starts it, Report stops it
}

const (
	maxGroupMembers   = 100_000 // engine.MaxGroupMembers, with the senders
	maxGroupSenders   = 1000
	groupDialers      = 32
	groupDialAttempts = 3
	groupAddBatch     = wire.MaxUsersPerRequest
	groupQuiet        = time.Second // no new message for this long: other workers' senders are done
	groupSetupTimeout = 5 * time.Minute

	// Fan-out tracking: per message seq, in chunks allocated on first use.
	fanoutChunk     = 4096
	maxFanoutChunks = 256 // about a million messages per run
)

// Group's histograms and counters.
const (
	latFanout = "fanout"

	cntGroupWindowDeliveries = "group: deliveries in the window"
	cntGroupWindowAcked      = "group: messages acked in the window"
	cntGroupUntracked        = "group: messages beyond fan-out tracking"
	cntFanoutPrefix          = "fanout/" // + shard/seq: a worker's share of a message's fan-out, consumed by Report
)

func init() {
	latencyTitles[latFanout] = "send → last member (fan-out)"
}

func (g Group) withDefaults() Group {
	setDefault(&g.Members, 1000)
	sendDefaults(&g.Senders, &g.Window, &g.BodyBytes, g.Rate, &g.Drain)
	return g
}

func (*Group) Name() string { return "group" }

func (g *Group) Validate() error {
	c := g.withDefaults()
	p := problems{scenario: "group"}
	if c.Members < 1 || c.Senders < 1 || c.Senders > maxGroupSenders || c.Members+c.Senders > maxGroupMembers {
		p.add("members %d and senders %d out of range: 1 or more each, senders at most %d, %d in all",
			c.Members, c.Senders, maxGroupSenders, maxGroupMembers)
	}
	checkSends(p.add, c.Rate, c.Window, c.BodyBytes, c.Drain)
	if c.Warmup < 0 {
		p.add("warmup %v is negative", c.Warmup)
	}
	checkReceivers(p.add, max(c.Members, 0), c.Slow, c.ReceiveBuffer, "member")
	return p.err()
}

func (g *Group) Params() map[string]any {
	c := g.withDefaults()
	return sendParams(map[string]any{"members": c.Members, "warmup": c.Warmup.String()},
		c.Senders, c.Rate, c.Window, c.BodyBytes, c.Drain, c.Slow, c.ReceiveBuffer)
}

// MeasureAfter makes Group Windowed: the nodes are also sampled at the
// edges of the measured window.
func (g *Group) MeasureAfter() time.Duration { return g.Warmup }

// groupShard is one worker's part. Every sender is in shard 0, which
// therefore knows when the last message was acked.
type groupShard struct {
	Config    Group     `json:"config"`
	WS        []string  `json:"ws"`
	Conv      uint64    `json:"conv"`
	FirstSeq  uint64    `json:"first_seq"` // the first message's seq: the group's setup events come before
	Index     int       `json:"index"`     // shard number: names this worker's fan-out counters
	Receivers int       `json:"receivers"` // reading (not slow) members over all workers
	First     int       `json:"first"`     // global index of Members[0]
	Members   []Account `json:"members"`
	Senders   []Account `json:"senders,omitempty"`
}

func (g *Group) Plan(ctx context.Context, env *Env) ([]json.RawMessage, error) {
	c := g.withDefaults()
	per := env.ConnsPerWorker()
	if c.Senders >= per {
		return nil, fmt.Errorf("bench: group: %d senders do not fit in a worker of %d connections", c.Senders, per)
	}
	accounts, err := env.CreateAccounts(ctx, c.Senders+c.Members)
	if err != nil {
		return nil, err
	}
	senders, members := accounts[:c.Senders], accounts[c.Senders:]
	conv, lastSeq, err := createBigGroup(ctx, env.WS(), senders[0], accounts[1:])
	if err != nil {
		return nil, err
	}
	g.sampler = startServerSampler(ctx, env.opts)

	sizes := groupSplit(c.Members, c.Senders, per)
	if n := sumInts(sizes); n != c.Members {
		return nil, fmt.Errorf("bench: group: planned %d of %d members", n, c.Members)
	}
	return planShards(sizes, func(i, first, n int) any {
		sh := groupShard{
			Config: c, WS: env.WS(), Conv: conv, FirstSeq: lastSeq + 1, Index: i,
			Receivers: c.Members - countSlow(c.Members, c.Slow), First: first,
			Members: members[first : first+n],
		}
		if i == 0 {
			sh.Senders = senders
		}
		return sh
	})
}

func sumInts(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

// groupSplit returns the number of members of each shard: as even as
// possible over the fewest workers of per connections, the first of which
// also holds the senders (senders < per).
func groupSplit(members, senders, per int) []int {
	sizes := splitSizes(members+senders, per)
	if sizes[0] >= senders {
		sizes[0] -= senders
		return sizes
	}
	// Too few per worker to balance: fill the first, spread the rest.
	first := min(per-senders, members)
	return append([]int{first}, splitSizes(members-first, per)...)
}

// createBigGroup creates a group owned by owner with every account of
// others as a member, in batches of the protocol's limit, over an SDK
// client of the coordinator. It returns the group and the seq of its last
// setup event.
func createBigGroup(ctx context.Context, ws []string, owner Account, others []Account) (conv, lastSeq uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, groupSetupTimeout)
	defer cancel()
	cl, err := client.Dial(ctx, client.Config{
		URLs: ws, Token: owner.Token, EventBuffer: 16,
		Logger: sdkLogger(),
	})
	if err != nil {
		return 0, 0, fmt.Errorf("bench: group: dial the owner: %w", err)
	}
	defer cl.Close() // its Events are never read: the dispatcher waits, requests go on
	ids := make([]uint64, len(others))
	for i, a := range others {
		ids[i] = a.User
	}
	n := min(len(ids), groupAddBatch-1) // with the owner
	info, err := cl.CreateGroup(ctx, "parleybench group", ids[:n])
	if err != nil {
		return 0, 0, fmt.Errorf("bench: group: create: %w", err)
	}
	for ids = ids[n:]; len(ids) > 0; ids = ids[n:] {
		n = min(len(ids), groupAddBatch)
		if _, err := cl.AddMembers(ctx, info.ID, ids[:n]); err != nil {
			return 0, 0, fmt.Errorf("bench: group: add members: %w", err)
		}
	}
	if info, err = cl.Conversation(ctx, info.ID); err != nil {
		return 0, 0, fmt.Errorf("bench: group: read it back: %w", err)
	}
	return info.ID, info.LastSeq, nil
}

func (*Group) NewLoad(raw json.RawMessage) (Load, error) {
	var sh groupShard
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	cfg := sh.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(sh.WS) == 0 || len(sh.Members)+len(sh.Senders) == 0 || sh.Conv == 0 || sh.FirstSeq == 0 {
		return nil, errors.New("no WebSocket URL, no members or no group")
	}
	l := &groupLoad{
		cfg:     cfg,
		shard:   sh,
		ack:     newRecorder(),
		deliver: newRecorder(),
		sched:   newSendSchedule(cfg.Senders, cfg.Rate, cfg.Window),
		padding: strings.Repeat("x", cfg.BodyBytes),
		log:     sdkLogger(),
	}
	for i := range sh.Members {
		idx := sh.First + i
		l.members = append(l.members, &groupMember{idx: idx, slow: isSlow(idx, cfg.Slow)})
	}
	for i, a := range sh.Senders {
		l.senders = append(l.senders, &groupSender{idx: i, Account: a})
	}
	return l, nil
}

// groupLoad is a worker's share of Group.
//
// Goroutines: Connect dials from a bounded group and writes each member's
// and sender's connection before it returns; every member then has its
// gws read loop (onEvent runs there), every sender its SDK goroutines and
// a drain goroutine for its Events. Run starts a scheduler per sender
// (schedule, with Window lanes) and waits for them before it drains. Run's
// results (start, end, target) are read by Finish on the same goroutine.
// Everything else is atomic, a recorder, the tally or the counter set.
type groupLoad struct {
	cfg     Group
	shard   groupShard
	sched   sendSchedule
	padding string
	log     *slog.Logger // for the SDK: errors only, to the worker's stderr
	members []*groupMember
	senders []*groupSender
	live    *Live

	measureWindow // set by Run before the load

	fan          fanout
	ack, deliver *recorder
	tally        tally
	counters     counterSet
	sent, acked  atomic.Int64
	maxAcked     atomic.Uint64 // the highest seq acked
	missed       atomic.Int64
	delivered    atomic.Int64 // message frames received by reading members
	badBodies    atomic.Int64
	closing      atomic.Bool // set by Finish: closes from now on are ours
	dropped      atomic.Int64
	pings        atomic.Int64
	drains       sync.WaitGroup // the senders' Events drains

	start, end  time.Time
	undelivered int64
}

type groupMember struct {
	idx  int
	slow bool
	c    *bareConn

	received atomic.Int64  // messages of the load
	maxSeq   atomic.Uint64 // the highest message seq received
}

type groupSender struct {
	Account
	idx     int // among all senders: schedules, cmids
	c       *client.Client
	nextMsg atomic.Uint64
}

func (l *groupLoad) Connect(ctx context.Context, live *Live) error {
	l.live = live
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(groupDialers)
	for _, m := range l.members {
		g.Go(func() error { return l.dialMember(gctx, m) })
	}
	for _, s := range l.senders {
		g.Go(func() error {
			var err error
			s.c, err = client.Dial(gctx, client.Config{
				URLs:        rotate(l.shard.WS, s.idx),
				Token:       s.Token,
				EventBuffer: max(64, 2*l.cfg.Window),
				Logger:      l.log,
			})
			if err != nil {
				return fmt.Errorf("bench: dial sender %s: %w", s.Name, err)
			}
			l.live.Conns.Add(1)
			l.drains.Go(func() {
				for range s.c.Events() { // the group's messages, its own included: not measured
				}
			})
			return nil
		})
	}
	return g.Wait()
}

// dialMember opens member m's bare connection, retrying a failed attempt a
// few times: the group's fan-out is measured over every member.
func (l *groupLoad) dialMember(ctx context.Context, m *groupMember) error {
	acct := l.shard.Members[m.idx-l.shard.First]
	opts := bareOptions{
		URL:     l.shard.WS[m.idx%len(l.shard.WS)],
		Token:   acct.Token,
		Timeout: bareDialTimeout,
		Pings:   &l.pings,
		OnClose: func(*bareConn) {
			if !m.slow && !l.closing.Load() {
				l.dropped.Add(1)
				l.live.Conns.Add(-1)
				l.tally.error(fmt.Errorf("member %s dropped during the load", acct.Name))
			}
		},
	}
	if m.slow {
		opts.SocketReadBuffer = slowSocketBuffer
	} else {
		opts.SocketReadBuffer = l.cfg.ReceiveBuffer
		opts.OnEvent = func(f *bareFrame, now time.Time) { l.onEvent(m, f, now) }
	}
	c, _, err := dialBareRetrying(ctx, opts, groupDialAttempts, &l.counters)
	if err != nil {
		return fmt.Errorf("bench: member %d (%s): %w", m.idx, acct.Name, err)
	}
	m.c = c
	l.live.Conns.Add(1)
	return nil
}

// onEvent runs on a reading member's read loop for every frame that is
// not a reply.
func (l *groupLoad) onEvent(m *groupMember, f *bareFrame, now time.Time) {
	if f.Type != wire.TypeEvent || f.Kind != wire.KindMessage || f.Conv != l.shard.Conv || f.Seq < l.shard.FirstSeq {
		return
	}
	m.received.Add(1)
	atomicMax(&m.maxSeq, f.Seq)
	l.delivered.Add(1)
	l.live.Delivered.Add(1)
	if l.inWindow(now) {
		l.counters.add(cntGroupWindowDeliveries, 1)
	}
	stamp, ok := parseStamp(f.Body)
	if !ok {
		l.badBodies.Add(1)
		return
	}
	if !l.inWindow(stamp) {
		return // warmup: counted, not timed
	}
	l.deliver.record(m.idx, now.Sub(stamp))
	if !l.fan.record(f.Seq-l.shard.FirstSeq, stamp, now) {
		l.counters.add(cntGroupUntracked, 1)
	}
}

func (l *groupLoad) Run(ctx context.Context, start, until time.Time, _ *Live) error {
	l.setWindow(start.Add(l.cfg.Warmup), until)
	for _, m := range l.members {
		if m.slow {
			m.c.sock.pause()
		}
	}
	if !sleepCtx(ctx, time.Until(start)) {
		return ctx.Err()
	}
	l.start = start
	var senders sync.WaitGroup
	for _, s := range l.senders {
		senders.Go(func() {
			l.missed.Add(l.sched.run(ctx, s.idx, start, until, func(intended time.Time) { l.sendOne(ctx, s, intended) }))
		})
	}
	senders.Wait()
	l.end = time.Now()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return l.drain(ctx, until)
}

// drain waits, at most Drain, until every reading member of this worker
// that is still connected has every message. The worker with the senders
// knows the last acked seq; another worker takes the highest seq any of
// its members received, once it has not moved for groupQuiet after the
// load (the senders of the other worker have finished by then, unless the
// server holds their messages for longer).
func (l *groupLoad) drain(ctx context.Context, until time.Time) error {
	drainEnd := time.Now().Add(l.cfg.Drain)
	var target uint64
	moved := time.Now()
	for {
		t := l.maxAcked.Load()
		for _, m := range l.members {
			t = max(t, m.maxSeq.Load())
		}
		if t != target {
			target, moved = t, time.Now()
		}
		settled := len(l.senders) > 0 || (time.Since(moved) >= groupQuiet && time.Since(until) >= groupQuiet)
		if settled && l.missing(target) == 0 {
			break
		}
		if !time.Now().Before(drainEnd) {
			break
		}
		if !sleepCtx(ctx, drainPoll) {
			return ctx.Err()
		}
	}
	l.undelivered = l.missing(target)
	return nil
}

// missing is the number of messages up to seq target that reading,
// connected members of this worker have not received.
func (l *groupLoad) missing(target uint64) int64 {
	if target < l.shard.FirstSeq {
		return 0
	}
	want := int64(target - l.shard.FirstSeq + 1)
	var n int64
	for _, m := range l.members {
		if m.slow || isClosed(m.c.gone) {
			continue
		}
		n += max(want-m.received.Load(), 0)
	}
	return n
}

// sendOne posts one stamped message to the group and retries it, with the
// same cmid, on retryable errors until directSendTimeout.
func (l *groupLoad) sendOne(ctx context.Context, s *groupSender, intended time.Time) {
	stamp := intended
	if stamp.IsZero() {
		stamp = time.Now()
	}
	req := wire.Request{
		Type:        wire.TypeSend,
		Conv:        l.shard.Conv,
		ClientMsgID: "g" + strconv.FormatUint(s.nextMsg.Add(1), 10),
		Body:        stampBody(stamp, l.padding),
	}
	l.sent.Add(1)
	l.live.Sent.Add(1)
	rep, code, err := sendRetrying(ctx, s.c, &req, nil, l.tally.retry)
	if err != nil {
		l.tally.fail(code, fmt.Errorf("send: %w", err))
		return
	}
	l.ack.record(s.idx, time.Since(stamp))
	l.acked.Add(1)
	l.live.Acked.Add(1)
	atomicMax(&l.maxAcked, rep.Seq)
	if l.inWindow(stamp) {
		l.counters.add(cntGroupWindowAcked, 1)
	}
}

func (l *groupLoad) Finish(ctx context.Context) *Result {
	res := &Result{Start: l.start, End: l.end}
	var slow []*bareConn
	for _, m := range l.members {
		if m.slow && m.c != nil {
			slow = append(slow, m.c)
		}
	}
	probeAll(ctx, slow, &l.counters)
	l.closing.Store(true)
	clients := make([]*client.Client, 0, len(l.senders))
	for _, s := range l.senders {
		clients = append(clients, s.c)
	}
	res.Conns += closeClients(clients)
	l.drains.Wait()
	conns := make([]*bareConn, 0, len(l.members))
	for _, m := range l.members {
		if m.c != nil {
			res.Conns++
			conns = append(conns, m.c)
		}
	}
	closeBare(ctx, conns, &l.tally)

	res.ConnFailures = int64(len(l.members)+len(l.senders)) - res.Conns
	res.Sent, res.Acked, res.Missed = l.sent.Load(), l.acked.Load(), l.missed.Load()
	res.Delivered, res.Undelivered, res.BadBodies = l.delivered.Load(), l.undelivered, l.badBodies.Load()
	res.Dropped, res.Pings = l.dropped.Load(), l.pings.Load()
	res.Latency = map[string]*Histogram{"deliver": l.deliver.merged()}
	if len(l.senders) > 0 {
		res.Latency["ack"] = l.ack.merged()
	}
	l.fan.export(&l.counters, l.shard.Index, l.shard.FirstSeq)
	res.Counters = l.counters.snapshot()
	l.tally.fill(res)
	return res
}

func (g *Group) Report(rep *Report) {
	c := g.withDefaults()
	res := rep.Result
	cnt := res.Counters
	receivers := c.Members - countSlow(c.Members, c.Slow)
	fan, messages, incomplete := collectFanout(cnt, receivers)
	if messages > 0 {
		if res.Latency == nil {
			res.Latency = make(map[string]*Histogram)
		}
		res.Latency[latFanout] = fan
		rep.Latency[latFanout] = fan.Summary()
	}
	rep.AddFigure("members receiving (reading)", float64(receivers), "")
	if window := rep.Duration - c.Warmup.Seconds(); window > 0 {
		rep.AddFigure("deliveries per second (window)", float64(cnt[cntGroupWindowDeliveries])/window, "/s")
		rep.AddFigure("messages acked per second (window)", float64(cnt[cntGroupWindowAcked])/window, "msg/s")
	}
	if w0, w1, ok := phaseDelta(rep, phaseWindowStart, phaseWindowEnd); ok {
		if dt := w1.At.Sub(w0.At).Seconds(); dt > 0 {
			cpu := w1.CPUSeconds - w0.CPUSeconds
			rep.AddFigure("server CPU in the window", cpu/dt, "cores")
			if n := cnt[cntGroupWindowDeliveries]; n > 0 {
				rep.AddFigure("server CPU per delivery", cpu/float64(n)*1e6, "µs")
			}
		}
	}
	// Only when the connections dominate the RSS delta: after the setup
	// the baseline holds garbage that the connections' memory reuses.
	if base, conn, ok := phaseDelta(rep, "baseline", "connected"); ok && res.Conns > 0 && conn.RSSBytes-base.RSSBytes > base.RSSBytes/10 {
		rep.AddFigure("server RSS per member connection", (conn.RSSBytes-base.RSSBytes)/float64(res.Conns), "bytes")
	}
	reportServerSeries(rep, g.sampler.stop())
	reportSlow(rep, c.Members-receivers)

	if res.Acked == 0 {
		rep.Failures = append(rep.Failures, "no message was acknowledged")
	}
	if res.ConnFailures > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d of %d connections could not be opened", res.ConnFailures, c.Members+c.Senders))
	}
	if res.Dropped > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d reading members were disconnected during the load", res.Dropped))
	}
	if res.Undelivered > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf(
			"%d deliveries to reading members were missing when the %v drain ended", res.Undelivered, c.Drain))
	}
	// An acked message that no worker saw at all is missing from messages.
	if n := incomplete + max(cnt[cntGroupWindowAcked]-messages, 0); n > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf(
			"%d of the window's %d acked messages did not reach every reading member", n, cnt[cntGroupWindowAcked]))
	}
	reportSendFailures(rep)
	reportMissed(rep)
	if n := res.Retries[string(wire.CodeRateLimited)]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"the server's per-connection rate limit refused %d sends (retried): add senders for more messages per second", n))
	}
	if n := cnt[cntGroupUntracked]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d deliveries were past the fan-out tracking limit and are not in the fan-out latency", n))
	}
}

// fanout tracks, per message of the load (by seq - FirstSeq), how many of
// this worker's reading members received it, the latest receipt and the
// send stamp. Entries live in chunks allocated on first use; record and
// export are safe for concurrent use.
type fanout struct {
	chunks [maxFanoutChunks]atomic.Pointer[[fanoutChunk]fanoutEntry]
}

type fanoutEntry struct {
	count atomic.Int64
	last  atomic.Int64 // Unix ns of the latest receipt
	stamp atomic.Int64 // Unix ns of the send; the same for every receipt
}

// record notes one receipt of message i; false when i is past the limit.
func (f *fanout) record(i uint64, stamp, now time.Time) bool {
	if i >= maxFanoutChunks*fanoutChunk {
		return false
	}
	p := &f.chunks[i/fanoutChunk]
	chunk := p.Load()
	if chunk == nil {
		p.CompareAndSwap(nil, new([fanoutChunk]fanoutEntry))
		chunk = p.Load()
	}
	e := &chunk[i%fanoutChunk]
	e.stamp.Store(stamp.UnixNano())
	for ns := now.UnixNano(); ; {
		cur := e.last.Load()
		if ns <= cur || e.last.CompareAndSwap(cur, ns) {
			break
		}
	}
	e.count.Add(1)
	return true
}

// export adds one counter per message received in this worker:
// "fanout/<shard>/<seq>" = receipts<<32 | µs from the send to the latest
// receipt. Counters are the only channel from a worker's result to Report
// that survives merging intact: each key is written by one worker, and
// Report combines the workers' shares per message, then removes the keys.
func (f *fanout) export(c *counterSet, shard int, firstSeq uint64) {
	for ci := range f.chunks {
		chunk := f.chunks[ci].Load()
		if chunk == nil {
			continue
		}
		for j := range chunk {
			e := &chunk[j]
			n := e.count.Load()
			if n == 0 {
				continue
			}
			us := min(max((e.last.Load()-e.stamp.Load())/1e3, 0), 1<<32-1)
			seq := firstSeq + uint64(ci*fanoutChunk+j)
			c.add(fmt.Sprintf("%s%d/%d", cntFanoutPrefix, shard, seq), n<<32|us)
		}
	}
}

// collectFanout combines the workers' fan-out counters per message and
// removes them from cnt: a message is complete when receivers members got
// it, and then its latency is the slowest worker's. It returns the
// histogram of the complete messages, the number of messages seen and how
// many were incomplete.
func collectFanout(cnt map[string]int64, receivers int) (h *Histogram, messages, incomplete int64) {
	type msg struct{ count, us int64 }
	per := make(map[uint64]msg)
	for k, v := range cnt {
		rest, ok := strings.CutPrefix(k, cntFanoutPrefix)
		if !ok {
			continue
		}
		delete(cnt, k)
		_, seqStr, ok := strings.Cut(rest, "/")
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		if !ok || err != nil {
			continue
		}
		m := per[seq]
		m.count += v >> 32
		m.us = max(m.us, v&(1<<32-1))
		per[seq] = m
	}
	h = NewHistogram()
	for _, m := range per {
		if m.count < int64(receivers) {
			incomplete++
			continue
		}
		h.Record(time.Duration(m.us) * time.Microsecond)
	}
	return h, int64(len(per)), incomplete
}
