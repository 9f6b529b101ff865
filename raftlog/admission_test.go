package raftlog

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"parley/internal/testwait"
)

const ms = time.Millisecond

// drain feeds a: n commands taken at an even pace over [from, to), each
// having waited sojourn.
func drain(a *admission, n int, from, to, sojourn time.Duration) {
	for i := range n {
		now := from + (to-from)*time.Duration(i+1)/time.Duration(n)
		a.taken(now-sojourn, now)
	}
}

func TestAdmissionPassesBursts(t *testing.T) {
	a := newAdmission(20*ms, 100*ms, 65536, 0)
	if !a.admits(60000, 0) {
		t.Fatal("a fresh node refuses a burst below QueueLength")
	}
	// A burst that waited up to 80 ms, but the queue emptied within the
	// window (one command went through at once): not a standing queue.
	a.taken(0, 1*ms)
	drain(a, 1000, 1*ms, 101*ms, 80*ms)
	if !a.admits(60000, 101*ms) {
		t.Fatalf("limit %d after a window whose smallest sojourn was under the target", a.limit.Load())
	}
	if a.admits(65536, 101*ms) {
		t.Fatal("admitted beyond QueueLength")
	}
}

func TestAdmissionCutsAStandingQueue(t *testing.T) {
	a := newAdmission(20*ms, 100*ms, 65536, 0)
	// 10,000 commands/s for a whole window, each having waited 500 ms: the
	// queue stands. Admitted: what drains in 20 ms at that rate.
	drain(a, 1000, 0, 100*ms, 500*ms)
	if got := a.limit.Load(); got != 200 {
		t.Fatalf("limit %d, want 200 (10,000/s × 20 ms)", got)
	}
	if !a.admits(199, 100*ms) || a.admits(200, 100*ms) {
		t.Fatal("limit not applied at 199/200 queued")
	}
	if !a.admits(0, 100*ms) {
		t.Fatal("an empty queue refuses")
	}
	// The next window's commands waited less than the target: lifted.
	drain(a, 1000, 100*ms, 200*ms, 5*ms)
	if !a.admits(60000, 200*ms) {
		t.Fatalf("limit %d after the queue shrank", a.limit.Load())
	}
}

func TestAdmissionFloorAndIdle(t *testing.T) {
	a := newAdmission(20*ms, 100*ms, 65536, 0)
	// A trickle that waited long: the rate says 0, the floor keeps some
	// work flowing so the next window measures again.
	drain(a, 2, 0, 100*ms, time.Second)
	if got := a.limit.Load(); got != minAdmitted {
		t.Fatalf("limit %d, want the floor %d", got, minAdmitted)
	}
	a.idle(150 * ms)
	if got := a.limit.Load(); got != 65536 {
		t.Fatalf("limit %d after the proposer found the queue empty", got)
	}
	// However long it then waits for work, the first commands of the next
	// burst queue behind one another: not a stall.
	if !a.admits(3, time.Hour) {
		t.Fatal("a burst after a quiet hour refused as if the proposer stalled")
	}
	// A window that began before idle does not carry over.
	drain(a, 1000, 150*ms, 240*ms, time.Second)
	if got := a.limit.Load(); got != 65536 {
		t.Fatalf("limit %d: a window shorter than the interval ended", got)
	}
}

func TestAdmissionRefusesBehindAStalledProposer(t *testing.T) {
	a := newAdmission(20*ms, 100*ms, 65536, 0)
	a.taken(0, 10*ms)
	if !a.admits(5, 1009*ms) {
		t.Fatal("refused before ten intervals without progress")
	}
	if a.admits(5, 1010*ms) {
		t.Fatal("admitted behind a proposer that took nothing for ten intervals")
	}
	if !a.admits(0, time.Hour) {
		t.Fatal("an empty queue refuses")
	}
	a.taken(1000*ms, 1011*ms)
	if !a.admits(5, 1011*ms) {
		t.Fatal("still refusing after the proposer took a command")
	}
}

