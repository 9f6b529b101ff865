package pushtest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// WebhookReceiver is an HTTP server that accepts only Standard Webhooks
// deliveries signed with its secret and stamped within Tolerance of its clock.
type WebhookReceiver struct {
	script
	srv *httptest.Server
	// URL is the base URL; any path under it is a valid webhook target, and
	// the path is the key for Respond.
	URL string
	// SecretFile holds the secret in the "whsec_" form, for WebhookConfig.
	SecretFile string
	Secret     []byte
	// Tolerance is how far webhook-timestamp may be from Now, either way
	// (the specification's suggestion is 5 minutes).
	Tolerance time.Duration

	mu        sync.Mutex
	now       func() time.Time
	delivered []WebhookDelivery
}

// WebhookDelivery is one accepted webhook.
type WebhookDelivery struct {
	Path      string
	ID        string
	Timestamp int64
	Body      []byte
	// Event is Body decoded loosely, for assertions.
	Event struct {
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      struct {
			Title       string            `json:"title"`
			Body        string            `json:"body"`
			Conv        string            `json:"conv"`
			Seq         string            `json:"seq"`
			Badge       *int              `json:"badge"`
			CollapseKey string            `json:"collapse_key"`
			ThreadID    string            `json:"thread_id"`
			Data        map[string]string `json:"data"`
		} `json:"data"`
	}
}

// NewWebhookReceiver starts a receiver with a fresh 32-byte secret; it is
// closed when the test ends.
func NewWebhookReceiver(tb testing.TB) *WebhookReceiver {
	tb.Helper()
	secret := make([]byte, 32)
	rand.Read(secret)
	file := filepath.Join(tb.TempDir(), "webhook-secret")
	if err := os.WriteFile(file, []byte("whsec_"+base64.StdEncoding.EncodeToString(secret)+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	r := &WebhookReceiver{SecretFile: file, Secret: secret, Tolerance: 5 * time.Minute, now: time.Now}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	tb.Cleanup(r.srv.Close)
	r.URL = r.srv.URL
	return r
}

// Client returns a client that reaches the receiver.
func (r *WebhookReceiver) Client() *http.Client { return r.srv.Client() }

// SetNow replaces the receiver's clock.
func (r *WebhookReceiver) SetNow(now func() time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.now = now
}

// Respond makes every valid delivery to path get resp.
func (r *WebhookReceiver) Respond(path string, resp Response) { r.set(path, resp) }

// Delivered returns the accepted deliveries, oldest first.
func (r *WebhookReceiver) Delivered() []WebhookDelivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]WebhookDelivery(nil), r.delivered...)
}

func (r *WebhookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	fail := func(status int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		r.reject(msg)
		http.Error(w, msg, status)
	}
	if req.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "method %s, want POST", req.Method)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		fail(http.StatusUnsupportedMediaType, "Content-Type %q, want application/json", ct)
		return
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		fail(http.StatusBadRequest, "read body: %v", err)
		return
	}
	r.mu.Lock()
	now := r.now()
	r.mu.Unlock()
	ts, err := VerifyWebhook(r.Secret, req.Header, body, now, r.Tolerance)
	if err != nil {
		fail(http.StatusUnauthorized, "%v", err)
		return
	}
	d := WebhookDelivery{Path: req.URL.Path, ID: req.Header.Get("webhook-id"), Timestamp: ts, Body: body}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d.Event); err != nil {
		fail(http.StatusBadRequest, "body: %v", err)
		return
	}
	if d.Event.Type == "" || d.Event.Data.Body == "" || d.Event.Data.Conv == "" || d.Event.Data.Seq == "" {
		fail(http.StatusBadRequest, "body lacks type, data.body, data.conv or data.seq: %s", body)
		return
	}
	if resp, ok := r.lookup(req.URL.Path); ok {
		write(w, resp)
		return
	}
	r.mu.Lock()
	r.delivered = append(r.delivered, d)
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// VerifyWebhook checks a Standard Webhooks delivery the way a receiver
// should: the three headers are present, the timestamp is within tolerance
// of now in either direction (a replay defence), and one of the
// space-separated v1 signatures is HMAC-SHA256(key, id.timestamp.body),
// compared in constant time. It returns the timestamp.
func VerifyWebhook(key []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) (int64, error) {
	id, tsText, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || tsText == "" || sigs == "" {
		return 0, errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("webhook-timestamp %q is not unix seconds", tsText)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return 0, fmt.Errorf("webhook-timestamp %d is %v away from now, tolerance %v", ts, d, tolerance)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, tsText)
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return ts, nil
		}
	}
	return 0, errors.New("no valid v1 signature in webhook-signature")
}
