package push

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// APNs endpoints: production, and the sandbox that development builds of the
// app register with. A token from one is BadDeviceToken at the other.
const (
	APNsProductionEndpoint = "https://api.push.apple.com"
	APNsSandboxEndpoint    = "https://api.sandbox.push.apple.com"
)

// Apple accepts a provider token for an hour and answers
// TooManyProviderTokenUpdates to a connection that changes it more often than
// every 20 minutes; refreshing at 50 minutes stays inside both.
const (
	apnsTokenRefresh = 50 * time.Minute
	apnsTokenMinAge  = 20 * time.Minute
)

// APNsConfig configures token-based (.p8 key) authentication with APNs.
type APNsConfig struct {
	// KeyFile is the .p8 signing key downloaded from the Apple developer
	// account: a PKCS#8 PEM P-256 private key.
	KeyFile string
	// KeyID is the key's 10-character identifier, TeamID the developer
	// team's; they become the JWT's kid and iss.
	KeyID  string
	TeamID string
	// Topic is the app's bundle ID (apns-topic).
	Topic string
	// Endpoint defaults to APNsProductionEndpoint.
	Endpoint string
	// Timeout bounds each request when HTTPClient is nil; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// HTTPClient must speak HTTP/2, which APNs requires; nil means a client
	// restricted to HTTP/2 with DefaultTimeout.
	HTTPClient *http.Client
	// Now is the clock for the JWT's iat and apns-expiration; nil means
	// time.Now.
	Now func() time.Time
}

// APNs is the Sender for ProviderAPNs: Target.Token is the device token in hex.
type APNs struct {
	key      *ecdsa.PrivateKey
	keyID    string
	teamID   string
	topic    string
	endpoint string
	client   *http.Client
	now      func() time.Time

	// mu guards the cached provider token. Signing happens under it (CPU
	// only, no I/O) so concurrent sends at expiry produce one new token, not
	// one each, which Apple would count as too many updates.
	mu       sync.Mutex
	token    string
	issuedAt time.Time
}

// NewAPNs reads and checks the signing key.
func NewAPNs(cfg APNsConfig) (*APNs, error) {
	var problems []string
	if cfg.KeyID == "" {
		problems = append(problems, "KeyID is empty")
	}
	if cfg.TeamID == "" {
		problems = append(problems, "TeamID is empty")
	}
	if cfg.Topic == "" {
		problems = append(problems, "Topic (the app's bundle ID) is empty")
	}
	key, err := readECKey(cfg.KeyFile)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("push: apns: %s", strings.Join(problems, "; "))
	}
	a := &APNs{key: key, keyID: cfg.KeyID, teamID: cfg.TeamID, topic: cfg.Topic,
		endpoint: strings.TrimRight(cfg.Endpoint, "/"), now: cfg.Now}
	if a.endpoint == "" {
		a.endpoint = APNsProductionEndpoint
	}
	if cfg.HTTPClient != nil {
		a.client = withoutRedirects(cfg.HTTPClient)
	} else {
		a.client = newHTTPClient(cfg.Timeout, false)
		var only2 http.Protocols
		only2.SetHTTP2(true)
		a.client.Transport.(*http.Transport).Protocols = &only2
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a, nil
}

