package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"parley/wire"
)

// Reconnect is the restart scenario: Conns clients, each holding a cursor,
// wait for their node to go away and measure how long they take to come
// back: to reconnect (hello) and to resync from their cursor, per client
// and until the last one has synced.
//
// Clients come in pairs with a 1:1 conversation in which the first sends
// Backlog messages after both took their cursor (the applied index in
// their hello), so that every resync has Backlog+1 events to fetch (the
// conversation's creation and the messages), as a device that persisted an
// older cursor would.
//
// The node is restarted by RestartCmd, a shell command (sh -c) run when the
// load starts, once every worker has connected and the coordinator has
// sampled the nodes ("connected"): it runs in the first worker, its output
// on the worker's stderr, bounded by Duration. Without it the clients wait
// for a restart by someone else, up to Duration. Duration bounds the whole
// wait, for the drops and the resyncs; the load ends as soon as every
// client has resynced.
//
// A client notices the drop when its socket closes, then reconnects as the
// SDK does: jittered exponential backoff before every attempt, the first
// one too (100 ms doubling to 5 s), trying the next node's URL after each
// failure; once it has its hello it sends sync from its cursor, pages
// through every changed conversation (history for the conversations with
// more events than a sync page holds) and is synced when the last page has
// arrived. Clients are bare connections (see bareConn): the SDK reconnects
// by itself, but says nothing when a resync has completed (its cursor only
// moves if the sync returned something newer).
type Reconnect struct {
	Conns      int    // clients; even; default 1000
	Backlog    int    // messages per pair after the cursors; default 5
	RestartCmd string // shell command that restarts the node; empty: wait for someone else
}

const (
	maxReconnectConns    = 1_000_000
	maxReconnectBacklog  = 150 // within the server's per-connection burst
	reconnectDialers     = 32
	reconnectAttempts    = 1000 // per client, all bounded by Duration anyway
	reconnectBackoffMin  = 100 * time.Millisecond
	reconnectBackoffMax  = 5 * time.Second
	reconnectSyncRetries = 20
	maxSyncPages         = 10_000
)

// Reconnect's histograms and counters.
const (
	latResync  = "resync"  // drop → synced
	latRehello = "rehello" // drop → hello on the new connection
	latSync    = "sync"    // hello → synced

	cntNeverDropped    = "reconnect: never dropped"
	cntNotResynced     = "reconnect: not resynced"
	cntDroppedAgain    = "reconnect: dropped again after resyncing"
	cntAttempts        = "reconnect: attempts"
	cntSyncEvents      = "reconnect: events synced"
	cntSyncPages       = "reconnect: sync requests"
	cntRestartFailed   = "reconnect: restart command failed"
	cntReconnectPrefix = "reconnect error: " // + connErrorKind
)

func init() {
	latencyTitles[latResync] = "drop → reconnected and synced"
	latencyTitles[latRehello] = "drop → hello"
	latencyTitles[latSync] = "hello → synced"
}

func (r Reconnect) withDefaults() Reconnect {
	setDefault(&r.Conns, 1000)
	setDefault(&r.Backlog, 5)
	return r
}

func (*Reconnect) Name() string { return "reconnect" }

func (r *Reconnect) Validate() error {
	c := r.withDefaults()
	p := problems{scenario: "reconnect"}
	if c.Conns < 2 || c.Conns > maxReconnectConns || c.Conns%2 != 0 {
		p.add("conns %d must be even, in [2, %d]", c.Conns, maxReconnectConns)
	}
	if c.Backlog < 0 || c.Backlog > maxReconnectBacklog {
		p.add("backlog %d out of range [0, %d]", c.Backlog, maxReconnectBacklog)
	}
	return p.err()
}

func (r *Reconnect) Params() map[string]any {
	c := r.withDefaults()
	restart := "external"
	if c.RestartCmd != "" {
		restart = strconv.Quote(c.RestartCmd)
	}
	return map[string]any{"conns": c.Conns, "backlog": c.Backlog, "restart": restart}
}

type reconnectShard struct {
	WS         []string  `json:"ws"`
	Backlog    int       `json:"backlog"`
	RestartCmd string    `json:"restart_cmd,omitempty"` // the first shard only
	First      int       `json:"first"`                 // global index of Accounts[0]
	Accounts   []Account `json:"accounts"`              // pairs
}

