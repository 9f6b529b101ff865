package node_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"parley/client"
	"parley/internal/testwait"
	"parley/node"
	"parley/wire"
)

const testAdminToken = "test-admin-token-0123456789"

// testClusterKey is shared by the nodes of in-process test clusters: each
// would otherwise make its own DataDir/cluster.key, and refuse the others.
var testClusterKey = []byte("test-cluster-key-0123456789")

// openClusterNode opens a node that waits to be initialised or joined.
func openClusterNode(t *testing.T, root, id string) *node.Node {
	t.Helper()
	cfg := testConfig(filepath.Join(root, id))
	cfg.NodeID = id
	cfg.Bootstrap = false
	cfg.AdminToken = testAdminToken
	cfg.ClusterKey = testClusterKey
	n, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func adminOf(n *node.Node, token string) *client.Admin {
	return &client.Admin{Base: n.HTTPURL(), Token: token}
}

// adminCode is the HTTP status and code of an admin API refusal.
func adminCode(err error) (int, wire.Code) {
	var ae *client.AdminError
	if errors.As(err, &ae) {
		return ae.Status, ae.Code
	}
	return 0, ""
}

func wantAdminError(t *testing.T, what string, err error, status int, code wire.Code) {
	t.Helper()
	if s, c := adminCode(err); s != status || c != code {
		t.Fatalf("%s: %v; want HTTP %d %s", what, err, status, code)
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitMembers waits until n's status (members as the leader sees them, with
// their progress) satisfies ok, and returns it.
func waitMembers(t *testing.T, n *node.Node, what string, ok func(*wire.ClusterStatus) bool) *wire.ClusterStatus {
	t.Helper()
	var st *wire.ClusterStatus
	ctx := ctxT(t)
	var why string
	testwait.Eventually(t, what, func() bool {
		var err error
		st, err = adminOf(n, testAdminToken).Status(ctx)
		if err != nil {
			why = err.Error()
			return false
		}
		why = fmt.Sprintf("%+v", *st)
		return ok(st)
	}, testwait.Detail(func() string { return why }))
	return st
}

func member(st *wire.ClusterStatus, id string) (wire.ClusterMember, bool) {
	for _, m := range st.Members {
		if m.ID == id {
			return m, true
		}
	}
	return wire.ClusterMember{}, false
}

// agreed: every node names the same leader, which alone says it leads, and
// sees the voters ids with the leader's progress for each.
func agreed(t *testing.T, nodes []*node.Node, voters ...string) string {
	t.Helper()
	var leader string
	ctx := ctxT(t)
	var why string
	testwait.Eventually(t, fmt.Sprintf("agreement on a leader and voters %v", voters), func() bool {
		leader = ""
		leaders := 0
		for _, n := range nodes {
			st, err := adminOf(n, testAdminToken).Status(ctx)
			if err != nil {
				why = err.Error()
				return false
			}
			if st.Leader == "" || (leader != "" && st.Leader != leader) {
				why = fmt.Sprintf("%s names leader %q, another %q", st.Node, st.Leader, leader)
				return false
			}
			leader = st.Leader
			if st.State == "Leader" {
				leaders++
				if st.Node != st.Leader {
					why = fmt.Sprintf("%s leads but names %s", st.Node, st.Leader)
					return false
				}
			}
			if len(st.Members) != len(voters) || st.Warning != "" {
				why = fmt.Sprintf("%s sees %+v (%s)", st.Node, st.Members, st.Warning)
				return false
			}
			for _, id := range voters {
				m, ok := member(st, id)
				if !ok || m.Suffrage != "Voter" || m.Applied < 0 || m.Lag < 0 {
					why = fmt.Sprintf("%s sees %s as %+v", st.Node, id, m)
					return false
				}
			}
		}
		why = fmt.Sprintf("%d nodes say they lead", leaders)
		return leaders == 1
	}, testwait.Detail(func() string { return why }))
	return leader
}

// loginOn logs in on n, retrying while n has not applied the account yet.
func loginOn(t *testing.T, n *node.Node, a account, device string) string {
	t.Helper()
	var tok string
	var why string
	testwait.Eventually(t, "login of "+a.name, func() bool {
		var out struct {
			Token string `json:"token"`
		}
		code := postJSON(t, n.HTTPURL()+"/v1/login", map[string]string{"username": a.name, "password": a.password, "device": device}, &out)
		tok = out.Token
		why = fmt.Sprintf("HTTP %d", code)
		return code == http.StatusOK
	}, testwait.Detail(func() string { return why }))
	return tok
}

// appliedIndex is the last entry n's state holds (from /healthz).
func appliedIndex(t *testing.T, n *node.Node) uint64 {
	t.Helper()
	resp, err := http.Get(n.HTTPURL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h struct {
		Applied uint64 `json:"applied_index"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h.Applied
}

// catchUp waits until n has applied everything that from has applied: a token's
// device, added through the log, is known to n only from then on.
func catchUp(t *testing.T, n, from *node.Node) {
	t.Helper()
	want := appliedIndex(t, from)
	var why string
	testwait.Eventually(t, fmt.Sprintf("index %d applied", want), func() bool {
		got := appliedIndex(t, n)
		why = fmt.Sprintf("at %d", got)
		return got >= want
	}, testwait.Detail(func() string { return why }))
}

// wsHandshakeStatus is the HTTP status of a WebSocket upgrade with a token.
func wsHandshakeStatus(t *testing.T, wsURL, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http"+strings.TrimPrefix(wsURL, "ws")+"?token="+token, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestClusterAdmin forms a three-node cluster through the admin API, checks
// that an account and its token work on every node, then joins, promotes
// and removes a fourth node, moves leadership and snapshots.
func TestClusterAdmin(t *testing.T) {
	root := t.TempDir()
	nodes := []*node.Node{openClusterNode(t, root, "n1"), openClusterNode(t, root, "n2"), openClusterNode(t, root, "n3")}
	n1 := nodes[0]
	ctx := ctxT(t)

	// Waiting for init: alive, not ready, and clients are told to retry.
	if code := httpStatus(t, n1.HTTPURL()+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz before init: HTTP %d", code)
	}
	if code := httpStatus(t, n1.HTTPURL()+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before init: HTTP %d", code)
	}
	var refusal struct {
		Code wire.Code `json:"code"`
	}
	if code := postJSON(t, n1.HTTPURL()+"/v1/register", map[string]string{"username": "early", "password": "password-early"}, &refusal); code != http.StatusServiceUnavailable || refusal.Code != wire.CodeUnavailable {
		t.Fatalf("register before init: HTTP %d %q", code, refusal.Code)
	}
	if code := wsHandshakeStatus(t, n1.WSURL(), "anything"); code != http.StatusServiceUnavailable {
		t.Fatalf("WebSocket before init: HTTP %d", code)
	}
	st, err := adminOf(n1, testAdminToken).Status(ctx)
	if err != nil || st.Leader != "" || st.Warning == "" || st.Node != "n1" {
		t.Fatalf("status before init: %+v %v", st, err)
	}
	_, err = adminOf(n1, testAdminToken).Snapshot(ctx)
	wantAdminError(t, "snapshot before init", err, http.StatusConflict, wire.CodeNothingToSnapshot)

	// The admin token.
	_, err = adminOf(n1, "wrong-token-wrong-token").Status(ctx)
	wantAdminError(t, "wrong token", err, http.StatusUnauthorized, wire.CodeUnauthorized)
	err = adminOf(n1, "").Init(ctx, nil)
	wantAdminError(t, "missing token", err, http.StatusUnauthorized, wire.CodeUnauthorized)

	var servers []wire.ClusterServer
	for i, n := range nodes {
		servers = append(servers, wire.ClusterServer{ID: fmt.Sprint("n", i+1), Addr: n.RaftAddr()})
	}
	err = adminOf(n1, testAdminToken).Init(ctx, servers[1:])
	wantAdminError(t, "init without the node itself", err, http.StatusBadRequest, wire.CodeInvalid)
	if err := adminOf(n1, testAdminToken).Init(ctx, servers); err != nil {
		t.Fatal(err)
	}
	leader := agreed(t, nodes, "n1", "n2", "n3")
	for _, n := range nodes {
		var why string
		testwait.Eventually(t, "ready", func() bool {
			code := httpStatus(t, n.HTTPURL()+"/readyz")
			why = fmt.Sprintf("HTTP %d", code)
			return code == http.StatusOK
		}, testwait.Detail(func() string { return why }))
	}
	// Init again: the same servers is harmless, others are refused.
	if err := adminOf(n1, testAdminToken).Init(ctx, servers); err != nil {
		t.Fatalf("repeated init: %v", err)
	}
	err = adminOf(nodes[1], testAdminToken).Init(ctx, servers[1:])
	wantAdminError(t, "init of a member with other servers", err, http.StatusConflict, wire.CodeAlreadyBootstrapped)

	// One signing key: an account made on n1, logged in on n3, connects to
	// n2 with that token and reaches a user connected to n3.
	alice, bob := register(t, n1, "alice"), register(t, n1, "bob")
	aliceTok := loginOn(t, nodes[2], alice, "phone")
	bobTok := loginOn(t, nodes[2], bob, "laptop")
	cb := dial(t, []string{nodes[2].WSURL()}, bobTok, 0)
	catchUp(t, nodes[1], nodes[2])
	ca := dial(t, []string{nodes[1].WSURL()}, aliceTok, 0)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := ca.Send(ctx, dm.ID, "from n2 to n3")
	if err != nil {
		t.Fatal(err)
	}
	got := messages(collect(t, cb, "bob on n3", func(evs []wire.Event) bool { return len(messages(evs)) == 1 }))
	if got[0].Body != "from n2 to n3" || got[0].Seq != ack.Seq || got[0].From != alice.user {
		t.Fatalf("bob got %+v, ack %+v", got[0], ack)
	}

	// A fourth node, joined through a follower: a non-voter, then a voter.
	var follower *node.Node
	for i, n := range nodes {
		if fmt.Sprint("n", i+1) != leader {
			follower = n
			break
		}
	}
	n4 := openClusterNode(t, root, "n4")
	join := wire.ClusterJoin{ClusterServer: wire.ClusterServer{ID: "n4", Addr: n4.RaftAddr()}, Nonvoter: true}
	if err := adminOf(follower, testAdminToken).Join(ctx, join); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, n1, "n4 a non-voter", func(st *wire.ClusterStatus) bool {
		m, ok := member(st, "n4")
		return ok && m.Suffrage == "Nonvoter" && len(st.Members) == 4
	})
	// It learns the cluster's state, the signing key included.
	var why string
	testwait.Eventually(t, "n4 ready", func() bool {
		code := httpStatus(t, n4.HTTPURL()+"/readyz")
		why = fmt.Sprintf("HTTP %d", code)
		return code == http.StatusOK
	}, testwait.Detail(func() string { return why }))
	if code := wsHandshakeStatus(t, n4.WSURL(), "not-a-token"); code != http.StatusUnauthorized {
		t.Fatalf("n4 with a bad token: HTTP %d", code)
	}
	catchUp(t, n4, nodes[2])
	dial(t, []string{n4.WSURL()}, aliceTok, 0) // a token issued by n3
	join.Nonvoter = false
	if err := adminOf(follower, testAdminToken).Join(ctx, join); err != nil {
		t.Fatal(err)
	}
	agreed(t, []*node.Node{n1, n4}, "n1", "n2", "n3", "n4")

	if err := adminOf(nodes[2], testAdminToken).Remove(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	agreed(t, nodes, "n1", "n2", "n3")
	n4.Close()
	err = adminOf(nodes[2], testAdminToken).Remove(ctx, "n4")
	wantAdminError(t, "remove a removed server", err, http.StatusNotFound, wire.CodeUnknownServer)

	// Leadership moves where asked, whichever node is asked.
	leader = agreed(t, nodes, "n1", "n2", "n3")
	target := "n1"
	if leader == "n1" {
		target = "n2"
	}
	err = adminOf(n1, testAdminToken).TransferLeader(ctx, "nobody")
	wantAdminError(t, "transfer to nobody", err, http.StatusNotFound, wire.CodeUnknownServer)
	if err := adminOf(nodes[2], testAdminToken).TransferLeader(ctx, target); err != nil {
		t.Fatal(err)
	}
	if now := agreed(t, nodes, "n1", "n2", "n3"); now != target {
		t.Fatalf("leader %s after transfer to %s", now, target)
	}

	// Raft snapshots only once an entry after the latest membership change
	// is applied: in service traffic sees to that, here one more message.
	// Alice is connected to nodes[1], which applied her message before the ack.
	if _, err := ca.Send(ctx, dm.ID, "after the transfer"); err != nil {
		t.Fatal(err)
	}
	snap, err := adminOf(nodes[1], testAdminToken).Snapshot(ctx)
	if err != nil || snap.Index == 0 || snap.Term == 0 {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
	if st, err := adminOf(nodes[1], testAdminToken).Status(ctx); err != nil || st.SnapshotIndex < snap.Index {
		t.Fatalf("status after snapshot %d: %+v %v", snap.Index, st, err)
	}
}

// TestAdminSingleNode: a node left to make its own admin token, and the
// refusals of the admin API that need no cluster.
func TestAdminSingleNode(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	ctx := ctxT(t)
	b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "admin.token"))
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.token mode %v", fi.Mode())
	}
	// Its own cluster key too, kept like the token.
	if fi, err := os.Stat(filepath.Join(dir, "cluster.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cluster.key: %v, %v", fi, err)
	}
	a := adminOf(n, strings.TrimSpace(string(b)))
	st, err := a.Status(ctx)
	if err != nil || st.State != "Leader" || len(st.Members) != 1 || st.Members[0].Suffrage != "Voter" {
		t.Fatalf("status: %+v %v", st, err)
	}
	for _, path := range []string{"/readyz", "/healthz"} {
		if code := httpStatus(t, n.HTTPURL()+path); code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", path, code)
		}
	}

	// Unknown paths are refused without a token, and not found with one.
	if code := httpStatus(t, n.HTTPURL()+"/v1/admin/nope"); code != http.StatusUnauthorized {
		t.Fatalf("unknown admin path without a token: HTTP %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, n.HTTPURL()+"/v1/admin/nope", nil)
	req.Header.Set("Authorization", "Bearer "+a.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown admin path: HTTP %d", resp.StatusCode)
	}

	err = a.Init(ctx, []wire.ClusterServer{{ID: "node1", Addr: n.RaftAddr()}, {ID: "other", Addr: "127.0.0.1:1"}})
	wantAdminError(t, "init of a bootstrapped node", err, http.StatusConflict, wire.CodeAlreadyBootstrapped)
	err = a.Join(ctx, wire.ClusterJoin{ClusterServer: wire.ClusterServer{ID: "x", Addr: "no-port"}})
	wantAdminError(t, "join with a bad address", err, http.StatusBadRequest, wire.CodeInvalid)
	err = a.Remove(ctx, "ghost")
	wantAdminError(t, "remove unknown", err, http.StatusNotFound, wire.CodeUnknownServer)

	snap, err := a.Snapshot(ctx)
	if err != nil || snap.Index == 0 {
		t.Fatalf("snapshot: %+v %v", snap, err)
	}
}
