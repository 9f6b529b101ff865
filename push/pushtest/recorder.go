package pushtest

import (
	"context"
	"sync"

	"parley/push"
)

// Recorder is an in-memory push.Sender for tests of the code that decides
// who is notified: it records every send and answers with a scripted Result
// per token (or endpoint), success by default.
type Recorder struct {
	mu      sync.Mutex
	sends   []Sent
	results map[string]Scripted
}

var _ push.Sender = (*Recorder)(nil)

// Sent is one recorded call.
type Sent struct {
	Target       push.Target
	Notification push.Notification
}

// Scripted is what Send returns for a device.
type Scripted struct {
	Result push.Result
	Err    error
}

// Script makes sends to key (Target.Token, or Target.Endpoint for webpush)
// return s.
func (r *Recorder) Script(key string, s Scripted) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.results == nil {
		r.results = make(map[string]Scripted)
	}
	r.results[key] = s
}

// Send records the call and returns the scripted answer.
func (r *Recorder) Send(ctx context.Context, t push.Target, n push.Notification) (push.Result, error) {
	if err := ctx.Err(); err != nil {
		return push.Result{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sends = append(r.sends, Sent{Target: t, Notification: n})
	key := t.Token
	if t.Provider == push.ProviderWebPush {
		key = t.Endpoint
	}
	if s, ok := r.results[key]; ok {
		return s.Result, s.Err
	}
	return push.Result{Status: 200}, nil
}

// Sends returns the recorded calls, oldest first.
func (r *Recorder) Sends() []Sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Sent(nil), r.sends...)
}
