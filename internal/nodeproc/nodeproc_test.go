package nodeproc

import (
	"net"
	"net/http"
	"testing"
)

// A node starts on kernel-chosen ports, is ready, survives kill -9 and
// comes back on the same addresses and data.
func TestStartKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	n := Start(t, Options{})
	if n.HTTPAddr == "" || n.WSAddr == "" || n.RaftAddr == "" || n.WS != "ws://"+n.WSAddr+"/v1/ws" {
		t.Fatalf("addresses %q %q %q, ws %q", n.HTTPAddr, n.WSAddr, n.RaftAddr, n.WS)
	}
	addrs := [3]string{n.HTTPAddr, n.WSAddr, n.RaftAddr}
	first := n.Pid()
	n.Kill9()
	if n.Running() {
		t.Fatal("running after Kill9")
	}
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := [3]string{n.HTTPAddr, n.WSAddr, n.RaftAddr}; got != addrs || n.Pid() == first {
		t.Fatalf("restarted on %v (pid %d), was %v (pid %d)", got, n.Pid(), addrs, first)
	}
	if err := n.WaitReady(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(n.HTTP + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz after restart: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := n.Restart(); err == nil {
		t.Fatal("Restart of a running node did not fail")
	}
}

// A node that advertises another Raft address (a proxy's) prints that one;
// RaftBind is where it listens, and a restart binds there again.
func TestAdvertisedRaftAddress(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	const advertised = "127.0.0.1:9"
	n := Start(t, Options{Args: []string{"-advertise", advertised}, NotReady: true})
	if n.RaftAddr != advertised || n.RaftBind == advertised || n.RaftBind == n.HTTPAddr || n.RaftBind == n.WSAddr {
		t.Fatalf("raft %q bound at %q (http %q, ws %q)", n.RaftAddr, n.RaftBind, n.HTTPAddr, n.WSAddr)
	}
	bind := n.RaftBind
	c, err := net.Dial("tcp", bind)
	if err != nil {
		t.Fatalf("dial the Raft listener: %v", err)
	}
	c.Close()
	n.Kill9()
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	if n.RaftBind != bind || n.RaftAddr != advertised {
		t.Fatalf("restarted with raft %q bound at %q, was bound at %q", n.RaftAddr, n.RaftBind, bind)
	}
}
