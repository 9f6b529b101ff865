package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"parley/engine"
	"parley/push"
)

// The notifier sends a push notification for every message to each device
// of each recipient who is offline in the whole cluster, unless they muted
// the conversation or turned do-not-disturb on.
//
// Exactly one node sends: the leader. What it has to send it reads from
// the replicated state, not from its memory: every message after the
// notifier's durable progress (engine.PushProgress), conversation by
// conversation (engine.MessagesAfter). It submits its progress through
// Raft (OpPushProgress) once every message up to an index is handled, so
// a new leader starts where the old one stopped: nothing is lost, and what
// is sent twice is at most what the old leader sent after its last report
// (at least once; the idempotency key per message and device lets a
// provider or receiver drop the repeat).
//
// A recipient counts as online through the presence grace after their last
// connection closed, so a scan skips messages sent to them then, which no
// device got. When such a user goes offline cluster-wide (the signal loop
// calls wentOffline on the leader), catchUp pushes what they were sent
// after their last connection closed (wentOffline.closed: exact for a
// connection to the leader, at or before the close for one to a peer, so
// that a message at the edge is pushed rather than lost). The durable
// progress may have passed those messages already, so a leader change
// before the grace ends loses their notifications, as a drop does.
//
// Handled means sent, refused for good (the token is gone: the target is
// cleared through Raft), or dropped: a delivery that keeps failing is
// retried with backoff, honouring the provider's Retry-After, until
// PushMaxAge after the message; a full queue drops the newest deliveries.
// Drops are counted (parley_push_dropped_total); the app syncs when
// opened, so a dropped notification loses no message.
type notifier struct {
	n      *Node
	sender push.Sender
	now    func() time.Time

	mu sync.Mutex // guards the fields below
	// epoch counts leaderships: deliveries of an earlier one are dropped.
	epoch  uint64
	active bool
	cancel context.CancelFunc
	ctx    context.Context
	// dirty: conversations with events published since the last scan;
	// published: the highest index published. A scan reads dirty
	// conversations up to published (events up to it were all published,
	// so their conversations are in dirty).
	dirty     map[uint64]struct{}
	published uint64
	scanned   uint64               // every message up to here is expanded into deliveries
	pending   map[uint64]int       // log index -> deliveries of its messages not yet handled
	reported  uint64               // the progress last submitted
	paused    map[string]time.Time // provider -> no sends before (its Retry-After)
	// marks: (time, an index every message up to which was published by
	// then), taken by scans at least markEvery apart, the latest maxMarks
	// of this leadership; catchUp finds in them where the messages sent
	// after a time begin.
	marks []publishMark
	// offline: users who went offline cluster-wide -> when their last
	// connection closed (Unix ms), for catchUp; caughtUp counts the users
	// it handled (tests).
	offline  map[uint64]int64
	caughtUp int

	wake  chan struct{}
	queue chan *delivery

	sent, failed, gone *prometheus.CounterVec
	dropped            *prometheus.CounterVec
	queued             prometheus.GaugeFunc
	lag                prometheus.GaugeFunc
}

// publishMark: by at, every message up to index was published, and every
// message published later is after index.
type publishMark struct {
	at    time.Time
	index uint64
}

const (
	markEvery = 100 * time.Millisecond
	// maxMarks at least markEvery apart reach back at least 25 s: well
	// past any grace plus a signal tick.
	maxMarks = 256
	// maxOfflineBacklog bounds notifier.offline; past it a user's catch-up
	// is dropped (counted as queue_full).
	maxOfflineBacklog = 1 << 16
)

// delivery is one notification to one device.
type delivery struct {
	epoch   uint64
	index   uint64 // of the message: its progress
	at      time.Time
	user    uint64
	device  uint64
	target  push.Target
	note    push.Notification
	attempt int
}

