package browsertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"parley/internal/nodeproc"
)

// TestBehindTLSProxy runs docs/examples/nginx.conf (its ports and
// certificate paths substituted) in front of a node started with
// -trusted-proxies and -web-ws-urls /v1/ws: the page loads over https,
// opens wss:// on the same origin through the proxy, and two people chat.
func TestBehindTLSProxy(t *testing.T) {
	needChrome(t)
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/nginx"); serr == nil {
			nginx = "/usr/sbin/nginx"
		} else {
			if os.Getenv("CI") != "" {
				t.Fatal("nginx is not installed: .ci/run installs it")
			}
			t.Skip("SKIPPED: nginx is not installed (apt-get install nginx); the documented TLS proxy set-up is not tested")
		}
	}
	node := nodeproc.Start(t, nodeproc.Options{Bin: parleyBin, Name: "n1",
		Args: []string{"-trusted-proxies", "127.0.0.1", "-web-ws-urls", "/v1/ws"}})

	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, cert, key)
	httpsPort, httpPort := freePort(t), freePort(t)
	src, err := os.ReadFile("../../docs/examples/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(src)
	for _, r := range [][2]string{
		{"server 127.0.0.1:7070;", "server " + node.HTTPAddr + ";"},
		{"server 127.0.0.1:7071;", "server " + node.WSAddr + ";"},
		{"listen 443 ssl;", fmt.Sprintf("listen 127.0.0.1:%d ssl;", httpsPort)},
		{"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", httpPort)},
		{"/etc/ssl/parley/fullchain.pem", cert},
		{"/etc/ssl/parley/privkey.pem", key},
		{"worker_processes auto;", "worker_processes 1;"},
		{"    server {", "    access_log off;\n    server {"},
	} {
		if !strings.Contains(conf, r[0]) {
			t.Fatalf("docs/examples/nginx.conf no longer has %q: update this test with it", r[0])
		}
		conf = strings.Replace(conf, r[0], r[1], 1)
	}
	confFile := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", confFile, "-e", "stderr",
		"-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+";")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("nginx:\n%s", logs.String())
		}
	})

	origin := fmt.Sprintf("https://127.0.0.1:%d", httpsPort)
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := insecure.Get(origin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not proxy %s/readyz: %v\n%s", origin, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond) // polling until nginx listens
	}
	resp, err := insecure.Get(fmt.Sprintf("http://127.0.0.1:%d/", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
		t.Errorf("plain http: %d %q, want a redirect to https", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = insecure.Get(origin + "/v1/config")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"/v1/ws"`) {
		t.Errorf("/v1/config through the proxy: %s", body)
	}

	b := newBrowser(t, chromedp.Flag("ignore-certificate-errors", true))
	alice, bob := b.tab("alice"), b.tab("bob")
	alice.register(origin+"/", "alice", "alice-password")
	bob.register(origin+"/", "bob", "bob-password")
	var urls string
	alice.eval("the WebSocket URL", `document.body.dataset.wsUrls`, &urls)
	if want := fmt.Sprintf("wss://127.0.0.1:%d/v1/ws", httpsPort); urls != want {
		t.Fatalf("the page connects to %q, want %q", urls, want)
	}
	alice.openDM("bob")
	bob.openConv("alice")
	alice.send("over wss")
	bob.waitBodies("bob gets it through the proxy", []string{"over wss"})
	alice.waitTick("over wss", "read")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port // nginx binds no port 0: a free one, just closed
}

func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}
