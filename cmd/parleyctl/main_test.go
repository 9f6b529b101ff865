package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"parley/internal/testwait"
	"parley/node"
)

// ctl runs parleyctl with args and returns its output and error.
func ctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestUnreachableNode(t *testing.T) {
	addr := deadAddr(t)
	for _, args := range [][]string{
		{"cluster", "status"},
		{"cluster", "snapshot"},
		{"cluster", "status", "--nodes", "http://" + addr + ",http://" + addr},
	} {
		_, err := ctl(t, append(args, "--node", "http://"+addr, "--token", "some-admin-token-123", "--timeout", "10s")...)
		if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), addr) {
			t.Errorf("%v against %s: %v; want an 'unreachable' error naming the node", args, addr, err)
		}
	}
}

func TestNoToken(t *testing.T) {
	t.Setenv("PARLEY_ADMIN_TOKEN", "")
	_, err := ctl(t, "cluster", "status", "--node", "http://"+deadAddr(t))
	if err == nil || !strings.Contains(err.Error(), "no admin token") {
		t.Fatalf("no token: %v", err)
	}
	_, err = ctl(t, "cluster", "status", "--token-file", filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing token file: %v", err)
	}
}

// TestAgainstNode drives a real one-node cluster: status, snapshot, and the
// refusal of a wrong token.
func TestAgainstNode(t *testing.T) {
	dir := t.TempDir()
	n, err := node.Open(node.Config{
		DataDir: dir, HTTPAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		Bootstrap: true, Argon2: node.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "admin.token")

	out, err := ctl(t, "cluster", "status", "--node", n.HTTPURL(), "--token-file", tokenFile)
	if err != nil || !strings.Contains(out, "node node1: Leader") || !strings.Contains(out, "Voter (leader)") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = ctl(t, "cluster", "snapshot", "--node", n.HTTPURL(), "--token-file", tokenFile, "--json")
	if err != nil || !strings.Contains(out, `"index":`) {
		t.Fatalf("snapshot: %v\n%s", err, out)
	}
	_, err = ctl(t, "cluster", "status", "--node", n.HTTPURL(), "--token", "wrong-token-wrong-token")
	if err == nil || !strings.Contains(err.Error(), "unauthorized (HTTP 401)") {
		t.Fatalf("wrong token: %v", err)
	}
}

// TestEdgeJoinStatusRemove: join --edge adds a node started as an edge,
// status shows it as an edge with its region and lag, a plain join of it
// is refused (it never votes), and remove takes it out.
func TestEdgeJoinStatusRemove(t *testing.T) {
	key := []byte("parleyctl-test-cluster-key-0123456789")
	open := func(id string, edge, bootstrap bool, region string) *node.Node {
		t.Helper()
		n, err := node.Open(node.Config{
			NodeID: id, DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", WSAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
			Bootstrap: bootstrap, Edge: edge, Region: region, ClusterKey: key, AdminToken: "parleyctl-edge-test-token",
			Argon2: node.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	voter := open("v1", false, true, "core")
	edge := open("e1", true, false, "eu")
	plain := open("p1", false, false, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := voter.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	common := []string{"--node", voter.HTTPURL(), "--token", "parleyctl-edge-test-token"}

	if _, err := ctl(t, append([]string{"cluster", "join", "--edge", "--nonvoter", "--id", "e1", "--addr", edge.RaftAddr()}, common...)...); err == nil {
		t.Fatal("join with --edge and --nonvoter was taken")
	}
	out, err := ctl(t, append([]string{"cluster", "join", "--edge", "--id", "e1", "--addr", edge.RaftAddr()}, common...)...)
	if err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("join --edge: %v\n%s", err, out)
	}
	if err := edge.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	// Status, asked on the edge itself, comes from the leader.
	var status string
	testwait.Eventually(t, "the edge in the status", func() bool {
		status, err = ctl(t, "cluster", "status", "--node", edge.HTTPURL(), "--token", "parleyctl-edge-test-token")
		return err == nil && regexp.MustCompile(`e1\s+\S+\s+Edge\s+eu\s+\d+\s+0\n`).MatchString(status) &&
			regexp.MustCompile(`v1\s+\S+\s+Voter \(leader\)\s+core\s`).MatchString(status) &&
			strings.Contains(status, "node e1 edge in eu: Follower")
	})
	out, err = ctl(t, append([]string{"cluster", "status", "--json"}, common...)...)
	if err != nil || !strings.Contains(out, `"edge":true`) || !strings.Contains(out, `"region":"eu"`) {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	// A server not started as an edge is refused as one; it was added as a
	// non-voter, and is removed again.
	_, err = ctl(t, append([]string{"cluster", "join", "--edge", "--id", "p1", "--addr", plain.RaftAddr()}, common...)...)
	if err == nil || !strings.Contains(err.Error(), "not_edge") {
		t.Fatalf("join --edge of a plain server: %v", err)
	}
	if _, err := ctl(t, append([]string{"cluster", "remove", "p1"}, common...)...); err != nil {
		t.Fatalf("remove p1: %v", err)
	}
	// A plain join would promote it: refused.
	_, err = ctl(t, append([]string{"cluster", "join", "--id", "e1", "--addr", edge.RaftAddr()}, common...)...)
	if err == nil || !strings.Contains(err.Error(), "edge_node") {
		t.Fatalf("plain join of an edge: %v", err)
	}
	if _, err := ctl(t, append([]string{"cluster", "transfer-leader", "e1"}, common...)...); err == nil || !strings.Contains(err.Error(), "edge_node") {
		t.Fatalf("transfer to an edge: %v", err)
	}
	if out, err := ctl(t, append([]string{"cluster", "remove", "e1"}, common...)...); err != nil {
		t.Fatalf("remove: %v\n%s", err, out)
	}
	out, err = ctl(t, append([]string{"cluster", "status"}, common...)...)
	if err != nil || strings.Contains(out, "e1") {
		t.Fatalf("status after remove: %v\n%s", err, out)
	}
}
