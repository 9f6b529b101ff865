package bench

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"parley/client"
	"parley/wire"
)

// retrier retries failed sends the way sendRetrying does (the same cmid,
// equal jitter, at least the busy reply's retry_ms, until
// directSendTimeout) but without a goroutine, a context and a blocking
// Request per attempt: attempts wait in a heap ordered by when they are
// due and one goroutine reissues them with Client.Go. Under overload a
// node refuses most sends with busy, and the harness shares the machine
// with the node: at 100k msg/s offered to 5,000 pairs, one node delivered
// 23.1k-26.7k msg/s with sendRetrying per refused send and 35.6k-36.8k
// with the retrier, the harness taking 1.1-1.2 cores either way.
type retrier struct {
	mu      sync.Mutex
	queue   retryHeap
	stopped error // why attempts are finished instead of retried
	wake    chan struct{}
	done    chan struct{}
	now     func() time.Time // read-only after start
}

// asyncSender is what the retrier needs of a client: *client.Client.
type asyncSender interface {
	Go(req *wire.Request, done func(*wire.Reply, error))
}

// retryAttempt is one send being retried.
type retryAttempt struct {
	c        asyncSender
	req      wire.Request
	due      time.Time
	deadline time.Time
	delay    time.Duration // sendRetrying's doubling base
	retried  func(code string)
	finish   func(rep *wire.Reply, code string, err error)
}

// newRetrier starts a retrier; it ends with ctx (waiting attempts then
// finish with ctx's error, as sendRetrying's do) or at stop.
func newRetrier(ctx context.Context) *retrier { return startRetrier(ctx, time.Now) }

// startRetrier is newRetrier on the clock now (tests give their own).
func startRetrier(ctx context.Context, now func() time.Time) *retrier {
	r := &retrier{wake: make(chan struct{}, 1), done: make(chan struct{}), now: now}
	go r.run(ctx)
	return r
}

// retry takes over a send whose first attempt (Client.Go) failed with
// failed: it retries req on c while the error is retryable and
// directSendTimeout has not passed since now, calling retried with the
// code of each error it retries, and then calls finish once, with the
// reply, or with the code to count the failure under and why.
func (r *retrier) retry(c asyncSender, req *wire.Request, failed error, retried func(code string), finish func(*wire.Reply, string, error)) {
	a := &retryAttempt{c: c, req: *req, deadline: r.now().Add(directSendTimeout),
		delay: sendRetryMin, retried: retried, finish: finish}
	r.failed(a, failed)
}

// failed handles an attempt's error: it schedules the next attempt or
// finishes.
func (r *retrier) failed(a *retryAttempt, err error) {
	code := errorCode(err)
	now := r.now()
	if !client.Retryable(err) || !now.Before(a.deadline) {
		a.finish(nil, code, err)
		return
	}
	a.retried(code)
	wait := a.delay/2 + rand.N(a.delay/2+1)
	if ask := client.RetryAfter(err); ask > wait { // busy's retry_ms
		wait = ask + rand.N(ask/2+1)
	}
	a.delay = min(2*a.delay, sendRetryMax)
	a.due = now.Add(wait)
	if a.due.After(a.deadline) {
		a.due = a.deadline // give up then, as sendRetrying's sleep does
	}
	r.mu.Lock()
	if stopped := r.stopped; stopped != nil {
		r.mu.Unlock()
		a.finish(nil, errorCode(stopped), fmt.Errorf("retrying %s: %w", code, stopped))
		return
	}
	heap.Push(&r.queue, a)
	first := r.queue[0] == a
	r.mu.Unlock()
	if first {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// run reissues attempts as they fall due until stop or the end of ctx.
func (r *retrier) run(ctx context.Context) {
	defer close(r.done)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var due []*retryAttempt
	for {
		r.mu.Lock()
		now := r.now()
		for len(r.queue) > 0 && !r.queue[0].due.After(now) {
			due = append(due, heap.Pop(&r.queue).(*retryAttempt))
		}
		wait := time.Hour
		if len(r.queue) > 0 {
			wait = r.queue[0].due.Sub(now)
		}
		r.mu.Unlock()
		for i, a := range due {
			r.attempt(a, now)
			due[i] = nil
		}
		due = due[:0]
		t.Reset(wait)
		select {
		case <-t.C:
		case <-r.wake:
			t.Stop()
		case <-ctx.Done():
			r.end(ctx.Err())
			return
		}
		r.mu.Lock()
		stopped := r.stopped
		r.mu.Unlock()
		if stopped != nil {
			r.end(stopped)
			return
		}
	}
}

// end finishes every waiting attempt with err; attempts in flight finish
// with it when they fail (failed).
func (r *retrier) end(err error) {
	r.mu.Lock()
	if r.stopped == nil {
		r.stopped = err
	}
	waiting := r.queue
	r.queue = nil
	r.mu.Unlock()
	for _, a := range waiting {
		a.finish(nil, errorCode(err), fmt.Errorf("retrying: %w", err))
	}
}

// attempt sends a due attempt again, or gives up at its deadline.
func (r *retrier) attempt(a *retryAttempt, now time.Time) {
	if !now.Before(a.deadline) {
		code := errorCode(context.DeadlineExceeded)
		a.finish(nil, code, fmt.Errorf("retrying: %w", context.DeadlineExceeded))
		return
	}
	a.c.Go(&a.req, func(rep *wire.Reply, err error) {
		if err != nil {
			r.failed(a, err)
			return
		}
		a.finish(rep, "", nil)
	})
}

// stop ends the retrier: waiting attempts finish as canceled. Call it
// once no send can fail any more.
func (r *retrier) stop() {
	r.mu.Lock()
	if r.stopped == nil {
		r.stopped = context.Canceled
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	<-r.done
}

// retryHeap orders attempts by when they are due.
type retryHeap []*retryAttempt

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(*retryAttempt)) }
func (h *retryHeap) Pop() any {
	old := *h
	a := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return a
}
