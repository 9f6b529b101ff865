package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"parley/wire"
)

// inbox carries live events from the session readers to the dispatcher,
// plus the "resync" flag. It never blocks a reader: once it holds `limit`
// events (the app stopped draining Events, so the dispatcher is stuck),
// further live events are dropped and a resync is flagged instead. The
// resync fetches them again from the server, so nothing is lost and memory
// stays bounded.
type inbox struct {
	mu      sync.Mutex // guards queue, resync and dropped
	queue   []liveEvent
	resync  bool
	dropped uint64
	limit   int
	wake    chan struct{} // capacity 1: a pending wake-up for the dispatcher
}

// liveEvent is an event pushed by the server, with the session it came on:
// a gap is filled from that same node, which has applied everything before
// the event.
type liveEvent struct {
	s  *session
	ev wire.Event
}

func (in *inbox) init(limit int) {
	in.limit = limit
	in.wake = make(chan struct{}, 1)
}

func (in *inbox) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// push queues a live event; called by session readers.
func (in *inbox) push(s *session, ev *wire.Event) {
	in.mu.Lock()
	if len(in.queue) < in.limit {
		in.queue = append(in.queue, liveEvent{s: s, ev: *ev})
	} else {
		in.dropped++
		in.resync = true
	}
	in.mu.Unlock()
	in.signal()
}

// requestResync asks the dispatcher to sync from the cursor.
func (in *inbox) requestResync() {
	in.mu.Lock()
	in.resync = true
	in.mu.Unlock()
	in.signal()
}

// pending reports whether a resync has been asked for and not yet taken.
func (in *inbox) pending() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.resync
}

// take returns the queued events and the resync flag, and resets both. spare
// (emptied by the caller) becomes the new queue, so two slices alternate.
func (in *inbox) take(spare []liveEvent) (q []liveEvent, resync bool, dropped uint64) {
	in.mu.Lock()
	q, in.queue = in.queue, spare[:0]
	resync, in.resync = in.resync, false
	dropped, in.dropped = in.dropped, 0
	in.mu.Unlock()
	return q, resync, dropped
}

// dispatch is the dispatcher goroutine, one per Client. It alone sends on
// Events(), owns c.delivered and writes the cursor; it runs until the client
// ends, then closes Events(). It may block on a full Events() channel: only
// it waits then, never a reader.
func (c *Client) dispatch() {
	defer c.wg.Done()
	defer close(c.events)

	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	failures := 0
	// synced is the session on which the last sync completed. Live events
	// from any other session are dropped: that session's sync has yet to
	// run (or it is gone), and that sync returns them. Delivering one first
	// could make it the baseline of a conversation new to this client and
	// hide the events before it.
	var synced *session

	var batch []liveEvent
	for {
		q, resync, dropped := c.inbox.take(batch)
		if dropped > 0 {
			c.log.Warn("parley client: event queue full, refetching by sync", "dropped", dropped)
		}
		if resync {
			s, err := c.resync()
			switch {
			case err == nil:
				synced = s
				failures = 0
				c.finishInit(nil)
			case c.ctx.Err() != nil:
				return
			case errors.Is(err, ErrDisconnected):
				// The supervisor asks for a resync once it has reconnected.
			case Retryable(err):
				c.log.Info("parley client: sync failed, retrying", "err", err)
				retry.Reset(backoff(failures, c.cfg.ReconnectMin, c.cfg.ReconnectMax))
				failures++
			default:
				// Catching up is impossible; deliver live events as they come
				// rather than none at all.
				c.log.Error("parley client: sync failed", "err", err)
				synced = s
				c.finishInit(err)
			}
		}
		for i := range q {
			if q[i].s != synced {
				continue
			}
			if err := c.accept(q[i].s, &q[i].ev, true); err != nil {
				return // the client is closing
			}
			c.advanceCursor(&q[i].ev)
		}
		n := len(q)
		clear(q) // drop references to sessions and bodies
		batch = q[:0]
		if n > 0 || resync {
			continue
		}
		select {
		case <-c.inbox.wake:
		case <-retry.C:
			c.inbox.requestResync()
		case <-c.ctx.Done():
			return
		}
	}
}

// advanceCursor moves the cursor past a live event just delivered on the
// synced session, so that a long-lived connection does not leave the cursor
// at its last sync and a restart re-download everything since. A connection
// carries a user's events in log order, so every event with a lower index
// has been delivered already (by the sync or live before this one); events
// sharing this index may not all have arrived yet, hence index-1. Nothing
// moves while a resync is pending: a dropped or unfilled event lies behind.
func (c *Client) advanceCursor(ev *wire.Event) {
	if ev.Index == 0 || c.inbox.pending() {
		return
	}
	if next := ev.Index - 1; next > c.cursor.Load() {
		c.cursor.Store(next)
	}
}

// resync pages through sync from the cursor on the current session and
// delivers every event it has not delivered yet, then stores the final Next
// as the cursor. It is bound to one session, which it returns: mixing nodes
// could pair one node's Next with another node's older history.
func (c *Client) resync() (*session, error) {
	s := c.current()
	if s == nil {
		return nil, ErrDisconnected
	}
	return s, c.resyncOn(s)
}