func (r *Reconnect) Plan(ctx context.Context, env *Env) ([]json.RawMessage, error) {
	c := r.withDefaults()
	accounts, err := env.CreateAccounts(ctx, c.Conns)
	if err != nil {
		return nil, err
	}
	return planShards(splitWhole(c.Conns, 2, env.ConnsPerWorker()), func(i, first, n int) any {
		sh := reconnectShard{WS: env.WS(), Backlog: c.Backlog, First: first, Accounts: accounts[first : first+n]}
		if i == 0 {
			sh.RestartCmd = c.RestartCmd
		}
		return sh
	})
}

func (*Reconnect) NewLoad(raw json.RawMessage) (Load, error) {
	var sh reconnectShard
	if err := json.Unmarshal(raw, &sh); err != nil {
		return nil, err
	}
	if err := (&Reconnect{Conns: len(sh.Accounts), Backlog: sh.Backlog}).Validate(); err != nil {
		return nil, err
	}
	if len(sh.WS) == 0 {
		return nil, errors.New("no WebSocket URL")
	}
	l := &reconnectLoad{
		shard: sh,
		lat:   map[string]*recorder{latResync: newRecorder(), latRehello: newRecorder(), latSync: newRecorder()},
	}
	for i, a := range sh.Accounts {
		l.clients = append(l.clients, &reconnectClient{Account: a, idx: sh.First + i})
	}
	return l, nil
}

// reconnectLoad is a worker's share of Reconnect.
//
// Goroutines: Connect sets pairs up from a bounded group; every connection
// has its gws read loop. Run starts the restart command (first worker) and
// one goroutine per client, which owns the client from then on (it
// replaces c), and waits for them all. Finish reads the clients after Run.
type reconnectLoad struct {
	shard   reconnectShard
	live    *Live
	clients []*reconnectClient
	lat     map[string]*recorder // fixed keys; recorders lock themselves

	tally    tally
	counters counterSet
	closing  atomic.Bool // set by Finish
	pings    atomic.Int64

	mu         sync.Mutex // guards firstDrop and lastSynced
	firstDrop  time.Time
	lastSynced time.Time

	start, end time.Time // written by Run
}

type reconnectClient struct {
	Account
	idx    int
	cursor uint64 // from the first hello; fixed after Connect
	c      *bareConn
	synced bool // written by the client's goroutine in Run
}

func (l *reconnectLoad) Connect(ctx context.Context, live *Live) error {
	l.live = live
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(reconnectDialers)
	for k := 0; k+1 < len(l.clients); k += 2 {
		g.Go(func() error { return l.setUpPair(gctx, l.clients[k], l.clients[k+1]) })
	}
	return g.Wait()
}

// setUpPair connects a and b, takes their cursors from their hellos, then
// opens their 1:1 and has a send the backlog.
func (l *reconnectLoad) setUpPair(ctx context.Context, a, b *reconnectClient) error {
	for _, cl := range []*reconnectClient{a, b} {
		c, err := l.dial(ctx, cl, cl.idx)
		if err != nil {
			return fmt.Errorf("bench: connect %s: %w", cl.Name, err)
		}
		cl.c, cl.cursor = c, c.hello.Index
		l.live.Conns.Add(1)
	}
	rep, err := a.c.request(ctx, &wire.Request{Type: wire.TypeDirectOpen, User: b.User})
	if err != nil || rep.Info == nil {
		return fmt.Errorf("bench: open direct %s → %s: %v", a.Name, b.Name, err)
	}
	for i := range l.shard.Backlog {
		req := &wire.Request{Type: wire.TypeSend, Conv: rep.Info.ID, ClientMsgID: "r" + strconv.Itoa(i), Body: "backlog " + strconv.Itoa(i)}
		if _, err := a.c.request(ctx, req); err != nil {
			return fmt.Errorf("bench: backlog of %s: %w", a.Name, err)
		}
	}
	return nil
}

// dial opens a connection for cl to URL number urlIdx (mod the nodes).
func (l *reconnectLoad) dial(ctx context.Context, cl *reconnectClient, urlIdx int) (*bareConn, error) {
	return dialBare(ctx, bareOptions{
		URL:     l.shard.WS[urlIdx%len(l.shard.WS)],
		Token:   cl.Token,
		Timeout: bareDialTimeout,
		Pings:   &l.pings,
		OnClose: func(*bareConn) {
			if !l.closing.Load() {
				l.live.Conns.Add(-1)
			}
		},
	})
}