const (
	// notifyScanLimit bounds the messages read from one conversation per
	// scan; the rest wait for the next one.
	notifyScanLimit = 1000
	// Retry backoff: 1s doubling to a minute, or the provider's Retry-After.
	notifyBackoffMin = time.Second
	notifyBackoffMax = time.Minute
	// A notification's text is cut to this many bytes: payloads are at
	// most 4 KiB with every provider, and a lock screen shows less.
	notifyBodyMax = 512
)

func newNotifier(n *Node, sender push.Sender) *notifier {
	nt := &notifier{
		n: n, sender: sender, now: time.Now,
		dirty: make(map[uint64]struct{}), pending: make(map[uint64]int), paused: make(map[string]time.Time),
		offline: make(map[uint64]int64),
		wake:    make(chan struct{}, 1),
		queue:   make(chan *delivery, n.cfg.PushQueue),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_push_sent_total", Help: "Notifications a push provider accepted.",
		}, []string{"provider"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_push_failed_total", Help: "Notification attempts that failed (retried if retryable).",
		}, []string{"provider", "retryable"}),
		gone: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_push_gone_total", Help: "Push targets removed because the provider rejected them for good.",
		}, []string{"provider"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "parley_push_dropped_total", Help: "Notifications given up: queue_full, expired (kept failing past -push-max-age) or failed (refused for good, not retryable).",
		}, []string{"reason"}),
	}
	nt.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_push_queue", Help: "Notifications waiting for a push worker (on the leader).",
	}, func() float64 { return float64(len(nt.queue)) })
	nt.lag = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_push_progress_lag", Help: "Log entries applied since the notifier's durable progress.",
	}, func() float64 {
		return float64(n.engine.AppliedIndex() - min(n.engine.AppliedIndex(), n.engine.PushProgress()))
	})
	return nt
}

func (nt *notifier) collectors() []prometheus.Collector {
	return []prometheus.Collector{nt.sent, nt.failed, nt.gone, nt.dropped, nt.queued, nt.lag}
}

// published is called from Publish (the apply goroutine) for each message.
func (nt *notifier) messagePublished(conv, index uint64) {
	nt.mu.Lock()
	if !nt.active {
		// Not the leader: a leadership starts with a scan of the state.
		nt.mu.Unlock()
		return
	}
	nt.dirty[conv] = struct{}{}
	nt.published = max(nt.published, index)
	nt.mu.Unlock()
	select {
	case nt.wake <- struct{}{}:
	default:
	}
}

// run is the notifier's loop: it follows leadership, scans, and reports
// progress. The workers send.
func (nt *notifier) run(stop <-chan struct{}) {
	var workers sync.WaitGroup
	for range nt.n.cfg.PushWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			nt.work(stop)
		}()
	}
	tick := time.NewTicker(nt.n.cfg.PushProgressEvery)
	defer func() {
		tick.Stop()
		nt.stepDown()
		workers.Wait()
		// Retries still waiting on their timers find the leadership over
		// (stepDown) and are dropped when they fire: Close does not wait
		// up to a minute of backoff for them.
	}()
	for {
		select {
		case <-stop:
			return
		case <-nt.wake:
		case <-tick.C:
			nt.reportProgress()
		}
		if !nt.n.raft.IsLeader() {
			nt.stepDown()
			continue
		}
		nt.scan()
		nt.catchUp()
	}
}

// stepDown forgets the leadership's state: the next leader resumes from
// the durable progress.
func (nt *notifier) stepDown() {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if !nt.active {
		return
	}
	nt.active = false
	nt.cancel()
	nt.epoch++
	clear(nt.pending)
	clear(nt.paused)
	clear(nt.dirty)
	clear(nt.offline)
	nt.marks = nt.marks[:0]
}

