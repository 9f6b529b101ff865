package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"parley/client"
	"parley/wire"
)

// Direct is the one-to-one scenario: Senders pairs of users, each user on
// a connection of its own (the Go SDK), each sender posting to the direct
// conversation with its receiver. It measures committed messages per second
// (acks) and the latency from the send to the receiver's delivery and to the
// sender's ack, and checks that every acked message is delivered.
//
// Flat out (Rate 0), each sender keeps Window sends in flight: a closed
// loop, latency measured from the actual send. At a fixed Rate the senders
// follow a schedule (Rate/Senders each, staggered) and latency is measured
// from the intended send time, so a stalled server is charged for the sends
// it delayed (no coordinated omission); a send due while Window sends are in
// flight waits, its wait counted, and sends still unissued when the load
// ends are reported as missed.
//
// With Slow > 0, that fraction of the receivers are slow consumers (see
// slow.go): bare connections that stop reading their sockets when the load
// starts, while their senders keep sending. The other pairs are measured as
// usual; the slow ones are probed after the load (did the server drop
// them?) and the nodes' memory is sampled throughout.
type Direct struct {
	Senders   int           // pairs; default 1
	Rate      float64       // messages per second over all senders; 0 is flat out
	Window    int           // sends in flight per sender; default 1 flat out, 64 at a fixed rate
	BodyBytes int           // message body size; default 100
	Drain     time.Duration // wait for deliveries after the load; default 10s
	Slow      float64       // fraction of the receivers that stop reading; default 0
	// ReceiveBuffer is the SO_RCVBUF of each reading receiver's socket; 0
	// leaves the kernel's autotuning (see Group.ReceiveBuffer).
	ReceiveBuffer int

	sampler *serverSampler // coordinator only, with Slow: Plan starts it, Report stops it
}

// Direct limits. A sender may not have more requests in flight than the
// server allows per connection (256).
const (
	maxDirectSenders = 50_000
	maxDirectWindow  = 256
	minDirectBody    = 32 // the send stamp and a separator fit
	maxDirectDrain   = 5 * time.Minute
	directDialers    = 16 // pairs set up at once per worker
)

func (d Direct) withDefaults() Direct {
	sendDefaults(&d.Senders, &d.Window, &d.BodyBytes, d.Rate, &d.Drain)
	return d
}

func (*Direct) Name() string { return "direct" }

func (d *Direct) Validate() error {
	c := d.withDefaults()
	p := problems{scenario: "direct"}
	pairs := c.Senders
	if pairs < 1 || pairs > maxDirectSenders {
		p.add("senders %d out of range [1, %d]", c.Senders, maxDirectSenders)
		pairs = 0
	}
	checkSends(p.add, c.Rate, c.Window, c.BodyBytes, c.Drain)
	checkReceivers(p.add, pairs, c.Slow, c.ReceiveBuffer, "receiver")
	return p.err()
}

func (d *Direct) Params() map[string]any {
	c := d.withDefaults()
	return sendParams(map[string]any{}, c.Senders, c.Rate, c.Window, c.BodyBytes, c.Drain, c.Slow, c.ReceiveBuffer)
}

// directShard is one worker's part: its pairs and everything about the
// load, since the worker has no other source.
type directShard struct {
	WS        []string      `json:"ws"`
	Senders   int           `json:"senders"` // over all workers, to stagger schedules
	Rate      float64       `json:"rate"`    // over all senders
	Window    int           `json:"window"`
	BodyBytes int           `json:"body_bytes"`
	Drain     time.Duration `json:"drain"`
	Slow      float64       `json:"slow,omitempty"`
	RcvBuf    int           `json:"receive_buffer,omitempty"`
	First     int           `json:"first"` // global index of Pairs[0]
	Pairs     []directPair  `json:"pairs"`
}

type directPair struct {
	Sender   Account `json:"sender"`
	Receiver Account `json:"receiver"`
}

func (d *Direct) Plan(ctx context.Context, env *Env) ([]json.RawMessage, error) {
	c := d.withDefaults()
	accounts, err := env.CreateAccounts(ctx, 2*c.Senders)
	if err != nil {
		return nil, err
	}
	if c.Slow > 0 {
		d.sampler = startServerSampler(ctx, env.opts)
	}
	return planShards(splitSizes(c.Senders, max(env.ConnsPerWorker()/2, 1)), func(_, first, n int) any {
		sh := directShard{
			WS: env.WS(), Senders: c.Senders, Rate: c.Rate, Window: c.Window,
			BodyBytes: c.BodyBytes, Drain: c.Drain, Slow: c.Slow, RcvBuf: c.ReceiveBuffer, First: first,
		}
		for i := first; i < first+n; i++ {
			sh.Pairs = append(sh.Pairs, directPair{Sender: accounts[2*i], Receiver: accounts[2*i+1]})
		}
		return sh
	})
}