func (l *reconnectLoad) Run(ctx context.Context, start, until time.Time, _ *Live) error {
	if !sleepCtx(ctx, time.Until(start)) {
		return ctx.Err()
	}
	l.start = start
	parent := ctx
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	var wg sync.WaitGroup
	if l.shard.RestartCmd != "" {
		wg.Go(func() { l.restart(ctx) })
	}
	for _, cl := range l.clients {
		wg.Go(func() { l.resume(ctx, cl) })
	}
	wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.end = l.lastSynced
	if l.shard.RestartCmd == "" {
		l.start = l.firstDrop // no restart instant known: time from the first drop
	}
	return parent.Err() // the deadline is no error: Report counts who missed it
}

// restart runs the restart command until it exits or ctx ends.
func (l *reconnectLoad) restart(ctx context.Context) {
	cmd := exec.CommandContext(ctx, "sh", "-c", l.shard.RestartCmd)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		l.counters.add(cntRestartFailed, 1)
		l.tally.error(fmt.Errorf("restart command: %w", err))
	}
}

// resume waits for cl's connection to drop, then reconnects and resyncs it,
// all within ctx.
func (l *reconnectLoad) resume(ctx context.Context, cl *reconnectClient) {
	select {
	case <-cl.c.gone:
	case <-ctx.Done():
		l.counters.add(cntNeverDropped, 1)
		return
	}
	dropAt := cl.c.goneAt
	l.mu.Lock()
	if l.firstDrop.IsZero() || dropAt.Before(l.firstDrop) {
		l.firstDrop = dropAt
	}
	l.mu.Unlock()

	for attempt := range reconnectAttempts {
		d := min(reconnectBackoffMin<<min(attempt, 16), reconnectBackoffMax)
		if !sleepCtx(ctx, d/2+rand.N(d/2+1)) {
			break
		}
		l.counters.add(cntAttempts, 1)
		c, err := l.dial(ctx, cl, cl.idx+1+attempt) // the next node first, as the SDK does
		if err != nil {
			l.counters.add(cntReconnectPrefix+connErrorKind(err), 1)
			continue
		}
		l.live.Conns.Add(1)
		if err := l.sync(ctx, c, cl.cursor); err != nil {
			l.counters.add(cntReconnectPrefix+"sync: "+syncErrorKind(err), 1)
			c.close()
			continue
		}
		now := time.Now()
		cl.c, cl.synced = c, true
		l.lat[latRehello].record(cl.idx, c.helloAt.Sub(dropAt))
		l.lat[latSync].record(cl.idx, now.Sub(c.helloAt))
		l.lat[latResync].record(cl.idx, now.Sub(dropAt))
		l.mu.Lock()
		if now.After(l.lastSynced) {
			l.lastSynced = now
		}
		l.mu.Unlock()
		return
	}
	l.counters.add(cntNotResynced, 1)
}

func syncErrorKind(err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return string(we.Code)
	}
	return connErrorKind(err)
}

// sync runs a device's catch-up from cursor on c: sync pages until one says
// no more, and for every conversation with more events than its page held,
// history pages to its end. A retryable error reply is retried on the same
// connection; the connection's loss or another error fails the sync.
func (l *reconnectLoad) sync(ctx context.Context, c *bareConn, cursor uint64) error {
	var after, afterConv uint64
	for range maxSyncPages {
		rep, err := l.call(ctx, c, &wire.Request{Type: wire.TypeSync, Since: cursor, After: after, AfterConv: afterConv, Limit: wire.MaxSyncConvs})
		if err != nil {
			return err
		}
		for i := range rep.Changes {
			cs := &rep.Changes[i]
			l.counters.add(cntSyncEvents, int64(len(cs.Events)))
			if cs.More && !cs.Gone && len(cs.Events) > 0 {
				if err := l.page(ctx, c, cs.Info.ID, cs.Events[len(cs.Events)-1].Seq); err != nil {
					return err
				}
			}
		}
		if !rep.More {
			return nil
		}
		if !wire.SyncAdvanced(after, afterConv, rep.Next, rep.NextConv) {
			return fmt.Errorf("sync page did not advance (after %d/%d, next %d/%d)", after, afterConv, rep.Next, rep.NextConv)
		}
		after, afterConv = rep.Next, rep.NextConv
	}
	return errors.New("sync: too many pages")
}