// scan expands the messages after what was scanned into deliveries.
func (nt *notifier) scan() {
	nt.mu.Lock()
	if !nt.active {
		// A new leadership: resume from the durable progress, with every
		// conversation changed since as dirty.
		nt.active = true
		nt.epoch++
		nt.ctx, nt.cancel = context.WithCancel(context.Background())
		nt.scanned = nt.n.engine.PushProgress()
		nt.reported = nt.scanned
		nt.published = nt.n.engine.AppliedIndex()
		for _, c := range nt.n.engine.ConvsChangedAfter(nt.scanned, nil) {
			nt.dirty[c] = struct{}{}
		}
	}
	upTo, from, epoch := nt.published, nt.scanned, nt.epoch
	nt.markLocked(nt.now())
	convs := make([]uint64, 0, len(nt.dirty))
	for c := range nt.dirty {
		convs = append(convs, c)
	}
	clear(nt.dirty)
	nt.mu.Unlock()

	now := nt.now()
	var out []*delivery
	for _, conv := range convs {
		var afterSeq uint64
	pages:
		for {
			msgs, more, err := nt.n.engine.MessagesAfter(conv, from, afterSeq, notifyScanLimit)
			if err != nil {
				// Left for the next scan; the progress cannot pass it
				// meanwhile, as the scan stays where it is.
				nt.n.log.Error("notifier: read messages", "conv", conv, "err", err)
				nt.markDirty(conv)
				upTo = from
				break
			}
			for i := range msgs {
				if msgs[i].Index > upTo {
					nt.markDirty(conv) // the rest is for the next scan
					break pages
				}
				out = nt.expand(out, &msgs[i], epoch, now)
				afterSeq = msgs[i].Seq
			}
			if !more || len(msgs) == 0 {
				break
			}
		}
	}

	nt.hand(out, epoch, func() { nt.scanned = max(nt.scanned, upTo) })
}

// hand counts out as pending and queues it, unless the leadership of
// epoch is over; then, under the lock, it runs done (what the caller has
// finished).
func (nt *notifier) hand(out []*delivery, epoch uint64, done func()) {
	nt.mu.Lock()
	if nt.epoch != epoch {
		nt.mu.Unlock()
		return
	}
	for _, d := range out {
		nt.pending[d.index]++
	}
	done()
	nt.mu.Unlock()
	for _, d := range out {
		nt.enqueue(d)
	}
}

// markLocked notes at now the index up to which every message was
// published, at most once every markEvery. It notes one less than
// published: messages of that entry may still be coming (an entry is
// published message by message), and a mark must have every later
// message after it.
func (nt *notifier) markLocked(now time.Time) {
	if len(nt.marks) > 0 && now.Sub(nt.marks[len(nt.marks)-1].at) < markEvery {
		return
	}
	if len(nt.marks) == maxMarks {
		nt.marks = append(nt.marks[:0], nt.marks[1:]...)
	}
	nt.marks = append(nt.marks, publishMark{at: now, index: max(nt.published, 1) - 1})
}

func (nt *notifier) markDirty(conv uint64) {
	nt.mu.Lock()
	nt.dirty[conv] = struct{}{}
	nt.mu.Unlock()
}

// expand appends the deliveries of one message: each device with a push
// target of each member but the sender who is offline everywhere, has not
// muted the conversation and is not in do-not-disturb.
func (nt *notifier) expand(out []*delivery, ev *engine.Event, epoch uint64, now time.Time) []*delivery {
	members, kind, convName, ok := nt.n.engine.Members(ev.Conv)
	if !ok || ev.Deleted { // deleted before the notifier came to it
		return out
	}
	var sender string
	for _, user := range members {
		if user == ev.From || nt.n.signals.presence.isOnline(user) {
			continue
		}
		out = nt.expandUser(out, ev, user, kind, convName, &sender, epoch, now)
	}
	return out
}

// expandFor is expand for one user, whatever their presence: catchUp has
// decided they did not get the message.
func (nt *notifier) expandFor(out []*delivery, ev *engine.Event, user, epoch uint64, now time.Time) []*delivery {
	members, kind, convName, ok := nt.n.engine.Members(ev.Conv)
	if !ok || ev.Deleted || user == ev.From {
		return out
	}
	if _, member := slices.BinarySearch(members, user); !member {
		return out
	}
	var sender string
	return nt.expandUser(out, ev, user, kind, convName, &sender, epoch, now)
}

