package push

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Web Push is implemented here rather than with a library: RFC 8291
// encryption is about forty lines over crypto/ecdh, crypto/hkdf and AES-GCM
// from the standard library, and the maintained Go library we looked at
// (SherClockHolmes/webpush-go 1.4) pads every message to 4 KiB, ignores its
// VAPID expiry option and prefixes "mailto:" to a subject that already has
// it. encryptRFC8291 is checked byte for byte against RFC 8291 Appendix A.

// webPushRecordSize is the rs we declare. A push message is one record, and
// push services accept at most 4096 bytes of body, so it is also the limit.
const webPushRecordSize = 4096

// webPushHeaderLen is the aes128gcm header with a P-256 key id: salt (16),
// rs (4), idlen (1), keyid (65).
const webPushHeaderLen = 16 + 4 + 1 + 65

// WebPushMaxPlaintext is the largest payload one message can carry: the
// record less the header, the GCM tag and the padding delimiter.
const WebPushMaxPlaintext = webPushRecordSize - webPushHeaderLen - 16 - 1

// VAPIDExpiry is how long a VAPID JWT is valid; RFC 8292 allows at most 24
// hours, and half of it leaves room for clock skew at the push service.
const VAPIDExpiry = 12 * time.Hour

// WebPushConfig configures Web Push with VAPID.
type WebPushConfig struct {
	// VAPIDKeyFile holds the application server's P-256 private key, as PEM
	// (PKCS#8 or SEC 1) or as the base64url 32-byte scalar that web-push
	// tooling prints. Its public key is the applicationServerKey browsers
	// subscribe with (see PublicKey).
	VAPIDKeyFile string
	// Subject is the VAPID sub claim, "mailto:" or "https:" contact for the
	// push service's operators.
	Subject string
	// Timeout bounds each request when HTTPClient is nil; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// HTTPClient overrides the default client (DefaultTimeout, no redirects,
	// public addresses only: endpoints come from browsers).
	HTTPClient *http.Client
	// AllowPrivateNetworks lets the default client reach private addresses.
	AllowPrivateNetworks bool
	// Now is the clock for the JWT's exp; nil means time.Now.
	Now func() time.Time
}

// WebPush is the Sender for ProviderWebPush: Target.Endpoint, P256dh and Auth
// come from the browser's PushSubscription.
type WebPush struct {
	key     *ecdsa.PrivateKey
	public  string // base64url uncompressed point, the k= parameter
	subject string
	client  *http.Client
	now     func() time.Time
}

// NewWebPush reads the VAPID key.
func NewWebPush(cfg WebPushConfig) (*WebPush, error) {
	if !strings.HasPrefix(cfg.Subject, "mailto:") && !strings.HasPrefix(cfg.Subject, "https:") {
		return nil, fmt.Errorf("push: webpush Subject %q must be a mailto: or https: URI", cfg.Subject)
	}
	key, err := readVAPIDKey(cfg.VAPIDKeyFile)
	if err != nil {
		return nil, fmt.Errorf("push: webpush VAPID key: %w", err)
	}
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	w := &WebPush{key: key, public: base64.RawURLEncoding.EncodeToString(pub), subject: cfg.Subject, now: cfg.Now}
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

// PublicKey is the VAPID public key in base64url, what the web client passes
// as applicationServerKey to pushManager.subscribe.
func (w *WebPush) PublicKey() string { return w.public }

func readVAPIDKey(path string) (*ecdsa.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(raw, []byte("-----BEGIN")) {
		return readECKey(path)
	}
	scalar, err := decodeBase64URL(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("%s: neither PEM nor base64url: %w", path, err)
	}
	return ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar)
}

// decodeBase64URL accepts base64url with or without padding, which is how
// browsers and libraries variously serialise subscription keys.
func decodeBase64URL(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// encryptRFC8291 encrypts plaintext for one subscription as a single
// aes128gcm record (RFC 8188) with the key derivation of RFC 8291 section 3.
// asKey is the sender's one-time ECDH key and salt 16 random bytes; both are
// arguments so the function is deterministic and testable.
func encryptRFC8291(plaintext, uaPublic, authSecret []byte, asKey *ecdh.PrivateKey, salt []byte) ([]byte, error) {
	if len(plaintext) > WebPushMaxPlaintext {
		return nil, fmt.Errorf("push: webpush payload is %d bytes, limit %d", len(plaintext), WebPushMaxPlaintext)
	}
	if len(salt) != 16 || len(authSecret) != 16 {
		return nil, errors.New("push: webpush salt and auth secret must be 16 bytes")
	}
	ua, err := ecdh.P256().NewPublicKey(uaPublic)
	if err != nil {
		return nil, fmt.Errorf("push: webpush p256dh: %w", err)
	}
	ecdhSecret, err := asKey.ECDH(ua)
	if err != nil {
		return nil, err
	}
	asPublic := asKey.PublicKey().Bytes()
	// IKM = HKDF(salt=auth_secret, ikm=ecdh_secret, info="WebPush: info\0"||ua_public||as_public, 32)
	info := make([]byte, 0, 14+65+65)
	info = append(info, "WebPush: info\x00"...)
	info = append(info, uaPublic...)
	info = append(info, asPublic...)
	ikm, err := hkdf.Key(sha256.New, ecdhSecret, authSecret, string(info), 32)
	if err != nil {
		return nil, err
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, webPushHeaderLen+len(plaintext)+1+gcm.Overhead())
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, webPushRecordSize)
	out = append(out, byte(len(asPublic)))
	out = append(out, asPublic...)
	// The only record is the last: its padding delimiter is 2 (RFC 8188
	// section 2), with no further padding.
	record := append(append(make([]byte, 0, len(plaintext)+1), plaintext...), 2)
	return gcm.Seal(out, nonce, record, nil), nil
}

