package browsertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"

	"parley/internal/nodeproc"
)

// TestWebPushSetup: with Web Push configured (a VAPID key), the page
// offers notifications, its service worker (/sw.js) installs and controls
// the page, and the button answers (here without a reachable push
// service: a clear message, not a broken page). Delivery itself is the
// push package's (its tests run against fake providers).
func TestWebPushSetup(t *testing.T) {
	needChrome(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "vapid.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	node := nodeproc.Start(t, nodeproc.Options{Bin: parleyBin, Name: "n1",
		Args: []string{"-push-vapid-key", keyFile, "-push-vapid-subject", "mailto:ops@example.com"}})
	b := newBrowser(t)
	alice := b.tab("alice")
	alice.register(node.HTTP, "alice", "alice-password")
	alice.wait("the page offers notifications", `!document.getElementById("push-btn").hidden`)
	alice.wait("the service worker controls the page", `navigator.serviceWorker.controller !== null && navigator.serviceWorker.controller.scriptURL.endsWith("/sw.js")`)
	alice.do("turn notifications on", chromedp.Click("#push-btn"))
	alice.wait("the page says what happened", `document.getElementById("push-btn").getAttribute("aria-pressed") === "true" || document.getElementById("side-error").textContent !== ""`)
	var outcome string
	alice.eval("the outcome", `document.getElementById("push-btn").getAttribute("aria-pressed") + " " + document.getElementById("side-error").textContent`, &outcome)
	t.Logf("notifications: %s", outcome)
	alice.wait("and still works", `document.body.dataset.state === "synced"`)
}
