package raftlog

import (
	"bufio"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"parley/internal/testwait"
)

// TestMuxRoutes: connections reach raft's stream layer or the handler by
// their first byte, unknown kinds are closed, isolation cuts every
// connection in both directions until lifted, and Close ends everything.
func TestMuxRoutes(t *testing.T) {
	m, err := newMux("127.0.0.1:0", nil, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	handled := make(chan byte, 4)
	m.serve(func(kind byte, c net.Conn) {
		handled <- kind
		io.Copy(c, c) // echo until closed
		c.Close()
	})
	stream := newRaftStream(m)
	addr := m.addr().String()

	// Raft: Dial on one side, Accept on the other, bytes flow.
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := stream.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	dialed, err := stream.Dial(raft.ServerAddress(addr), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var in net.Conn
	select {
	case in = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("raft connection not accepted")
	}
	if _, err := dialed.Write([]byte{rpcProbe}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(in, b[:]); err != nil || b[0] != rpcProbe {
		t.Fatalf("raft stream got %v, %v", b, err)
	}

	// Forward and admin connections reach the handler.
	fwd, err := m.dial(addr, connForward, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if k := <-handled; k != connForward {
		t.Fatalf("handler got kind %q", k)
	}
	if _, err := fwd.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(fwd, echo); err != nil || string(echo) != "ping" {
		t.Fatalf("echo %q, %v", echo, err)
	}

	// An unknown kind is closed.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte{'?'})
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Read(b[:]); err == nil {
		t.Fatal("connection of unknown kind left open")
	}
	raw.Close()

	// Isolation cuts what exists and refuses what comes.
	m.isolate(true)
	for _, c := range []net.Conn{dialed, in, fwd} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(b[:]); err == nil {
			t.Fatal("connection survived isolation")
		}
	}
	if _, err := m.dial(addr, connForward, time.Second); !errors.Is(err, errIsolated) {
		t.Fatalf("dial while isolated: %v", err)
	}
	raw, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := raw.Read(b[:]); err == nil {
		t.Fatal("accepted a connection while isolated")
	}
	raw.Close()
	m.isolate(false)
	again, err := m.dial(addr, connAdmin, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if k := <-handled; k != connAdmin {
		t.Fatalf("handler got kind %q", k)
	}

	// Close ends the handlers and Accept.
	stream.Close()
	if _, err := stream.Accept(); err == nil {
		t.Fatal("Accept after Close")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	again.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := again.Read(b[:]); err == nil {
		t.Fatal("connection survived Close")
	}
	if _, err := m.dial(addr, connForward, time.Second); err == nil {
		t.Fatal("dial after Close")
	}
}

const rpcProbe = 7

// TestForwardProtocol speaks the forwarding link by hand to a leader and
// to a node that is not one: accepted commands are applied with the
// sender's tag, the others are refused with the right code, and a hello of
// another version is turned away.
func TestForwardProtocol(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxBatchBytes = 16
	cfg.QueueLength = 1
	cfg.MaxInflightEntries = 1
	sm := newMemSM()
	sm.gate = make(chan struct{})
	sm.entered = make(chan uint64, 16)
	l := openLeader(t, cfg, sm)
	defer l.Close()
	var release sync.Once
	open := func() { release.Do(func() { close(sm.gate) }) }
	defer open() // before Close, on failure too: raft's shutdown waits for Apply

	// Stall the leader's proposer: "local" holds the only in-flight slot
	// inside Apply.
	localDone := make(chan error, 1)
	if err := l.Submit([]byte("local"), func(_ any, _ uint64, err error) { localDone <- err }); err != nil {
		t.Fatal(err)
	}
	<-sm.entered

	// The proposer waits for the slot and touches no admission state: the
	// hint set here is the one the busy refusal must carry.
	const hint = 1700 * time.Millisecond
	l.admit.retry.Store(int64(hint))

	const origin = 0xabcdef
	conn, r := dialForward(t, l, helloFrame{version: linkVersion, origin: origin, id: "tester"})
	defer conn.Close()
	send(t, conn, appendSubmit(nil, []fwdCommand{
		{seq: 10, cmd: []byte("queued")},            // fills the queue
		{seq: 11, cmd: []byte("no room")},           // busy
		{seq: 12, cmd: []byte("far too large cmd")}, // 17 bytes > 16
	}))
	got, retry := readRefusals(t, r, 2)
	if !slices.Equal(got, []refusal{{11, refuseBusy}, {12, refuseTooLarge}}) {
		t.Fatalf("refusals %v", got)
	}
	if retry != hint {
		t.Fatalf("busy refusal sent with retry %v, want the leader's hint %v", retry, hint)
	}
	open()
	if err := <-localDone; err != nil {
		t.Fatal(err)
	}
	testwait.Eventually(t, "the forwarded command to apply", func() bool {
		cmds, _, _ := sm.state()
		return len(cmds) == 2
	})
	requireEachOnce(t, sm, []string{"local", "queued"})
	if st := l.Stats(); st.CommandsReceived != 1 {
		t.Fatalf("stats: %+v", st)
	}

	// A node that is not the leader refuses everything as not leader.
	f := openLoner(t, "lonely")
	fconn, fr := dialForward(t, f, helloFrame{version: linkVersion, origin: origin, id: "tester"})
	defer fconn.Close()
	send(t, fconn, appendSubmit(nil, []fwdCommand{{seq: 1, cmd: []byte("x")}, {seq: 2, cmd: []byte("y")}}))
	if got, retry := readRefusals(t, fr, 2); !slices.Equal(got, []refusal{{1, refuseNotLeader}, {2, refuseNotLeader}}) || retry != 0 {
		t.Fatalf("refusals %v, retry %v (none is busy: no retry frame)", got, retry)
	}

	// Another protocol version is closed without an answer.
	vconn, vr := dialForward(t, l, helloFrame{version: linkVersion + 1, origin: origin, id: "future"})
	defer vconn.Close()
	vconn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := readFrame(vr); err == nil {
		t.Fatal("link of another version not closed")
	}
}

func dialForward(t *testing.T, n *Node, h helloFrame) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	send(t, conn, append([]byte{connForward}, appendHello(nil, h)...))
	return conn, bufio.NewReader(conn)
}

func send(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// readRefusals reads refuse frames until it has want refusals, and returns
// the wait of the last retry frame among them (0: none).
func readRefusals(t *testing.T, r *bufio.Reader, want int) (got []refusal, retry time.Duration) {
	t.Helper()
	for len(got) < want {
		typ, p, err := readFrame(r)
		if err == nil && typ == frameRetry {
			if retry, err = decodeRetry(p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err != nil || typ != frameRefuse {
			t.Fatalf("frame %d, %v", typ, err)
		}
		if err := decodeRefuse(p, func(rf refusal) { got = append(got, rf) }); err != nil {
			t.Fatal(err)
		}
	}
	return got, retry
}

// TestMuxClusterKey: with a cluster key, a dialer holding it reaches the
// handler; a dialer with another key, or one without the handshake, is
// closed before its kind byte is read, and counted; and a dialer refuses
// an acceptor that cannot prove the key, before sending its kind byte.
func TestMuxClusterKey(t *testing.T) {
	key := []byte("the-right-cluster-key")
	open := func(key []byte) (*mux, chan byte) {
		m, err := newMux("127.0.0.1:0", nil, key, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		handled := make(chan byte, 8)
		m.serve(func(kind byte, c net.Conn) {
			handled <- kind
			io.Copy(c, c) // echo until closed
			c.Close()
		})
		return m, handled
	}
	wantFailures := func(who string, m *mux, want uint64) {
		t.Helper()
		if got := m.authFailures.Load(); got != want {
			t.Fatalf("%s counted %d failed handshakes, want %d", who, got, want)
		}
	}
	a, handled := open(key)
	addr := a.addr().String()

	// The same key: handshake, kind byte, then the stream.
	d, _ := open(key)
	c, err := d.dial(addr, connPeer, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if k := <-handled; k != connPeer {
		t.Fatalf("handler got kind %q", k)
	}
	send(t, c, []byte("ping"))
	echo := make([]byte, 4)
	if _, err := io.ReadFull(c, echo); err != nil || string(echo) != "ping" {
		t.Fatalf("echo %q, %v", echo, err)
	}

	// Another key: the acceptor finds the dialer's MAC wrong and closes
	// without proving its own; both sides count it.
	w, _ := open([]byte("some-other-cluster-key"))
	if _, err := w.dial(addr, connForward, 5*time.Second); !errors.Is(err, errBadProof) {
		t.Fatalf("dial with another key: %v, want errBadProof", err)
	}
	wantFailures("acceptor", a, 1)
	wantFailures("dialer with another key", w, 1)

	// No key: a dialer that sends its kind byte and a frame where the
	// answer to the nonce goes gets the nonce and then a close, nothing
	// more.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	garbage := make([]byte, nonceLen+macLen) // exactly the answer's length, all read
	garbage[0] = connForward
	send(t, raw, garbage)
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(raw); err != nil || len(got) != nonceLen {
		t.Fatalf("keyless dialer read %d bytes, %v; want the %d-byte nonce, then EOF", len(got), err, nonceLen)
	}
	wantFailures("acceptor", a, 2)

	// An acceptor that cannot prove the key: it sends a nonce, reads the
	// dialer's answer and answers garbage. The dialer gives up and sends
	// nothing more.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	after := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			after <- -1
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(make([]byte, nonceLen))
		io.ReadFull(c, make([]byte, nonceLen+macLen))
		c.Write(make([]byte, macLen))
		n, _ := io.Copy(io.Discard, c) // until the dialer closes
		after <- n
	}()
	if _, err := d.dial(ln.Addr().String(), connRaft, 5*time.Second); !errors.Is(err, errBadProof) {
		t.Fatalf("dial to an impostor: %v, want errBadProof", err)
	}
	if n := <-after; n != 0 {
		t.Fatalf("the dialer sent %d bytes to an acceptor that did not prove the key", n)
	}
	wantFailures("dialer", d, 1)

	// Only the first connection ever reached the handler.
	select {
	case k := <-handled:
		t.Fatalf("a connection of kind %q reached the handler", k)
	default:
	}
}

// TestFollowerPassesOnTheLeadersRetry: a follower fails a command the
// leader refused busy with the wait the leader's retry frame asked for,
// keeps that wait for later busy refusals on the link, bounds it, and
// without a retry frame (a leader of an older build) fails it with plain
// ErrBusy, which the node answers with an admission interval.
func TestFollowerPassesOnTheLeadersRetry(t *testing.T) {
	f := openLoner(t, "follower")

	link := func() (net.Conn, chan error) {
		local, remote := net.Pipe()
		ended := make(chan error, 1)
		go func() { ended <- f.readRefusals(local) }()
		t.Cleanup(func() { remote.Close(); local.Close() })
		return remote, ended
	}
	wait := func() (uint64, chan error) {
		out := make(chan error, 1)
		seq, ok := f.waits.add(func(_ any, _ uint64, err error) { out <- err })
		if !ok {
			t.Fatal("wait list closed")
		}
		return seq, out
	}
	retryOf := func(err error) time.Duration {
		t.Helper()
		var be *BusyError
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("outcome %v, want ErrBusy", err)
		}
		if !errors.As(err, &be) {
			return 0
		}
		return be.RetryAfter
	}

	leader, _ := link()
	s1, o1 := wait()
	s2, o2 := wait()
	s3, o3 := wait()
	send(t, leader, append(appendRetry(nil, 1700*time.Millisecond), appendRefuse(nil, []refusal{{s1, refuseBusy}, {s2, refuseTooLarge}})...))
	if got := retryOf(<-o1); got != 1700*time.Millisecond {
		t.Fatalf("busy refusal passed on with retry %v, want 1.7s", got)
	}
	if err := <-o2; !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large refusal: %v", err)
	}
	send(t, leader, appendRefuse(nil, []refusal{{s3, refuseBusy}}))
	if got := retryOf(<-o3); got != 1700*time.Millisecond {
		t.Fatalf("a later busy refusal on the link: retry %v, want the last hint 1.7s", got)
	}
	s4, o4 := wait()
	send(t, leader, append(appendRetry(nil, time.Hour), appendRefuse(nil, []refusal{{s4, refuseBusy}})...))
	if got := retryOf(<-o4); got != maxForwardedRetry {
		t.Fatalf("a leader asking for an hour: retry %v, want it bounded to %v", got, maxForwardedRetry)
	}

	old, _ := link()
	s5, o5 := wait()
	send(t, old, appendRefuse(nil, []refusal{{s5, refuseBusy}}))
	if got := retryOf(<-o5); got != 0 {
		t.Fatalf("no retry frame on the link: BusyError with %v, want plain ErrBusy", got)
	}

	corrupt, ended := link()
	send(t, corrupt, []byte{0, 0, 0, 1, frameRetry}) // empty payload
	if err := <-ended; !errors.Is(err, errCorruptFrame) {
		t.Fatalf("a corrupt retry frame: %v, want the link dropped as corrupt", err)
	}
}