// webPushMessage is the decrypted payload the service worker receives.
type webPushMessage struct {
	Title string            `json:"title,omitempty"`
	Body  string            `json:"body"`
	Conv  string            `json:"conv"`
	Seq   string            `json:"seq"`
	Badge int               `json:"badge,omitempty"`
	Tag   string            `json:"tag,omitempty"`
	Data  map[string]string `json:"data,omitempty"`
}

func webPushPlaintext(n *Notification) ([]byte, error) {
	title, body := n.visibleText()
	return json.Marshal(webPushMessage{Title: title, Body: body,
		Conv: strconv.FormatUint(n.Conv, 10), Seq: strconv.FormatUint(n.Seq, 10),
		Badge: max(n.Badge, 0), Tag: n.CollapseKey, Data: n.Data})
}

// webPushTopic maps a collapse key into an RFC 8030 Topic, which must be at
// most 32 characters of the base64url alphabet: 24 bytes of its SHA-256.
func webPushTopic(key string) string {
	sum := sha256.Sum256([]byte(key))
	return base64.RawURLEncoding.EncodeToString(sum[:24])
}

// vapidAuthorization is the RFC 8292 Authorization header for an endpoint.
func (w *WebPush) vapidAuthorization(endpoint *url.URL, now time.Time) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"aud": endpoint.Scheme + "://" + endpoint.Host,
		"exp": now.Add(VAPIDExpiry).Unix(),
		"sub": w.subject,
	})
	s, err := t.SignedString(w.key)
	if err != nil {
		return "", err
	}
	return "vapid t=" + s + ", k=" + w.public, nil
}

// Send encrypts and posts one message. 201 (any 2xx) is success; 404 and 410
// mean the subscription expired or was withdrawn (Gone); 429 and 5xx are
// retryable.
func (w *WebPush) Send(ctx context.Context, t Target, n Notification) (Result, error) {
	u, err := url.Parse(t.Endpoint)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return Result{Gone: true}, fmt.Errorf("push: webpush endpoint %q is not an https URL", t.Endpoint)
	}
	uaPublic, err1 := decodeBase64URL(t.P256dh)
	auth, err2 := decodeBase64URL(t.Auth)
	if err1 != nil || err2 != nil || len(auth) != 16 {
		return Result{Gone: true}, errors.New("push: webpush subscription keys are not base64url, or auth is not 16 bytes")
	}
	if _, err := ecdh.P256().NewPublicKey(uaPublic); err != nil {
		return Result{Gone: true}, fmt.Errorf("push: webpush p256dh is not a P-256 point: %w", err)
	}
	plaintext, err := webPushPlaintext(&n)
	if err != nil {
		return Result{}, err
	}
	asKey, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return Result{}, err
	}
	salt := make([]byte, 16)
	if _, err := io.ReadFull(rand.Reader, salt); err != nil {
		return Result{}, err
	}
	body, err := encryptRFC8291(plaintext, uaPublic, auth, asKey, salt)
	if err != nil {
		return Result{}, err
	}
	now := w.now()
	authz, err := w.vapidAuthorization(u, now)
	if err != nil {
		return Result{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	h := req.Header
	h.Set("Authorization", authz)
	h.Set("Content-Encoding", "aes128gcm")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("TTL", strconv.FormatInt(int64(n.ttl()/time.Second), 10))
	h.Set("Urgency", "high")
	if n.CollapseKey != "" {
		h.Set("Topic", webPushTopic(n.CollapseKey))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return deliveryFailure(ctx, err)
	}
	defer resp.Body.Close()
	answer := readLimited(resp.Body)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return Result{Status: resp.StatusCode}, nil
	}
	r := classify(resp, w.now())
	r.Gone = resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone
	reason := strings.TrimSpace(string(answer))
	if len(reason) > 200 || reason == "" {
		reason = http.StatusText(resp.StatusCode)
	}
	return r, &ProviderError{Provider: ProviderWebPush, Status: resp.StatusCode, Reason: reason}
}
