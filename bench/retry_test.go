package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"parley/wire"
)

// scriptedSender answers each Go with the next scripted error (nil: an
// ack), on a goroutine of its own as a client's reader would, and records
// when each attempt came.
type scriptedSender struct {
	mu       sync.Mutex
	answers  []error
	attempts []time.Time
	cmids    []string
}

func (s *scriptedSender) Go(req *wire.Request, done func(*wire.Reply, error)) {
	s.mu.Lock()
	s.attempts = append(s.attempts, time.Now())
	s.cmids = append(s.cmids, req.ClientMsgID)
	var err error
	if len(s.answers) > 0 {
		err, s.answers = s.answers[0], s.answers[1:]
	}
	s.mu.Unlock()
	go func() {
		if err != nil {
			done(nil, err)
			return
		}
		done(&wire.Reply{Type: wire.TypeOK, Conv: req.Conv, Seq: 1}, nil)
	}()
}

type retryOutcome struct {
	rep  *wire.Reply
	code string
	err  error
}

func retryOnce(t *testing.T, r *retrier, s *scriptedSender, first error) (retryOutcome, []string) {
	t.Helper()
	var retried []string
	var mu sync.Mutex
	out := make(chan retryOutcome, 1)
	req := wire.Request{Type: wire.TypeSend, Conv: 7, ClientMsgID: "m1", Body: "x"}
	r.retry(s, &req, first, func(code string) {
		mu.Lock()
		retried = append(retried, code)
		mu.Unlock()
	}, func(rep *wire.Reply, code string, err error) { out <- retryOutcome{rep, code, err} })
	o := <-out
	mu.Lock()
	defer mu.Unlock()
	return o, retried
}

func TestRetrierHonoursBusyHintAndKeepsCmid(t *testing.T) {
	r := newRetrier(context.Background())
	defer r.stop()
	busy := &wire.Error{Code: wire.CodeBusy, Message: "busy", RetryMS: 50}
	s := &scriptedSender{answers: []error{busy, nil}}
	start := time.Now()
	o, retried := retryOnce(t, r, s, busy)
	if o.err != nil || o.rep == nil || o.rep.Seq != 1 {
		t.Fatalf("outcome %+v, want the ack", o)
	}
	if len(retried) != 2 || retried[0] != "busy" || retried[1] != "busy" {
		t.Fatalf("retried %v, want busy twice (the first attempt's and the first retry's)", retried)
	}
	if len(s.attempts) != 2 || s.cmids[0] != "m1" || s.cmids[1] != "m1" {
		t.Fatalf("attempts with cmids %v, want two with m1", s.cmids)
	}
	// Each retry waits at least the hint: two hints before the ack.
	if d := s.attempts[0].Sub(start); d < 50*time.Millisecond {
		t.Errorf("first retry after %v, before the 50 ms busy hint", d)
	}
	if d := s.attempts[1].Sub(s.attempts[0]); d < 50*time.Millisecond {
		t.Errorf("second retry %v after the first, before the 50 ms busy hint", d)
	}
}

func TestRetrierStopsOnFatalError(t *testing.T) {
	r := newRetrier(context.Background())
	defer r.stop()
	s := &scriptedSender{answers: []error{&wire.Error{Code: wire.CodeForbidden, Message: "no"}}}
	o, retried := retryOnce(t, r, s, &wire.Error{Code: wire.CodeBusy, Message: "busy", RetryMS: 1})
	if o.err == nil || o.code != string(wire.CodeForbidden) {
		t.Fatalf("outcome %+v, want forbidden", o)
	}
	if len(retried) != 1 || len(s.attempts) != 1 {
		t.Fatalf("retried %v with %d attempts, want one of each", retried, len(s.attempts))
	}
}

func TestRetrierGivesUpAtDeadline(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	r := startRetrier(context.Background(), func() time.Time { mu.Lock(); defer mu.Unlock(); return clock })
	defer r.stop()
	// The clock jumps past the deadline while the first retry waits.
	s := &scriptedSender{}
	out := make(chan retryOutcome, 1)
	req := wire.Request{Type: wire.TypeSend, Conv: 7, ClientMsgID: "m1", Body: "x"}
	r.retry(s, &req, &wire.Error{Code: wire.CodeBusy, RetryMS: 1}, func(string) {
		mu.Lock()
		clock = clock.Add(directSendTimeout)
		mu.Unlock()
	}, func(rep *wire.Reply, code string, err error) { out <- retryOutcome{rep, code, err} })
	o := <-out
	if o.err == nil || o.rep != nil || o.code != "deadline" {
		t.Fatalf("outcome %+v, want a deadline failure", o)
	}
	if len(s.attempts) != 0 {
		t.Fatalf("%d attempts after the deadline", len(s.attempts))
	}
}

func TestRetrierEndsWaitingAttemptsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newRetrier(ctx)
	defer r.stop()
	s := &scriptedSender{}
	out := make(chan retryOutcome, 1)
	req := wire.Request{Type: wire.TypeSend, Conv: 7, ClientMsgID: "m1", Body: "x"}
	retried := make(chan struct{})
	r.retry(s, &req, &wire.Error{Code: wire.CodeBusy, RetryMS: 60_000}, func(string) { close(retried) },
		func(rep *wire.Reply, code string, err error) { out <- retryOutcome{rep, code, err} })
	<-retried
	cancel()
	o := <-out
	if o.err == nil || o.code != errorCode(context.Canceled) {
		t.Fatalf("outcome %+v, want canceled", o)
	}
	if len(s.attempts) != 0 {
		t.Fatalf("%d attempts, want none (the hint is a minute)", len(s.attempts))
	}
}
