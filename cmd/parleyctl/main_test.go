package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
