package node_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"parley/internal/testwait"
	"parley/node"
	"parley/wire"
)

// The HTTP API's limits, on the real server listening on a port-0 address.

// failAfter bounds every wait below: a generous limit that only a broken
// server reaches, never a measure of how fast the server is.
const failAfter = 30 * time.Second

func rawHTTP(t *testing.T, n *node.Node) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(n.HTTPURL(), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitServerClose reads c until the server closes it (EOF or reset) and
// returns what it read; it fails if the connection is still open after
// failAfter.
func waitServerClose(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(failAfter))
	b, err := io.ReadAll(c)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %v (read %q)", failAfter, b)
	}
	return string(b)
}

// TestHTTPTimeouts: a body that stalls after one byte is cut off by the read
// timeout, and a keep-alive connection without a next request by the idle
// timeout.
func TestHTTPTimeouts(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.HTTPReadTimeout = 300 * time.Millisecond
	cfg.HTTPIdleTimeout = 300 * time.Millisecond
	n := startNodeWith(t, cfg)

	t.Run("slow body", func(t *testing.T) {
		c := rawHTTP(t, n)
		if _, err := io.WriteString(c, "POST /v1/login HTTP/1.1\r\nHost: parley\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
		got := waitServerClose(t, c)
		if got != "" && !strings.Contains(got, " 400 ") {
			t.Fatalf("answer to a stalled body: %q", got)
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		c := rawHTTP(t, n)
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: parley\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("healthz: HTTP %d, close %v; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
		}
		_ = c.SetReadDeadline(time.Now().Add(failAfter))
		if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
			t.Fatalf("idle connection: read %q, %v; want it closed by the server", b, err)
		}
	})
}

// TestHTTPBodyLimits: every JSON endpoint, the admin API's included,
// refuses a body over 4 KiB with 413 too_large.
func TestHTTPBodyLimits(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.AdminToken = testAdminToken
	n := startNodeWith(t, cfg)
	huge := `{"username": "` + strings.Repeat("a", 8<<10) + `"}`
	for _, path := range []string{"/v1/register", "/v1/login", "/v1/admin/init", "/v1/admin/join", "/v1/admin/remove", "/v1/admin/transfer-leader"} {
		req, _ := http.NewRequest(http.MethodPost, n.HTTPURL()+path, strings.NewReader(huge))
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Code wire.Code }
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = json.Unmarshal(b, &e)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || e.Code != wire.CodeTooLarge {
			t.Errorf("%s: HTTP %d %s; want 413 too_large", path, resp.StatusCode, b)
		}
	}
	// An endpoint that reads no body still answers, without reading it all.
	req, _ := http.NewRequest(http.MethodGet, n.HTTPURL()+"/healthz", bytes.NewReader(make([]byte, 1<<20)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz with a body: HTTP %d", resp.StatusCode)
	}
}

// TestHTTPConnectionBound: beyond HTTPMaxConns connections the server
// accepts no more until one closes; then the waiting ones are served and
// login works again.
func TestHTTPConnectionBound(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.HTTPMaxConns, cfg.HTTPMaxConnsPerIP = 2, -1                     // the bound for everyone, not the per-address cap
	cfg.HTTPReadTimeout, cfg.HTTPIdleTimeout = time.Minute, time.Minute // the held connections stay
	n := startNodeWith(t, cfg)
	alice := register(t, n, "alice")
	testwait.Eventually(t, "the registration's connection to close", func() bool {
		http.DefaultClient.CloseIdleConnections()
		return n.HTTPConnsForTest() == 0
	}, testwait.Limit(failAfter))

	// Two idle keep-alive connections take both slots.
	held := make([]net.Conn, 2)
	for i := range held {
		held[i] = rawHTTP(t, n)
		if _, err := io.WriteString(held[i], "GET /healthz HTTP/1.1\r\nHost: parley\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(held[i]), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if got := n.HTTPConnsForTest(); got != 2 {
		t.Fatalf("%d HTTP connections open, want 2", got)
	}

	// A third connection is not served while they are held. (Reading for a
	// moment can only fail the test if the bound is broken; a slow server
	// makes it pass.)
	third := rawHTTP(t, n)
	if _, err := io.WriteString(third, "GET /healthz HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = third.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if b, err := io.ReadAll(third); len(b) != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("over the bound: read %q, %v; want nothing yet", b, err)
	}
	loginDone := make(chan int, 1)
	go func() {
		var out struct{ Token string }
		b, _ := json.Marshal(map[string]string{"username": alice.name, "password": alice.password, "device": "phone"})
		resp, err := (&http.Client{Transport: &http.Transport{}}).Post(n.HTTPURL()+"/v1/login", "application/json", bytes.NewReader(b))
		if err != nil {
			loginDone <- 0
			return
		}
		defer resp.Body.Close()
		_ = json.NewDecoder(resp.Body).Decode(&out)
		loginDone <- resp.StatusCode
	}()

	// Once they go, the waiting connections are served.
	held[0].Close()
	held[1].Close()
	if got := waitServerClose(t, third); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Fatalf("the waiting connection got %q", got)
	}
	select {
	case code := <-loginDone:
		if code != http.StatusOK {
			t.Fatalf("login after the bound: HTTP %d", code)
		}
	case <-time.After(failAfter):
		t.Fatal("login still waiting after the held connections closed")
	}
}

// TestHTTPConnectionsPerAddress: one address holds at most its share of
// the HTTP API's connections; one more is answered 429 at once, and other
// addresses are served meanwhile (one address cannot stall /healthz and
// logins for everyone).
func TestHTTPConnectionsPerAddress(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.HTTPMaxConns, cfg.HTTPMaxConnsPerIP = 8, 2
	cfg.HTTPReadTimeout, cfg.HTTPIdleTimeout = time.Minute, time.Minute // the held connections stay
	n := startNodeWith(t, cfg)
	addr := strings.TrimPrefix(n.HTTPURL(), "http://")
	dialFrom := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	get := func(c net.Conn, extra string) (*http.Response, error) {
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: parley\r\n"+extra+"\r\n"); err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(failAfter))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}

	held := []net.Conn{dialFrom("127.0.0.1"), dialFrom("127.0.0.1")}
	for _, c := range held {
		if resp, err := get(c, ""); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a connection within the cap: %v %v", resp, err)
		}
	}
	over := dialFrom("127.0.0.1")
	got := waitServerClose(t, over)
	if !strings.HasPrefix(got, "HTTP/1.1 429 ") || !strings.Contains(got, "Retry-After: 5\r\n") || !strings.Contains(got, `"code":"rate_limited"`) {
		t.Fatalf("over the address's cap: %q", got)
	}
	if resp, err := get(dialFrom("127.0.0.2"), "Connection: close\r\n"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("another address while the first is at its cap: %v %v", resp, err)
	}

	// A slot comes back when a held connection closes.
	held[0].Close()
	var why string
	testwait.Eventually(t, "a slot of 127.0.0.1 freed", func() bool {
		resp, err := get(dialFrom("127.0.0.1"), "Connection: close\r\n")
		if err != nil {
			why = err.Error()
			return false
		}
		why = resp.Status
		return resp.StatusCode == http.StatusOK
	}, testwait.Limit(failAfter), testwait.Detail(func() string { return why }))
	held[1].Close() // metricValue's own connection comes from 127.0.0.1 too
	testwait.Eventually(t, "the refusal counted", func() bool {
		http.DefaultClient.CloseIdleConnections()
		c := dialFrom("127.0.0.2")
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: parley\r\nConnection: close\r\n\r\n"); err != nil {
			why = err.Error()
			return false
		}
		b := waitServerClose(t, c)
		m := regexp.MustCompile(`\nparley_http_refused_total (\d+)`).FindStringSubmatch(b)
		why = fmt.Sprintf("parley_http_refused_total: %q", m)
		return m != nil && m[1] != "0"
	}, testwait.Limit(failAfter), testwait.Detail(func() string { return why }))
}
