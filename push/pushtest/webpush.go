package pushtest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// WebPush is a fake push service (RFC 8030). Subscriptions it creates
// hold a browser's key pair and auth secret, so it can decrypt what it is sent
// (RFC 8291). It requires a VAPID (RFC 8292) Authorization whose k= is its
// application server key and whose JWT is signed by it, has aud = the
// service's origin, and expires within 24 hours.
type WebPush struct {
	script
	srv *httptest.Server
	// URL is the service's origin.
	URL string
	// VAPIDKeyFile is the application server's private key (PEM); VAPIDPublic
	// is its public key in base64url, what browsers would subscribe with.
	VAPIDKeyFile string
	VAPIDPublic  string
	vapidKey     *ecdsa.PublicKey

	mu       sync.Mutex
	now      func() time.Time
	subs     map[string]*subscription
	messages []WebPushMessage
}

type subscription struct {
	key  *ecdh.PrivateKey
	auth []byte
}

// WebPushMessage is one accepted, decrypted message.
type WebPushMessage struct {
	Endpoint  string
	Header    http.Header
	Plaintext []byte
	// VAPIDSubject is the JWT's sub.
	VAPIDSubject string
}

// WebPushSubscription is what a browser's PushSubscription.toJSON() holds.
type WebPushSubscription struct {
	Endpoint string
	P256dh   string // base64url, unpadded
	Auth     string // base64url, unpadded
}

// NewWebPush starts the fake over TLS (push services are https only) with a
// fresh VAPID key pair.
func NewWebPush(tb testing.TB) *WebPush {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	pub, _ := key.PublicKey.Bytes()
	f := &WebPush{VAPIDPublic: base64.RawURLEncoding.EncodeToString(pub), vapidKey: &key.PublicKey,
		now: time.Now, subs: make(map[string]*subscription)}
	f.VAPIDKeyFile = filepath.Join(tb.TempDir(), "vapid.pem")
	if err := os.WriteFile(f.VAPIDKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /wpush/{id}", f.serve)
	f.srv = httptest.NewTLSServer(mux)
	tb.Cleanup(f.srv.Close)
	f.URL = f.srv.URL
	return f
}

// Client returns a client that trusts the fake's certificate.
func (f *WebPush) Client() *http.Client { return f.srv.Client() }

// SetNow replaces the clock the fake checks exp against.
func (f *WebPush) SetNow(now func() time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

// Subscribe creates a subscription as a browser would: a fresh P-256 key
// pair and 16-byte auth secret, and an endpoint on this service.
func (f *WebPush) Subscribe(tb testing.TB) WebPushSubscription {
	tb.Helper()
	key, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	auth := make([]byte, 16)
	rand.Read(auth)
	idb := make([]byte, 12)
	rand.Read(idb)
	id := base64.RawURLEncoding.EncodeToString(idb)
	f.mu.Lock()
	f.subs[id] = &subscription{key: key, auth: auth}
	f.mu.Unlock()
	return WebPushSubscription{Endpoint: f.URL + "/wpush/" + id,
		P256dh: base64.RawURLEncoding.EncodeToString(key.PublicKey().Bytes()),
		Auth:   base64.RawURLEncoding.EncodeToString(auth)}
}

// Respond makes every valid message to endpoint get resp.
func (f *WebPush) Respond(endpoint string, resp Response) { f.set(endpoint, resp) }

// Expire makes endpoint answer 410 Gone, as for a withdrawn subscription.
func (f *WebPush) Expire(endpoint string) {
	f.Respond(endpoint, Response{Status: http.StatusGone, Body: "subscription expired"})
}

// Messages returns the accepted messages, oldest first.
func (f *WebPush) Messages() []WebPushMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]WebPushMessage(nil), f.messages...)
}

var topicForm = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func (f *WebPush) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		f.reject(msg)
		http.Error(w, msg, status)
	}
	endpoint := f.URL + r.URL.Path
	f.mu.Lock()
	sub := f.subs[r.PathValue("id")]
	now := f.now()
	f.mu.Unlock()
	if sub == nil {
		fail(http.StatusNotFound, "no such subscription")
		return
	}
	subject, err := f.checkVAPID(r.Header.Get("Authorization"), now)
	if err != nil {
		fail(http.StatusUnauthorized, "VAPID: %v", err)
		return
	}
	h := r.Header
	if _, err := strconv.ParseUint(h.Get("TTL"), 10, 32); err != nil {
		fail(http.StatusBadRequest, "TTL %q is not a non-negative integer (RFC 8030 section 5.2 requires it)", h.Get("TTL"))
		return
	}
	if u := h.Get("Urgency"); u != "" && u != "very-low" && u != "low" && u != "normal" && u != "high" {
		fail(http.StatusBadRequest, "Urgency %q", u)
		return
	}
	if t := h.Get("Topic"); t != "" && !topicForm.MatchString(t) {
		fail(http.StatusBadRequest, "Topic %q is not 1 to 32 base64url characters", t)
		return
	}
	if ce := h.Get("Content-Encoding"); ce != "aes128gcm" {
		fail(http.StatusUnsupportedMediaType, "Content-Encoding %q, want aes128gcm", ce)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4097))
	if len(body) > 4096 {
		fail(http.StatusRequestEntityTooLarge, "body over 4096 bytes")
		return
	}
	plaintext, err := DecryptAES128GCM(body, sub.key, sub.auth)
	if err != nil {
		fail(http.StatusBadRequest, "decrypt: %v", err)
		return
	}
	if resp, ok := f.lookup(endpoint); ok {
		write(w, resp)
		return
	}
	f.mu.Lock()
	f.messages = append(f.messages, WebPushMessage{Endpoint: endpoint, Header: h.Clone(), Plaintext: plaintext, VAPIDSubject: subject})
	f.mu.Unlock()
	w.Header().Set("Location", endpoint+"/m/1")
	w.WriteHeader(http.StatusCreated)
}

