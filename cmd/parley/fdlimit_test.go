package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"parley/internal/nodeproc"
	"parley/internal/testwait"
	"parley/wire"
)

// These tests run the real node binary with a descriptor limit of 256 and
// flood it on loopback. Every loop is bounded in count; every read and
// write has a deadline that only stops a hang (guard); conditions are
// waited for, never slept on.

const (
	nofile = 256
	guard  = 30 * time.Second
)

// testNode is a running parley process.
type testNode struct {
	*nodeproc.Node
	http string
}

// limited runs bin with RLIMIT_NOFILE set to n (soft and hard): through
// prlimit(1) when there is one, else a shell's ulimit. Both exec the node,
// so the process is the node.
func limited(n int, bin string, args ...string) *exec.Cmd {
	if p, err := exec.LookPath("prlimit"); err == nil {
		return exec.Command(p, append([]string{fmt.Sprintf("--nofile=%d:%d", n, n), "--", bin}, args...)...)
	}
	return exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, n), bin}, args...)...)
}

func startNode(t *testing.T, extra ...string) *testNode {
	t.Helper()
	p := nodeproc.Start(t, nodeproc.Options{
		Args: append([]string{"-http-max-conns", "32", "-log-level", "info"}, extra...),
		Command: func(bin string, args ...string) *exec.Cmd {
			return limited(nofile, bin, args...)
		},
	})
	n := &testNode{Node: p, http: p.HTTP}
	n.waitStatus(t, "/readyz", http.StatusOK)
	return n
}