func (d *Direct) NewLoad(raw json.RawMessage) (Load, error) {
	var sh directShard
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	cfg := Direct{Senders: sh.Senders, Rate: sh.Rate, Window: sh.Window, BodyBytes: sh.BodyBytes, Drain: sh.Drain, Slow: sh.Slow, ReceiveBuffer: sh.RcvBuf}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(sh.WS) == 0 || len(sh.Pairs) == 0 {
		return nil, errors.New("no WebSocket URL or no pairs")
	}
	l := &directLoad{
		shard:   sh,
		ack:     newRecorder(),
		deliver: newRecorder(),
		sched:   newSendSchedule(sh.Senders, sh.Rate, sh.Window),
		padding: strings.Repeat("x", sh.BodyBytes),
		log:     sdkLogger(),
	}
	for i, p := range sh.Pairs {
		l.pairs = append(l.pairs, &pairState{idx: sh.First + i, directPair: p, slow: isSlow(sh.First+i, sh.Slow)})
	}
	return l, nil
}

// directLoad is a worker's share of Direct.
//
// Goroutines: Connect sets pairs up from a bounded group. The receivers'
// dispatchers record deliveries (receive, as Config.OnEvent); the senders
// are NoEvents clients. At a fixed rate Run's
// goroutine runs every pair's schedule (runClock); flat out it starts a
// scheduler per pair (sendSchedule.runAsync). Either starts each send with
// Client.Go and returns: the sender's connection reader records the ack (a
// send that failed retries on a goroutine of its own). The schedules end
// once their sends have, before Run drains and returns. Counters are atomics;
// histograms are recorders; start, end, dropped and undelivered are written
// by Run and read by Finish, on the worker's goroutine.
type directLoad struct {
	shard   directShard
	sched   sendSchedule
	padding string       // BodyBytes of filler, sliced per message
	log     *slog.Logger // for the SDK: errors only, to the worker's stderr
	pairs   []*pairState
	live    *Live

	retries      *retrier // failed first attempts, from Run
	ack, deliver *recorder
	tally        tally
	sent, acked  atomic.Int64
	duplicates   atomic.Int64
	delivered    atomic.Int64
	missed       atomic.Int64
	badBodies    atomic.Int64

	start, end           time.Time
	dropped, undelivered int64
}

// pairState is one sender and its receiver. snd, rcv (or slowRcv) and
// conv are written by the goroutine that sets the pair up, before Connect
// returns.
type pairState struct {
	directPair
	idx      int  // global pair index: schedules, cmids, recorder shards
	slow     bool // the receiver is a slow consumer: slowRcv instead of rcv
	snd, rcv *client.Client
	slowRcv  *bareConn
	conv     uint64
	nextMsg  atomic.Uint64
	acked    atomic.Int64
	received atomic.Int64
}

func (l *directLoad) Connect(ctx context.Context, live *Live) error {
	l.live = live
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(directDialers)
	for _, p := range l.pairs {
		g.Go(func() error { return l.connectPair(gctx, p) })
	}
	return g.Wait()
}

func (l *directLoad) clientConfig(token string, idx int) client.Config {
	return client.Config{
		URLs:  rotate(l.shard.WS, idx),
		Token: token,
		// The SDK's default buffer (4096 events) would cost ~0.7 MB per
		// client; a receiver drains promptly and holds at most what its
		// sender has in flight.
		EventBuffer: max(64, 2*l.shard.Window),
		Logger:      l.log,
	}
}

// receiverConfig is clientConfig with the scenario's receive buffer.
func (l *directLoad) receiverConfig(token string, idx int) client.Config {
	cfg := l.clientConfig(token, idx)
	if n := l.shard.RcvBuf; n > 0 {
		d := net.Dialer{Control: receiveBufferControl(n)}
		cfg.NetDial = d.DialContext
	}
	return cfg
}

