package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"golang.org/x/time/rate"

	"parley/client"
	"parley/wire"
)

// Abuse is the attack scenario: a canary keeps chatting while hostile
// clients attack the node, one attack at a time.
//
// The canary is a pair of users on the Go SDK, each sending to the other in
// their 1:1 at Rate/2 messages per second on a fixed schedule (latency from
// the intended send time, as in Direct). It runs from the start of the load
// to the end of the last phase. The phases: "baseline" (no attack), then
// each attack for Phase, each followed by Recovery without attack. Every
// canary message is attributed to the phase its intended send time falls
// in, so each phase gets its own send→deliver and send→ack histograms and
// counts.
//
// The attacks (a hostile client speaks the protocol only as far as it
// helps: bare frames, raw sockets):
//
//   - length-bomb: BombConns connections send the frames of the length-bomb
//     finding in a loop (a 32-byte request whose users is an array32
//     declaring 2^32-1 elements, an 18-byte frame whose t is a str32 of
//     4 GiB, a body bin32 of 2 GiB, ids -1 and 2^64-1, a group.create of
//     1001 users), paced just under the server's request rate, and count
//     the replies by code;
//   - malformed-flood: FloodConns connections send random bytes as fast as
//     they can; a connection the server closes is replaced at once (at most
//     floodConnsPerLane per lane); replies by code and closes by reason;
//   - conn-flood: at most ConnAttempts WebSocket handshakes on one token,
//     written by hand on raw sockets, 16 at a time; the upgraded ones are
//     held to the end of the phase; refusals by status and reason, and
//     whether each carried Retry-After;
//   - http-slowloris: Slowloris HTTP connections send a login request
//     whose body comes one byte a second, and KeepAlives connections make
//     one request and then idle; how many the server cut off, and when;
//   - login-guess: at most Guesses logins with wrong passwords, half for the
//     canary's username and half for random ones, 8 at a time, spread over
//     the phase; answers by status. After the phase the canary logs in
//     afresh with its right password (from its own address): was it
//     refused, for how long?
//   - big-replies: an attacker adds a third user (the victim) to 3 groups
//     and posts 50 messages of 16 KiB into each, then ReadConns connections
//     of the attacker ask sync since 0 and history in bursts of 3 reads
//     (the node admits 2 at a time per connection), paced under the
//     request rate; replies by code (busy). The victim, connected
//     throughout, pages its sync and the groups' history, 2 reads in
//     flight; it must never be closed as a slow consumer.
//
// A /healthz probe runs every healthProbeEvery throughout, on a fresh
// connection each time, and /healthz must answer 200 after every phase;
// /metrics is read at the end of each phase (server CPU, memory).
//
// Verdicts: a failure is recorded if the canary lost a message or failed
// one, if /healthz went unanswered during or after a phase, or if the
// big-replies victim was disconnected; never for latency, which is a
// figure. What an attack saw that the protocol does not promise (a bomb
// answered otherwise than bad_frame, invalid or too_large, a refusal
// without Retry-After, ...) is a warning.
//
// The scenario needs six accounts (the canary pair, the victim, three
// attackers), created before any attack: with the node's auth throttle on,
// one address may register 20 at once. From (an IP address) is the
// attackers' source address, so that the node tells them apart from the
// canary (on Linux any 127.x.y.z is loopback); empty, they share the
// canary's address, and the login throttle then refuses the canary's own
// address too.
type Abuse struct {
	Phase    time.Duration // each phase, the baseline's too; default 15s (the node's HTTP read timeout, 10s, cuts slowloris within it)
	Recovery time.Duration // after each attack, without attack; default 5s
	Rate     float64       // canary messages per second, both directions together; default 20
	Attacks  string        // comma-separated attacks to run (always in the order above); "" or "all": every one
	From     string        // attackers' source IP; "": the system's choice
	Drain    time.Duration // wait for the canary's deliveries after the last phase; default 10s

	BombConns    int // length-bomb connections; default 4
	FloodConns   int // malformed-flood connections at once; default 4
	ConnAttempts int // conn-flood handshakes; default 2000
	Slowloris    int // http-slowloris slow bodies; default 200
	KeepAlives   int // http-slowloris idle keep-alive connections; default 50
	Guesses      int // login-guess attempts; default 1000
	ReadConns    int // big-replies attacker connections reading; default 4

	phases []AbusePhase // coordinator: set by Report
}

// The attacks, in the order they run.
const (
	AttackLengthBomb     = "length-bomb"
	AttackMalformedFlood = "malformed-flood"
	AttackConnFlood      = "conn-flood"
	AttackSlowloris      = "http-slowloris"
	AttackLoginGuess     = "login-guess"
	AttackBigReplies     = "big-replies"
)

// AbuseAttacks lists the attacks in the order they run.
var AbuseAttacks = []string{AttackLengthBomb, AttackMalformedFlood, AttackConnFlood, AttackSlowloris, AttackLoginGuess, AttackBigReplies}

const (
	abusePhaseBaseline = "baseline"
	abuseRecovery      = " recovery" // suffix of a recovery phase's name

	maxAbusePhase      = 10 * time.Minute
	minAbusePhase      = 200 * time.Millisecond
	maxAbuseRate       = 1000
	abuseDialTimeout   = 10 * time.Second
	abuseTeardown      = 5 * time.Second // waiting for replies, closes
	abuseCanaryWindow  = 64              // sends in flight per canary side
	abuseCanaryBody    = 100
	healthProbeEvery   = 500 * time.Millisecond
	healthProbeTimeout = 5 * time.Second
	healthAfterWait    = 10 * time.Second // /healthz must answer 200 within this after a phase

	maxBombFrames      = 100_000 // per connection and phase
	floodConnsPerLane  = 2500    // malformed-flood: connections one lane opens per phase
	maxFloodFrames     = 100_000 // per connection
	floodRedial        = 20 * time.Millisecond
	connFloodParallel  = 16
	slowlorisDrip      = time.Second // one body byte per drip
	slowlorisBodyBytes = 1000        // declared Content-Length (under the node's 4 KiB)
	loginGuessers      = 8
	bigGroups          = 3
	bigPosts           = 50 // per group
	bigReadLanes       = 3  // reads per burst of an attacker connection, and in flight at most
	maxBigReads        = 100_000
	ratePace           = 0.8 // attackers that must not be cut off pace at this share of the node's request rate
)

func (a Abuse) withDefaults() Abuse {
	setDefault(&a.Phase, 15*time.Second)
	setDefault(&a.Recovery, 5*time.Second)
	setDefault(&a.Drain, 10*time.Second)
	setDefault(&a.Rate, 20)
	setDefault(&a.BombConns, 4)
	setDefault(&a.FloodConns, 4)
	setDefault(&a.ConnAttempts, 2000)
	setDefault(&a.Slowloris, 200)
	setDefault(&a.KeepAlives, 50)
	setDefault(&a.Guesses, 1000)
	setDefault(&a.ReadConns, 4)
	return a
}

// attackList returns the attacks to run, in run order.
func (a Abuse) attackList() ([]string, error) {
	s := strings.TrimSpace(a.Attacks)
	if s == "" || s == "all" {
		return slices.Clone(AbuseAttacks), nil
	}
	want := make(map[string]bool)
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(AbuseAttacks, name) {
			return nil, fmt.Errorf("bench: abuse: unknown attack %q (have %s)", name, strings.Join(AbuseAttacks, ", "))
		}
		want[name] = true
	}
	var out []string
	for _, name := range AbuseAttacks {
		if want[name] {
			out = append(out, name)
		}
	}
	return out, nil
}

// phaseNames returns the phases in order: the baseline, then each attack
// and its recovery.
func (a Abuse) phaseNames() []string {
	attacks, _ := a.attackList()
	names := []string{abusePhaseBaseline}
	for _, at := range attacks {
		names = append(names, at, at+abuseRecovery)
	}
	return names
}

// PlannedDuration is how long the phases take: the run's -duration.
// Tearing an attack down may add a little to its recovery.
func (a *Abuse) PlannedDuration() time.Duration {
	c := a.withDefaults()
	n, _ := c.attackList()
	return c.Phase*time.Duration(len(n)+1) + c.Recovery*time.Duration(len(n))
}