// page fetches conv's events after seq, page by page, to the end.
func (l *reconnectLoad) page(ctx context.Context, c *bareConn, conv, seq uint64) error {
	for range maxSyncPages {
		rep, err := l.call(ctx, c, &wire.Request{Type: wire.TypeHistory, Conv: conv, Dir: wire.DirAfter, Seq: seq, Limit: wire.MaxHistoryLimit})
		if err != nil {
			return err
		}
		l.counters.add(cntSyncEvents, int64(len(rep.Events)))
		if !rep.More || len(rep.Events) == 0 {
			return nil
		}
		seq = rep.Events[len(rep.Events)-1].Seq
	}
	return errors.New("history: too many pages")
}

// call makes one request of a sync, retrying a retryable error reply with
// backoff (a node just restarted may answer unavailable for a moment).
func (l *reconnectLoad) call(ctx context.Context, c *bareConn, req *wire.Request) (*wire.Reply, error) {
	delay := sendRetryMin
	for attempt := 1; ; attempt++ {
		l.counters.add(cntSyncPages, 1)
		r := *req
		rep, err := c.request(ctx, &r)
		var we *wire.Error
		if err == nil || !errors.As(err, &we) || !we.Code.Retryable() || attempt == reconnectSyncRetries {
			return rep, err
		}
		if !sleepCtx(ctx, delay/2+rand.N(delay/2+1)) {
			return nil, ctx.Err()
		}
		delay = min(2*delay, sendRetryMax)
	}
}

func (l *reconnectLoad) Finish(ctx context.Context) *Result {
	l.closing.Store(true)
	res := &Result{Start: l.start, End: l.end}
	conns := make([]*bareConn, 0, len(l.clients))
	for _, cl := range l.clients {
		if cl.c == nil {
			continue
		}
		conns = append(conns, cl.c)
		if !isClosed(cl.c.gone) {
			res.Conns++
		} else if cl.synced {
			l.counters.add(cntDroppedAgain, 1)
		}
	}
	closeBare(ctx, conns, &l.tally)
	res.Pings = l.pings.Load()
	res.Latency = mergeRecorders(l.lat)
	res.Counters = l.counters.snapshot()
	l.tally.fill(res)
	return res
}

func (r *Reconnect) Report(rep *Report) {
	c := r.withDefaults()
	res := rep.Result
	cnt := res.Counters
	synced := int64(0)
	if h := res.Latency[latResync]; h != nil {
		synced = h.Count()
	}
	rep.AddFigure("clients resynced", float64(synced), "")
	if secs := res.Elapsed().Seconds(); secs > 0 && synced > 0 {
		name := "first drop → all synced"
		if c.RestartCmd != "" {
			name = "restart command → all synced"
		}
		if synced < int64(c.Conns) {
			name += " (of those that did)"
		}
		rep.AddFigure(name, secs, "s")
		rep.AddFigure("resyncs per second", float64(synced)/secs, "/s")
	}
	if synced > 0 {
		rep.AddFigure("events synced per client", float64(cnt[cntSyncEvents])/float64(synced), "")
		rep.AddFigure("reconnect attempts per client", float64(cnt[cntAttempts])/float64(synced), "")
	}
	if before, after, ok := phaseDelta(rep, "connected", "loaded"); ok {
		rep.AddFigure("server RSS before the restart", before.RSSBytes/(1<<20), "MiB")
		rep.AddFigure("server RSS after the resync", after.RSSBytes/(1<<20), "MiB")
	}

	never := cnt[cntNeverDropped]
	switch {
	case never == int64(c.Conns):
		rep.Failures = append(rep.Failures, "no connection dropped before the deadline (-duration): did the node restart?")
	case never > 0:
		rep.Warnings = append(rep.Warnings, fmt.Sprintf(
			"%d of %d connections never dropped (connected to a node that was not restarted?)", never, c.Conns))
	}
	if n := cnt[cntNotResynced]; n > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d clients dropped and did not resync before the deadline", n))
	}
	if cnt[cntRestartFailed] > 0 {
		rep.Failures = append(rep.Failures, "the restart command failed (see errors)")
	}
	if n := cnt[cntDroppedAgain]; n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d clients were disconnected again after they had resynced", n))
	}
	if n := sumCounts(prefixed(cnt, cntReconnectPrefix)); n > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d reconnection attempts failed and were retried (%s)",
			n, formatCounts(prefixed(cnt, cntReconnectPrefix))))
	}
}
