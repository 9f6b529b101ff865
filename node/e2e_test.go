package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"parley/client"
	"parley/node"
	"parley/wire"
)

// cheapArgon2 keeps account creation fast in tests; production uses DefaultArgon2.
var cheapArgon2 = node.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

func testConfig(dir string) node.Config {
	return node.Config{
		DataDir:   dir,
		HTTPAddr:  "127.0.0.1:0",
		WSAddr:    "127.0.0.1:0",
		RaftAddr:  "127.0.0.1:0",
		Argon2:    cheapArgon2,
		Bootstrap: true,
		// Tests drive one connection much faster than a person would.
		RatePerSecond: 10_000,
		RateBurst:     10_000,
	}
}

func startNode(t *testing.T, dir string) *node.Node {
	t.Helper()
	return startNodeWith(t, testConfig(dir))
}

func startNodeWith(t testing.TB, cfg node.Config) *node.Node {
	t.Helper()
	n, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type account struct {
	user     uint64
	name     string
	password string
}

func postJSON(t *testing.T, url string, in, out any) int {
	t.Helper()
	b, _ := json.Marshal(in)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func register(t *testing.T, n *node.Node, name string) account {
	t.Helper()
	return (&remote{http: n.HTTPURL()}).register(t, name)
}

func login(t *testing.T, n *node.Node, a account, device string) string {
	t.Helper()
	return (&remote{http: n.HTTPURL()}).login(t, a, device)
}

func dial(t *testing.T, urls []string, token string, cursor uint64) *client.Client {
	t.Helper()
	c, err := client.Dial(ctxT(t), client.Config{URLs: urls, Token: token, Cursor: cursor, ReconnectMax: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// collect reads events until pred holds for what was read, or fails.
func collect(t *testing.T, c *client.Client, what string, pred func([]wire.Event) bool) []wire.Event {
	t.Helper()
	var got []wire.Event
	deadline := time.After(30 * time.Second)
	for !pred(got) {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("%s: event stream closed after %d events", what, len(got))
			}
			got = append(got, ev)
		case <-deadline:
			t.Fatalf("%s: timed out with %d events", what, len(got))
		}
	}
	return got
}

func messages(evs []wire.Event) []wire.Event {
	var out []wire.Event
	for _, e := range evs {
		if e.Kind == wire.KindMessage {
			out = append(out, e)
		}
	}
	return out
}

// checkOrder fails unless each conversation's events are seq-contiguous and unique.
func checkOrder(t *testing.T, evs []wire.Event) {
	t.Helper()
	last := map[uint64]uint64{}
	for _, e := range evs {
		if prev, ok := last[e.Conv]; ok && e.Seq != prev+1 {
			t.Fatalf("conv %d: seq %d after %d", e.Conv, e.Seq, prev)
		}
		last[e.Conv] = e.Seq
	}
}

func TestDirectChat(t *testing.T) {
	n := startNode(t, t.TempDir())
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	cb := dial(t, []string{n.WSURL()}, login(t, n, bob, "phone"), 0)
	ctx := ctxT(t)

	info, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != wire.ConvDirect || len(info.Members) != 2 {
		t.Fatalf("dm info %+v", info)
	}
	again, err := cb.OpenDirect(ctx, alice.user)
	if err != nil || again.ID != info.ID {
		t.Fatalf("bob opened %+v, %v; want conv %d", again, err, info.ID)
	}
	ack, err := ca.Send(ctx, info.ID, "hi bob")
	if err != nil {
		t.Fatal(err)
	}
	if ack.Conv != info.ID || ack.Seq == 0 || ack.Ts == 0 || ack.Index == 0 || ack.Duplicate {
		t.Fatalf("ack %+v", ack)
	}
	got := collect(t, cb, "bob receives", func(evs []wire.Event) bool { return len(messages(evs)) == 1 })
	m := messages(got)[0]
	if m.Body != "hi bob" || m.From != alice.user || m.Seq != ack.Seq || m.Conv != info.ID {
		t.Fatalf("bob got %+v", m)
	}
	// The sender's own device sees its message too (multi-device sync).
	collect(t, ca, "alice echo", func(evs []wire.Event) bool { return len(messages(evs)) == 1 })

	// Errors: a DM with yourself, with nobody, and sending into a stranger's DM.
	if _, err := ca.OpenDirect(ctx, alice.user); !isCode(err, wire.CodeConflict) && !isCode(err, wire.CodeInvalid) {
		t.Fatalf("dm with self: %v", err)
	}
	if _, err := ca.OpenDirect(ctx, 999999); !isCode(err, wire.CodeNotFound) {
		t.Fatalf("dm with nobody: %v", err)
	}
	carol := register(t, n, "carol")
	cc := dial(t, []string{n.WSURL()}, login(t, n, carol, "web"), 0)
	if _, err := cc.Send(ctx, info.ID, "let me in"); !isCode(err, wire.CodeNotMember) {
		t.Fatalf("stranger send: %v", err)
	}
	if _, _, err := cc.History(ctx, info.ID, wire.DirBefore, 0, 10); !isCode(err, wire.CodeNotMember) {
		t.Fatalf("stranger history: %v", err)
	}
}

func isCode(err error, code wire.Code) bool {
	var we *wire.Error
	return err != nil && errors.As(err, &we) && we.Code == code
}

func TestGroupFiveUsersTwoDevicesEach(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	var users []account
	var clients [][]*client.Client
	for i := range 5 {
		a := register(t, n, fmt.Sprintf("user%d", i))
		users = append(users, a)
		clients = append(clients, []*client.Client{
			dial(t, []string{n.WSURL()}, login(t, n, a, "phone"), 0),
			dial(t, []string{n.WSURL()}, login(t, n, a, "laptop"), 0),
		})
	}
	var others []uint64
	for _, a := range users[1:] {
		others = append(others, a.user)
	}
	g, err := clients[0][0].CreateGroup(ctx, "five", others)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Members) != 5 || len(g.Admins) != 1 || g.Admins[0] != users[0].user {
		t.Fatalf("group %+v", g)
	}
	const perDevice = 3
	for i := range users {
		for d, c := range clients[i] {
			for k := range perDevice {
				if _, err := c.Send(ctx, g.ID, fmt.Sprintf("u%d d%d m%d", i, d, k)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	want := 5 * 2 * perDevice
	for i := range users {
		for _, c := range clients[i] {
			evs := collect(t, c, "group delivery", func(evs []wire.Event) bool { return len(messages(evs)) == want })
			checkOrder(t, evs)
		}
	}
	// Rights: a non-admin cannot remove; the admin can; the removed user is cut off.
	if _, err := clients[1][0].RemoveMember(ctx, g.ID, users[2].user); !isCode(err, wire.CodeForbidden) {
		t.Fatalf("non-admin remove: %v", err)
	}
	if _, err := clients[0][0].RemoveMember(ctx, g.ID, users[4].user); err != nil {
		t.Fatal(err)
	}
	if _, err := clients[4][0].Send(ctx, g.ID, "still here?"); !isCode(err, wire.CodeNotMember) {
		t.Fatalf("removed member send: %v", err)
	}
	evs, more, err := clients[1][1].History(ctx, g.ID, wire.DirBefore, 0, 200)
	if err != nil || more {
		t.Fatal(err, more)
	}
	if len(messages(evs)) != want {
		t.Fatalf("history has %d messages, want %d", len(messages(evs)), want)
	}
}

func TestSendRetryIsIdempotent(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	first, err := ca.SendWithID(ctx, dm.ID, "cmid-1", "once")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		again, err := ca.SendWithID(ctx, dm.ID, "cmid-1", "once")
		if err != nil {
			t.Fatal(err)
		}
		if !again.Duplicate || again.Seq != first.Seq || again.Ts != first.Ts || again.Index != first.Index {
			t.Fatalf("retry %+v, first %+v", again, first)
		}
	}
	// The same cmid from another device of the same user is a different message.
	ca2 := dial(t, []string{n.WSURL()}, login(t, n, alice, "laptop"), 0)
	other, err := ca2.SendWithID(ctx, dm.ID, "cmid-1", "twice")
	if err != nil || other.Duplicate || other.Seq != first.Seq+1 {
		t.Fatalf("other device %+v %v", other, err)
	}
	evs, _, err := ca.History(ctx, dm.ID, wire.DirAfter, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(messages(evs)); got != 2 {
		t.Fatalf("history has %d messages, want 2", got)
	}
}

func TestReconnectSyncsExactlyWhatWasMissed(t *testing.T) {
	n := startNode(t, t.TempDir())
	ctx := ctxT(t)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	bobTok := login(t, n, bob, "phone")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)

	// Bob is online for the first messages, then goes away with his cursor.
	cb := dial(t, []string{n.WSURL()}, bobTok, 0)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := ca.Send(ctx, dm.ID, fmt.Sprintf("before %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	seen := collect(t, cb, "online part", func(evs []wire.Event) bool { return len(messages(evs)) == 5 })
	waitCursor(t, cb, seen[len(seen)-1].Index-1)
	cursor := cb.Cursor()
	cb.Close()

	// While he is away: more in the DM, and 3 new groups with messages.
	var missed int
	for i := range 7 {
		if _, err := ca.Send(ctx, dm.ID, fmt.Sprintf("after %d", i)); err != nil {
			t.Fatal(err)
		}
		missed++
	}
	for g := range 3 {
		grp, err := ca.CreateGroup(ctx, fmt.Sprintf("g%d", g), []uint64{bob.user})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			if _, err := ca.Send(ctx, grp.ID, fmt.Sprintf("g%d m%d", g, i)); err != nil {
				t.Fatal(err)
			}
			missed++
		}
	}
	cb2 := dial(t, []string{n.WSURL()}, bobTok, cursor)
	lastSeen := seen[len(seen)-1]
	fresh := func(e wire.Event) bool { return e.Conv != dm.ID || e.Seq > lastSeen.Seq }
	got := collect(t, cb2, "resync", func(evs []wire.Event) bool {
		k := 0
		for _, e := range messages(evs) {
			if fresh(e) {
				k++
			}
		}
		return k == missed
	})
	checkOrder(t, got)
	// The cursor may trail by the events of one log index (events sharing an
	// index may still be in flight when it advances), never by more.
	for _, e := range got {
		if !fresh(e) && e.Index <= cursor {
			t.Fatalf("re-downloaded event below the cursor %d: %+v", cursor, e)
		}
	}
	// Nothing more arrives: exactly what was missed.
	select {
	case e := <-cb2.Events():
		t.Fatalf("unexpected extra event %+v", e)
	case <-time.After(300 * time.Millisecond):
	}
}

func waitCursor(t *testing.T, c *client.Client, atLeast uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Cursor() < atLeast {
		if time.Now().After(deadline) {
			t.Fatalf("cursor stuck at %d, want >= %d", c.Cursor(), atLeast)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
