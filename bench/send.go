package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"parley/client"
	"parley/wire"
)

// The message loads (direct, group, mixed and the abuse canary) send the
// same way: on a schedule (schedule, every), a body stamped with the
// intended send time (stampBody, parseStamp), retried with one cmid on
// retryable errors (sendRetrying), then a drain until every acked message
// has arrived (waitDrained).
const (
	directSendTimeout = 30 * time.Second // one message, retries included
	sendRetryMin      = 5 * time.Millisecond
	sendRetryMax      = 500 * time.Millisecond
	drainPoll         = 10 * time.Millisecond
)

// schedule runs send on up to window lanes until until and returns the
// number of scheduled sends never issued (see pace). It returns once every
// lane has finished.
//
// A lane is a goroutine, started when a send finds every lane busy and the
// window not full, and kept for the sends after it: a sender at a modest
// rate has a lane or two, not window of them (64,000 idle goroutines for
// 1,000 senders would cost the harness more in stack growth and garbage
// collection than its sends).
func schedule(ctx context.Context, first, until time.Time, interval time.Duration, window int, send func(intended time.Time)) (missed int64) {
	slots := make(chan struct{}, window)
	jobs := make(chan time.Time)
	var lanes sync.WaitGroup
	started := 0
	defer lanes.Wait()
	defer close(jobs)
	lane := func(t time.Time) {
		for ok := true; ok; t, ok = <-jobs {
			send(t)
			<-slots
		}
	}
	return pace(ctx, first, until, interval, slots, func(t time.Time) {
		select {
		case jobs <- t: // an idle lane
			return
		default:
		}
		if started < window {
			started++
			lanes.Go(func() { lane(t) })
			return
		}
		jobs <- t // the lane that released the slot is about to take it
	})
}

// scheduleAsync is schedule for sends that do not block: start begins a
// send (one due at intended) and returns; whoever ends the send calls done,
// once. At most window sends are in flight. It returns once every send has
// ended.
func scheduleAsync(ctx context.Context, first, until time.Time, interval time.Duration, window int,
	start func(intended time.Time, done func())) (missed int64) {
	slots := make(chan struct{}, window)
	var inFlight sync.WaitGroup
	done := func() {
		<-slots
		inFlight.Done()
	}
	defer inFlight.Wait()
	return pace(ctx, first, until, interval, slots, func(t time.Time) {
		inFlight.Add(1)
		start(t, done)
	})
}

// clock runs the fixed-rate schedules of many senders (sendSchedule.run
// for each, sharing one interval) from one goroutine and one timer, for
// sends that do not block: a worker's thousand senders at ten sends a
// second each would otherwise wake a thousand scheduler goroutines ten
// thousand times a second. The schedules keep pace's rules: sender k's
// send i is due at firsts[k] + i*interval and carries that intended time
// however late it goes out; at most window sends of a sender are in
// flight, the others wait in order; sends still waiting when until comes
// are missed.
//
// run's goroutine issues the sends; a send that ends (done, on any
// goroutine) frees its slot, and when its sender has sends waiting it
// wakes run to issue them, since done may run on a connection's reader,
// which must not write.
type clock struct {
	interval time.Duration
	window   int
	start    func(k int, intended time.Time, done func())

	senders  []clockSender
	inFlight sync.WaitGroup
	wake     chan struct{} // capacity 1: senders waiting in kicked

	mu     sync.Mutex // guards kicked
	kicked []int      // senders with a free slot and sends waiting
}

type clockSender struct {
	first time.Time
	done  func() // the done of this sender's sends

	mu       sync.Mutex // guards the fields below
	due      int64      // sends due so far
	issued   int64      // sends started, the first issued of the due ones
	inFlight int
	ended    bool // the load is over: nothing more is issued
}

// runClock runs the schedules of senders starting at firsts (sorted, all
// within one interval of firsts[0]) until until and returns the sends they
// missed, once every send has ended. start begins sender k's send and
// returns; done must then be called once.
func runClock(ctx context.Context, firsts []time.Time, until time.Time, interval time.Duration, window int,
	start func(k int, intended time.Time, done func())) (missed int64) {
	c := &clock{interval: interval, window: window, start: start,
		senders: make([]clockSender, len(firsts)), wake: make(chan struct{}, 1)}
	for k := range c.senders {
		s := &c.senders[k]
		s.first = firsts[k]
		s.done = func() { c.finished(k) }
	}
	defer c.inFlight.Wait()
	return c.run(ctx, until)
}

