package node_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"parley/wire"
)

// A read with min_idx waits until the node has applied that index and then
// sees the write there; one whose index never comes answers unavailable
// (the wait's timeout is injected: the test does not sleep).
func TestMinIndexWait(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	c := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	ctx := ctxT(t)
	conv, err := c.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}

	// Waits for the next entry, which is the send below: the history it
	// returns has the message.
	next := n.AppliedIndexForTest() + 1
	type result struct {
		rep *wire.Reply
		err error
	}
	got := make(chan result, 1)
	go func() {
		rep, err := c.Request(ctx, &wire.Request{Type: wire.TypeHistory, Conv: conv.ID, MinIndex: next, Limit: 10})
		got <- result{rep, err}
	}()
	ack, err := c.Send(ctx, conv.ID, "hello")
	if err != nil {
		t.Fatal(err)
	}
	if ack.Index == 0 || ack.Index < next {
		t.Fatalf("send ack idx %d, want >= %d", ack.Index, next)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("history with min_idx %d: %v", next, r.err)
	}
	found := false
	for _, ev := range r.rep.Events {
		found = found || ev.Seq == ack.Seq
	}
	if !found {
		t.Fatalf("history at min_idx %d lacks the message of idx %d: %+v", next, ack.Index, r.rep.Events)
	}
	if c.MinIndex() < ack.Index {
		t.Fatalf("client MinIndex %d below the ack's idx %d", c.MinIndex(), ack.Index)
	}

	// An index this node never reaches: the wait gives up when the
	// injected timer fires, with a retryable unavailable.
	fired := make(chan time.Time)
	close(fired)
	n.SetMinIndexTimerForTest(func() <-chan time.Time { return fired })
	_, err = c.Request(ctx, &wire.Request{Type: wire.TypeConvList, MinIndex: n.AppliedIndexForTest() + 1_000_000})
	var werr *wire.Error
	if !errors.As(err, &werr) || werr.Code != wire.CodeUnavailable {
		t.Fatalf("read at an index never applied: %v, want unavailable", err)
	}

	// The same over HTTP: Parley-Min-Index on a login.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.HTTPURL()+"/v1/login",
		consistencyBody(map[string]string{"username": alice.name, "password": alice.password}))
	req.Header.Set("Parley-Min-Index", "999999999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("login at an index never applied: HTTP %d, want 503", resp.StatusCode)
	}
}

func consistencyBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}
