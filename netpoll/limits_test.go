package netpoll

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"parley/internal/testwait"
)

// limitHandler accepts ?token=good and sets the limit key from ?user=.
func limitHandler() *testHandler {
	h := newTestHandler()
	h.authorize = func(r *Request) (any, int, string) {
		if r.Query.Get("token") != "good" {
			return nil, http.StatusUnauthorized, "bad token"
		}
		switch r.Query.Get("user") {
		case "a":
			r.LimitKey = 1
		case "b":
			r.LimitKey = 2
		}
		return "ok", 0, ""
	}
	return h
}

// expectRefusal checks a refused upgrade: status, Retry-After, reason, and
// the socket closed after it.
func expectRefusal(t *testing.T, c *rawClient, target string, status int, reason string) {
	t.Helper()
	resp, body := c.request(upgradeRequest(target))
	if resp.StatusCode != status || !strings.Contains(body, reason) {
		t.Fatalf("got %s %q, want %d %q", resp.Status, body, status, reason)
	}
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Fatalf("Retry-After %q, want 5", got)
	}
	c.expectEOF()
}

// dialFrom dials addr from a chosen loopback address (all of 127/8 is
// local on Linux), to appear as another client.
func dialFrom(t *testing.T, local, addr string) *rawClient {
	t.Helper()
	d := net.Dialer{Timeout: ioGuard, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// waitSlotsFree waits until every cap slot was given back, and checks no
// counter went below zero (a slot given back twice).
func waitSlotsFree(t *testing.T, s *Server) {
	t.Helper()
	testwait.Eventually(t, "every slot given back", func() bool {
		return s.conns.Load() <= 0 && s.pending.Load() <= 0 && s.perIP.total() <= 0 && s.perKey.total() <= 0
	})
	if c, p, i, k := s.conns.Load(), s.pending.Load(), s.perIP.total(), s.perKey.total(); c != 0 || p != 0 || i != 0 || k != 0 {
		t.Fatalf("slots after all closed: conns %d pending %d per-IP %d per-key %d", c, p, i, k)
	}
}

func TestServerCapRefusesWith503(t *testing.T) {
	h := limitHandler()
	cfg := testConfig()
	cfg.MaxConnections = 3
	s := startServer(t, cfg, h)
	var open []*rawClient
	for range 3 {
		open = append(open, upgradeRaw(t, s.Addr()))
		h.waitOpened(t)
	}
	expectRefusal(t, dialRaw(t, s.Addr()), "/v1/ws?token=good", http.StatusServiceUnavailable, reasonServerFull)
	if st := s.Stats(); st.RefusedConnLimit != 1 || st.OpenConnections != 3 {
		t.Fatalf("stats %+v", st)
	}
	// The open ones still work, and a slot comes back when one closes.
	open[0].write(clientFrame(true, opText, []byte("still here")))
	open[0].expectFrame(opText, []byte("still here"))
	open[2].conn.Close()
	h.waitClosed(t)
	testwait.Eventually(t, "a slot given back", func() bool { return s.conns.Load() == 2 })
	upgradeRaw(t, s.Addr())
}

func TestPerAddressCapRefusesWith429(t *testing.T) {
	h := limitHandler()
	cfg := testConfig()
	cfg.MaxConnectionsPerIP = 2
	s := startServer(t, cfg, h)
	for range 2 {
		upgradeRaw(t, s.Addr())
	}
	expectRefusal(t, dialRaw(t, s.Addr()), "/v1/ws?token=good", http.StatusTooManyRequests, reasonIPFull)
	// Another address is not affected.
	c := dialFrom(t, "127.0.0.2", s.Addr())
	if resp, body := c.request(upgradeRequest("/v1/ws?token=good")); resp.StatusCode != 101 {
		t.Fatalf("from 127.0.0.2: %s %s", resp.Status, body)
	}
	// The 101 goes out before the loop counts it.
	testwait.Eventually(t, "three upgrades counted", func() bool { return s.Stats().HandshakesAccepted == 3 })
	if st := s.Stats(); st.RefusedIPLimit != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPerKeyCapRefusesWith429(t *testing.T) {
	h := limitHandler()
	cfg := testConfig()
	cfg.MaxConnectionsPerKey = 2
	s := startServer(t, cfg, h)
	for range 2 {
		c := dialRaw(t, s.Addr())
		if resp, body := c.request(upgradeRequest("/v1/ws?token=good&user=a")); resp.StatusCode != 101 {
			t.Fatalf("%s %s", resp.Status, body)
		}
	}
	expectRefusal(t, dialRaw(t, s.Addr()), "/v1/ws?token=good&user=a", http.StatusTooManyRequests, reasonKeyFull)
	// Another key, and no key, are not affected.
	for _, q := range []string{"&user=b", ""} {
		c := dialRaw(t, s.Addr())
		if resp, body := c.request(upgradeRequest("/v1/ws?token=good" + q)); resp.StatusCode != 101 {
			t.Fatalf("%q: %s %s", q, resp.Status, body)
		}
	}
	testwait.Eventually(t, "four upgrades counted", func() bool { return s.Stats().HandshakesAccepted == 4 })
	if st := s.Stats(); st.RefusedKeyLimit != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestHandlerRefusalsGetRetryAfter: a 503 or 429 from Authorize carries
// Retry-After too; other statuses do not.
func TestHandlerRefusalsGetRetryAfter(t *testing.T) {
	h := newTestHandler()
	h.authorize = func(r *Request) (any, int, string) {
		switch r.Query.Get("token") {
		case "later":
			return nil, http.StatusServiceUnavailable, "not yet"
		case "slow":
			return nil, http.StatusTooManyRequests, "slow down"
		}
		return nil, http.StatusUnauthorized, "no"
	}
	s := startServer(t, testConfig(), h)
	expectRefusal(t, dialRaw(t, s.Addr()), "/v1/ws?token=later", http.StatusServiceUnavailable, "not yet")
	expectRefusal(t, dialRaw(t, s.Addr()), "/v1/ws?token=slow", http.StatusTooManyRequests, "slow down")
	c := dialRaw(t, s.Addr())
	if resp, _ := c.request(upgradeRequest("/v1/ws?token=bad")); resp.StatusCode != 401 || resp.Header.Get("Retry-After") != "" {
		t.Fatalf("%s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
}

// TestSlotsAreGivenBackExactlyOnce walks connections through every way a
// connection ends, with all caps on, and checks every counter returns to
// zero (a slot never given back, or given back twice, would show).
func TestSlotsAreGivenBackExactlyOnce(t *testing.T) {
	h := limitHandler()
	cfg := testConfig()
	cfg.MaxConnections = 100
	cfg.MaxConnectionsPerIP = 100
	cfg.MaxConnectionsPerKey = 100
	cfg.HandshakeTimeout = 50 * time.Millisecond
	cfg.CloseTimeout = 50 * time.Millisecond
	s := startServer(t, cfg, h)

	// Refused by Authorize after the server and address slots were taken.
	c := dialRaw(t, s.Addr())
	c.request(upgradeRequest("/v1/ws?token=bad&user=a"))
	c.expectEOF()
	// Refused for a bad request before any cap.
	c = dialRaw(t, s.Addr())
	c.request(upgradeRequest("/v2/ws?token=good"))
	c.expectEOF()
	// Handshake timeout, and a client that vanishes mid-request.
	dialRaw(t, s.Addr()).write([]byte("GET /v1/ws HTTP/1.1\r\n"))
	gone := dialRaw(t, s.Addr())
	gone.write([]byte("GET /v1/ws HTTP/1.1\r\n"))
	testwait.Eventually(t, "both pending", func() bool { return s.pending.Load() >= 1 })
	gone.conn.Close()
	// Upgraded, then closed by the client (close frame), by the server, by
	// the peer vanishing, and by a protocol error.
	for _, end := range []func(c *rawClient, conn *Conn){
		func(c *rawClient, _ *Conn) {
			c.write(clientFrame(true, opClose, []byte{0x03, 0xe8}))
			c.expectClose(CloseNormal)
		},
		func(c *rawClient, conn *Conn) {
			conn.Close(CloseNormal, "bye")
			c.expectClose(CloseNormal)
			c.write(clientFrame(true, opClose, []byte{0x03, 0xe8}))
		},
		func(c *rawClient, _ *Conn) { c.conn.Close() },
		func(c *rawClient, _ *Conn) { c.write([]byte{0x0F, 0x80, 0, 0, 0, 0}) }, // reserved opcode
		func(c *rawClient, conn *Conn) { conn.Close(CloseNormal, "no answer") }, // CloseTimeout
	} {
		c := dialRaw(t, s.Addr())
		if resp, body := c.request(upgradeRequest("/v1/ws?token=good&user=b")); resp.StatusCode != 101 {
			t.Fatalf("%s %s", resp.Status, body)
		}
		end(c, h.waitOpened(t))
		h.waitClosed(t)
	}
	waitSlotsFree(t, s)

	// Finally with connections still open when the server stops.
	for range 3 {
		upgradeRaw(t, s.Addr())
		h.waitOpened(t)
	}
	dialRaw(t, s.Addr()).write([]byte("GET /v1/ws HTTP/1.1\r\n"))
	testwait.Eventually(t, "one pending", func() bool { return s.pending.Load() == 1 })
	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitSlotsFree(t, s)
}

// TestKeyCapRefusalGivesBackAllSlots: a refusal at the last cap gives back
// the slots taken by the earlier ones.
func TestKeyCapRefusalGivesBackAllSlots(t *testing.T) {
	h := limitHandler()
	cfg := testConfig()
	cfg.MaxConnections = 10
	cfg.MaxConnectionsPerIP = 10
	cfg.MaxConnectionsPerKey = 1
	s := startServer(t, cfg, h)
	first := dialRaw(t, s.Addr())
	if resp, _ := first.request(upgradeRequest("/v1/ws?token=good&user=a")); resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	for range 5 {
		expectRefusal(t, dialRaw(t, s.Addr()), "/v1/ws?token=good&user=a", http.StatusTooManyRequests, reasonKeyFull)
	}
	testwait.Eventually(t, "the refused ones' slots given back", func() bool {
		return s.conns.Load() == 1 && s.perIP.total() == 1 && s.perKey.total() == 1 && s.pending.Load() == 0
	})
	first.conn.Close()
	h.waitClosed(t)
	waitSlotsFree(t, s)
}

func TestPendingHandshakeCap(t *testing.T) {
	h := limitHandler()
	cfg := testConfig()
	cfg.MaxPendingHandshakes = 2
	s := startServer(t, cfg, h)
	quiet := []*rawClient{dialRaw(t, s.Addr()), dialRaw(t, s.Addr())}
	testwait.Eventually(t, "two pending handshakes", func() bool { return s.pending.Load() == 2 })

	// The third is answered at once, before it sends anything.
	c := dialRaw(t, s.Addr())
	_ = c.conn.SetReadDeadline(time.Now().Add(ioGuard))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "5" || !strings.Contains(string(body), reasonPendingFull) {
		t.Fatalf("%s %v %q", resp.Status, resp.Header, body)
	}
	c.expectEOF()
	if st := s.Stats(); st.RefusedPending != 1 || st.PendingHandshakes != 2 {
		t.Fatalf("stats %+v", st)
	}

	// Once one upgrades, there is room again.
	if resp, _ := quiet[0].request(upgradeRequest("/v1/ws?token=good")); resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	testwait.Eventually(t, "one pending", func() bool { return s.pending.Load() == 1 })
	upgradeRaw(t, s.Addr())
}

// faultyListener returns injected accept errors, as the kernel would.
type faultyListener struct {
	*net.TCPListener
	faults   chan error
	accepted chan acceptResult
	once     sync.Once
}

type acceptResult struct {
	c   net.Conn
	err error
}

func (f *faultyListener) Accept() (net.Conn, error) {
	f.once.Do(func() {
		go func() {
			for {
				c, err := f.TCPListener.Accept()
				f.accepted <- acceptResult{c, err}
				if err != nil {
					return
				}
			}
		}()
	})
	select {
	case err := <-f.faults:
		return nil, err
	case r := <-f.accepted:
		return r.c, r.err
	}
}

// TestAcceptErrorsAreSurvived: the accept errors that make gnet's own
// acceptor shut the engine down (and ECONNABORTED) cost a retry here; the
// open connections and the listener live on.
func TestAcceptErrorsAreSurvived(t *testing.T) {
	h := newTestHandler()
	var faulty *faultyListener
	s, err := NewServer(testConfig(), h)
	if err != nil {
		t.Fatal(err)
	}
	s.wrapListener = func(ln net.Listener) net.Listener {
		faulty = &faultyListener{TCPListener: ln.(*net.TCPListener), faults: make(chan error), accepted: make(chan acceptResult, 1)}
		return faulty
	}
	s.acceptErrFresh = time.Hour // a failed accept counts until one succeeds
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })

	before := upgradeRaw(t, s.Addr())
	h.waitOpened(t)
	errnos := []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EPROTO}
	for _, e := range errnos {
		faulty.faults <- &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", e)}
	}
	testwait.Eventually(t, "every fault seen", func() bool { return s.Stats().AcceptErrors == int64(len(errnos)) })
	if err := s.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "accept failing") {
		t.Fatalf("Ready while accept fails: %v", err)
	}
	if err := s.Alive(); err != nil {
		t.Fatalf("Alive after transient accept errors: %v", err)
	}

	after := upgradeRaw(t, s.Addr())
	h.waitOpened(t)
	for _, c := range []*rawClient{before, after} {
		c.write(clientFrame(true, opText, []byte("alive")))
		c.expectFrame(opText, []byte("alive"))
	}
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready after recovering: %v", err)
	}
}

// TestDeadListenerIsReported: a listener closed under the server, or event
// loops that stopped, make Alive and Ready fail with ErrListenerDead.
func TestDeadListenerIsReported(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	upgradeRaw(t, s.Addr())
	h.waitOpened(t)
	if err := s.Alive(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(t.Context()); err != nil {
		t.Fatal(err)
	}
	_ = s.ln.Close() // not through Stop
	<-s.acceptDone
	for _, err := range []error{s.Alive(), s.Ready(t.Context())} {
		if !errors.Is(err, ErrListenerDead) || !strings.Contains(err.Error(), "listener closed") {
			t.Fatalf("got %v", err)
		}
	}

	s2 := startServer(t, testConfig(), h)
	if err := s2.stopEventLoops(); err != nil { // as if gnet had shut its engine down
		t.Fatal(err)
	}
	// The ticker stopped with the loops (cli.Stop waited for it), so
	// lastTick is frozen: with no grace at all that is stale at once.
	s2.tickStaleAfter = 0
	testwait.Eventually(t, "stale ticks", func() bool { return errors.Is(s2.Alive(), ErrListenerDead) })
	if err := s2.Alive(); !strings.Contains(err.Error(), "event loops stopped") {
		t.Fatal(err)
	}

	if err := s.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Alive(); !errors.Is(err, ErrListenerDead) {
		t.Fatalf("after Stop: %v", err)
	}
}