// expandUser appends the deliveries of ev to user's devices with a push
// target, unless user muted the conversation or is in do-not-disturb.
// sender caches the sender's name across the members of one message.
func (nt *notifier) expandUser(out []*delivery, ev *engine.Event, user uint64, kind engine.ConvKind, convName string, sender *string, epoch uint64, now time.Time) []*delivery {
	preview, dnd := nt.n.engine.NotifySettings(user)
	if dnd || engine.Muted(nt.n.engine.MutedUntil(user, ev.Conv), now.UnixMilli()) {
		return out
	}
	targets, err := nt.n.engine.PushTargets(user)
	if err != nil {
		nt.n.log.Error("notifier: read push targets", "user", user, "err", err)
		return out
	}
	if len(targets) == 0 {
		return out
	}
	note := push.Notification{
		Conv: ev.Conv, Seq: ev.Seq,
		Badge:       int(min(nt.n.engine.Unread(user), 1<<31-1)),
		CollapseKey: "conv-" + strconv.FormatUint(ev.Conv, 10),
		ThreadID:    "conv-" + strconv.FormatUint(ev.Conv, 10),
		TTL:         nt.n.cfg.PushMaxAge,
	}
	if preview {
		if *sender == "" {
			if u, ok := nt.n.engine.User(ev.From); ok {
				*sender = u.Username
			}
		}
		note.Title, note.Body = *sender, cutText(ev.Body, notifyBodyMax)
		if kind == engine.KindGroup {
			note.Title = *sender + " in " + convName
		}
		if note.Body == "" {
			note.Body = push.GenericBody // an attachment without text
		}
	}
	for _, t := range targets {
		d := &delivery{
			epoch: epoch, index: ev.Index, at: time.UnixMilli(ev.Ts), user: user, device: t.Device,
			target: push.Target{Provider: t.Provider, Token: t.Token, Endpoint: t.Endpoint, P256dh: t.P256dh, Auth: t.Auth},
			note:   note,
		}
		d.note.IdempotencyKey = fmt.Sprintf("%d.%d.%d", ev.Conv, ev.Seq, t.Device)
		out = append(out, d)
	}
	return out
}

// wentOffline is called on the leader, from the signal loop, with the
// users who went offline cluster-wide: catchUp handles them on the
// notifier's goroutine.
func (nt *notifier) wentOffline(off map[uint64]wentOffline) {
	nt.mu.Lock()
	if !nt.active {
		nt.mu.Unlock()
		return
	}
	for u, w := range off {
		if _, ok := nt.offline[u]; !ok && len(nt.offline) >= maxOfflineBacklog {
			nt.dropped.WithLabelValues("queue_full").Inc()
			continue
		}
		nt.offline[u] = max(nt.offline[u], w.closed)
	}
	nt.mu.Unlock()
	select {
	case nt.wake <- struct{}{}:
	default:
	}
}

// catchUp pushes to the users who went offline what they were sent after
// their last connection closed, while the grace still counted them online
// and the scans skipped them. Messages the scans have not reached yet are
// theirs: those see the users offline.
func (nt *notifier) catchUp() {
	type job struct {
		user, from uint64
		after      int64 // Unix ms: messages from it on
	}
	nt.mu.Lock()
	if !nt.active || len(nt.offline) == 0 {
		nt.mu.Unlock()
		return
	}
	jobs := make([]job, 0, len(nt.offline))
	for u, closed := range nt.offline {
		jobs = append(jobs, job{user: u, from: nt.publishedByLocked(time.UnixMilli(closed)), after: closed})
	}
	clear(nt.offline)
	upTo, epoch := nt.scanned, nt.epoch
	nt.mu.Unlock()

	now := nt.now()
	var out []*delivery
	for _, j := range jobs {
		if nt.n.signals.presence.isOnline(j.user) {
			continue // back already: the app syncs what it missed
		}
		for _, conv := range nt.n.engine.UserConvsChangedAfter(j.user, j.from, nil) {
			var afterSeq uint64
			for {
				msgs, more, err := nt.n.engine.MessagesAfter(conv, j.from, afterSeq, notifyScanLimit)
				if err != nil {
					nt.n.log.Error("notifier: read messages", "conv", conv, "err", err)
					break
				}
				for i := range msgs {
					// A message stamped in the millisecond of the close
					// may have come after it: it is pushed.
					if m := &msgs[i]; m.Index <= upTo && m.Ts >= j.after {
						out = nt.expandFor(out, m, j.user, epoch, now)
					}
				}
				if !more || len(msgs) == 0 || msgs[len(msgs)-1].Index > upTo {
					break
				}
				afterSeq = msgs[len(msgs)-1].Seq
			}
		}
	}
	nt.hand(out, epoch, func() { nt.caughtUp += len(jobs) })
}