func (c *clock) run(ctx context.Context, until time.Time) (missed int64) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	// Sends are due in the order (round, sender): firsts are sorted and
	// within one interval.
	round, k := int64(0), 0
	for {
		due := until
		if k < len(c.senders) {
			due = c.senders[k].first.Add(time.Duration(round) * c.interval)
			if !due.Before(until) {
				k, due = len(c.senders), until // every schedule is over: wait for until
			}
		}
		if d := time.Until(due); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-c.wake:
				t.Stop()
				c.issueKicked()
				continue
			case <-ctx.Done():
				c.end()
				return 0
			}
		}
		if k == len(c.senders) { // until has come
			return c.end()
		}
		s := &c.senders[k]
		s.mu.Lock()
		s.due++
		s.mu.Unlock()
		c.issue(k)
		if k++; k == len(c.senders) && c.senders[0].first.Add(time.Duration(round+1)*c.interval).Before(until) {
			round, k = round+1, 0
		}
	}
}

// issue starts the waiting sends of sender k while it has free slots.
func (c *clock) issue(k int) {
	s := &c.senders[k]
	for {
		s.mu.Lock()
		if s.ended || s.issued == s.due || s.inFlight == c.window {
			s.mu.Unlock()
			return
		}
		intended := s.first.Add(time.Duration(s.issued) * c.interval)
		s.issued++
		s.inFlight++
		c.inFlight.Add(1)
		s.mu.Unlock()
		c.start(k, intended, s.done)
	}
}

// finished frees a slot of sender k; if sends wait for it, run is woken.
func (c *clock) finished(k int) {
	s := &c.senders[k]
	s.mu.Lock()
	s.inFlight--
	waiting := !s.ended && s.issued < s.due
	s.mu.Unlock()
	if waiting {
		c.mu.Lock()
		c.kicked = append(c.kicked, k)
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.inFlight.Done()
}

func (c *clock) issueKicked() {
	c.mu.Lock()
	kicked := c.kicked
	c.kicked = nil
	c.mu.Unlock()
	for _, k := range kicked {
		c.issue(k)
	}
}

// end stops every schedule and returns the sends due but never issued,
// and those due later that the sender, stalled, would not have reached
// either (pace counts them the same way): all its unissued sends.
func (c *clock) end() (missed int64) {
	c.issueKicked()
	for k := range c.senders {
		s := &c.senders[k]
		s.mu.Lock()
		s.ended = true
		if s.issued < s.due {
			missed += s.due - s.issued
		}
		s.mu.Unlock()
	}
	return missed
}

// pace issues the sends of a schedule until until and returns the number
// of scheduled sends never issued. Each send holds one of the slots (their
// number is the window) from when pace issues it (start) until whoever ends
// it frees the slot (<-slots). With interval 0 (flat out) it keeps every
// slot busy and passes the zero time ("now"). Otherwise send i is due at
// first + i*interval and is passed that intended time even when it goes
// out late because every slot was busy; sends still waiting for a slot
// when until comes are missed.
func pace(ctx context.Context, first, until time.Time, interval time.Duration, slots chan struct{}, start func(intended time.Time)) (missed int64) {
	take := func() bool {
		select {
		case slots <- struct{}{}:
			return true
		default:
			return false
		}
	}
	stop := time.NewTimer(time.Until(until))
	defer stop.Stop()
	if interval == 0 {
		for {
			if take() {
				if ctx.Err() != nil || !time.Now().Before(until) {
					<-slots
					return 0
				}
			} else {
				select {
				case slots <- struct{}{}:
				case <-stop.C:
					return 0
				case <-ctx.Done():
					return 0
				}
			}
			start(time.Time{})
		}
	}

	wait := time.NewTimer(time.Hour)
	wait.Stop() // armed per send below
	for i := int64(0); ; i++ {
		t := first.Add(time.Duration(i) * interval)
		if !t.Before(until) {
			return 0
		}
		if d := time.Until(t); d > 0 {
			wait.Reset(d)
			select {
			case <-wait.C:
			case <-ctx.Done():
				return 0
			}
		}
		if !take() {
			select {
			case slots <- struct{}{}:
			case <-stop.C:
				// The load ended with every slot busy: the sends scheduled
				// from t on were never issued.
				return int64((until.Sub(t) + interval - 1) / interval)
			case <-ctx.Done():
				return 0
			}
		}
		start(t) // the send goes out, late or not
	}
}

// every calls fire at first, first+interval, … while before until, late
// rather than never when a call comes late (the schedule keeps its rate).
// fire must not block.
func every(ctx context.Context, first, until time.Time, interval time.Duration, fire func()) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i := int64(0); ; i++ {
		due := first.Add(time.Duration(i) * interval)
		if !due.Before(until) {
			return
		}
		if d := time.Until(due); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		} else if ctx.Err() != nil {
			return
		}
		fire()
	}
}