// TestAdmissionEndToEnd: a leader whose state machine stalls refuses new
// commands with ErrBusy while its queue is far below QueueLength, and
// every command it took commits once the state machine goes on: nothing
// taken is abandoned (no ErrTimeout).
func TestAdmissionEndToEnd(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxInflightEntries = 1
	cfg.AdmissionInterval = 50 * ms
	cfg.SubmitTimeout = time.Hour // a command taken and not committed would hang the test, not time out
	sm := newMemSM()
	sm.gate = make(chan struct{})
	sm.entered = make(chan uint64, 1024)
	n := openLeader(t, cfg, sm)
	defer n.Close()
	var release sync.Once
	open := func() { release.Do(func() { close(sm.gate) }) }
	defer open() // before Close, on failure too

	var (
		mu       sync.Mutex
		accepted int
		outcomes = make(chan error, 100000)
	)
	done := func(_ any, _ uint64, err error) { outcomes <- err }
	submit := func() error {
		err := n.Submit([]byte("x"), done)
		if err == nil {
			mu.Lock()
			accepted++
			mu.Unlock()
		}
		return err
	}
	if err := submit(); err != nil {
		t.Fatal(err)
	}
	<-sm.entered // holds the only slot: the proposer stalls
	var refused error
	testwait.Eventually(t, "Submit refuses behind the stalled state machine", func() bool {
		refused = submit()
		return refused != nil
	})
	var be *BusyError
	if !errors.Is(refused, ErrBusy) || !errors.As(refused, &be) || be.RetryAfter < cfg.AdmissionInterval {
		t.Fatalf("refused with %#v, want a BusyError asking for at least an interval", refused)
	}
	if q := n.Stats().QueueLength; q >= DefaultQueueLength || q == 0 {
		t.Fatalf("queue %d when refusing (QueueLength %d)", q, DefaultQueueLength)
	}
	open()
	mu.Lock()
	want := accepted
	mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range want {
		select {
		case err := <-outcomes:
			if err != nil {
				t.Fatalf("outcome %d of %d taken commands: %v", i+1, want, err)
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d taken commands have no outcome", want-i, want)
		}
	}
}

// TestAdmissionRetryHint: the wait asked of a refused caller doubles after
// each window that refused more than one command for four taken, up to 20
// intervals. It is lowered only once it has stood for its own length (the
// clients it sent away are back), and then only if that span refused under
// a sixteenth of what it took: it holds while the refusals are between a
// sixteenth and a quarter (the clients obey it: it is not lowered for
// working), halves under a sixteenth, never below an interval. After the
// queue has stayed empty for as long as the hint, it is an interval again.
func TestAdmissionRetryHint(t *testing.T) {
	a := newAdmission(20*ms, 100*ms, 65536, 0)
	if got := a.retryAfter(); got != 100*ms {
		t.Fatalf("first hint %v", got)
	}
	window := func(i int, refused int64) time.Duration {
		a.refused.Add(refused)
		drain(a, 1000, time.Duration(i)*100*ms, time.Duration(i+1)*100*ms, 500*ms)
		return a.retryAfter()
	}
	for i, want := range []time.Duration{200 * ms, 400 * ms, 800 * ms, 1600 * ms, 2 * time.Second, 2 * time.Second} {
		if got := window(i, 3000); got != want { // three refused for each one taken
			t.Fatalf("window %d refusing 3 a command: hint %v, want %v", i, got, want)
		}
	}
	// Obeyed: the refusals fall to a tenth of the commands taken. The
	// hint holds, through its span (600 ms to 2.6 s) and after it; a
	// proportional one fell here and let the clients come back.
	for i := 6; i <= 30; i++ {
		if got := window(i, 100); got != 2*time.Second {
			t.Fatalf("window %d refusing a tenth: hint %v, want it held at 2s", i, got)
		}
	}
	// A hundredth: the hint halves once a span as long as itself has
	// passed since it last changed (the held span began at 2.6 s).
	type change struct {
		at   time.Duration // end of the window that changed it
		hint time.Duration
	}
	var changes []change
	last := a.retryAfter()
	for i := 31; i <= 70; i++ {
		if got := window(i, 10); got != last {
			changes = append(changes, change{time.Duration(i+1) * 100 * ms, got})
			last = got
		}
	}
	want := []change{{4600 * ms, time.Second}, {5600 * ms, 500 * ms}, {6100 * ms, 250 * ms}, {6400 * ms, 125 * ms}, {6600 * ms, 100 * ms}}
	if !slices.Equal(changes, want) {
		t.Fatalf("refusing a hundredth, the hint changed %v, want %v", changes, want)
	}

	if got := window(71, 1_000_000); got != 200*ms {
		t.Fatalf("hint %v after a window refusing 1000 a command, want 200ms", got)
	}
	a.idle(7250 * ms)
	a.taken(7300*ms, 7300*ms) // the queue was empty for 50 ms
	if got := a.retryAfter(); got != 200*ms {
		t.Fatalf("hint %v after the queue was empty for a quarter of it, want it held at 200ms", got)
	}
	a.idle(7350 * ms)
	a.taken(7550*ms, 7550*ms) // empty for 200 ms: as long as the hint
	if got := a.retryAfter(); got != 100*ms {
		t.Fatalf("hint %v after the queue was empty for as long as it, want an interval", got)
	}
}

// TestOwnAdmissionOnAFollower: a follower whose apply falls behind (its
// state machine lets one entry through every 100 ms) refuses new commands
// of its own with ErrBusy once they have stood over SubmitTimeout/5,
// instead of taking them to let them time out; every command it took
// commits (or, on a loaded machine, is refused by the leader: never left
// to time out).
func TestOwnAdmissionOnAFollower(t *testing.T) {
	tweak := func(cfg *Config) {
		cfg.SubmitTimeout = 10 * time.Second // own target: 2 s
		cfg.AdmissionInterval = 50 * time.Millisecond
	}
	// The feeder below lets the gated state machine go on until the
	// cluster is closed: registered first, this cleanup runs after
	// closeAll, also when the test fails (raft's shutdown waits for Apply).
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	c := newCluster(t, 3, tweak)
	leader := c.leader()
	f := c.nodes[0]
	if f == leader {
		f = c.nodes[1]
	}
	// Gate the follower's state machine: set while it is down, so that
	// Apply reads it after Open.
	f.n.Close()
	f.n = nil
	gate, entered := make(chan struct{}), make(chan uint64, 1)
	f.sm.gate, f.sm.entered = gate, entered
	paced, free := make(chan struct{}), make(chan struct{})
	go func() { // one entry every 100 ms until paced closes, then all
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-entered:
			case <-done:
				return
			case <-paced:
				close(free)
				for {
					select {
					case <-entered:
					case gate <- struct{}{}:
					case <-done:
						return
					}
				}
			}
			select {
			case <-tick.C:
			case <-paced:
			}
			select {
			case gate <- struct{}{}:
			case <-done:
				return
			}
		}
	}()
	c.start(f, tweak)
	waitLeader(t, f.n)

	var (
		accepted int
		refused  error
		outcomes = make(chan error, 1<<20)
	)
	testwait.Eventually(t, "the follower refuses its own commands", func() bool {
		for range 20 {
			if refused = f.n.Submit([]byte("x"), func(_ any, _ uint64, err error) { outcomes <- err }); refused != nil {
				return true
			}
			accepted++
		}
		return false
	})
	var be *BusyError
	if !errors.As(refused, &be) {
		t.Fatalf("refused with %v, want a BusyError", refused)
	}
	close(paced)
	<-free
	// A forwarded command may still be refused by the leader's own
	// admission (a loaded machine: its queue stood over 20 ms): that is a
	// definite refusal, nothing stored. What must not happen is a command
	// taken and left to time out.
	refusedByLeader := 0
	for i := range accepted {
		err := <-outcomes
		if errors.Is(err, ErrBusy) {
			refusedByLeader++
			continue
		}
		if err != nil {
			t.Fatalf("outcome %d of %d taken commands: %v", i+1, accepted, err)
		}
	}
	if refusedByLeader == accepted {
		t.Fatalf("the leader refused all %d commands the follower took", accepted)
	}
}
