package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"parley/client"
	"parley/wire"
)

// session is one client's view of the cluster: the highest log index it
// has seen (min_idx), carried from node to node as the SDK carries it
// across reconnects, and the history of its own acknowledged writes that
// every later read must show.
type session struct {
	t       *testing.T
	min     uint64
	acked   []uint64        // seqs of its acknowledged sends in its conversation, ascending
	devices map[uint64]bool // its devices, from acknowledged logins
	hide    bool            // its last acknowledged privacy setting
	users   []uint64        // users it registered (acknowledged)
	reads   int             // reads checked
	retries int             // reads answered unavailable or busy and asked again
}

func (s *session) observe(idx uint64) { s.min = max(s.min, idx) }

// read sends req on cl carrying the session's min_idx, asking again while
// the answer is retryable (unavailable: the node has not applied min_idx
// in time, or the leader is changing; busy). Any other answer is returned
// for checking: a read that answers at all must be current.
func (s *session) read(cl *client.Client, req wire.Request) *wire.Reply {
	s.t.Helper()
	for attempt := 0; ; attempt++ {
		req.MinIndex = s.min
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		rep, err := cl.Request(ctx, &req)
		cancel()
		if err == nil {
			s.reads++
			s.observe(cl.MinIndex())
			return rep
		}
		if attempt == 50 || !client.Retryable(err) {
			s.t.Fatalf("%s (min_idx %d): %v", req.Type, s.min, err)
		}
		s.retries++
		time.Sleep(50 * time.Millisecond)
	}
}