func (l *directLoad) connectPair(ctx context.Context, p *pairState) error {
	var err error
	if p.slow {
		p.slowRcv, err = dialBare(ctx, bareOptions{
			URL: l.shard.WS[p.idx%len(l.shard.WS)], Token: p.Receiver.Token,
			Timeout: bareDialTimeout, SocketReadBuffer: slowSocketBuffer,
		})
	} else {
		cfg := l.receiverConfig(p.Receiver.Token, p.idx)
		cfg.OnEvent = func(ev wire.Event) { l.receive(p, &ev) }
		p.rcv, err = client.Dial(ctx, cfg)
	}
	if err != nil {
		return fmt.Errorf("bench: dial receiver %s: %w", p.Receiver.Name, err)
	}
	l.live.Conns.Add(1)
	// The sender's own messages, echoed to it, are not measured: it drops
	// them unread.
	scfg := l.clientConfig(p.Sender.Token, p.idx)
	scfg.NoEvents = true
	if p.snd, err = client.Dial(ctx, scfg); err != nil {
		return fmt.Errorf("bench: dial sender %s: %w", p.Sender.Name, err)
	}
	l.live.Conns.Add(1)
	info, err := p.snd.OpenDirect(ctx, p.Receiver.User)
	if err != nil {
		return fmt.Errorf("bench: open direct %s → %s: %w", p.Sender.Name, p.Receiver.Name, err)
	}
	p.conv = info.ID
	return nil
}

// receive counts and times an event of a pair's receiver, if it is one of
// the sender's messages. The SDK delivers each (conv, seq) once, here on
// the receiver's dispatcher goroutine (Config.OnEvent).
func (l *directLoad) receive(p *pairState, ev *wire.Event) {
	if ev.Kind != wire.KindMessage || ev.From != p.Sender.User {
		return
	}
	now := time.Now()
	if sent, ok := parseStamp(ev.Body); ok {
		l.deliver.record(p.idx, now.Sub(sent))
	} else {
		l.badBodies.Add(1)
	}
	p.received.Add(1)
	l.delivered.Add(1)
	l.live.Delivered.Add(1)
}

func (l *directLoad) Run(ctx context.Context, start, until time.Time, _ *Live) error {
	if !sleepCtx(ctx, time.Until(start)) {
		return ctx.Err()
	}
	l.start = start
	l.retries = newRetrier(ctx)
	defer l.retries.stop() // after every send has finished (runClock, senders.Wait)
	for _, p := range l.pairs {
		if p.slow {
			p.slowRcv.sock.pause()
		}
	}
	if l.sched.interval > 0 {
		// One clock for every pair's schedule.
		firsts := make([]time.Time, len(l.pairs))
		for i, p := range l.pairs {
			firsts[i] = l.sched.first(p.idx, start)
		}
		l.missed.Add(runClock(ctx, firsts, until, l.sched.interval, l.sched.window, func(k int, intended time.Time, done func()) {
			l.startSend(l.pairs[k], intended, done)
		}))
	} else {
		var senders sync.WaitGroup
		for _, p := range l.pairs {
			senders.Go(func() {
				l.missed.Add(l.sched.runAsync(ctx, p.idx, start, until, func(intended time.Time, done func()) {
					l.startSend(p, intended, done)
				}))
			})
		}
		senders.Wait()
	}
	l.end = time.Now() // the last ack (or give-up) of this worker
	if ctx.Err() != nil {
		return ctx.Err()
	}

	if err := waitDrained(ctx, l.shard.Drain, l.drained); err != nil {
		return err
	}
	for _, p := range l.pairs {
		if p.slow {
			if !p.snd.State().Connected {
				l.dropped++
			}
			continue // its receiver is not reading: see Finish
		}
		if a, r := p.acked.Load(), p.received.Load(); r < a {
			l.undelivered += a - r
		}
		for _, c := range []*client.Client{p.snd, p.rcv} {
			if !c.State().Connected {
				l.dropped++
			}
		}
	}
	return nil
}

func (l *directLoad) drained() bool {
	for _, p := range l.pairs {
		if !p.slow && p.received.Load() < p.acked.Load() {
			return false
		}
	}
	return true
}