// publishedByLocked is the highest index published by t, as the marks
// know it; before the first mark, the durable progress (what this
// leadership's scans started from).
func (nt *notifier) publishedByLocked(t time.Time) uint64 {
	i, at := slices.BinarySearchFunc(nt.marks, t, func(m publishMark, t time.Time) int { return m.at.Compare(t) })
	switch {
	case at:
		return nt.marks[i].index
	case i == 0:
		return nt.reported
	default:
		return nt.marks[i-1].index // the last before t
	}
}

// cutText cuts s to at most n bytes on a rune boundary, marking the cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// enqueue hands d to the workers, or drops it if the queue is full.
func (nt *notifier) enqueue(d *delivery) {
	select {
	case nt.queue <- d:
	default:
		nt.dropped.WithLabelValues("queue_full").Inc()
		nt.done(d)
	}
}

// work sends deliveries until stop.
func (nt *notifier) work(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case d := <-nt.queue:
			nt.send(d)
		}
	}
}

func (nt *notifier) send(d *delivery) {
	nt.mu.Lock()
	if d.epoch != nt.epoch || !nt.active {
		nt.mu.Unlock()
		return // a past leadership's: the next leader sends it
	}
	ctx := nt.ctx
	if until, ok := nt.paused[d.target.Provider]; ok && nt.now().Before(until) {
		nt.mu.Unlock()
		nt.retry(d, until.Sub(nt.now()))
		return
	}
	nt.mu.Unlock()

	res, err := nt.sender.Send(ctx, d.target, d.note)
	switch {
	case err == nil:
		nt.sent.WithLabelValues(d.target.Provider).Inc()
	case res.Gone:
		nt.gone.WithLabelValues(d.target.Provider).Inc()
		nt.clearTarget(d)
	case ctx.Err() != nil:
		return // stepped down
	case res.Retryable:
		nt.failed.WithLabelValues(d.target.Provider, "true").Inc()
		delay := min(notifyBackoffMin<<min(d.attempt, 6), notifyBackoffMax)
		if res.RetryAfter > 0 {
			delay = max(res.RetryAfter, notifyBackoffMin)
			nt.mu.Lock() // the provider asked everyone to wait
			nt.paused[d.target.Provider] = nt.now().Add(delay)
			nt.mu.Unlock()
		}
		nt.n.log.Debug("push: retry", "provider", d.target.Provider, "user", d.user, "device", d.device, "in", delay, "err", err)
		nt.retry(d, delay)
		return
	default:
		nt.failed.WithLabelValues(d.target.Provider, "false").Inc()
		nt.dropped.WithLabelValues("failed").Inc()
		if !errors.Is(err, push.ErrNotConfigured) {
			nt.n.log.Warn("push: refused", "provider", d.target.Provider, "user", d.user, "device", d.device, "err", err)
		}
	}
	nt.done(d)
}

// retry sends d again after delay, unless it is then older than
// PushMaxAge.
func (nt *notifier) retry(d *delivery, delay time.Duration) {
	d.attempt++
	if nt.now().Add(delay).Sub(d.at) > nt.n.cfg.PushMaxAge {
		nt.dropped.WithLabelValues("expired").Inc()
		nt.done(d)
		return
	}
	time.AfterFunc(delay, func() { nt.enqueue(d) })
}