// checkVAPID verifies an RFC 8292 Authorization header and returns its sub.
func (f *WebPush) checkVAPID(header string, now time.Time) (string, error) {
	rest, ok := strings.CutPrefix(header, "vapid ")
	if !ok {
		return "", fmt.Errorf("scheme is not vapid: %q", header)
	}
	var token, k string
	for _, part := range strings.Split(rest, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch name {
		case "t":
			token = value
		case "k":
			k = value
		}
	}
	if token == "" || k == "" {
		return "", errors.New("t= or k= missing")
	}
	if k != f.VAPIDPublic {
		return "", errors.New("k= is not the key the subscription was made with")
	}
	raw, err := base64.RawURLEncoding.DecodeString(k)
	if err != nil {
		return "", fmt.Errorf("k=: %v", err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), raw)
	if err != nil {
		return "", fmt.Errorf("k=: %v", err)
	}
	var claims jwt.RegisteredClaims
	_, err = jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(f.URL), jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return "", err
	}
	if claims.ExpiresAt.Sub(now) > 24*time.Hour {
		return "", fmt.Errorf("exp %v is more than 24 hours ahead", claims.ExpiresAt.Time)
	}
	if !strings.HasPrefix(claims.Subject, "mailto:") && !strings.HasPrefix(claims.Subject, "https:") {
		return "", fmt.Errorf("sub %q is neither a mailto: nor an https: URI", claims.Subject)
	}
	return claims.Subject, nil
}

// DecryptAES128GCM is the user agent's side of RFC 8291: it decrypts an
// aes128gcm body (RFC 8188, any number of records) with the subscription's
// private key and auth secret.
func DecryptAES128GCM(body []byte, uaKey *ecdh.PrivateKey, authSecret []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("shorter than the aes128gcm header")
	}
	salt := body[:16]
	rs := binary.BigEndian.Uint32(body[16:20])
	idlen := int(body[20])
	if rs < 18 || len(body) < 21+idlen {
		return nil, fmt.Errorf("rs %d or idlen %d out of range", rs, idlen)
	}
	asPub, err := ecdh.P256().NewPublicKey(body[21 : 21+idlen])
	if err != nil {
		return nil, fmt.Errorf("keyid is not the sender's P-256 public key: %v", err)
	}
	shared, err := uaKey.ECDH(asPub)
	if err != nil {
		return nil, err
	}
	prkKey, _ := hkdf.Extract(sha256.New, shared, authSecret)
	keyInfo := "WebPush: info\x00" + string(uaKey.PublicKey().Bytes()) + string(asPub.Bytes())
	ikm, _ := hkdf.Expand(sha256.New, prkKey, keyInfo, 32)
	prk, _ := hkdf.Extract(sha256.New, ikm, salt)
	cek, _ := hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16)
	baseNonce, _ := hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12)
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)

	var out []byte
	records := body[21+idlen:]
	for seq := uint64(0); ; seq++ {
		n := min(int(rs), len(records))
		rec := records[:n]
		records = records[n:]
		nonce := append([]byte(nil), baseNonce...)
		for i := 0; i < 8; i++ {
			nonce[11-i] ^= byte(seq >> (8 * i))
		}
		plain, err := gcm.Open(nil, nonce, rec, nil)
		if err != nil {
			return nil, fmt.Errorf("record %d: %v", seq, err)
		}
		end := len(plain) - 1
		for end >= 0 && plain[end] == 0 {
			end--
		}
		if end < 0 {
			return nil, fmt.Errorf("record %d has no padding delimiter", seq)
		}
		last := len(records) == 0
		want := byte(1) // RFC 8188 section 2: 1 ends a record, 2 the last one
		if last {
			want = 2
		}
		if plain[end] != want {
			return nil, fmt.Errorf("record %d's delimiter is %d, want %d", seq, plain[end], want)
		}
		out = append(out, plain[:end]...)
		if last {
			return out, nil
		}
	}
}

// WebPushPayload decodes a message's plaintext as the JSON the service worker
// gets, for assertions.
func WebPushPayload(m WebPushMessage) (map[string]any, error) {
	var v map[string]any
	err := json.Unmarshal(m.Plaintext, &v)
	return v, err
}