func (*Abuse) Name() string { return "abuse" }

func (a *Abuse) Validate() error {
	c := a.withDefaults()
	p := problems{scenario: "abuse"}
	if c.Phase < minAbusePhase || c.Phase > maxAbusePhase {
		p.add("phase %v out of range [%v, %v]", c.Phase, minAbusePhase, maxAbusePhase)
	}
	if c.Recovery < 0 || c.Recovery > maxAbusePhase {
		p.add("recovery %v out of range [0, %v]", c.Recovery, maxAbusePhase)
	}
	if c.Drain < 0 || c.Drain > maxDirectDrain {
		p.add("drain %v out of range [0, %v]", c.Drain, maxDirectDrain)
	}
	if !(c.Rate > 0 && c.Rate <= maxAbuseRate) {
		p.add("rate %v out of range (0, %d]", c.Rate, maxAbuseRate)
	}
	if _, err := c.attackList(); err != nil {
		p.errs = append(p.errs, err)
	}
	if c.From != "" && net.ParseIP(c.From) == nil {
		p.add("attackers' source address %q is not an IP address", c.From)
	}
	for _, n := range []struct {
		name   string
		v, max int
	}{
		{"bomb connections", c.BombConns, 64}, {"flood connections", c.FloodConns, 64},
		{"conn-flood attempts", c.ConnAttempts, 100_000}, {"slowloris connections", c.Slowloris, 5000},
		{"keep-alive connections", c.KeepAlives, 5000}, {"login guesses", c.Guesses, 100_000},
		{"read connections", c.ReadConns, 16},
	} {
		if n.v < 1 || n.v > n.max {
			p.add("%s %d out of range [1, %d]", n.name, n.v, n.max)
		}
	}
	return p.err()
}

func (a *Abuse) Params() map[string]any {
	c := a.withDefaults()
	attacks, _ := c.attackList()
	p := map[string]any{
		"phase": c.Phase.String(), "recovery": c.Recovery.String(), "rate": fmt.Sprintf("%g/s", c.Rate),
		"attacks": strings.Join(attacks, ","), "bomb_conns": c.BombConns, "flood_conns": c.FloodConns,
		"conn_attempts": c.ConnAttempts, "slowloris": c.Slowloris, "keepalives": c.KeepAlives,
		"guesses": c.Guesses, "read_conns": c.ReadConns, "drain": c.Drain.String(),
	}
	if c.From != "" {
		p["attack_from"] = c.From
	}
	return p
}

// abuseShard is the whole scenario: it runs in one worker.
type abuseShard struct {
	Cfg  Abuse  `json:"cfg"`
	WS   string `json:"ws"`
	HTTP string `json:"http"`
	// The canary pair, the big-replies victim, and the attackers: bombs and
	// flood, conn-flood, big-replies.
	A        Account `json:"a"`
	B        Account `json:"b"`
	Victim   Account `json:"victim"`
	Attacker Account `json:"attacker"`
	Flooder  Account `json:"flooder"`
	Reader   Account `json:"reader"`
}

func (a *Abuse) Plan(ctx context.Context, env *Env) ([]json.RawMessage, error) {
	c := a.withDefaults()
	accts, err := env.CreateAccounts(ctx, 6)
	if err != nil {
		return nil, err
	}
	sh := abuseShard{Cfg: c, WS: env.opts.WS[0], HTTP: env.opts.HTTP[0],
		A: accts[0], B: accts[1], Victim: accts[2], Attacker: accts[3], Flooder: accts[4], Reader: accts[5]}
	b, err := json.Marshal(sh)
	if err != nil {
		return nil, err
	}
	return []json.RawMessage{b}, nil
}

func (*Abuse) NewLoad(raw json.RawMessage) (Load, error) {
	var sh abuseShard
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	if err := sh.Cfg.Validate(); err != nil {
		return nil, err
	}
	if sh.WS == "" || sh.HTTP == "" {
		return nil, errors.New("no WebSocket or HTTP URL")
	}
	l := &abuseLoad{
		sh:      sh,
		cfg:     sh.Cfg.withDefaults(),
		deliver: newRecorder(),
		ack:     newRecorder(),
		padding: strings.Repeat("x", abuseCanaryBody),
		log:     sdkLogger(),
		health:  &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		scraper: newScraper(sh.HTTP),
	}
	if l.cfg.From != "" {
		l.from = net.ParseIP(l.cfg.From)
	}
	for _, name := range l.cfg.phaseNames() {
		l.segs = append(l.segs, &abuseSeg{name: name, deliver: NewHistogram(), ack: NewHistogram()})
	}
	l.a = &canarySide{acct: sh.A, idx: 0}
	l.b = &canarySide{acct: sh.B, idx: 1}
	l.a.peer, l.b.peer = l.b, l.a
	return l, nil
}

// abuseLoad runs the scenario in its worker.
//
// Goroutines: Run's goroutine runs the phases one after the other and each
// attack's goroutines (each attack waits for its own before it returns);
// the canary has a scheduler per side, with its send lanes, and a receiver
// per side (Connect starts those, they end when Finish closes the
// clients); the health prober runs from the start of the load to its end.
// Per-phase state is in abuseSeg (atomics, counterSets, histograms behind
// a mutex); cur is the phase now running.
type abuseLoad struct {
	sh      abuseShard
	cfg     Abuse
	from    net.IP // attackers' source address, or nil
	log     *slog.Logger
	health  *http.Client
	scraper *scraper
	live    *Live
	segs    []*abuseSeg
	cur     atomic.Int32

	a, b    *canarySide
	conv    uint64
	padding string
	readers sync.WaitGroup

	deliver, ack *recorder // the whole run, for the chart
	tally        tally
	sent, acked  atomic.Int64
	delivered    atomic.Int64
	duplicates   atomic.Int64
	missed       atomic.Int64
	badBodies    atomic.Int64

	// Written by Run, read by Finish.
	start, end           time.Time
	undelivered, dropped int64
	lastSample           *ServerSample
	syncsAtStart         uint64
}

// abuseSeg is one phase's measurements.
type abuseSeg struct {
	name    string
	startNS atomic.Int64 // Unix nanoseconds; 0 until the phase starts

	sent, acked, delivered atomic.Int64
	hmu                    sync.Mutex // guards deliver and ack
	deliver, ack           *Histogram
	probes, probeFails     atomic.Int64
	probeMaxUS             atomic.Int64
	counters               counterSet // "canary …", "healthz …", "server …" and the attack's own
}

func (s *abuseSeg) record(h *Histogram, d time.Duration) {
	s.hmu.Lock()
	h.Record(d)
	s.hmu.Unlock()
}

type canarySide struct {
	acct     Account
	peer     *canarySide
	idx      int
	c        *client.Client
	nextMsg  atomic.Uint64
	acked    atomic.Int64
	received atomic.Int64
}

func (l *abuseLoad) Connect(ctx context.Context, live *Live) error {
	l.live = live
	for _, s := range []*canarySide{l.a, l.b} {
		c, err := dialRetrying(ctx, client.Config{
			URLs: []string{l.sh.WS}, Token: s.acct.Token, EventBuffer: 4 * abuseCanaryWindow, Logger: l.log,
		}, nil)
		if err != nil {
			return fmt.Errorf("bench: abuse: dial canary %s: %w", s.acct.Name, err)
		}
		s.c = c
		live.Conns.Add(1)
		l.readers.Go(func() { l.receive(s) })
	}
	info, err := l.a.c.OpenDirect(ctx, l.b.acct.User)
	if err != nil {
		return fmt.Errorf("bench: abuse: open the canary's 1:1: %w", err)
	}
	l.conv = info.ID
	return nil
}

// receive counts and times the peer's messages until the client closes.
func (l *abuseLoad) receive(s *canarySide) {
	for ev := range s.c.Events() {
		if ev.Kind != wire.KindMessage || ev.From != s.peer.acct.User {
			continue
		}
		now := time.Now()
		stamp, i, ok := parseCanaryBody(ev.Body)
		if !ok || i >= len(l.segs) {
			l.badBodies.Add(1)
			continue
		}
		seg := l.segs[i]
		seg.record(seg.deliver, now.Sub(stamp))
		l.deliver.record(s.idx, now.Sub(stamp))
		seg.delivered.Add(1)
		s.received.Add(1)
		l.delivered.Add(1)
		l.live.Delivered.Add(1)
	}
}

