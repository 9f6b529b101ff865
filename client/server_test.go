package client

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"parley/wire"
)

// testCluster is a small but real Parley server for these tests: the wire
// protocol over gws, with state (users, conversations, an event log with a
// per-conversation seq and a global index, dedup by cmid, sync and history
// paging) shared by any number of nodes, as in a replicated cluster. Knobs
// inject the faults the client must survive.
type testCluster struct {
	// mu guards everything below. It is held while events are pushed so that
	// pushes leave in index order, as a node's apply loop would send them.
	mu        sync.Mutex
	idx       uint64
	users     map[uint64]string // id → username
	tokens    map[string]uint64
	convs     map[uint64]*testConv
	nextConv  uint64
	nodes     []*testNode
	sendsSeen map[string]int // cmid → send requests received

	// Knobs and counters.
	syncConvs    int                       // conversations per sync page
	syncEvents   int                       // events per conversation in a sync page
	dropReply    map[string]bool           // cmid → apply, then drop the connection instead of replying (once)
	failSend     map[string]wire.Code      // cmid → refuse the first send with this code (once)
	failRetryMS  int64                     // retry_ms on those refusals
	sendOrder    []string                  // cmids of send requests, in arrival order
	skipPush     func(ev *wire.Event) bool // matching events are not pushed live
	dupPush      bool                      // push every live event twice
	slowUserGet  bool                      // answer user.get from a goroutine after a random delay
	replyBytes   int                       // history and sync pages stop before this many bytes of items (0: no bound)
	convListMax  int                       // conversations per conv.list page (0: the request's limit)
	membersPage  int                       // members per conv.get page (0: all)
	busyReads    int                       // answer this many reads busy before serving them
	afterHello   func()                    // runs once, right after the next connection got its hello
	historyCalls int
	syncCalls    int
	minIdx       map[string]uint64 // request type → min_idx of the latest such request
}

type testConv struct {
	id      uint64
	kind    string
	name    string
	members map[uint64]bool
	admins  map[uint64]bool
	events  []wire.Event
	cmids   map[string]int // "user/cmid" → index in events
}

func newCluster(t testing.TB, nodes int) *testCluster {
	t.Helper()
	cl := &testCluster{
		users:      make(map[uint64]string),
		tokens:     make(map[string]uint64),
		convs:      make(map[uint64]*testConv),
		sendsSeen:  make(map[string]int),
		dropReply:  make(map[string]bool),
		failSend:   make(map[string]wire.Code),
		syncConvs:  wire.MaxSyncConvs,
		syncEvents: wire.SyncEventsPerConv,
	}
	for i := range nodes {
		cl.nodes = append(cl.nodes, cl.startNode(t, fmt.Sprintf("n%d", i+1)))
	}
	return cl
}

// addUser registers a user and returns its id and token.
func (cl *testCluster) addUser(name string) (uint64, string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	id := uint64(len(cl.users) + 1)
	cl.users[id] = name
	tok := "tok-" + name
	cl.tokens[tok] = id
	return id, tok
}

func (cl *testCluster) revoke(tok string) {
	cl.mu.Lock()
	delete(cl.tokens, tok)
	cl.mu.Unlock()
}

func (cl *testCluster) set(f func(cl *testCluster)) {
	cl.mu.Lock()
	f(cl)
	cl.mu.Unlock()
}

func (cl *testCluster) get(f func(cl *testCluster) int) int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return f(cl)
}

func (cl *testCluster) index() uint64 {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.idx
}

// group creates a group directly in the state, as if another device did.
func (cl *testCluster) group(owner uint64, name string, users ...uint64) uint64 {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	c := cl.newConvLocked(wire.ConvGroup, name, append([]uint64{owner}, users...))
	c.admins[owner] = true
	cl.appendLocked(c, wire.Event{Kind: wire.KindCreated, From: owner, Name: name, Users: users})
	return c.id
}