// post is an accounts API call with the session's min_idx; a retryable
// answer (503: no leader during an election) is asked again. It returns
// the final status.
func (s *session) post(addr, path string, withMin bool, in, out any) int {
	s.t.Helper()
	b, _ := json.Marshal(in)
	hc := http.Client{Timeout: 20 * time.Second}
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if withMin {
			req.Header.Set("Parley-Min-Index", strconv.FormatUint(s.min, 10))
		}
		resp, err := hc.Do(req)
		if err == nil {
			if resp.StatusCode < 300 && out != nil {
				err = json.NewDecoder(resp.Body).Decode(out)
			}
			resp.Body.Close()
		}
		switch {
		case err != nil:
		case resp.StatusCode == http.StatusServiceUnavailable:
			s.retries++
		default:
			return resp.StatusCode
		}
		if attempt == 50 {
			s.t.Fatalf("POST %s on %s: %v", path, addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type accountReply struct {
	UserID   uint64 `json:"user_id"`
	DeviceID uint64 `json:"device_id"`
	Token    string `json:"token"`
	Index    uint64 `json:"idx"`
}

// TestReadYourWritesEveryNode: a client alternates nodes between every
// write and the read that follows it, under background traffic, through
// two leadership transfers and a kill -9 of the leader, and every read is checked against the
// history of the client's own acknowledged writes (and what it has seen):
//   - register on A, then login on B at once: 200 the first time, never
//     401 (the client sends nothing special); presence.sub of that user
//     on C finds it;
//   - send on A, then sync and history on B and C: the message is there,
//     and so is every earlier acknowledged one;
//   - login with a new device on A, then device.list on B: the device is
//     there;
//   - privacy.set on A, then user.get of oneself on B: the new setting.
//
// Reads carry the session's min_idx (the highest idx of its replies and
// events), as the SDK does across reconnects; a read may be told
// "unavailable" and asked again, but an answer is never stale. The test
// waits for conditions only; nothing depends on timing.
func TestReadYourWritesEveryNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three node processes")
	}
	c := startCluster(t)
	ctx := ctxFor(t, 5*time.Minute)

	// Background traffic: two users chatting through two other nodes.
	bg := []*user{c.newUser(t, "background0", 1), c.newUser(t, "background1", 2)}
	dm, err := bg[0].cl.OpenDirect(ctx, bg[1].id)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range bg {
		u.convs = append(u.convs, dm.ID)
	}
	tr := &traffic{byHome: make(map[int]int), stop: make(chan struct{})}
	for _, u := range bg {
		tr.wg.Add(1)
		go tr.run(t, u)
	}
	defer func() {
		close(tr.stop)
		tr.wg.Wait()
		for _, u := range bg {
			u.cl.Close()
		}
	}()

	// The client under test: "me", one device and one connection per
	// node, so that it can pick the node of every request.
	s := &session{t: t, devices: make(map[uint64]bool)}
	var reg accountReply
	if code := s.post(c.nodes[0].HTTPAddr, "/v1/register", false, map[string]string{"username": "mine", "password": "pw-me-123"}, &reg); code != http.StatusCreated {
		t.Fatalf("register me: HTTP %d", code)
	}
	s.observe(reg.Index)
	me := reg.UserID
	cls := make([]*client.Client, len(c.nodes))
	for i, d := range c.nodes {
		var lg accountReply
		if code := s.post(d.HTTPAddr, "/v1/login", false, map[string]string{"username": "mine", "password": "pw-me-123", "device": "node-" + d.name}, &lg); code != http.StatusOK {
			t.Fatalf("login me on %s: HTTP %d", d.name, code)
		}
		s.observe(lg.Index)
		s.devices[lg.DeviceID] = true
		cl, err := client.Dial(ctxFor(t, 30*time.Second), client.Config{
			URLs: []string{d.WS}, Token: lg.Token, MinIndex: s.min,
			RequestTimeout: 10 * time.Second, ReconnectMax: 300 * time.Millisecond,
		})
		if err != nil {
			t.Fatalf("dial %s: %v", d.name, err)
		}
		t.Cleanup(func() { cl.Close() })
		cls[i] = cl
	}
	var peer accountReply
	if code := s.post(c.nodes[1].HTTPAddr, "/v1/register", false, map[string]string{"username": "peer", "password": "pw-peer-123"}, &peer); code != http.StatusCreated {
		t.Fatalf("register peer: HTTP %d", code)
	}
	s.observe(peer.Index)
	conv := s.read(cls[2], wire.Request{Type: wire.TypeDirectOpen, User: peer.UserID}).Info.ID

	const rounds = 24
	for i := range rounds {
		switch i {
		case rounds / 4, 3 * rounds / 4:
			lead := c.leader(t, c.nodes...)
			t.Logf("round %d: transfer leadership away from %s", i, lead.name)
			if err := c.admin(lead).TransferLeader(ctxFor(t, 30*time.Second), ""); err != nil {
				t.Logf("transfer leadership: %v (the rounds go on either way)", err)
			}
		case rounds / 2:
			// The leader dies (kill -9) and comes back on its data: the
			// session's client on it reconnects, and what it reads there
			// and elsewhere must still include everything acknowledged.
			lead := c.leader(t, c.nodes...)
			t.Logf("round %d: kill -9 the leader %s, then restart it", i, lead.name)
			lead.Kill9()
			c.leader(t, without(c.nodes, lead)...)
			lead.restart(t)
			if err := lead.WaitReady(); err != nil {
				t.Fatalf("%s after restart: %v", lead.name, err)
			}
		}
		ai, bi, ci := i%3, (i+1)%3, (i+2)%3
		a, b := c.nodes[ai], c.nodes[bi]

		// 1. Register on A, log in on B at once, as a new user would.
		name := fmt.Sprintf("new%d", i)
		var nr accountReply
		if code := s.post(a.HTTPAddr, "/v1/register", false, map[string]string{"username": name, "password": "pw-" + name + "-123"}, &nr); code != http.StatusCreated {
			t.Fatalf("round %d: register %s on %s: HTTP %d", i, name, a.name, code)
		}
		s.observe(nr.Index)
		s.users = append(s.users, nr.UserID)
		var nl accountReply
		if code := s.post(b.HTTPAddr, "/v1/login", false, map[string]string{"username": name, "password": "pw-" + name + "-123"}, &nl); code != http.StatusOK {
			t.Errorf("round %d: login of %s on %s right after registering on %s: HTTP %d, want 200", i, name, b.name, a.name, code)
		}
		// presence.sub of the new user on C finds it.
		if rep := s.read(cls[ci], wire.Request{Type: wire.TypePresenceSub, Users: []uint64{nr.UserID}}); rep.Type != wire.TypeOK {
			t.Errorf("round %d: presence.sub of %s (registered on %s) on %s: %s %s", i, name, a.name, c.nodes[ci].name, rep.Code, rep.Message)
		}

		// 2. Send on A; sync on B and history on C show it and every
		// earlier acknowledged send.
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		ack, err := cls[ai].SendWithID(sctx, conv, fmt.Sprintf("me-%d", i), fmt.Sprintf("round %d", i))
		cancel()
		if err != nil {
			t.Fatalf("round %d: send on %s: %v", i, a.name, err)
		}
		s.observe(ack.Index)
		s.acked = append(s.acked, ack.Seq)
		s.checkSync(i, cls[bi], b.name, conv, ack.Index-1)
		s.checkHistory(i, cls[ci], c.nodes[ci].name, conv)
		s.checkHistory(i, cls[bi], b.name, conv)

		// 3. Every other round, a login with a new device on A, then
		// device.list on B.
		if i%2 == 0 {
			var lg accountReply
			if code := s.post(a.HTTPAddr, "/v1/login", true, map[string]string{"username": "mine", "password": "pw-me-123", "device": fmt.Sprintf("d%d", i)}, &lg); code != http.StatusOK {
				t.Fatalf("round %d: login me on %s: HTTP %d", i, a.name, code)
			}
			s.observe(lg.Index)
			s.devices[lg.DeviceID] = true
			s.checkDevices(i, cls[bi], b.name)
		}

		// 4. privacy.set on A, then user.get of oneself on B.
		hide := i%2 == 0
		s.read(cls[ai], wire.Request{Type: wire.TypePrivacySet, Hide: hide, GroupAdd: wire.GroupAddEveryone})
		s.hide = hide
		rep := s.read(cls[bi], wire.Request{Type: wire.TypeUserGet, User: me})
		if rep.Type != wire.TypeOK || rep.UserInfo == nil || rep.UserInfo.HideLastSeen != s.hide {
			t.Errorf("round %d: user.get of oneself on %s after privacy.set hide=%v on %s: %+v", i, b.name, hide, a.name, rep.UserInfo)
		}
	}
	if tr.acked(1)+tr.acked(2) == 0 {
		t.Errorf("no background traffic was acknowledged")
	}
	t.Logf("%d rounds: %d reads checked, %d retryable answers asked again, %d background sends, session index %d",
		rounds, s.reads, s.retries, tr.acked(1)+tr.acked(2), s.min)
}

// checkSync pages through sync from since on cl and checks that conv is
// there with every acknowledged send after since.
func (s *session) checkSync(round int, cl *client.Client, node string, conv, since uint64) {
	s.t.Helper()
	var seqs []uint64
	var lastSeq uint64
	after, afterConv := uint64(0), uint64(0)
	for {
		rep := s.read(cl, wire.Request{Type: wire.TypeSync, Since: since, After: after, AfterConv: afterConv})
		if rep.Type != wire.TypeOK {
			s.t.Fatalf("round %d: sync on %s: %s %s", round, node, rep.Code, rep.Message)
		}
		for _, cs := range rep.Changes {
			if cs.Info.ID != conv {
				continue
			}
			lastSeq = max(lastSeq, cs.Info.LastSeq)
			for _, ev := range cs.Events {
				seqs = append(seqs, ev.Seq)
			}
		}
		if !rep.More || !wire.SyncAdvanced(after, afterConv, rep.Next, rep.NextConv) {
			break
		}
		after, afterConv = rep.Next, rep.NextConv
	}
	want := s.acked[len(s.acked)-1]
	if lastSeq < want {
		s.t.Errorf("round %d: sync on %s from %d: conversation last seq %d, below the acknowledged send %d", round, node, since, lastSeq, want)
	}
	if len(seqs) > 0 && !slices.Contains(seqs, want) && seqs[len(seqs)-1] < want {
		s.t.Errorf("round %d: sync on %s from %d: events %v stop before the acknowledged send %d", round, node, since, seqs, want)
	}
}

// checkHistory reads the latest page of conv's history on cl and checks
// that every acknowledged send it should cover is in it.
func (s *session) checkHistory(round int, cl *client.Client, node string, conv uint64) {
	s.t.Helper()
	rep := s.read(cl, wire.Request{Type: wire.TypeHistory, Conv: conv, Dir: wire.DirBefore, Limit: wire.MaxHistoryLimit})
	if rep.Type != wire.TypeOK {
		s.t.Fatalf("round %d: history on %s: %s %s", round, node, rep.Code, rep.Message)
	}
	have := make(map[uint64]bool)
	var lowest uint64 = 1<<64 - 1
	for _, ev := range rep.Events {
		have[ev.Seq] = true
		lowest = min(lowest, ev.Seq)
	}
	for _, seq := range s.acked {
		if (seq >= lowest || !rep.More) && !have[seq] {
			s.t.Errorf("round %d: history on %s lacks the acknowledged send %d (page of %d events)", round, node, seq, len(rep.Events))
		}
	}
}

// checkDevices pages through device.list on cl and checks that every
// device of an acknowledged login is there.
func (s *session) checkDevices(round int, cl *client.Client, node string) {
	s.t.Helper()
	got := make(map[uint64]bool)
	var after uint64
	for {
		rep := s.read(cl, wire.Request{Type: wire.TypeDeviceList, After: after})
		if rep.Type != wire.TypeOK {
			s.t.Fatalf("round %d: device.list on %s: %s %s", round, node, rep.Code, rep.Message)
		}
		for _, d := range rep.Devices {
			got[d.ID] = true
		}
		if !rep.More || len(rep.Devices) == 0 {
			break
		}
		after = rep.Next
	}
	for d := range s.devices {
		if !got[d] {
			s.t.Errorf("round %d: device.list on %s lacks device %d of an acknowledged login", round, node, d)
		}
	}
}