// budget reads a figure from the node's "descriptor budget" log line.
func (n *testNode) budget(t *testing.T, key string) int {
	t.Helper()
	m := regexp.MustCompile(`msg="descriptor budget".* ` + key + `=(-?\d+)`).FindStringSubmatch(n.Logs())
	if m == nil {
		t.Fatalf("no %s in the descriptor budget line:\n%s", key, n.Logs())
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// get does one request on a fresh connection.
func (n *testNode) get(path string) (int, string, error) {
	c := &http.Client{Timeout: guard, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(n.http + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// waitStatus polls path until it answers status.
func (n *testNode) waitStatus(t *testing.T, path string, status int) string {
	t.Helper()
	var last string
	testwait.Eventually(t, path+" "+strconv.Itoa(status), func() bool {
		code, body, err := n.get(path)
		last = fmt.Sprintf("%d %s %v", code, body, err)
		return code == status
	}, testwait.Limit(2*guard), testwait.Detail(func() string { return last }))
	return last
}

func (n *testNode) post(t *testing.T, path string, in, out any) int {
	t.Helper()
	b, _ := json.Marshal(in)
	c := &http.Client{Timeout: guard, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(n.http+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// account registers name and logs in once; it returns the user and token.
func (n *testNode) account(t *testing.T, name string) (uint64, string) {
	t.Helper()
	creds := map[string]string{"username": name, "password": "correct horse battery", "device": "d"}
	if code := n.post(t, "/v1/register", creds, nil); code != http.StatusCreated {
		t.Fatalf("register %s: %d", name, code)
	}
	var out struct {
		Token string `json:"token"`
		User  uint64 `json:"user_id"`
	}
	if code := n.post(t, "/v1/login", creds, &out); code != http.StatusOK || out.Token == "" {
		t.Fatalf("login %s: %d", name, code)
	}
	return out.User, out.Token
}

// wsConn is a minimal WebSocket client: enough for the handshake, binary
// requests and the server's unfragmented frames.
type wsConn struct {
	c net.Conn
	r *bufio.Reader
}

// dialWS connects and upgrades; on a refusal it returns the response (body
// read) and a nil conn. err is a transport error (the socket was closed
// unanswered).
func dialWS(t *testing.T, wsURL, token string) (*wsConn, *http.Response, string, error) {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, guard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(guard))
	req := "GET " + u.Path + "?token=" + url.QueryEscape(token) + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return nil, nil, "", err
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("no answer to an upgrade request")
	}
	if err != nil {
		c.Close()
		return nil, nil, "", err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		c.Close()
		return nil, resp, string(body), nil
	}
	_ = c.SetDeadline(time.Time{})
	return &wsConn{c: c, r: r}, resp, "", nil
}

func (w *wsConn) close() { _ = w.c.Close() }

func (w *wsConn) writeBinary(p []byte) error {
	h := []byte{0x82}
	switch {
	case len(p) < 126:
		h = append(h, 0x80|byte(len(p)))
	case len(p) < 1<<16:
		h = append(h, 0x80|126, byte(len(p)>>8), byte(len(p)))
	default:
		h = binary.BigEndian.AppendUint64(append(h, 0x80|127), uint64(len(p)))
	}
	mask := [4]byte{1, 2, 3, 4}
	h = append(h, mask[:]...)
	body := make([]byte, len(p))
	for i := range p {
		body[i] = p[i] ^ mask[i%4]
	}
	_ = w.c.SetWriteDeadline(time.Now().Add(guard))
	_, err := w.c.Write(append(h, body...))
	return err
}

// readFrame reads one server frame (servers do not mask).
func (w *wsConn) readFrame() (op byte, payload []byte, err error) {
	_ = w.c.SetReadDeadline(time.Now().Add(guard))
	var h [2]byte
	if _, err := io.ReadFull(w.r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(w.r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(w.r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(w.r, payload)
	return h[0] & 0x0F, payload, err
}

// request sends req and returns its reply, skipping other frames; a close
// frame is an error (the connection was dropped).
func (w *wsConn) request(req *wire.Request) (*wire.Reply, error) {
	b, err := wire.Marshal(req)
	if err != nil {
		return nil, err
	}
	if err := w.writeBinary(b); err != nil {
		return nil, err
	}
	for range 1000 {
		op, p, err := w.readFrame()
		if err != nil {
			return nil, err
		}
		switch op {
		case 0x8:
			return nil, fmt.Errorf("closed by the server: %q", p)
		case 0x2:
			var rep wire.Reply
			if wire.Unmarshal(p, &rep) == nil && rep.ID == req.ID && (rep.Type == wire.TypeOK || rep.Type == wire.TypeError) {
				return &rep, nil
			}
		}
	}
	return nil, errors.New("no reply in 1000 frames")
}

func (w *wsConn) ping(t *testing.T, id uint64) {
	t.Helper()
	rep, err := w.request(&wire.Request{Type: wire.TypePing, ID: id})
	if err != nil || rep.Type != wire.TypeOK {
		t.Fatalf("ping: %+v %v", rep, err)
	}
}

// checkRefusal checks a cap refusal: status, Retry-After and reason.
func checkRefusal(t *testing.T, resp *http.Response, body string, status int, reason string) {
	t.Helper()
	if resp == nil || resp.StatusCode != status || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, reason) {
		t.Fatalf("refusal: %v %q, want %d %q with Retry-After", resp, body, status, reason)
	}
}

// metric reads one sample from /metrics.
func (n *testNode) metric(t *testing.T, series string) float64 {
	t.Helper()
	_, body, err := n.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}

// checkLogs fails on the lines gnet's acceptor wrote before it shut its
// engine down, and on the process having exited.
func (n *testNode) checkAlive(t *testing.T) {
	t.Helper()
	select {
	case <-n.Exited():
		t.Fatal("the node exited")
	default:
	}
	for _, bad := range []string{"engine is being shutdown", "reactor is exiting", "Accept() failed", "panic"} {
		if strings.Contains(n.Logs(), bad) {
			t.Fatalf("node log says %q", bad)
		}
	}
}

// TestCapsHoldUnderFlood floods a node running with 256 descriptors: with
// WebSocket connections past its cap (one token reused, as in the finding,
// then several users), sockets that never send a request, and HTTP
// keep-alive connections. Over-cap upgrades are refused with 503 or 429
// and Retry-After before the 101; at the cap the HTTP API, logins and the
// existing connections keep working; after the flood the listener takes
// connections again, /readyz is 200 and no earlier client was dropped.
func TestCapsHoldUnderFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	n := startNode(t)
	if got := n.budget(t, "nofile"); got != nofile {
		t.Fatalf("the node sees a descriptor limit of %d, want %d", got, nofile)
	}
	capConns, perUser := n.budget(t, "ws_max_conns"), n.budget(t, "ws_max_conns_per_user")
	if capConns < 2*perUser || capConns+capConns/16 >= nofile-32 {
		t.Fatalf("derived cap %d (per user %d) does not fit %d descriptors", capConns, perUser, nofile)
	}
	users := capConns/perUser + 2
	ids, tokens := make([]uint64, users), make([]string, users)
	for i := range users {
		ids[i], tokens[i] = n.account(t, fmt.Sprintf("flood%d", i))
	}

	// One token reused: perUser connections, then 429.
	var open []*wsConn
	for range perUser {
		c, resp, body, err := dialWS(t, n.WS, tokens[0])
		if c == nil {
			t.Fatalf("upgrade %d: %v %q %v", len(open), resp, body, err)
		}
		open = append(open, c)
	}
	_, resp, body, _ := dialWS(t, n.WS, tokens[0])
	checkRefusal(t, resp, body, http.StatusTooManyRequests, "too many connections for this account")

	// Other users up to the node's cap, then 503.
	refused := 0
	for u := 1; u < users && refused < 5; u++ {
		for range perUser {
			c, resp, body, err := dialWS(t, n.WS, tokens[u])
			if c != nil {
				open = append(open, c)
				continue
			}
			if err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			checkRefusal(t, resp, body, http.StatusServiceUnavailable, "server at connection limit")
			refused++
		}
	}
	if len(open) != capConns || refused < 5 {
		t.Fatalf("%d connections open (cap %d), %d refused", len(open), capConns, refused)
	}

	// At the cap: health, readiness, a login, and a message sent on an
	// existing connection.
	n.waitStatus(t, "/healthz", http.StatusOK)
	n.waitStatus(t, "/readyz", http.StatusOK)
	var out struct{ Token string }
	if code := n.post(t, "/v1/login", map[string]string{"username": "flood1", "password": "correct horse battery", "device": "e"}, &out); code != 200 {
		t.Fatalf("login at the cap: %d", code)
	}
	rep, err := open[0].request(&wire.Request{Type: wire.TypeDirectOpen, ID: 1, User: ids[1]})
	if err != nil || rep.Type != wire.TypeOK || rep.Info == nil {
		t.Fatalf("dm.open at the cap: %+v %v", rep, err)
	}
	rep, err = open[0].request(&wire.Request{Type: wire.TypeSend, ID: 2, Conv: rep.Info.ID, ClientMsgID: "m1", Body: "at the cap"})
	if err != nil || rep.Type != wire.TypeOK || rep.Seq == 0 {
		t.Fatalf("send at the cap: %+v %v", rep, err)
	}

	// Sockets that never send a request: beyond the pending-handshake cap
	// they are answered 503 at once.
	pendingCap := max(16, capConns/16)
	quiet := make([]net.Conn, 0, pendingCap+24)
	answers := make(chan *http.Response, cap(quiet))
	for range cap(quiet) {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(strings.TrimSuffix(n.WS, "/v1/ws"), "ws://"), guard)
		if err != nil {
			t.Fatal(err)
		}
		quiet = append(quiet, c)
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(2 * guard))
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
				answers <- resp
			}
		}()
	}
	for range cap(quiet) - pendingCap {
		select {
		case resp := <-answers:
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("quiet socket: %s", resp.Status)
			}
		case <-time.After(2 * guard):
			t.Fatal("quiet sockets over the pending cap were not answered")
		}
	}
	for _, c := range quiet {
		c.Close()
	}

	// An HTTP keep-alive flood: 200 connections, each with one request
	// answered or waiting, all held. The WebSocket port is unaffected.
	httpHost := strings.TrimPrefix(n.http, "http://")
	var held []net.Conn
	for range 200 {
		c, err := net.DialTimeout("tcp", httpHost, guard)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		_ = c.SetWriteDeadline(time.Now().Add(guard))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	_, resp, body, _ = dialWS(t, n.WS, tokens[users-1])
	checkRefusal(t, resp, body, http.StatusServiceUnavailable, "server at connection limit")
	open[1].ping(t, 3)

	// The flood goes away: every flood connection closes except the first
	// of each of two users.
	for _, c := range held {
		c.Close()
	}
	kept := []*wsConn{open[0], open[perUser]}
	for i, c := range open {
		if i != 0 && i != perUser {
			c.close()
		}
	}
	testwait.Eventually(t, "a new upgrade after the flood", func() bool {
		c, _, _, _ := dialWS(t, n.WS, tokens[users-1])
		if c != nil {
			c.close()
		}
		return c != nil
	}, testwait.Limit(2*guard))
	n.waitStatus(t, "/readyz", http.StatusOK)
	n.waitStatus(t, "/healthz", http.StatusOK)
	for i, c := range kept {
		c.ping(t, uint64(10+i)) // never dropped
	}
	for reason, atLeast := range map[string]float64{"node_limit": 6, "user_limit": 1, "pending_handshakes": 24} {
		if got := n.metric(t, `parley_ws_refused_total{reason="`+reason+`"}`); got < atLeast {
			t.Fatalf("parley_ws_refused_total{reason=%q} = %v, want at least %v", reason, got, atLeast)
		}
	}
	n.checkAlive(t)
}

// TestAcceptSurvivesRunningOutOfDescriptors takes the caps off a node
// with 256 descriptors, so that floods really run the process out of
// descriptors, as in the finding: first an HTTP keep-alive flood, after
// which the WebSocket port's accept fails with EMFILE, then WebSocket
// connections on one token. The listener lives on: the sockets it cannot
// take are answered 503 (or, once, closed), the open connections keep
// working, and once the flood is gone new ones are accepted and /readyz
// is 200.
func TestAcceptSurvivesRunningOutOfDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	n := startNode(t, "-ws-max-conns", "-1", "-ws-max-conns-per-user", "-1", "-http-max-conns", "1000", "-http-max-conns-per-ip", "-1")
	_, token := n.account(t, "exhaust")
	before, resp, body, err := dialWS(t, n.WS, token)
	if before == nil {
		t.Fatalf("upgrade: %v %q %v", resp, body, err)
	}

	// HTTP keep-alive connections until the node cannot take more (it
	// stops answering); then a WebSocket connect.
	httpHost := strings.TrimPrefix(n.http, "http://")
	var held []net.Conn
	for range nofile {
		c, err := net.DialTimeout("tcp", httpHost, guard)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		_ = c.SetDeadline(time.Now().Add(guard))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	testwait.Eventually(t, "the node out of descriptors", func() bool { return strings.Contains(n.Logs(), "too many open files") }, testwait.Limit(2*guard))
	_, resp, body, err = dialWS(t, n.WS, token)
	if err != nil {
		t.Fatalf("WebSocket connect while out of descriptors: %v", err)
	}
	checkRefusal(t, resp, body, http.StatusServiceUnavailable, "server out of descriptors")
	before.ping(t, 1)
	for _, c := range held {
		c.Close()
	}
	n.waitStatus(t, "/readyz", http.StatusOK)

	// WebSocket connections on one token until they run out.
	open := []*wsConn{before}
	upgraded, refused, dropped := 0, 0, 0
	for range nofile + 20 {
		c, resp, body, err := dialWS(t, n.WS, token)
		switch {
		case c != nil:
			open = append(open, c)
			upgraded++
		case err != nil:
			dropped++
		default:
			checkRefusal(t, resp, body, http.StatusServiceUnavailable, "server out of descriptors")
			refused++
		}
	}
	t.Logf("%d upgraded, %d refused with 503, %d closed unanswered", upgraded, refused, dropped)
	if upgraded < nofile/2 || refused == 0 || dropped > 2 {
		t.Fatalf("%d upgraded, %d refused, %d dropped", upgraded, refused, dropped)
	}
	before.ping(t, 2)
	for _, c := range open[2:] {
		c.close()
	}
	testwait.Eventually(t, "a new upgrade after the flood", func() bool {
		c, _, _, _ := dialWS(t, n.WS, token)
		if c != nil {
			c.close()
		}
		return c != nil
	}, testwait.Limit(2*guard))
	n.waitStatus(t, "/readyz", http.StatusOK)
	n.waitStatus(t, "/healthz", http.StatusOK)
	before.ping(t, 3)
	open[1].ping(t, 4)
	if got := n.metric(t, `parley_ws_refused_total{reason="out_of_descriptors"}`); got < float64(refused+1) {
		t.Fatalf("out_of_descriptors refusals counted %v, seen %d", got, refused+1)
	}
	if got := n.metric(t, "parley_ws_accept_errors_total"); got < 1 {
		t.Fatalf("parley_ws_accept_errors_total = %v", got)
	}
	n.checkAlive(t)
}