// startSend posts one message stamped with its intended send time (or
// now, flat out) with Client.Go and returns; done is called once the
// message is acked or has failed. A failed first attempt goes to the
// retrier, which retries it, with the same cmid, on retryable errors until
// directSendTimeout.
func (l *directLoad) startSend(p *pairState, intended time.Time, done func()) {
	stamp := intended
	if stamp.IsZero() {
		stamp = time.Now()
	}
	cmid := "m" + strconv.FormatUint(p.nextMsg.Add(1), 10) // unique per device
	body := stampBody(stamp, l.padding)
	req := wire.Request{Type: wire.TypeSend, Conv: p.conv, ClientMsgID: cmid, Body: body}
	l.sent.Add(1)
	l.live.Sent.Add(1)

	p.snd.Go(&req, func(rep *wire.Reply, err error) {
		if err == nil { // on the sender's reader: record and return
			l.recordAck(p, stamp, rep)
			done()
			return
		}
		l.retries.retry(p.snd, &req, err, l.tally.retry, func(rep *wire.Reply, code string, err error) {
			defer done()
			if err != nil {
				l.tally.fail(code, fmt.Errorf("send: %w", err))
				return
			}
			l.recordAck(p, stamp, rep)
		})
	})
}

// recordAck records the ack of a message stamped stamp.
func (l *directLoad) recordAck(p *pairState, stamp time.Time, rep *wire.Reply) {
	l.ack.record(p.idx, time.Since(stamp))
	if rep.Duplicate {
		l.duplicates.Add(1)
	}
	p.acked.Add(1)
	l.acked.Add(1)
	l.live.Acked.Add(1)
}

func (l *directLoad) Finish(ctx context.Context) *Result {
	res := &Result{}
	var slow []*bareConn
	var counters counterSet
	for _, p := range l.pairs {
		if p.slowRcv != nil {
			slow = append(slow, p.slowRcv)
		}
	}
	probeAll(ctx, slow, &counters)
	closeBare(ctx, slow, &l.tally)
	res.Conns = int64(len(slow))
	res.Counters = counters.snapshot()
	clients := make([]*client.Client, 0, 2*len(l.pairs))
	for _, p := range l.pairs {
		clients = append(clients, p.snd, p.rcv)
	}
	res.Conns += closeClients(clients) // no receive after Close

	res.Sent, res.Acked = l.sent.Load(), l.acked.Load()
	res.Duplicates, res.Delivered = l.duplicates.Load(), l.delivered.Load()
	res.Missed, res.BadBodies = l.missed.Load(), l.badBodies.Load()
	res.Dropped, res.Undelivered = l.dropped, l.undelivered
	res.Start, res.End = l.start, l.end
	res.Latency = map[string]*Histogram{"ack": l.ack.merged(), "deliver": l.deliver.merged()}
	l.tally.fill(res)
	return res
}

func (d *Direct) Report(rep *Report) {
	c := d.withDefaults()
	res := rep.Result
	if secs := res.Elapsed().Seconds(); secs > 0 {
		rep.AddFigure("throughput (acked)", float64(res.Acked)/secs, "msg/s")
		rep.AddFigure("throughput (delivered)", float64(res.Delivered)/secs, "msg/s")
	}
	if s0, s1, ok := loadDelta(rep); ok {
		cpu := s1.CPUSeconds - s0.CPUSeconds
		if dt := s1.At.Sub(s0.At).Seconds(); dt > 0 {
			rep.AddFigure("server CPU during the load", cpu/dt, "cores")
		}
		if res.Acked > 0 {
			rep.AddFigure("server CPU per message", cpu/float64(res.Acked)*1e6, "µs")
		}
		if commits := s1.Commits - s0.Commits; commits > 0 {
			rep.AddFigure("commands per Raft entry", (s1.Commands-s0.Commands)/commits, "")
		}
	}
	// The harness shares the machine in most runs here: what it takes a
	// message is what the server cannot have.
	if res.Acked > 0 && res.HarnessCPU > 0 {
		rep.AddFigure("harness CPU per message", res.HarnessCPU/float64(res.Acked)*1e6, "µs")
	}

	if res.Acked == 0 {
		rep.Failures = append(rep.Failures, "no message was acknowledged")
	}
	if res.Undelivered > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf(
			"%d of %d acked messages were not delivered within the %v drain", res.Undelivered, res.Acked, c.Drain))
	}
	reportSendFailures(rep)
	if res.Dropped > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d connections were down at the end of the load", res.Dropped))
	}
	if c.Slow > 0 {
		reportServerSeries(rep, d.sampler.stop())
		reportSlow(rep, countSlow(c.Senders, c.Slow))
	}
	reportMissed(rep)
	if n := res.Retries[string(wire.CodeRateLimited)]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"the server's per-connection rate limit refused %d sends (retried); per-sender throughput is capped by it", n))
	}
}