// Storm and mixed load their users with activities (flaps and typing;
// messages and reconnects), each perMinute times a minute over a worker's
// users, each time by a random user who is connected and doing nothing
// else: a user does one thing at a time (busy).

// activity is one kind of thing the users do.
type activity[U any] struct {
	perMinute float64 // over the worker's users
	act       func(context.Context, U)
}

// busy makes a user do one thing at a time.
type busy struct{ flag atomic.Bool }

func (b *busy) tryClaim() bool { return b.flag.CompareAndSwap(false, true) }
func (b *busy) release()       { b.flag.Store(false) }

type actor interface {
	tryClaim() bool
	release()
}

// claimIdle tries up to tries random users and claims the first that is
// not busy and is ready; false when none of them was.
func claimIdle[U actor](users []U, tries int, ready func(U) bool) (U, bool) {
	for range tries {
		u := users[rand.N(len(users))]
		if !u.tryClaim() {
			continue
		}
		if ready(u) {
			return u, true
		}
		u.release() // not connected: its reconnect failed
	}
	var none U
	return none, false
}

// runActivities runs each activity's schedule (every, from a random phase
// so that workers do not act in lockstep) from start until until. Each
// firing claims a user (none: counted in counters as cntSkipped) and acts
// on a goroutine of acts, which then releases the user. It returns when
// the schedules have ended; acts holds the actions still running.
func runActivities[U actor](ctx context.Context, start, until time.Time, acts *sync.WaitGroup, counters *counterSet,
	claim func() (U, bool), activities ...activity[U]) {
	var schedulers sync.WaitGroup
	for _, a := range activities {
		if a.perMinute <= 0 {
			continue
		}
		interval := time.Duration(float64(time.Minute) / a.perMinute)
		first := start.Add(rand.N(interval))
		schedulers.Go(func() {
			every(ctx, first, until, interval, func() {
				u, ok := claim()
				if !ok {
					counters.add(cntSkipped, 1)
					return
				}
				acts.Go(func() {
					defer u.release()
					a.act(ctx, u)
				})
			})
		})
	}
	schedulers.Wait()
}

// stampBody is the send stamp (Unix nanoseconds), a space, and filler up
// to len(padding) bytes (see parseStamp).
func stampBody(stamp time.Time, padding string) string {
	var b strings.Builder
	b.Grow(max(len(padding), 21))
	var num [20]byte
	s := strconv.AppendInt(num[:0], stamp.UnixNano(), 10)
	b.Write(s)
	b.WriteByte(' ')
	b.WriteString(padding[:max(len(padding)-len(s)-1, 0)])
	return b.String()
}

