package push

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// WebhookConfig configures delivery to user-supplied webhook URLs, signed as
// the Standard Webhooks specification describes.
type WebhookConfig struct {
	// SecretFile holds the signing secret as "whsec_" followed by base64 of
	// the key bytes (the prefix may be omitted). Surrounding whitespace is
	// ignored.
	SecretFile string
	// Timeout bounds each request when HTTPClient is nil; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// HTTPClient overrides the default client (DefaultTimeout, no redirects,
	// public addresses only); tests pass the fake receiver's client.
	HTTPClient *http.Client
	// AllowPrivateNetworks lets the default client reach loopback and private
	// addresses, for receivers on the operator's own network.
	AllowPrivateNetworks bool
	// Now is the clock for webhook-timestamp; nil means time.Now.
	Now func() time.Time
}

// Webhook is the Sender for ProviderWebhook: Target.Token is the URL.
type Webhook struct {
	key    []byte
	client *http.Client
	now    func() time.Time
}

// NewWebhook reads the secret and returns a ready Sender.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	raw, err := os.ReadFile(cfg.SecretFile)
	if err != nil {
		return nil, fmt.Errorf("push: webhook secret: %w", err)
	}
	key, err := ParseWebhookSecret(string(raw))
	if err != nil {
		return nil, err
	}
	w := &Webhook{key: key, now: cfg.Now}
	if cfg.HTTPClient != nil {
		w.client = withoutRedirects(cfg.HTTPClient)
	} else {
		w.client = newHTTPClient(cfg.Timeout, !cfg.AllowPrivateNetworks)
	}
	if w.now == nil {
		w.now = time.Now
	}
	return w, nil
}

// ParseWebhookSecret decodes a Standard Webhooks secret ("whsec_" + base64).
// The specification asks for 24 to 64 random bytes; fewer than 16 is refused
// as too weak to sign with.
func ParseWebhookSecret(s string) ([]byte, error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "whsec_")
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("push: webhook secret is not base64 after whsec_: %w", err)
	}
	if len(key) < 16 {
		return nil, fmt.Errorf("push: webhook secret has %d bytes, want at least 16", len(key))
	}
	return key, nil
}

// webhookPayload is the JSON body: the Standard Webhooks envelope (type,
// timestamp, data). Conv and seq are strings, as everywhere else in push
// payloads, because JavaScript receivers lose precision above 2^53.
type webhookPayload struct {
	Type      string      `json:"type"`
	Timestamp string      `json:"timestamp"`
	Data      webhookData `json:"data"`
}

type webhookData struct {
	Title       string            `json:"title,omitempty"`
	Body        string            `json:"body"`
	Conv        string            `json:"conv"`
	Seq         string            `json:"seq"`
	Badge       *int              `json:"badge,omitempty"`
	CollapseKey string            `json:"collapse_key,omitempty"`
	ThreadID    string            `json:"thread_id,omitempty"`
	Data        map[string]string `json:"data,omitempty"`
}

// WebhookEventType is the "type" of every webhook this package sends.
const WebhookEventType = "message.notification"

func webhookBody(n *Notification, now time.Time) ([]byte, error) {
	title, body := n.visibleText()
	p := webhookPayload{
		Type:      WebhookEventType,
		Timestamp: now.UTC().Format(time.RFC3339),
		Data: webhookData{
			Title:       title,
			Body:        body,
			Conv:        strconv.FormatUint(n.Conv, 10),
			Seq:         strconv.FormatUint(n.Seq, 10),
			CollapseKey: n.CollapseKey,
			ThreadID:    n.ThreadID,
			Data:        n.Data,
		},
	}
	if n.Badge > 0 {
		b := n.Badge
		p.Data.Badge = &b
	}
	return json.Marshal(p)
}

// webhookSignature is the webhook-signature header value for one message:
// "v1," + base64(HMAC-SHA256(key, id "." timestamp "." body)).
func webhookSignature(key []byte, id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(ts, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Send POSTs the signed notification to t.Token. 2xx is success, 410 means the
// receiver unsubscribed (Gone), 429 and 5xx are retryable.
func (w *Webhook) Send(ctx context.Context, t Target, n Notification) (Result, error) {
	u, err := url.Parse(t.Token)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return Result{Gone: true}, fmt.Errorf("push: webhook target %q is not an http(s) URL", t.Token)
	}
	if n.IdempotencyKey == "" {
		return Result{}, errors.New("push: webhook needs an IdempotencyKey (it is the webhook-id)")
	}
	now := w.now()
	body, err := webhookBody(&n, now)
	if err != nil {
		return Result{}, err
	}
	ts := now.Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", n.IdempotencyKey)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", webhookSignature(w.key, n.IdempotencyKey, ts, body))
	resp, err := w.client.Do(req)
	if err != nil {
		return deliveryFailure(ctx, err)
	}
	defer resp.Body.Close()
	readLimited(resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return Result{Status: resp.StatusCode}, nil
	}
	r := classify(resp, w.now())
	r.Gone = resp.StatusCode == http.StatusGone
	return r, &ProviderError{Provider: ProviderWebhook, Status: resp.StatusCode, Reason: http.StatusText(resp.StatusCode)}
}