func (c *Client) resyncOn(s *session) error {
	// The page position is (after, afterConv): afterConv is set when a page
	// ended among conversations sharing the change index after.
	since, after, afterConv := c.cursor.Load(), uint64(0), uint64(0)
	for {
		rep, err := c.call(s, &wire.Request{Type: wire.TypeSync, Since: since, After: after, AfterConv: afterConv, Limit: wire.MaxSyncConvs})
		if err != nil {
			return err
		}
		for i := range rep.Changes {
			cs := &rep.Changes[i]
			conv := cs.Info.ID
			for j := range cs.Events {
				ev := &cs.Events[j]
				if ev.Conv == 0 {
					ev.Conv = conv
				}
				if err := c.accept(s, ev, false); err != nil {
					return err
				}
			}
			if !cs.More || cs.Gone {
				continue // a conversation we left refuses history
			}
			if err := c.fillGap(s, conv, math.MaxUint64); err != nil {
				if Retryable(err) || c.ctx.Err() != nil {
					return err
				}
				// Persistent (e.g. removed meanwhile): retrying would loop.
				c.log.Warn("parley client: cannot page a conversation's history", "conv", conv, "err", err)
			}
		}
		if !rep.More {
			if rep.Next > c.cursor.Load() {
				c.cursor.Store(rep.Next)
			}
			s.synced.Store(true)
			c.syncs.Add(1)
			return nil
		}
		if !wire.SyncAdvanced(after, afterConv, rep.Next, rep.NextConv) {
			return fmt.Errorf("client: sync page did not advance (after %d/%d, next %d/%d)", after, afterConv, rep.Next, rep.NextConv)
		}
		after, afterConv = rep.Next, rep.NextConv
	}
}

// accept delivers ev unless it is a duplicate, filling a gap before it from
// history first. For a live event a fill that fails for a transient reason
// drops the event and asks for a resync, which brings it back in order; in a
// resync the error is returned so the resync is retried. A gap the server
// refuses to fill (a non-retryable error) is logged and skipped: waiting
// would stall the conversation for good.
func (c *Client) accept(s *session, ev *wire.Event, live bool) error {
	ev.Type = wire.TypeEvent
	d, known := c.delivered[ev.Conv]
	if known && ev.Seq <= d {
		return nil // duplicate
	}
	if known && ev.Seq > d+1 {
		err := c.fillGap(s, ev.Conv, ev.Seq)
		switch {
		case err == nil:
		case c.ctx.Err() != nil:
			return context.Cause(c.ctx)
		case Retryable(err):
			if !live {
				return err
			}
			c.log.Info("parley client: gap fill failed, resyncing", "conv", ev.Conv, "err", err)
			c.inbox.requestResync()
			return nil
		default:
			c.log.Warn("parley client: cannot fill a gap", "conv", ev.Conv, "after", d, "seq", ev.Seq, "err", err)
		}
		if d = c.delivered[ev.Conv]; ev.Seq <= d {
			return nil // the history pages included it
		}
		if ev.Seq > d+1 {
			c.log.Warn("parley client: delivering past a gap", "conv", ev.Conv, "after", d, "seq", ev.Seq)
		}
	}
	return c.deliver(ev)
}

// fillGap delivers the events of conv after the last delivered one, page by
// page from history on s, until it reaches seq target-1 or history has no
// more. Pass math.MaxUint64 to page to the end.
func (c *Client) fillGap(s *session, conv, target uint64) error {
	for {
		d := c.delivered[conv]
		if d+1 >= target {
			return nil
		}
		rep, err := c.call(s, &wire.Request{Type: wire.TypeHistory, Conv: conv, Dir: wire.DirAfter, Seq: d, Limit: wire.MaxHistoryLimit})
		if err != nil {
			return err
		}
		progressed := false
		for i := range rep.Events {
			ev := &rep.Events[i]
			if ev.Conv == 0 {
				ev.Conv = conv
			}
			ev.Type = wire.TypeEvent
			if ev.Seq <= c.delivered[conv] {
				continue
			}
			if err := c.deliver(ev); err != nil {
				return err
			}
			progressed = true
		}
		if !rep.More || !progressed {
			return nil
		}
	}
}

// deliver sends ev on Events() (or hands it to OnEvent) and records it. It
// blocks while the channel is full (the app is behind), but not past Close.
func (c *Client) deliver(ev *wire.Event) error {
	if c.cfg.OnEvent != nil {
		c.cfg.OnEvent(*ev)
		c.delivered[ev.Conv] = ev.Seq
		return nil
	}
	select {
	case c.events <- *ev:
	default:
		// Dial waits for the first sync; an app that cannot read Events
		// until Dial returns must not deadlock it.
		c.finishInit(nil)
		select {
		case c.events <- *ev:
		case <-c.ctx.Done():
			return context.Cause(c.ctx)
		}
	}
	c.delivered[ev.Conv] = ev.Seq
	return nil
}

// call runs one request for the dispatcher on session s, each attempt
// bounded by RequestTimeout and all by the client's life. A busy or
// rate_limited answer (the app's own reads may hold the connection's read
// slots) is retried in place with backoff, a few times, rather than
// restarting the whole resync.
func (c *Client) call(s *session, r *wire.Request) (*wire.Reply, error) {
	for attempt := 0; ; attempt++ {
		rep, err := c.callOnce(s, r)
		if !isBackoff(err) || attempt == callBackoffAttempts {
			return rep, err
		}
		if !sleep(c.ctx, backoff(attempt, c.cfg.ReconnectMin, c.cfg.ReconnectMax)) {
			return nil, context.Cause(c.ctx)
		}
	}
}

// callBackoffAttempts bounds the in-place retries of call.
const callBackoffAttempts = 8

func (c *Client) callOnce(s *session, r *wire.Request) (*wire.Reply, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RequestTimeout)
	defer cancel()
	rep, err := s.roundTrip(ctx, r)
	if err != nil && err == ctx.Err() {
		if c.ctx.Err() != nil {
			return nil, context.Cause(c.ctx)
		}
		return nil, ErrRequestTimeout
	}
	return rep, err
}

// finishInit releases Dial: the first sync is done (err nil), failed for
// good, or is blocked on the app.
func (c *Client) finishInit(err error) {
	c.initOnce.Do(func() {
		c.initErr = err
		close(c.initDone)
	})
}
