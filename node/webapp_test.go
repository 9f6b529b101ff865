package node_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func webGet(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// TestWebApp: the page at /, its hashed assets, /v1/config naming this
// node's WebSocket URL by default, and the headers of each.
func TestWebApp(t *testing.T) {
	n := startNode(t, t.TempDir())
	resp, page := webGet(t, n.HTTPURL()+"/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	_, wsPort, _ := strings.Cut(strings.TrimPrefix(n.WSURL(), "ws://"), ":")
	wsPort, _, _ = strings.Cut(wsPort, "/")
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "ws://127.0.0.1:" + wsPort} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if resp.Header.Get("Cache-Control") != "no-cache" {
		t.Errorf("page Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	assets := regexp.MustCompile(`/assets/[A-Za-z0-9._-]+`).FindAllString(page, -1)
	if len(assets) != 2 {
		t.Fatalf("the page names %v, want a script and a style sheet", assets)
	}
	for _, a := range assets {
		resp, body := webGet(t, n.HTTPURL()+a)
		ct := resp.Header.Get("Content-Type")
		if resp.StatusCode != 200 || len(body) == 0 || !(strings.HasPrefix(ct, "text/javascript") || strings.HasPrefix(ct, "text/css")) {
			t.Errorf("GET %s: %d %q, %d bytes", a, resp.StatusCode, ct, len(body))
		}
		if cc := resp.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("GET %s: Cache-Control %q", a, cc)
		}
	}
	if resp, body := webGet(t, n.HTTPURL()+"/sw.js"); resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") || resp.Header.Get("Cache-Control") != "no-cache" || len(body) == 0 {
		t.Errorf("GET /sw.js: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
	}
	if resp, _ := webGet(t, n.HTTPURL()+"/assets/nope.js"); resp.StatusCode != 404 {
		t.Errorf("a missing asset: %d", resp.StatusCode)
	}
	if resp, _ := webGet(t, n.HTTPURL()+"/nope"); resp.StatusCode != 404 {
		t.Errorf("an unknown path: %d", resp.StatusCode)
	}
	resp, body := webGet(t, n.HTTPURL()+"/v1/config")
	var cfg struct {
		WSURLs []string `json:"ws_urls"`
	}
	if err := json.Unmarshal([]byte(body), &cfg); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/config: %d %s", resp.StatusCode, body)
	}
	if len(cfg.WSURLs) != 1 || cfg.WSURLs[0] != n.WSURL() {
		t.Errorf("ws_urls %v, want [%s]", cfg.WSURLs, n.WSURL())
	}
}

// TestWebAppConfiguredURLs: -web-ws-urls as a list with a path (behind a
// proxy) and as @file, re-read at each request.
func TestWebAppConfiguredURLs(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ws-urls")
	if err := os.WriteFile(file, []byte("# the cluster\nws://10.0.0.1:7071/v1/ws\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t.TempDir())
	cfg.WebWSURLs = []string{"/v1/ws", "@" + file}
	n := startNodeWith(t, cfg)
	read := func() []string {
		_, body := webGet(t, n.HTTPURL()+"/v1/config")
		var c struct {
			WSURLs []string `json:"ws_urls"`
		}
		if err := json.Unmarshal([]byte(body), &c); err != nil {
			t.Fatal(err)
		}
		return c.WSURLs
	}
	if got := strings.Join(read(), " "); got != "/v1/ws ws://10.0.0.1:7071/v1/ws" {
		t.Errorf("ws_urls %q", got)
	}
	if err := os.WriteFile(file, []byte("ws://10.0.0.2:7071/v1/ws\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(read(), " "); got != "/v1/ws ws://10.0.0.2:7071/v1/ws" {
		t.Errorf("after a change of the file: ws_urls %q", got)
	}
	resp, _ := webGet(t, n.HTTPURL()+"/")
	csp := resp.Header.Get("Content-Security-Policy")
	host := strings.TrimPrefix(n.HTTPURL(), "http://")
	for _, want := range []string{"ws://" + host, "wss://" + host, "ws://10.0.0.2:7071"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
}

// TestWebAppTokenCheck: GET /v1/token answers 204 for a valid device token
// and 401 for a missing, bad or revoked one.
func TestWebAppTokenCheck(t *testing.T) {
	n := startNode(t, t.TempDir())
	a := register(t, n, "alice")
	tok := login(t, n, a, "web")
	check := func(token string) int {
		req, _ := http.NewRequest("GET", n.HTTPURL()+"/v1/token", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := check(tok); got != http.StatusNoContent {
		t.Errorf("a valid token: %d", got)
	}
	if got := check(""); got != http.StatusUnauthorized {
		t.Errorf("no token: %d", got)
	}
	if got := check(tok + "x"); got != http.StatusUnauthorized {
		t.Errorf("a bad token: %d", got)
	}
}