// post appends a message directly, as if another device of from sent it.
func (cl *testCluster) post(from, conv uint64, body string) wire.Event {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.appendLocked(cl.convs[conv], wire.Event{Kind: wire.KindMessage, From: from, Body: body})
}

func (cl *testCluster) newConvLocked(kind, name string, members []uint64) *testConv {
	cl.nextConv++
	c := &testConv{id: cl.nextConv, kind: kind, name: name, members: map[uint64]bool{},
		admins: map[uint64]bool{}, cmids: map[string]int{}}
	for _, u := range members {
		c.members[u] = true
	}
	cl.convs[c.id] = c
	return c
}

// postAll appends a message to each of convs in one entry: they share its
// index, as sends batched into one Raft entry do.
func (cl *testCluster) postAll(from uint64, body string, convs ...uint64) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.idx++
	for _, conv := range convs {
		cl.appendAtLocked(cl.convs[conv], wire.Event{Kind: wire.KindMessage, From: from, Body: body}, cl.idx)
	}
}

// appendLocked commits ev to c (seq, index, time) and pushes it to every
// connection of every member on every node.
func (cl *testCluster) appendLocked(c *testConv, ev wire.Event) wire.Event {
	cl.idx++
	return cl.appendAtLocked(c, ev, cl.idx)
}

func (cl *testCluster) appendAtLocked(c *testConv, ev wire.Event, idx uint64) wire.Event {
	ev.Conv, ev.Seq, ev.Index, ev.Ts = c.id, uint64(len(c.events)+1), idx, int64(idx)
	c.events = append(c.events, ev)
	if cl.skipPush != nil && cl.skipPush(&ev) {
		return ev
	}
	push := ev
	push.Type = wire.TypeEvent
	b, err := wire.Marshal(&push)
	if err != nil {
		panic(err)
	}
	for _, n := range cl.nodes {
		for _, conn := range n.connsOf(c.members) {
			_ = conn.WriteMessage(gws.OpcodeBinary, b)
			if cl.dupPush {
				_ = conn.WriteMessage(gws.OpcodeBinary, b)
			}
		}
	}
	return ev
}

func (c *testConv) info() *wire.ConvInfo {
	in := &wire.ConvInfo{ID: c.id, Kind: c.kind, Name: c.name, LastSeq: uint64(len(c.events))}
	for u := range c.members {
		in.Members = append(in.Members, u)
	}
	for u := range c.admins {
		in.Admins = append(in.Admins, u)
	}
	slices.Sort(in.Members)
	slices.Sort(in.Admins)
	if len(c.events) > 0 {
		in.LastIndex = c.events[len(c.events)-1].Index
		in.CreatedAt = c.events[0].Ts
	}
	return in
}

// testNode is one node of the cluster: an HTTP listener upgrading to gws.
type testNode struct {
	cl       *testCluster
	name     string
	url      string
	srv      *http.Server
	up       *gws.Upgrader
	refuse   atomic.Bool  // answer 503 to new connections
	muted    atomic.Bool  // stop answering and pinging, keep the sockets open (a hung node)
	ignored  atomic.Int32 // pings left unanswered while muted
	upgrades atomic.Int32 // handshakes attempted
	pingMS   int64        // advertised in hello and honoured when > 0
	stopPing chan struct{}

	mu    sync.Mutex // guards conns
	conns map[*gws.Conn]uint64
}

func (cl *testCluster) startNode(t testing.TB, name string) *testNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{cl: cl, name: name, url: "ws://" + ln.Addr().String() + "/v1/ws",
		conns: map[*gws.Conn]uint64{}, stopPing: make(chan struct{})}
	n.up = gws.NewUpgrader(n, &gws.ServerOption{ReadMaxPayloadSize: wire.MaxFrameBytes})
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/ws", n.serveWS)
	n.srv = &http.Server{Handler: mux}
	go func() { _ = n.srv.Serve(ln) }()
	t.Cleanup(n.kill)
	return n
}