// readECKey reads a PEM P-256 private key, PKCS#8 (Apple's .p8) or SEC 1.
func readECKey(path string) (*ecdsa.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	var key any
	if block.Type == "EC PRIVATE KEY" {
		key, err = x509.ParseECPrivateKey(block.Bytes)
	} else {
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || ec.Curve.Params().Name != "P-256" {
		return nil, fmt.Errorf("%s: not a P-256 EC private key", path)
	}
	return ec, nil
}

// providerToken returns the cached ES256 provider token, signing a new one
// when the cached one is apnsTokenRefresh old.
func (a *APNs) providerToken(now time.Time) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && now.Sub(a.issuedAt) < apnsTokenRefresh && !now.Before(a.issuedAt) {
		return a.token, nil
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": a.teamID, "iat": now.Unix()})
	t.Header["kid"] = a.keyID
	s, err := t.SignedString(a.key)
	if err != nil {
		return "", err
	}
	a.token, a.issuedAt = s, now
	return s, nil
}

// dropExpiredToken forgets token after APNs called it expired, unless it is
// younger than Apple's minimum refresh interval (then our clock or Apple's is
// off, and a new token would only earn TooManyProviderTokenUpdates).
func (a *APNs) dropExpiredToken(token string, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token == token && now.Sub(a.issuedAt) >= apnsTokenMinAge {
		a.token = ""
	}
}

// apnsBody builds the JSON payload: aps plus Data (conv and seq included)
// as top-level custom keys, where the app's notification handler reads them.
func apnsBody(n *Notification) ([]byte, error) {
	title, body := n.visibleText()
	alert := map[string]string{"body": body}
	if title != "" {
		alert["title"] = title
	}
	aps := map[string]any{"alert": alert, "sound": "default"}
	if n.Badge > 0 {
		aps["badge"] = n.Badge
	}
	if n.ThreadID != "" {
		aps["thread-id"] = n.ThreadID
	}
	payload := map[string]any{}
	for k, v := range n.data() {
		payload[k] = v
	}
	payload["aps"] = aps // after Data, so a Data key "aps" cannot replace it
	return json.Marshal(payload)
}

// apnsMaxPayload is APNs's limit for an alert notification's body.
const apnsMaxPayload = 4096

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// Send posts one alert. 200 is success; 410, and 400 BadDeviceToken, are
// Gone; 429 and 5xx are retryable. Note that BadDeviceToken is also what a
// production token gets at the sandbox endpoint, so a wrong Endpoint shows up
// as every device being Gone.
func (a *APNs) Send(ctx context.Context, t Target, n Notification) (Result, error) {
	if len(t.Token)%2 != 0 || len(t.Token) > 200 || !isHex(t.Token) {
		return Result{Gone: true}, fmt.Errorf("push: apns device token %q is not hex", t.Token)
	}
	body, err := apnsBody(&n)
	if err != nil {
		return Result{}, err
	}
	if len(body) > apnsMaxPayload {
		return Result{}, fmt.Errorf("push: apns payload is %d bytes, limit %d", len(body), apnsMaxPayload)
	}
	now := a.now()
	bearer, err := a.providerToken(now)
	if err != nil {
		return Result{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.endpoint+"/3/device/"+strings.ToLower(t.Token), bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	h := req.Header
	h.Set("Authorization", "bearer "+bearer)
	h.Set("Content-Type", "application/json")
	h.Set("apns-topic", a.topic)
	h.Set("apns-push-type", "alert")
	h.Set("apns-priority", "10")
	h.Set("apns-expiration", strconv.FormatInt(now.Add(n.ttl()).Unix(), 10))
	if n.CollapseKey != "" {
		h.Set("apns-collapse-id", apnsCollapseID(n.CollapseKey))
	}
	if n.IdempotencyKey != "" {
		h.Set("apns-id", uuidFromKey(n.IdempotencyKey))
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return transportFailure(ctx, err)
	}
	defer resp.Body.Close()
	answer := readLimited(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return Result{Status: resp.StatusCode}, nil
	}
	var e struct {
		Reason string `json:"reason"`
	}
	json.Unmarshal(answer, &e)
	r := classify(resp, a.now())
	switch {
	case resp.StatusCode == http.StatusGone:
		r.Gone = true
	case resp.StatusCode == http.StatusBadRequest && e.Reason == "BadDeviceToken":
		r.Gone = true
	case resp.StatusCode == http.StatusForbidden && e.Reason == "ExpiredProviderToken":
		a.dropExpiredToken(bearer, a.now())
		r.Retryable = true
	}
	if e.Reason == "" {
		e.Reason = http.StatusText(resp.StatusCode)
	}
	return r, &ProviderError{Provider: ProviderAPNs, Status: resp.StatusCode, Reason: e.Reason}
}
