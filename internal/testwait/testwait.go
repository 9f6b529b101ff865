// Package testwait is how tests wait: poll a condition until it holds, with
// a deadline that only stops a hang. Tests wait for conditions, never for
// time.
package testwait

import (
	"testing"
	"time"
)

// DefaultLimit is how long Eventually polls before it fails the test. It is
// generous on purpose: tests run under -race on a loaded machine, and the
// limit is not a verdict on speed.
const DefaultLimit = 30 * time.Second

// The poll interval starts at minPoll and doubles up to maxPoll, so a
// condition that holds soon is seen soon and a slow one is not spun on.
const (
	minPoll = time.Millisecond
	maxPoll = 25 * time.Millisecond
)

// An Option changes how Eventually waits.
type Option func(*config)

type config struct {
	limit  time.Duration
	detail func() string
}

// Limit replaces DefaultLimit.
func Limit(d time.Duration) Option { return func(c *config) { c.limit = d } }

// Detail adds detail() to the failure message, e.g. the last state seen.
func Detail(detail func() string) Option { return func(c *config) { c.detail = detail } }

// Eventually polls cond until it returns true. If it has not within the
// limit, it fails the test with t.Fatalf, naming what it waited for, so it
// must be called from the test's goroutine. cond is called at least once.
func Eventually(t testing.TB, what string, cond func() bool, opts ...Option) {
	t.Helper()
	c := config{limit: DefaultLimit}
	for _, o := range opts {
		o(&c)
	}
	deadline := time.Now().Add(c.limit)
	for poll := minPoll; !cond(); poll = min(2*poll, maxPoll) {
		if time.Now().After(deadline) {
			if c.detail != nil {
				t.Fatalf("timed out after %v waiting for %s: %s", c.limit, what, c.detail())
			} else {
				t.Fatalf("timed out after %v waiting for %s", c.limit, what)
			}
			return
		}
		time.Sleep(poll)
	}
}