func (n *testNode) serveWS(w http.ResponseWriter, r *http.Request) {
	n.upgrades.Add(1)
	if n.refuse.Load() {
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if tok == "" {
		tok = r.URL.Query().Get("token")
	}
	n.cl.mu.Lock()
	user, ok := n.cl.tokens[tok]
	n.cl.mu.Unlock()
	if !ok {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	conn, err := n.up.Upgrade(w, r)
	if err != nil {
		return
	}
	conn.Session().Store("user", user)
	// Hello goes out before the connection is registered for pushes, under
	// the cluster lock, so it is the first frame.
	n.cl.mu.Lock()
	n.reply(conn, &wire.Hello{Type: wire.TypeHello, User: user, Device: 1, Node: n.name,
		Index: n.cl.idx, PingMS: n.pingMS, Protocol: 1,
		Limits: wire.Limits{MaxFrameBytes: wire.MaxFrameBytes, MaxBodyBytes: wire.MaxBodyBytes}})
	n.mu.Lock()
	n.conns[conn] = user
	n.mu.Unlock()
	after := n.cl.afterHello
	n.cl.afterHello = nil
	n.cl.mu.Unlock()
	if after != nil {
		after()
	}
	go conn.ReadLoop()
}

func (n *testNode) connsOf(members map[uint64]bool) []*gws.Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*gws.Conn
	for c, u := range n.conns {
		if members[u] {
			out = append(out, c)
		}
	}
	return out
}

// dropConns closes every open connection; the node keeps listening.
func (n *testNode) dropConns() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for c := range n.conns {
		_ = c.NetConn().Close()
	}
}

// kill stops the node: no listener, no connections.
func (n *testNode) kill() {
	_ = n.srv.Close()
	n.dropConns()
	select {
	case <-n.stopPing:
	default:
		close(n.stopPing)
	}
}

// startPings makes the node ping its connections every pingMS.
func (n *testNode) startPings() {
	go func() {
		tick := time.NewTicker(time.Duration(n.pingMS) * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-n.stopPing:
				return
			}
			if n.muted.Load() {
				continue
			}
			n.mu.Lock()
			conns := make([]*gws.Conn, 0, len(n.conns))
			for c := range n.conns {
				conns = append(conns, c)
			}
			n.mu.Unlock()
			for _, c := range conns {
				_ = c.WritePing(nil)
			}
		}
	}()
}

func (n *testNode) reply(conn *gws.Conn, v any) {
	b, err := wire.Marshal(v)
	if err != nil {
		panic(err)
	}
	_ = conn.WriteMessage(gws.OpcodeBinary, b)
}

func (n *testNode) OnOpen(*gws.Conn) {}

func (n *testNode) OnClose(conn *gws.Conn, _ error) {
	n.mu.Lock()
	delete(n.conns, conn)
	n.mu.Unlock()
}

func (n *testNode) OnPing(conn *gws.Conn, p []byte) { _ = conn.WritePong(p) }
func (n *testNode) OnPong(*gws.Conn, []byte)        {}

func (n *testNode) OnMessage(conn *gws.Conn, msg *gws.Message) {
	defer msg.Close()
	var req wire.Request
	e := wire.DecodeRequest(msg.Bytes(), &req)
	if n.muted.Load() {
		if req.Type == wire.TypePing {
			n.ignored.Add(1)
		}
		return
	}
	if e != nil {
		n.reply(conn, wire.ErrorReply(req.ID, e))
		return
	}
	v, _ := conn.Session().Load("user")
	user := v.(uint64)
	if req.Type == wire.TypeUserGet && n.slowUserGet() {
		go func() {
			time.Sleep(time.Duration(rand.N(2000)) * time.Microsecond)
			n.reply(conn, n.handle(conn, user, &req))
		}()
		return
	}
	if rep := n.handle(conn, user, &req); rep != nil {
		n.reply(conn, rep)
	}
}

func (n *testNode) slowUserGet() bool {
	n.cl.mu.Lock()
	defer n.cl.mu.Unlock()
	return n.cl.slowUserGet
}