// done marks d handled; the progress moves past its message once all of
// the message's deliveries (and those before it) are.
func (nt *notifier) done(d *delivery) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if d.epoch != nt.epoch {
		return
	}
	if nt.pending[d.index]--; nt.pending[d.index] <= 0 {
		delete(nt.pending, d.index)
	}
}

// progress is the index up to which every message is handled.
func (nt *notifier) progressLocked() uint64 {
	p := nt.scanned
	for idx := range nt.pending {
		p = min(p, idx-1)
	}
	return p
}

// reportProgress submits the progress if it moved.
func (nt *notifier) reportProgress() {
	nt.mu.Lock()
	if !nt.active {
		nt.mu.Unlock()
		return
	}
	p := nt.progressLocked()
	if p <= nt.reported {
		nt.mu.Unlock()
		return
	}
	epoch := nt.epoch
	nt.mu.Unlock()
	cmd, err := engine.EncodeCommand(&engine.Command{Op: engine.OpPushProgress, Progress: p})
	if err != nil {
		nt.n.log.Error("encode push_progress", "err", err)
		return
	}
	_ = nt.n.raft.Submit(cmd, func(_ any, _ uint64, err error) {
		if err != nil {
			return // the next tick tries again
		}
		nt.mu.Lock()
		if nt.epoch == epoch {
			nt.reported = max(nt.reported, p)
		}
		nt.mu.Unlock()
	})
}

// clearTarget removes a target the provider rejected for good, unless the
// device registered another one since.
func (nt *notifier) clearTarget(d *delivery) {
	cmd, err := engine.EncodeCommand(&engine.Command{
		Op: engine.OpPushClear, User: d.user, Device: d.device,
		PushToken: d.target.Token, PushEndpoint: d.target.Endpoint,
	})
	if err == nil {
		err = nt.n.raft.Submit(cmd, func(_ any, _ uint64, err error) {
			if err != nil {
				nt.n.log.Warn("push: clear a gone target", "user", d.user, "device", d.device, "err", err)
			}
		})
	}
	if err != nil {
		nt.n.log.Warn("push: clear a gone target", "user", d.user, "device", d.device, "err", err)
	}
}

// pendingFor is for tests: deliveries not yet handled.
func (nt *notifier) pendingCount() int {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	n := 0
	for _, v := range nt.pending {
		n += v
	}
	return n
}

// startNotifier builds the push providers from the config and starts the
// notifier; with none configured there is no notifier.
func (n *Node) startNotifier() error {
	sender := n.cfg.PushSender
	if sender == nil {
		p := n.cfg.Push
		if p.FCM == nil && p.APNs == nil && p.WebPush == nil && p.Webhook == nil {
			return nil
		}
		d, err := push.NewDispatcher(p)
		if err != nil {
			return fmt.Errorf("push: %w", err)
		}
		sender = d
	}
	n.notifier = newNotifier(n, sender)
	n.signals.wentOffline = n.notifier.wentOffline // before the signal loop starts
	n.metrics.reg.MustRegister(n.notifier.collectors()...)
	n.workers.Add(1)
	go func() {
		defer n.workers.Done()
		n.notifier.run(n.stop)
	}()
	return nil
}

// pushConfigured reports whether push.set may name provider here.
func (n *Node) pushConfigured(provider string) bool {
	if n.notifier == nil {
		return false
	}
	if d, ok := n.notifier.sender.(*push.Dispatcher); ok {
		return d.Configured(provider)
	}
	return true // a test's sender takes any
}

// vapidPublicKey is the key browsers subscribe with, "" without Web Push.
func (n *Node) vapidPublicKey() string {
	if n.notifier == nil {
		return ""
	}
	if d, ok := n.notifier.sender.(*push.Dispatcher); ok && d.Configured(push.ProviderWebPush) {
		return d.VAPIDPublicKey()
	}
	return ""
}
