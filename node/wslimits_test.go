package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// upgrade sends a WebSocket upgrade with token and returns the response
// (its body read when it is a refusal); the socket stays open on a 101.
func upgrade(t *testing.T, wsURL, token string) (*http.Response, string) {
	t.Helper()
	u, err := url.Parse(wsURL)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + u.Path + "?token=" + url.QueryEscape(token) + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ = io.ReadAll(resp.Body)
	}
	return resp, string(body)
}

func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Status string }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Status
}

// TestPerUserCapCountsAllDevices: the per-user cap counts a user's
// connections on the node whatever device (token) they use, since every
// login makes a new device; over it the upgrade is refused with 429 and
// Retry-After. Other users are not affected, and a slot comes back when a
// connection closes.
func TestPerUserCapCountsAllDevices(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.WSMaxConnsPerUser = 2
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	phone, laptop := login(t, n, alice, "phone"), login(t, n, alice, "laptop")
	if resp, body := upgrade(t, n.WSURL(), phone); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%s %s", resp.Status, body)
	}
	first := dial(t, []string{n.WSURL()}, laptop, 0)
	resp, body := upgrade(t, n.WSURL(), phone)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "too many connections") {
		t.Fatalf("third connection: %s %v %q", resp.Status, resp.Header, body)
	}
	if resp, body := upgrade(t, n.WSURL(), login(t, n, bob, "phone")); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("bob: %s %s", resp.Status, body)
	}
	first.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, body := upgrade(t, n.WSURL(), laptop)
		if resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after a close: %s %s", resp.Status, body)
		}
		time.Sleep(10 * time.Millisecond) // polling for the close to reach the server
	}
}

// TestHealthReportsADeadWebSocketListener: /readyz and /healthz answer 503
// saying so once the WebSocket server no longer takes connections.
func TestHealthReportsADeadWebSocketListener(t *testing.T) {
	n := startNode(t, t.TempDir())
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, status := getStatus(t, n.HTTPURL()+path); code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, status)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.StopWebSocketForTest(ctx); err != nil {
		t.Fatal(err)
	}
	for path, prefix := range map[string]string{"/healthz": "websocket listener dead", "/readyz": "websocket: "} {
		if code, status := getStatus(t, n.HTTPURL()+path); code != http.StatusServiceUnavailable || !strings.HasPrefix(status, prefix) {
			t.Fatalf("%s: %d %q", path, code, status)
		}
	}
}