// handle applies one validated request and returns its reply (nil: none).
func (n *testNode) handle(conn *gws.Conn, user uint64, req *wire.Request) *wire.Reply {
	cl := n.cl
	cl.mu.Lock()
	defer cl.mu.Unlock()
	fail := func(code wire.Code, msg string) *wire.Reply { return wire.ErrorReply(req.ID, wire.Errorf(code, msg)) }
	ok := &wire.Reply{Type: wire.TypeOK, ID: req.ID}
	if cl.minIdx == nil {
		cl.minIdx = make(map[string]uint64)
	}
	cl.minIdx[req.Type] = req.MinIndex
	member := func() (*testConv, *wire.Reply) {
		c := cl.convs[req.Conv]
		if c == nil {
			return nil, fail(wire.CodeNotFound, "no such conversation")
		}
		if !c.members[user] {
			return nil, fail(wire.CodeNotMember, "not a member")
		}
		return c, nil
	}
	admin := func() (*testConv, *wire.Reply) {
		c, e := member()
		if e != nil {
			return nil, e
		}
		if c.kind != wire.ConvGroup || !c.admins[user] {
			return nil, fail(wire.CodeForbidden, "admins only")
		}
		return c, nil
	}

	switch req.Type {
	case wire.TypeHistory, wire.TypeSync, wire.TypeConvGet, wire.TypeConvList, wire.TypeUserGet:
		if cl.busyReads > 0 {
			cl.busyReads--
			return fail(wire.CodeBusy, "injected")
		}
	}
	switch req.Type {
	case wire.TypePing:
		return ok
	case wire.TypeSend:
		cl.sendsSeen[req.ClientMsgID]++
		cl.sendOrder = append(cl.sendOrder, req.ClientMsgID)
		c, e := member()
		if e != nil {
			return e
		}
		if code, found := cl.failSend[req.ClientMsgID]; found {
			delete(cl.failSend, req.ClientMsgID)
			e := wire.Errorf(code, "injected")
			e.RetryMS = cl.failRetryMS
			return wire.ErrorReply(req.ID, e)
		}
		key := fmt.Sprintf("%d/%s", user, req.ClientMsgID)
		if i, dup := c.cmids[key]; dup {
			ev := c.events[i]
			ok.ClientMsgID, ok.Conv, ok.Seq, ok.Ts, ok.Index, ok.Duplicate = ev.ClientMsgID, ev.Conv, ev.Seq, ev.Ts, ev.Index, true
			return ok
		}
		ev := cl.appendLocked(c, wire.Event{Kind: wire.KindMessage, From: user, Device: 1,
			ClientMsgID: req.ClientMsgID, Body: req.Body, ReplyTo: req.ReplyTo})
		c.cmids[key] = int(ev.Seq - 1)
		if cl.dropReply[req.ClientMsgID] {
			delete(cl.dropReply, req.ClientMsgID)
			_ = conn.NetConn().Close()
			return nil
		}
		ok.ClientMsgID, ok.Conv, ok.Seq, ok.Ts, ok.Index = ev.ClientMsgID, ev.Conv, ev.Seq, ev.Ts, ev.Index
		return ok
	case wire.TypeDirectOpen:
		if _, found := cl.users[req.User]; !found {
			return fail(wire.CodeNotFound, "no such user")
		}
		for _, c := range cl.convs {
			if c.kind == wire.ConvDirect && c.members[user] && c.members[req.User] {
				ok.Info = c.info()
				return ok
			}
		}
		c := cl.newConvLocked(wire.ConvDirect, "", []uint64{user, req.User})
		cl.appendLocked(c, wire.Event{Kind: wire.KindCreated, From: user, Users: []uint64{user, req.User}})
		ok.Info = c.info()
		return ok
	case wire.TypeGroupCreate:
		c := cl.newConvLocked(wire.ConvGroup, req.Name, append([]uint64{user}, req.Users...))
		c.admins[user] = true
		cl.appendLocked(c, wire.Event{Kind: wire.KindCreated, From: user, Name: req.Name, Users: req.Users})
		ok.Info = c.info()
		return ok
	case wire.TypeGroupAdd:
		c, e := admin()
		if e != nil {
			return e
		}
		for _, u := range req.Users {
			c.members[u] = true
		}
		cl.appendLocked(c, wire.Event{Kind: wire.KindMemberAdded, From: user, Users: req.Users})
		ok.Info = c.info()
		return ok
	case wire.TypeGroupRemove, wire.TypeGroupLeave:
		var c *testConv
		var e *wire.Reply
		kind, target := wire.KindMemberRemoved, req.User
		if req.Type == wire.TypeGroupLeave {
			c, e = member()
			kind, target = wire.KindMemberLeft, user
		} else {
			c, e = admin()
		}
		if e != nil {
			return e
		}
		if !c.members[target] {
			return fail(wire.CodeNotMember, "not a member")
		}
		cl.appendLocked(c, wire.Event{Kind: kind, From: user, Users: []uint64{target}})
		delete(c.members, target)
		delete(c.admins, target)
		ok.Info = c.info()
		return ok
	case wire.TypeGroupAdmin:
		c, e := admin()
		if e != nil {
			return e
		}
		if req.Admin {
			c.admins[req.User] = true
		} else {
			delete(c.admins, req.User)
		}
		cl.appendLocked(c, wire.Event{Kind: wire.KindAdminChanged, From: user, Users: []uint64{req.User}, Admin: req.Admin})
		ok.Info = c.info()
		return ok
	case wire.TypeGroupRename:
		c, e := admin()
		if e != nil {
			return e
		}
		c.name = req.Name
		cl.appendLocked(c, wire.Event{Kind: wire.KindRenamed, From: user, Name: req.Name})
		ok.Info = c.info()
		return ok
	case wire.TypeConvGet:
		c, e := member()
		if e != nil {
			return e
		}
		ok.Info = c.info()
		if cl.membersPage > 0 { // members with ids above after, a page of them
			all, admins := ok.Info.Members, ok.Info.Admins
			ok.Info.Members, ok.Info.Admins, ok.Info.MemberCount = nil, nil, len(all)
			for _, u := range all {
				if u <= req.After {
					continue
				}
				if len(ok.Info.Members) == cl.membersPage {
					ok.More, ok.Next = true, ok.Info.Members[len(ok.Info.Members)-1]
					break
				}
				ok.Info.Members = append(ok.Info.Members, u)
				if slices.Contains(admins, u) {
					ok.Info.Admins = append(ok.Info.Admins, u)
				}
			}
		}
		return ok
	case wire.TypeConvList:
		// The most recently active first; a page after (after, after_conv).
		var all []wire.ConvInfo
		for _, c := range cl.convs {
			if c.members[user] {
				all = append(all, *c.info())
			}
		}
		sort.Slice(all, func(i, j int) bool {
			if all[i].LastIndex != all[j].LastIndex {
				return all[i].LastIndex > all[j].LastIndex
			}
			return all[i].ID > all[j].ID
		})
		limit := req.Limit
		if cl.convListMax > 0 {
			limit = min(limit, cl.convListMax)
		}
		for _, ci := range all {
			if req.AfterConv != 0 && (ci.LastIndex > req.After || (ci.LastIndex == req.After && ci.ID >= req.AfterConv)) {
				continue
			}
			if len(ok.Convs) == limit {
				last := ok.Convs[len(ok.Convs)-1]
				ok.More, ok.Next, ok.NextConv = true, last.LastIndex, last.ID
				break
			}
			ok.Convs = append(ok.Convs, ci)
		}
		return ok
	case wire.TypeHistory:
		cl.historyCalls++
		c, e := member()
		if e != nil {
			return e
		}
		var evs []wire.Event // in the page's order
		if req.Dir == wire.DirAfter {
			evs = c.events[min(int(req.Seq), len(c.events)):]
		} else {
			to := len(c.events)
			if req.Seq != 0 {
				to = min(int(req.Seq)-1, len(c.events))
			}
			evs = slices.Clone(c.events[:to])
			slices.Reverse(evs)
		}
		ok.Events, ok.More = cl.fitLocked(evs, req.Limit, 0, true)
		return ok
	case wire.TypeSync:
		cl.syncCalls++
		return cl.syncLocked(user, req, ok)
	case wire.TypeUserGet:
		for id, name := range cl.users {
			if id == req.User || (req.User == 0 && name == req.Name) {
				ok.UserInfo = &wire.UserInfo{ID: id, Username: name}
				return ok
			}
		}
		return fail(wire.CodeNotFound, "no such user")
	}
	return fail(wire.CodeUnknownType, "not implemented by the test server")
}