// canaryBody is the intended send time (Unix nanoseconds), the phase
// index, and filler up to abuseCanaryBody bytes.
func (l *abuseLoad) canaryBody(stamp time.Time, seg int) string {
	s := strconv.FormatInt(stamp.UnixNano(), 10) + " " + strconv.Itoa(seg) + " "
	return s + l.padding[:max(len(l.padding)-len(s), 0)]
}

func parseCanaryBody(body string) (time.Time, int, bool) {
	f := strings.SplitN(body, " ", 3)
	if len(f) < 3 {
		return time.Time{}, 0, false
	}
	ns, err1 := strconv.ParseInt(f[0], 10, 64)
	seg, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || seg < 0 {
		return time.Time{}, 0, false
	}
	return time.Unix(0, ns), seg, true
}

// segAt is the phase that time t falls in.
func (l *abuseLoad) segAt(t time.Time) int {
	ns := t.UnixNano()
	for i := len(l.segs) - 1; i > 0; i-- {
		if s := l.segs[i].startNS.Load(); s != 0 && s <= ns {
			return i
		}
	}
	return 0
}

func (l *abuseLoad) canarySyncs() uint64 { return l.a.c.State().Syncs + l.b.c.State().Syncs }

// startSeg starts phase i at t: the canary's sends from t on are its.
func (l *abuseLoad) startSeg(i int, t time.Time) {
	if i > 0 {
		l.endSeg(i - 1)
	} else {
		l.syncsAtStart = l.canarySyncs()
	}
	l.segs[i].startNS.Store(t.UnixNano())
	l.cur.Store(int32(i))
}

// endSeg charges phase i with the canary's resyncs since it started: the
// SDK syncs after every reconnection (and after a gap in the events).
func (l *abuseLoad) endSeg(i int) {
	syncs := l.canarySyncs()
	if n := syncs - l.syncsAtStart; n > 0 {
		l.segs[i].counters.add("canary resyncs", int64(n))
	}
	l.syncsAtStart = syncs
}

func (l *abuseLoad) Run(ctx context.Context, start, until time.Time, _ *Live) error {
	if planned := l.cfg.PlannedDuration(); start.Add(planned).After(until.Add(time.Second)) {
		return fmt.Errorf("bench: abuse: the load lasts %v, the phases need %v", until.Sub(start), planned)
	}
	if !sleepCtx(ctx, time.Until(start)) {
		return ctx.Err()
	}
	l.start = start
	l.startSeg(0, start)
	l.sampleServer(ctx, nil)

	// The canary: each side on its schedule until the phases are over.
	// Sends in flight then finish under ctx.
	schedCtx, stopCanary := context.WithCancel(ctx)
	defer stopCanary()
	interval := time.Duration(float64(time.Second) * 2 / l.cfg.Rate)
	var canary sync.WaitGroup
	for i, s := range []*canarySide{l.a, l.b} {
		first := start.Add(time.Duration(i) * interval / 2)
		canary.Go(func() {
			l.missed.Add(schedule(schedCtx, first, start.Add(24*time.Hour), interval, abuseCanaryWindow,
				func(t time.Time) { l.sendOne(ctx, s, t) }))
		})
	}
	proberCtx, stopProber := context.WithCancel(ctx)
	proberDone := make(chan struct{})
	go func() { defer close(proberDone); l.probe(proberCtx) }()

	l.runPhases(ctx, start)

	stopCanary()
	canary.Wait()
	l.end = time.Now()
	stopProber()
	<-proberDone
	if ctx.Err() != nil {
		return ctx.Err()
	}
	l.endSeg(int(l.cur.Load()))

	if err := waitDrained(ctx, l.cfg.Drain, l.drained); err != nil {
		return err
	}
	for _, s := range []*canarySide{l.a, l.b} {
		if a, r := s.peer.acked.Load(), s.received.Load(); r < a {
			l.undelivered += a - r
		}
		if !s.c.State().Connected {
			l.dropped++
		}
	}
	return nil
}

func (l *abuseLoad) drained() bool {
	return l.a.received.Load() >= l.b.acked.Load() && l.b.received.Load() >= l.a.acked.Load()
}

// runPhases runs the baseline and the attacks, each with its recovery.
func (l *abuseLoad) runPhases(ctx context.Context, start time.Time) {
	if !sleepCtx(ctx, time.Until(start.Add(l.cfg.Phase))) {
		return
	}
	l.checkHealthAfter(ctx, l.segs[0])
	l.sampleServer(ctx, l.segs[0])
	attacks, _ := l.cfg.attackList()
	for k, name := range attacks {
		i := 1 + 2*k
		seg, rec := l.segs[i], l.segs[i+1]
		t0 := time.Now()
		l.startSeg(i, t0)
		actx, cancel := context.WithDeadline(ctx, t0.Add(l.cfg.Phase))
		l.attack(actx, name, seg)
		<-actx.Done() // an attack that ran out of attempts leaves the rest of its phase quiet
		cancel()
		if ctx.Err() != nil {
			return
		}
		recEnd := time.Now().Add(l.cfg.Recovery)
		l.startSeg(i+1, time.Now())
		l.sampleServer(ctx, seg)
		if name == AttackLoginGuess {
			l.canaryLogin(ctx, seg)
		}
		l.checkHealthAfter(ctx, seg)
		if !sleepCtx(ctx, time.Until(recEnd)) {
			return
		}
		l.sampleServer(ctx, rec)
	}
}

// attack runs one attack until ctx's deadline, and tears it down.
func (l *abuseLoad) attack(ctx context.Context, name string, seg *abuseSeg) {
	switch name {
	case AttackLengthBomb:
		l.lengthBomb(ctx, seg)
	case AttackMalformedFlood:
		l.malformedFlood(ctx, seg)
	case AttackConnFlood:
		l.connFlood(ctx, seg)
	case AttackSlowloris:
		l.slowloris(ctx, seg)
	case AttackLoginGuess:
		l.loginGuess(ctx, seg)
	case AttackBigReplies:
		l.bigReplies(ctx, seg)
	}
}

// sendOne posts one canary message and retries it, with the same cmid,
// on retryable errors until directSendTimeout (see directLoad.sendOne).
func (l *abuseLoad) sendOne(ctx context.Context, s *canarySide, intended time.Time) {
	i := l.segAt(intended)
	seg := l.segs[i]
	req := wire.Request{
		Type: wire.TypeSend, Conv: l.conv,
		ClientMsgID: "c" + strconv.FormatUint(s.nextMsg.Add(1), 10),
		Body:        l.canaryBody(intended, i),
	}
	seg.sent.Add(1)
	l.sent.Add(1)
	l.live.Sent.Add(1)
	rep, code, err := sendRetrying(ctx, s.c, &req, nil, func(code string) {
		seg.counters.add("canary retried "+code, 1)
		l.tally.retry(code)
	})
	if err != nil {
		seg.counters.add("canary failed "+code, 1)
		l.tally.fail(code, fmt.Errorf("canary send during %s: %w", seg.name, err))
		return
	}
	d := time.Since(intended)
	seg.record(seg.ack, d)
	l.ack.record(s.idx, d)
	if rep.Duplicate {
		l.duplicates.Add(1)
	}
	seg.acked.Add(1)
	s.acked.Add(1)
	l.acked.Add(1)
	l.live.Acked.Add(1)
}