func parseStamp(body string) (time.Time, bool) {
	i := strings.IndexByte(body, ' ')
	if i <= 0 {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(body[:i], 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// sendRetrying sends req on c and retries it, with the same cmid, on
// retryable errors until directSendTimeout, with equal jitter (so that
// rate-limited senders do not retry in lockstep); retried gets the code
// of each error it retries. failed, when not nil, is the error of an
// attempt already made (Client.Go): sendRetrying starts by retrying it.
// When it gives up it returns the code to count the failure under and why:
// the last error, or "retrying CODE: " and the end of its time.
func sendRetrying(ctx context.Context, c *client.Client, req *wire.Request, failed error, retried func(code string)) (rep *wire.Reply, code string, err error) {
	sctx, cancel := context.WithTimeout(ctx, directSendTimeout)
	defer cancel()
	delay := sendRetryMin
	for err = failed; ; err = nil {
		if err == nil {
			if rep, err = c.Request(sctx, req); err == nil {
				return rep, "", nil
			}
		}
		code = errorCode(err)
		if !client.Retryable(err) || sctx.Err() != nil {
			return nil, code, err
		}
		retried(code)
		wait := delay/2 + rand.N(delay/2+1)
		if ask := client.RetryAfter(err); ask > wait { // busy's retry_ms
			wait = ask + rand.N(ask/2+1)
		}
		if !sleepCtx(sctx, wait) {
			return nil, errorCode(sctx.Err()), fmt.Errorf("retrying %s: %w", code, sctx.Err())
		}
		delay = min(2*delay, sendRetryMax)
	}
}

// waitDrained polls drained until it holds or d has passed; only the end
// of ctx is an error.
func waitDrained(ctx context.Context, d time.Duration, drained func() bool) error {
	end := time.Now().Add(d)
	for !drained() && time.Now().Before(end) {
		if !sleepCtx(ctx, drainPoll) {
			return ctx.Err()
		}
	}
	return nil
}

// Direct and Group share their senders' parameters: Rate over all
// senders, Window sends in flight per sender, BodyBytes per message, Drain
// after the load; and the Slow fraction of the receivers and their
// ReceiveBuffer.

// sendDefaults fills the zero sending parameters of Direct and Group.
func sendDefaults(senders, window, body *int, rate float64, drain *time.Duration) {
	setDefault(senders, 1)
	if rate > 0 {
		setDefault(window, 64)
	}
	setDefault(window, 1)
	setDefault(body, 100)
	setDefault(drain, 10*time.Second)
}

// checkSends reports through bad the problems with the sending parameters
// of Direct and Group (with their defaults).
func checkSends(bad func(format string, a ...any), rate float64, window, body int, drain time.Duration) {
	if !(rate >= 0) { // also refuses NaN
		bad("rate %v is negative", rate)
	}
	if window < 1 || window > maxDirectWindow {
		bad("window %d out of range [1, %d]", window, maxDirectWindow)
	}
	if body < minDirectBody || body > wire.MaxBodyBytes {
		bad("body %d bytes out of range [%d, %d]", body, minDirectBody, wire.MaxBodyBytes)
	}
	if drain < 0 || drain > maxDirectDrain {
		bad("drain %v out of range [0, %v]", drain, maxDirectDrain)
	}
}

// checkReceivers reports through bad the problems with the slow fraction
// of n receivers (n 0: unknown, not checked against it) and their receive
// buffer; who names them in the message.
func checkReceivers(bad func(format string, a ...any), n int, slow float64, rcvBuf int, who string) {
	if !validSlow(slow) {
		bad("slow %v out of range [0, 1]", slow)
	} else if n > 0 && countSlow(n, slow) == n {
		bad("slow %v leaves no reading %s", slow, who)
	}
	if !validReceiveBuffer(rcvBuf) {
		bad("receive buffer %d bytes out of range: 0, or [%d, %d]", rcvBuf, slowSocketBuffer, maxReceiveBuffer)
	}
}

// sendParams adds the sending parameters of Direct and Group to p, the
// report's parameters.
func sendParams(p map[string]any, senders int, rate float64, window, body int, drain time.Duration, slow float64, rcvBuf int) map[string]any {
	p["senders"], p["window"], p["body_bytes"], p["drain"] = senders, window, body, drain.String()
	p["rate"] = "flat-out"
	if rate > 0 {
		p["rate"] = strconv.FormatFloat(rate, 'f', -1, 64) + "/s"
	}
	if slow > 0 {
		p["slow"] = slow
	}
	if rcvBuf > 0 {
		p["receive_buffer"] = rcvBuf
	}
	return p
}

// sendSchedule is the schedule of one worker's senders of Direct or Group:
// Rate messages per second over all the senders of the run, each with
// window lanes, staggered over one interval so that they do not fire
// together.
type sendSchedule struct {
	total    int // senders over all workers
	window   int
	interval time.Duration // between one sender's sends at a fixed rate; 0 flat out
}

func newSendSchedule(total int, rate float64, window int) sendSchedule {
	s := sendSchedule{total: total, window: window}
	if rate > 0 {
		s.interval = time.Duration(float64(time.Second) * float64(total) / rate)
	}
	return s
}

// run runs sender idx from start to until and returns the sends it missed
// (see schedule); send gets each send's intended time (zero flat out).
func (s sendSchedule) run(ctx context.Context, idx int, start, until time.Time, send func(intended time.Time)) (missed int64) {
	return schedule(ctx, s.first(idx, start), until, s.interval, s.window, send)
}

// runAsync is run for sends that do not block (see scheduleAsync).
func (s sendSchedule) runAsync(ctx context.Context, idx int, start, until time.Time, send func(intended time.Time, done func())) (missed int64) {
	return scheduleAsync(ctx, s.first(idx, start), until, s.interval, s.window, send)
}

// first is when sender idx sends first: the senders are staggered over
// one interval.
func (s sendSchedule) first(idx int, start time.Time) time.Time {
	return start.Add(time.Duration(float64(s.interval) * float64(idx) / float64(s.total)))
}

// reportSendFailures adds the failures every message load shares: sends
// never acknowledged, by code, and delivered bodies without a stamp.
func reportSendFailures(rep *Report) {
	res := rep.Result
	if n := sumCounts(res.Failed); n > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d sends were never acknowledged (%s)", n, formatCounts(res.Failed)))
	}
	if res.BadBodies > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d delivered bodies had no send stamp", res.BadBodies))
	}
}

// reportMissed warns that a fixed rate was not sustained.
func reportMissed(rep *Report) {
	if n := rep.Result.Missed; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"the offered rate was not sustained: %d scheduled sends were never issued", n))
	}
}