// fitLocked returns the first of evs that make a page: at most limit, and
// under replyBytes with used bytes already on the page (at least one event
// if first: nothing else is on the page); more if any are left out.
func (cl *testCluster) fitLocked(evs []wire.Event, limit, used int, first bool) ([]wire.Event, bool) {
	n := 0
	for n < len(evs) && n < limit {
		size := wire.EventLen(&evs[n])
		if cl.replyBytes > 0 && used+size > cl.replyBytes && (n > 0 || !first) {
			break
		}
		used += size
		n++
	}
	return slices.Clone(evs[:n]), n < len(evs)
}

// syncLocked answers a sync the way the server does (docs/PROTOCOL.md):
// conversations changed after since, ordered by their last event index and
// id, starting after the page position (after, after_conv), at most limit
// of them and no more than fit in replyBytes; a page ending inside a group
// of conversations with the same last index backs off to the group's
// start, or splits it with next_conv if the group starts the page. Each
// conversation's events are those after since, whatever the page.
func (cl *testCluster) syncLocked(user uint64, req *wire.Request, ok *wire.Reply) *wire.Reply {
	type cand struct {
		c     *testConv
		first int
		last  uint64
	}
	from, afterConv := max(req.Since, req.After), req.AfterConv
	if req.After <= req.Since {
		afterConv = 0
	}
	var cands []cand
	for _, c := range cl.convs {
		if !c.members[user] || len(c.events) == 0 {
			continue
		}
		last := c.events[len(c.events)-1].Index
		if last < from || (last == from && (afterConv == 0 || c.id <= afterConv)) {
			continue
		}
		i := sort.Search(len(c.events), func(i int) bool { return c.events[i].Index > req.Since })
		cands = append(cands, cand{c, i, last})
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].last != cands[j].last {
			return cands[i].last < cands[j].last
		}
		return cands[i].c.id < cands[j].c.id
	})
	limit := min(req.Limit, cl.syncConvs)
	used := 0
	for _, cd := range cands {
		if len(ok.Changes) == limit {
			break
		}
		cs := wire.ConvSync{Info: *cd.c.info()}
		size := wire.ConvSyncLen(&cs) + 2
		if cl.replyBytes > 0 && used+size > cl.replyBytes && len(ok.Changes) > 0 {
			break
		}
		evs := cd.c.events[cd.first:]
		if len(evs) > 0 {
			cs.Events, cs.More = cl.fitLocked(evs, cl.syncEvents, used+size, len(ok.Changes) == 0)
			if len(cs.Events) == 0 {
				break
			}
			size += wire.EventsLen(cs.Events) - 1
		}
		used += size
		ok.Changes = append(ok.Changes, cs)
		if cs.More && len(cs.Events) < cl.syncEvents {
			break // cut by bytes: the page is full
		}
	}
	n := len(ok.Changes)
	if n == len(cands) {
		ok.Next = cl.idx
		return ok
	}
	ok.More = true
	if boundary := cands[n-1].last; cands[n].last == boundary {
		start := n - 1
		for start > 0 && cands[start-1].last == boundary {
			start--
		}
		if start > 0 {
			n = start
			ok.Changes = ok.Changes[:n]
		} else {
			ok.NextConv = cands[n-1].c.id
		}
	}
	ok.Next = cands[n-1].last
	return ok
}