// healthz asks /healthz once, on a fresh connection, within timeout.
func (l *abuseLoad) healthz(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(l.sh.HTTP, "/")+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := l.health.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// probe asks /healthz every healthProbeEvery until ctx ends, charging
// each answer (or its absence) to the phase running when it was asked.
func (l *abuseLoad) probe(ctx context.Context) {
	t := time.NewTicker(healthProbeEvery)
	defer t.Stop()
	for {
		seg := l.segs[l.cur.Load()]
		t0 := time.Now()
		err := l.healthz(ctx, healthProbeTimeout)
		if ctx.Err() != nil {
			return
		}
		seg.probes.Add(1)
		us := time.Since(t0).Microseconds()
		for {
			old := seg.probeMaxUS.Load()
			if us <= old || seg.probeMaxUS.CompareAndSwap(old, us) {
				break
			}
		}
		if err != nil {
			seg.probeFails.Add(1)
			l.tally.error(fmt.Errorf("/healthz during %s: %w", seg.name, err))
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// checkHealthAfter waits, at most healthAfterWait, for /healthz to answer
// 200, and records the outcome on seg.
func (l *abuseLoad) checkHealthAfter(ctx context.Context, seg *abuseSeg) {
	deadline := time.Now().Add(healthAfterWait)
	var err error
	for {
		if err = l.healthz(ctx, time.Until(deadline)); err == nil {
			seg.counters.add("healthz after ok", 1)
			return
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) || !sleepCtx(ctx, 250*time.Millisecond) {
			break
		}
	}
	seg.counters.add("healthz after failed", 1)
	l.tally.error(fmt.Errorf("/healthz after %s: no 200 within %v: %w", seg.name, healthAfterWait, err))
}

// sampleServer reads /metrics at the end of seg (nil: the reference at
// the start) and charges seg with the server's CPU since the last sample.
func (l *abuseLoad) sampleServer(ctx context.Context, seg *abuseSeg) {
	m, err := l.scraper.scrape(ctx)
	if err != nil {
		if seg != nil {
			seg.counters.add("server scrape failed", 1)
		}
		return
	}
	s := NewServerSample("", l.sh.HTTP, time.Now(), m)
	if seg != nil {
		if prev := l.lastSample; prev != nil {
			seg.counters.add("server cpu ms", int64((s.CPUSeconds-prev.CPUSeconds)*1000))
			seg.counters.add("server wall ms", s.At.Sub(prev.At).Milliseconds())
		}
		seg.counters.add("server rss bytes", int64(s.RSSBytes))
		seg.counters.add("server goroutines", int64(s.Goroutines))
		seg.counters.add("server connections", int64(s.Connections))
	}
	l.lastSample = &s
}

func (l *abuseLoad) Finish(ctx context.Context) *Result {
	res := &Result{Start: l.start, End: l.end}
	for _, s := range []*canarySide{l.a, l.b} {
		if s.c != nil {
			res.Conns++
			_ = s.c.Close()
		}
	}
	l.readers.Wait()
	res.Sent, res.Acked, res.Delivered = l.sent.Load(), l.acked.Load(), l.delivered.Load()
	res.Duplicates, res.Missed, res.BadBodies = l.duplicates.Load(), l.missed.Load(), l.badBodies.Load()
	res.Undelivered, res.Dropped = l.undelivered, l.dropped
	res.Latency = map[string]*Histogram{"deliver": l.deliver.merged(), "ack": l.ack.merged()}
	var counters counterSet
	for _, seg := range l.segs {
		key := func(name string) string { return abuseKeyPrefix + seg.name + "|" + name }
		counters.add(key("canary sent"), seg.sent.Load())
		counters.add(key("canary acked"), seg.acked.Load())
		counters.add(key("canary delivered"), seg.delivered.Load())
		counters.add(key("healthz probes"), seg.probes.Load())
		counters.add(key("healthz failed"), seg.probeFails.Load())
		counters.add(key("healthz slowest us"), seg.probeMaxUS.Load())
		for name, v := range seg.counters.snapshot() {
			counters.add(key(name), v)
		}
		seg.hmu.Lock()
		res.Latency[key("deliver")] = seg.deliver
		res.Latency[key("ack")] = seg.ack
		seg.hmu.Unlock()
	}
	res.Counters = counters.snapshot()
	l.tally.fill(res)
	return res
}

// abuseKeyPrefix starts the per-phase counters and histograms of a Result:
// "abuse|PHASE|NAME". Report moves them into Tables and AbusePhase.
const abuseKeyPrefix = "abuse|"

// ---- the attacks ----

// dialAttacker opens a bare connection for an attacker (from the
// attackers' address) whose frames other than replies to its own
// requests go to onEvent.
func (l *abuseLoad) dialAttacker(ctx context.Context, token string, onEvent func(*bareFrame, time.Time)) (*bareConn, error) {
	return dialBare(ctx, bareOptions{URL: l.sh.WS, Token: token, Timeout: abuseDialTimeout, LocalIP: l.from, OnEvent: onEvent})
}

// countReplies counts the replies among a connection's frames, by code,
// on seg, and in n.
func countReplies(seg *abuseSeg, n *atomic.Int64) func(*bareFrame, time.Time) {
	return func(f *bareFrame, _ time.Time) {
		switch f.Type {
		case wire.TypeError:
			seg.counters.add("reply "+f.Code, 1)
			n.Add(1)
		case wire.TypeOK:
			seg.counters.add("reply ok", 1)
			n.Add(1)
		}
	}
}

// paceOf is the request rate an attacker keeps on c so as not to be cut
// off: ratePace of what the hello says the node allows.
func paceOf(c *bareConn) rate.Limit {
	r := c.hello.Limits.RatePerSecond
	if r <= 0 {
		r = 50
	}
	return rate.Limit(max(r*ratePace, 1))
}

// closeAttackers closes the connections still open and counts, on seg,
// those the server had closed, by reason.
func closeAttackers(conns []*bareConn, seg *abuseSeg) {
	for _, c := range conns {
		if c == nil {
			continue
		}
		select {
		case <-c.gone:
			seg.counters.add("closed by the server: "+closeReason(c.closeErr), 1)
		default:
			c.close()
		}
	}
	deadline := time.NewTimer(abuseTeardown)
	defer deadline.Stop()
	for _, c := range conns {
		if c == nil {
			continue
		}
		select {
		case <-c.gone:
		case <-deadline.C:
			for _, c := range conns {
				if c != nil {
					_ = c.sock.Close()
				}
			}
			return
		}
	}
}

// waitUntil polls cond until it holds or d passes.
func waitUntil(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for !cond() {
		if !time.Now().Before(end) {
			return false
		}
		time.Sleep(drainPoll)
	}
	return true
}

// BombFrames are the length-bomb finding's frames (see wire/decode.go)
// and a request over the users limit, with the codes the node answers
// them with.
var BombFrames = []struct {
	Name  string
	Frame []byte
	Code  wire.Code
}{
	// 32 bytes: {"t": "group.create", "id": 1, "users": array32 of 2^32-1 elements, and then one}.
	{"users array32", []byte("\x83\xa1t\xacgroup.create\xa2id\x01\xa5users\xdd\xff\xff\xff\xff\x01"), wire.CodeBadFrame},
	// 18 bytes: {"id": 7, "t": str32 of 4 GiB (minus one), and six bytes}.
	{"t str32", []byte("\x82\xa2id\x07\xa1t\xdb\xff\xff\xff\xffabcdef"), wire.CodeBadFrame},
	{"body bin32", []byte("\x82\xa2id\x05\xa4body\xc6\x7f\xff\xff\xff"), wire.CodeBadFrame},
	{"id -1", []byte("\x82\xa1t\xa4ping\xa2id\xff"), wire.CodeInvalid},
	{"id -1 int64", []byte("\x82\xa1t\xa4ping\xa2id\xd3\xff\xff\xff\xff\xff\xff\xff\xff"), wire.CodeInvalid},
	{"id 2^64-1", []byte("\x82\xa1t\xa4ping\xa2id\xcf\xff\xff\xff\xff\xff\xff\xff\xff"), wire.CodeInvalid},
	{"1001 users", tooManyUsers(), wire.CodeTooLarge},
}

func tooManyUsers() []byte {
	users := make([]uint64, wire.MaxUsersPerRequest+1)
	for i := range users {
		users[i] = uint64(i + 1)
	}
	b, err := wire.Marshal(&wire.Request{Type: wire.TypeGroupCreate, ID: 3, Name: "bomb", Users: users})
	if err != nil {
		panic(err) // a fixed request always encodes
	}
	return b
}

// lengthBomb: BombConns connections send BombFrames in turn, paced under
// the node's request rate, until the phase ends; every frame must be
// answered, with the frame's code, and no connection closed.
func (l *abuseLoad) lengthBomb(ctx context.Context, seg *abuseSeg) {
	var replies, sent atomic.Int64
	conns := make([]*bareConn, l.cfg.BombConns)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			c, err := l.dialAttacker(ctx, l.sh.Attacker.Token, countReplies(seg, &replies))
			if err != nil {
				if ctx.Err() == nil {
					seg.counters.add("dial error: "+connErrorKind(err), 1)
				}
				return
			}
			conns[i] = c
			lim := rate.NewLimiter(paceOf(c), 1)
			for n := 0; n < maxBombFrames; n++ {
				if lim.Wait(ctx) != nil {
					return
				}
				if c.write(gws.OpcodeBinary, BombFrames[n%len(BombFrames)].Frame) != nil {
					return
				}
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	// Every frame is answered: wait for the replies still on their way.
	waitUntil(abuseTeardown, func() bool { return replies.Load() >= sent.Load() })
	seg.counters.add("frames sent", sent.Load())
	seg.counters.add("replies", replies.Load())
	closeAttackers(conns, seg)
}

// malformedFlood: FloodConns lanes each write random bytes as fast as
// they can on a connection; when the server closes it, the lane notes why
// and opens another at once.
func (l *abuseLoad) malformedFlood(ctx context.Context, seg *abuseSeg) {
	var wg sync.WaitGroup
	var replies atomic.Int64
	for lane := range l.cfg.FloodConns {
		wg.Go(func() { l.floodLane(ctx, seg, lane, &replies) })
	}
	wg.Wait()
	seg.counters.add("replies", replies.Load())
}

func (l *abuseLoad) floodLane(ctx context.Context, seg *abuseSeg, lane int, replies *atomic.Int64) {
	r := rand.New(rand.NewPCG(uint64(lane), uint64(time.Now().UnixNano())))
	buf := make([]byte, 64)
	for range floodConnsPerLane {
		if ctx.Err() != nil {
			return
		}
		c, err := l.dialAttacker(ctx, l.sh.Attacker.Token, countReplies(seg, replies))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			seg.counters.add("dial error: "+connErrorKind(err), 1)
			sleepCtx(ctx, floodRedial)
			continue
		}
		seg.counters.add("connections", 1)
		var sent int64
	write:
		for ; sent < maxFloodFrames && ctx.Err() == nil; sent++ {
			select {
			case <-c.gone:
				break write
			default:
			}
			n := 1 + r.IntN(len(buf))
			for i := 0; i < n; i += 8 {
				v := r.Uint64()
				for j := i; j < min(i+8, n); j++ {
					buf[j] = byte(v >> (8 * (j - i)))
				}
			}
			if c.write(gws.OpcodeBinary, buf[:n]) != nil {
				break
			}
		}
		seg.counters.add("frames sent", sent)
		if ctx.Err() != nil || sent == maxFloodFrames {
			closeAttackers([]*bareConn{c}, seg)
			continue
		}
		// A write failed or the read loop ended: the server closed it.
		select {
		case <-c.gone:
		case <-time.After(abuseTeardown):
			_ = c.sock.Close()
			<-c.gone
		}
		seg.counters.add("closed by the server: "+closeReason(c.closeErr), 1)
	}
}

// connFlood: up to ConnAttempts WebSocket handshakes on one token,
// connFloodParallel at a time; the upgraded connections are held until
// the phase ends.
func (l *abuseLoad) connFlood(ctx context.Context, seg *abuseSeg) {
	u, err := url.Parse(l.sh.WS)
	if err != nil {
		l.tally.error(fmt.Errorf("conn-flood: %w", err))
		return
	}
	var (
		attempts atomic.Int64
		retryMax atomic.Int64
		mu       sync.Mutex // guards held
		held     []net.Conn
		wg       sync.WaitGroup
	)
	for range connFloodParallel {
		wg.Go(func() {
			for ctx.Err() == nil && attempts.Add(1) <= int64(l.cfg.ConnAttempts) {
				nc, status, retry, reason, err := l.rawUpgrade(ctx, u, l.sh.Flooder.Token)
				switch {
				case err != nil:
					if ctx.Err() == nil {
						seg.counters.add("handshake error: "+connErrorKind(err), 1)
					}
				case status == http.StatusSwitchingProtocols:
					seg.counters.add("upgraded (101)", 1)
					mu.Lock()
					held = append(held, nc)
					mu.Unlock()
				default:
					seg.counters.add(fmt.Sprintf("refused %d %s", status, reason), 1)
					if n, err := strconv.Atoi(retry); err == nil {
						seg.counters.add(fmt.Sprintf("refused %d with Retry-After", status), 1)
						for old := retryMax.Load(); int64(n) > old && !retryMax.CompareAndSwap(old, int64(n)); old = retryMax.Load() {
						}
					} else {
						seg.counters.add(fmt.Sprintf("refused %d without Retry-After", status), 1)
					}
				}
			}
		})
	}
	wg.Wait()
	seg.counters.add("handshakes", min(attempts.Load(), int64(l.cfg.ConnAttempts)))
	if n := retryMax.Load(); n > 0 {
		seg.counters.add("Retry-After max s", n)
	}
	<-ctx.Done() // hold them to the end of the phase
	for _, nc := range held {
		_ = nc.Close()
	}
}

// rawUpgrade writes a WebSocket handshake by hand on a fresh socket and
// reads the answer: the socket when upgraded (101), else the status, the
// Retry-After header and the body's first line.
func (l *abuseLoad) rawUpgrade(ctx context.Context, u *url.URL, token string) (net.Conn, int, string, string, error) {
	nc, err := l.dialRaw(ctx, u.Host)
	if err != nil {
		return nil, 0, "", "", err
	}
	_ = nc.SetDeadline(time.Now().Add(abuseDialTimeout))
	var key [16]byte
	for i := range key {
		key[i] = byte(rand.Uint32())
	}
	_, err = fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n",
		u.RequestURI(), u.Host, base64.StdEncoding.EncodeToString(key[:]), token)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(bufio.NewReader(nc), nil)
	}
	if err != nil {
		_ = nc.Close()
		return nil, 0, "", "", err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		_ = nc.SetDeadline(time.Time{})
		return nc, resp.StatusCode, "", "", nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	_ = nc.Close()
	reason, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	return nil, resp.StatusCode, resp.Header.Get("Retry-After"), reason, nil
}

// dialRaw opens a TCP connection from the attackers' address.
func (l *abuseLoad) dialRaw(ctx context.Context, hostPort string) (net.Conn, error) {
	d := net.Dialer{Timeout: abuseDialTimeout}
	if l.from != nil {
		d.LocalAddr = &net.TCPAddr{IP: l.from}
	}
	return d.DialContext(ctx, "tcp", hostPort)
}

// slowloris: Slowloris connections send a login request whose body comes
// one byte every slowlorisDrip, and KeepAlives connections make one
// request and idle; each waits for the server to cut it off, until the
// phase ends.
func (l *abuseLoad) slowloris(ctx context.Context, seg *abuseSeg) {
	u, err := url.Parse(l.sh.HTTP)
	if err != nil {
		l.tally.error(fmt.Errorf("http-slowloris: %w", err))
		return
	}
	var slowCut, idleCut cutTimes
	var wg sync.WaitGroup
	for range l.cfg.Slowloris {
		wg.Go(func() { l.slowBody(ctx, seg, u.Host, &slowCut) })
	}
	for range l.cfg.KeepAlives {
		wg.Go(func() { l.idleKeepAlive(ctx, seg, u.Host, &idleCut) })
	}
	wg.Wait()
	slowCut.report(seg, "slow bodies")
	idleCut.report(seg, "keep-alives")
}

// cutTimes keeps the earliest and latest cut-off, from the connection's
// dial, in milliseconds.
type cutTimes struct {
	mu       sync.Mutex
	n        int64
	min, max int64
}

func (c *cutTimes) add(d time.Duration) {
	ms := d.Milliseconds()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 || ms < c.min {
		c.min = ms
	}
	c.max = max(c.max, ms)
	c.n++
}

func (c *cutTimes) report(seg *abuseSeg, what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n > 0 {
		seg.counters.add(what+" cut after ms min", c.min)
		seg.counters.add(what+" cut after ms max", c.max)
	}
}

// readCut reads from r until it returns something or fails, and says
// which: "answered HTTP 400", "eof", "reset" ...
func readCut(r io.Reader) string {
	buf := make([]byte, 256)
	n, err := r.Read(buf)
	if n > 0 {
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(f[0], "HTTP/") {
			return "answered " + f[1]
		}
		return "answered"
	}
	return connErrorKind(err)
}

func (l *abuseLoad) slowBody(ctx context.Context, seg *abuseSeg, host string, cuts *cutTimes) {
	nc, err := l.dialRaw(ctx, host)
	if err != nil {
		if ctx.Err() == nil {
			seg.counters.add("slow bodies dial error: "+connErrorKind(err), 1)
		}
		return
	}
	t0 := time.Now()
	defer nc.Close()
	seg.counters.add("slow bodies", 1)
	body := `{"username":"` + strings.Repeat("a", slowlorisBodyBytes)
	_ = nc.SetWriteDeadline(time.Now().Add(abuseDialTimeout))
	if _, err := fmt.Fprintf(nc, "POST /v1/login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
		host, slowlorisBodyBytes); err != nil {
		seg.counters.add("slow bodies write error: "+connErrorKind(err), 1)
		return
	}
	cut := make(chan string, 1)
	go func() { cut <- readCut(nc) }()
	drip := time.NewTicker(slowlorisDrip)
	defer drip.Stop()
	for i := 0; ; {
		select {
		case why := <-cut:
			cuts.add(time.Since(t0))
			seg.counters.add("slow bodies cut off: "+why, 1)
			return
		case <-ctx.Done():
			seg.counters.add("slow bodies open at the end of the phase", 1)
			_ = nc.Close()
			<-cut
			return
		case <-drip.C:
			if i < slowlorisBodyBytes {
				_ = nc.SetWriteDeadline(time.Now().Add(abuseDialTimeout))
				_, _ = nc.Write([]byte{body[i]}) // a failed write: the reader says why
				i++
			}
		}
	}
}

func (l *abuseLoad) idleKeepAlive(ctx context.Context, seg *abuseSeg, host string, cuts *cutTimes) {
	nc, err := l.dialRaw(ctx, host)
	if err != nil {
		if ctx.Err() == nil {
			seg.counters.add("keep-alives dial error: "+connErrorKind(err), 1)
		}
		return
	}
	t0 := time.Now()
	defer nc.Close()
	seg.counters.add("keep-alives", 1)
	_ = nc.SetDeadline(time.Now().Add(abuseDialTimeout))
	br := bufio.NewReader(nc)
	_, err = fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(br, nil)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if err != nil {
		if ctx.Err() == nil {
			seg.counters.add("keep-alives first request failed: "+connErrorKind(err), 1)
		}
		return
	}
	_ = nc.SetDeadline(time.Time{})
	cut := make(chan string, 1)
	go func() { cut <- readCut(br) }()
	select {
	case why := <-cut:
		cuts.add(time.Since(t0))
		seg.counters.add("keep-alives cut off: "+why, 1)
	case <-ctx.Done():
		seg.counters.add("keep-alives open at the end of the phase", 1)
		_ = nc.Close()
		<-cut
	}
}

// loginGuess: up to Guesses logins with wrong passwords, loginGuessers at
// a time and Guesses per Phase, every other one for the canary's username.
func (l *abuseLoad) loginGuess(ctx context.Context, seg *abuseSeg) {
	d := &net.Dialer{Timeout: abuseDialTimeout}
	if l.from != nil {
		d.LocalAddr = &net.TCPAddr{IP: l.from}
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: d.DialContext, MaxConnsPerHost: loginGuessers, MaxIdleConnsPerHost: loginGuessers,
	}}
	defer hc.CloseIdleConnections()
	// The guesses are spread over the phase, as an attacker who keeps at
	// it would: refused ones cost it nothing, so it would not stop.
	lim := rate.NewLimiter(rate.Limit(float64(l.cfg.Guesses)/l.cfg.Phase.Seconds()), loginGuessers)
	var attempts, retryMax atomic.Int64
	var wg sync.WaitGroup
	for range loginGuessers {
		wg.Go(func() {
			for ctx.Err() == nil {
				if lim.Wait(ctx) != nil {
					return
				}
				n := attempts.Add(1)
				if n > int64(l.cfg.Guesses) {
					return
				}
				name, whose := l.sh.A.Name, "canary's name"
				if n%2 == 1 {
					name, whose = fmt.Sprintf("zz%012x", rand.Uint64()&(1<<48-1)), "random names"
				}
				status, retry, err := postLogin(ctx, hc, l.sh.HTTP, name, fmt.Sprintf("wrong-%016x", rand.Uint64()))
				if err != nil {
					if ctx.Err() == nil {
						seg.counters.add("login error: "+connErrorKind(err), 1)
					}
					continue
				}
				seg.counters.add(fmt.Sprintf("HTTP %d (%s)", status, whose), 1)
				if r, err := strconv.Atoi(retry); err == nil && status == http.StatusTooManyRequests {
					for old := retryMax.Load(); int64(r) > old && !retryMax.CompareAndSwap(old, int64(r)); old = retryMax.Load() {
					}
				}
			}
		})
	}
	wg.Wait()
	seg.counters.add("logins", min(attempts.Load(), int64(l.cfg.Guesses)))
	if n := retryMax.Load(); n > 0 {
		seg.counters.add("Retry-After max s", n)
	}
}

// canaryLogin logs the canary in afresh, with its right password, from
// its own address: does the throttle let the real user in?
func (l *abuseLoad) canaryLogin(ctx context.Context, seg *abuseSeg) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	status, retry, err := postLogin(ctx, hc, l.sh.HTTP, l.sh.A.Name, benchPassword)
	if err != nil {
		seg.counters.add("fresh canary login error: "+connErrorKind(err), 1)
		return
	}
	seg.counters.add(fmt.Sprintf("fresh canary login HTTP %d", status), 1)
	if r, err := strconv.Atoi(retry); err == nil {
		seg.counters.add("fresh canary login Retry-After s", int64(r))
	}
}

// postLogin posts one login and returns the status and Retry-After.
func postLogin(ctx context.Context, hc *http.Client, base, name, password string) (int, string, error) {
	body, _ := json.Marshal(map[string]string{"username": name, "password": password, "device": "abuse"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/v1/login", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After"), nil
}

// bigReplies: the reader attacker puts the victim in bigGroups groups and
// posts bigPosts messages of the largest body into each, then its
// ReadConns connections ask sync since 0 and history in bursts of
// bigReadLanes reads, while the victim pages its sync and history.
func (l *abuseLoad) bigReplies(ctx context.Context, seg *abuseSeg) {
	var victimEvents atomic.Int64
	victim, err := dialBare(ctx, bareOptions{URL: l.sh.WS, Token: l.sh.Victim.Token, Timeout: abuseDialTimeout,
		OnEvent: func(f *bareFrame, _ time.Time) {
			if f.Type == wire.TypeEvent {
				victimEvents.Add(1)
			}
		}})
	if err != nil {
		seg.counters.add("victim dial error: "+connErrorKind(err), 1)
		l.tally.error(fmt.Errorf("big-replies: dial the victim: %w", err))
		return
	}
	defer func() { seg.counters.add("victim live events", victimEvents.Load()) }()

	// The attacker's connections: each counts its replies and frees a
	// slot of its reads in flight on each.
	type reader struct {
		c     *bareConn
		slots chan struct{}
		lim   *rate.Limiter
	}
	var replies atomic.Int64
	readers := make([]*reader, l.cfg.ReadConns)
	conns := make([]*bareConn, len(readers))
	for i := range readers {
		r := &reader{slots: make(chan struct{}, bigReadLanes)}
		count := countReplies(seg, &replies)
		r.c, err = l.dialAttacker(ctx, l.sh.Reader.Token, func(f *bareFrame, now time.Time) {
			if f.Type == wire.TypeOK || f.Type == wire.TypeError {
				count(f, now)
				select {
				case <-r.slots:
				default:
				}
			}
		})
		if err != nil {
			seg.counters.add("dial error: "+connErrorKind(err), 1)
			l.tally.error(fmt.Errorf("big-replies: dial the attacker: %w", err))
			closeAttackers(append(conns, victim), seg)
			return
		}
		r.lim = rate.NewLimiter(paceOf(r.c), 1)
		readers[i], conns[i] = r, r.c
	}
	seg.counters.add("max_reply bytes", int64(readers[0].c.hello.Limits.MaxReplyBytes))

	// Setup: the groups, then the posts, one lane per group.
	var groups []uint64
	for k := range bigGroups {
		rep, err := readers[0].c.request(ctx, &wire.Request{Type: wire.TypeGroupCreate,
			Name: fmt.Sprintf("abuse %d", k), Users: []uint64{l.sh.Victim.User}})
		if err != nil || rep.Info == nil {
			seg.counters.add("group.create failed: "+errorCode(err), 1)
			l.tally.error(fmt.Errorf("big-replies: group.create: %v", err))
			closeAttackers(append(conns, victim), seg)
			return
		}
		groups = append(groups, rep.Info.ID)
	}
	big := strings.Repeat("x", wire.MaxBodyBytes)
	var posted atomic.Int64
	var wg sync.WaitGroup
	for k, g := range groups {
		r := readers[k%len(readers)]
		wg.Go(func() {
			for m := range bigPosts {
				if r.lim.Wait(ctx) != nil {
					return
				}
				_, err := r.c.request(ctx, &wire.Request{Type: wire.TypeSend, Conv: g,
					ClientMsgID: fmt.Sprintf("big-%d-%d", k, m), Body: big})
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					seg.counters.add("post failed: "+errorCode(err), 1)
					continue
				}
				posted.Add(1)
			}
		})
	}
	wg.Wait()
	seg.counters.add("messages posted", posted.Load())

	// The attack: every connection sends bursts of bigReadLanes reads (a
	// sync since 0, the newest and the oldest page of a group's history),
	// one more than the node admits at once, and the next burst as soon as
	// its slots are free and the pace allows.
	var sentReads atomic.Int64
	for _, r := range readers {
		r.lim.SetBurst(bigReadLanes)
		wg.Go(func() {
			for n := 0; n < maxBigReads && ctx.Err() == nil; n++ {
				for range bigReadLanes {
					select {
					case r.slots <- struct{}{}:
					case <-r.c.gone:
						return
					case <-ctx.Done():
						return
					}
				}
				if r.lim.WaitN(ctx, bigReadLanes) != nil {
					return
				}
				g := groups[n%len(groups)]
				for _, req := range []wire.Request{
					{Type: wire.TypeSync, Limit: 100},
					{Type: wire.TypeHistory, Conv: g, Limit: 200, Dir: "before"},
					{Type: wire.TypeHistory, Conv: g, Limit: 200, Dir: "after"},
				} {
					req.ID = r.c.nextID.Add(1)
					b, err := wire.Marshal(&req)
					if err != nil || r.c.write(gws.OpcodeBinary, b) != nil {
						return
					}
					sentReads.Add(1)
				}
			}
		})
	}
	// The victim pages its sync (lane 0) and the groups' history (lane 1):
	// two reads in flight, as many as the node admits.
	victimLim := rate.NewLimiter(paceOf(victim)/2, 1)
	for lane := range 2 {
		wg.Go(func() { l.victimPages(ctx, seg, victim, victimLim, lane, groups) })
	}
	wg.Wait()
	seg.counters.add("reads sent", sentReads.Load())
	waitUntil(abuseTeardown, func() bool { return replies.Load() >= sentReads.Load() })

	// Did the victim survive? A ping's reply comes after everything the
	// node queued for it.
	pctx, cancel := context.WithTimeout(context.Background(), abuseTeardown)
	_, err = victim.request(pctx, &wire.Request{Type: wire.TypePing})
	cancel()
	select {
	case <-victim.gone:
		seg.counters.add("victim closed by the server: "+closeReason(victim.closeErr), 1)
		l.tally.error(fmt.Errorf("big-replies: the victim was disconnected: %s", closeReason(victim.closeErr)))
	default:
		if err != nil {
			seg.counters.add("victim ping unanswered", 1)
		} else {
			seg.counters.add("victim still connected", 1)
		}
	}
	closeAttackers(append(conns, victim), seg)
}

// victimPages is one of the victim's lanes: lane 0 pages sync since 0 to
// its end and starts again; lane 1 pages each group's history from its
// start. busy and rate_limited are waited out, as a client must.
func (l *abuseLoad) victimPages(ctx context.Context, seg *abuseSeg, c *bareConn, lim *rate.Limiter, lane int, groups []uint64) {
	var after, afterConv, seq uint64
	g := 0
	for n := 0; n < maxBigReads && ctx.Err() == nil; n++ {
		if lim.Wait(ctx) != nil {
			return
		}
		req := &wire.Request{Type: wire.TypeSync, Since: 0, After: after, AfterConv: afterConv, Limit: 100}
		if lane == 1 {
			req = &wire.Request{Type: wire.TypeHistory, Conv: groups[g], Dir: "after", Seq: seq, Limit: 200}
		}
		rep, err := c.request(ctx, req)
		if err != nil {
			var we *wire.Error
			switch {
			case ctx.Err() != nil:
				return
			case errors.As(err, &we) && (we.Code == wire.CodeBusy || we.Code == wire.CodeRateLimited):
				seg.counters.add("victim "+string(we.Code), 1)
				sleepCtx(ctx, 50*time.Millisecond)
				continue
			default:
				seg.counters.add("victim error: "+errorCode(err), 1)
				select {
				case <-c.gone:
					return
				default:
					sleepCtx(ctx, 50*time.Millisecond)
					continue
				}
			}
		}
		if lane == 0 {
			seg.counters.add("victim sync pages", 1)
			for _, ch := range rep.Changes {
				seg.counters.add("victim sync events", int64(len(ch.Events)))
			}
			if rep.More {
				after, afterConv = rep.Next, rep.NextConv
			} else {
				after, afterConv = 0, 0
				seg.counters.add("victim syncs to the end", 1)
			}
			continue
		}
		seg.counters.add("victim history pages", 1)
		seg.counters.add("victim history events", int64(len(rep.Events)))
		if rep.More && len(rep.Events) > 0 {
			seq = rep.Events[len(rep.Events)-1].Seq
		} else {
			seq, g = 0, (g+1)%len(groups)
		}
	}
}

// ---- the report ----

// AbusePhase is one phase of an abuse run as reported.
type AbusePhase struct {
	Name   string `json:"name"`   // baseline, an attack, or an attack + " recovery"
	Attack string `json:"attack"` // the attack, for it and its recovery; "" for the baseline

	Sent, Acked, Delivered int64 // the canary's messages intended in this phase
	Lost                   int64 // acked and never delivered
	Deliver, Ack           Summary
	// CanaryErrors are the canary's retried and failed sends by code
	// ("retried busy", "failed timeout") and its clients' resyncs (after
	// a reconnection or a gap).
	CanaryErrors map[string]int64

	HealthProbes, HealthFailures int64
	HealthSlowest                time.Duration
	HealthAfter                  string // "ok", "failed", or "" (not checked)

	ServerCPU  float64 // cores over the phase
	ServerRSS  float64 // bytes at its end
	Goroutines float64
	ServerConn float64 // WebSocket connections at its end

	// Counters are the attack's own counts.
	Counters map[string]int64
}

// Phases returns the phases of the last run, once Report has run.
func (a *Abuse) Phases() []AbusePhase { return a.phases }

func (a *Abuse) Report(rep *Report) {
	c := a.withDefaults()
	res := rep.Result
	a.phases = nil
	for _, name := range c.phaseNames() {
		p := AbusePhase{Name: name, CanaryErrors: map[string]int64{}, Counters: map[string]int64{}}
		if name != abusePhaseBaseline {
			p.Attack = strings.TrimSuffix(name, abuseRecovery)
		}
		prefix := abuseKeyPrefix + name + "|"
		var cpuMS, wallMS int64
		for k, v := range res.Counters {
			key, ok := strings.CutPrefix(k, prefix)
			if !ok {
				continue
			}
			switch {
			case key == "canary sent":
				p.Sent = v
			case key == "canary acked":
				p.Acked = v
			case key == "canary delivered":
				p.Delivered = v
			case strings.HasPrefix(key, "canary "):
				p.CanaryErrors[strings.TrimPrefix(key, "canary ")] = v
			case key == "healthz probes":
				p.HealthProbes = v
			case key == "healthz failed":
				p.HealthFailures = v
			case key == "healthz slowest us":
				p.HealthSlowest = time.Duration(v) * time.Microsecond
			case key == "healthz after ok":
				p.HealthAfter = "ok"
			case key == "healthz after failed":
				p.HealthAfter = "failed"
			case key == "server cpu ms":
				cpuMS = v
			case key == "server wall ms":
				wallMS = v
			case key == "server rss bytes":
				p.ServerRSS = float64(v)
			case key == "server goroutines":
				p.Goroutines = float64(v)
			case key == "server connections":
				p.ServerConn = float64(v)
			default:
				p.Counters[key] = v
			}
		}
		if wallMS > 0 {
			p.ServerCPU = float64(cpuMS) / float64(wallMS)
		}
		p.Lost = max(p.Acked-p.Delivered, 0)
		if h := res.Latency[prefix+"deliver"]; h != nil {
			p.Deliver = h.Summary()
		}
		if h := res.Latency[prefix+"ack"]; h != nil {
			p.Ack = h.Summary()
		}
		a.phases = append(a.phases, p)
	}
	// The per-phase entries now live in the phases and the tables.
	for k := range res.Counters {
		if strings.HasPrefix(k, abuseKeyPrefix) {
			delete(res.Counters, k)
		}
	}
	for k := range res.Latency {
		if strings.HasPrefix(k, abuseKeyPrefix) {
			delete(res.Latency, k)
			delete(rep.Latency, k)
			delete(rep.Timeline, k)
		}
	}
	if len(res.Counters) == 0 {
		res.Counters = nil
		rep.Counts.Counters = nil
	}

	a.reportTables(rep)
	a.reportVerdicts(rep)
}

func (a *Abuse) reportTables(rep *Report) {
	ms := func(us int64) string { return formatMicros(us) }
	canary := Table{
		Title: "canary, by phase (latency from the intended send time)",
		Header: []string{"phase", "sent", "acked", "delivered", "lost", "deliver p50", "p99", "max",
			"ack p50", "p99", "max", "canary errors"},
	}
	node := Table{
		Title:  "node, by phase",
		Header: []string{"phase", "/healthz probes", "unanswered", "slowest", "after the phase", "server CPU", "RSS", "goroutines", "ws conns"},
	}
	attacks := Table{Title: "attacks", Header: []string{"attack", "what it saw"}}
	for _, p := range a.phases {
		errs := formatCounts(p.CanaryErrors)
		if errs == "" {
			errs = "none"
		}
		canary.Rows = append(canary.Rows, []string{p.Name,
			strconv.FormatInt(p.Sent, 10), strconv.FormatInt(p.Acked, 10), strconv.FormatInt(p.Delivered, 10), strconv.FormatInt(p.Lost, 10),
			ms(p.Deliver.P50), ms(p.Deliver.P99), ms(p.Deliver.Max), ms(p.Ack.P50), ms(p.Ack.P99), ms(p.Ack.Max), errs})
		node.Rows = append(node.Rows, []string{p.Name,
			strconv.FormatInt(p.HealthProbes, 10), strconv.FormatInt(p.HealthFailures, 10),
			formatMicros(p.HealthSlowest.Microseconds()), cmpOr(p.HealthAfter, "-"),
			fmt.Sprintf("%.2f cores", p.ServerCPU), formatBytes(p.ServerRSS),
			fmt.Sprintf("%.0f", p.Goroutines), fmt.Sprintf("%.0f", p.ServerConn)})
		if len(p.Counters) > 0 {
			attacks.Rows = append(attacks.Rows, []string{p.Name, formatCounts(p.Counters)})
		}
		if p.Attack == "" || p.Attack == p.Name {
			rep.AddFigure("canary send→deliver p99, "+p.Name, float64(p.Deliver.P99)/1e3, "ms")
		}
	}
	rep.Tables = append(rep.Tables, canary, node, attacks)
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (a *Abuse) reportVerdicts(rep *Report) {
	res := rep.Result
	fail := func(format string, v ...any) { rep.Failures = append(rep.Failures, fmt.Sprintf(format, v...)) }
	warn := func(format string, v ...any) { rep.Warnings = append(rep.Warnings, fmt.Sprintf(format, v...)) }
	if res.Acked == 0 {
		fail("the canary got no message acknowledged")
	}
	if res.Undelivered > 0 {
		fail("the canary lost %d acked messages (not delivered within the drain)", res.Undelivered)
	}
	if res.BadBodies > 0 {
		fail("%d canary deliveries had no readable stamp", res.BadBodies)
	}
	if res.Dropped > 0 {
		fail("%d canary clients were disconnected at the end", res.Dropped)
	}
	if res.Missed > 0 {
		warn("the canary's rate was not sustained: %d scheduled sends were never issued", res.Missed)
	}
	for _, p := range a.phases {
		failed := map[string]int64{}
		for k, v := range p.CanaryErrors {
			if code, ok := strings.CutPrefix(k, "failed "); ok {
				failed[code] = v
			}
		}
		if len(failed) > 0 {
			fail("the canary failed %d sends during %s (%s)", sumCounts(failed), p.Name, formatCounts(failed))
		}
		if p.Lost > 0 {
			fail("the canary lost %d messages sent during %s", p.Lost, p.Name)
		}
		if n := p.CanaryErrors["resyncs"]; n > 0 {
			warn("the canary's clients resynced %d times during %s (a reconnection, or a gap in their events)", n, p.Name)
		}
		if p.HealthFailures > 0 {
			fail("/healthz went unanswered %d of %d times during %s", p.HealthFailures, p.HealthProbes, p.Name)
		}
		if p.HealthAfter == "failed" {
			fail("/healthz did not answer 200 within %v after %s", healthAfterWait, p.Name)
		}
		if p.Attack != p.Name {
			continue // the baseline and the recoveries
		}
		cnt := p.Counters
		switch p.Attack {
		case AttackLengthBomb:
			var other []string
			for k, v := range cnt {
				if code, ok := strings.CutPrefix(k, "reply "); ok && code != string(wire.CodeBadFrame) &&
					code != string(wire.CodeInvalid) && code != string(wire.CodeTooLarge) {
					other = append(other, fmt.Sprintf("%s %d", code, v))
				}
			}
			if len(other) > 0 {
				warn("length-bomb: replies other than bad_frame, invalid and too_large: %s", strings.Join(other, ", "))
			}
			if cnt["replies"] < cnt["frames sent"] {
				warn("length-bomb: %d of %d frames unanswered", cnt["frames sent"]-cnt["replies"], cnt["frames sent"])
			}
			if n := sumCounts(prefixed(cnt, "closed by the server: ")); n > 0 {
				warn("length-bomb: the server closed %d connections (a bad request must not close one)", n)
			}
		case AttackMalformedFlood:
			if cnt["closed by the server: close 1008 rate limit exceeded"] == 0 {
				warn("malformed-flood: no flooding connection was closed with 1008 rate limit exceeded")
			}
		case AttackConnFlood:
			if n := sumCounts(prefixed(cnt, "refused ")); n == 0 {
				warn("conn-flood: no handshake was refused")
			}
			for k, v := range cnt {
				if strings.HasSuffix(k, "without Retry-After") {
					warn("conn-flood: %d refusals (%s) carried no Retry-After", v, k)
				}
			}
		case AttackLoginGuess:
			if n := cnt["HTTP 429 (canary's name)"] + cnt["HTTP 429 (random names)"]; n == 0 {
				warn("login-guess: no guess was throttled (429)")
			}
			if n := cnt["fresh canary login HTTP 429"]; n > 0 {
				warn("login-guess: the canary's own login with the right password was refused after the attack (429, Retry-After %d s)",
					cnt["fresh canary login Retry-After s"])
			}
		case AttackBigReplies:
			if n := sumCounts(prefixed(cnt, "victim closed by the server: ")); n > 0 {
				fail("big-replies: the victim was disconnected (%s)", formatCounts(prefixed(cnt, "victim closed by the server: ")))
			}
			if cnt["messages posted"] < bigGroups*bigPosts {
				warn("big-replies: only %d of %d messages were posted within the phase", cnt["messages posted"], bigGroups*bigPosts)
			}
		}
	}
}
