package pushtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
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

// APNs is a fake Apple Push Notification service: a TLS server that speaks
// HTTP/2 and answers like APNs, with {"reason": ...} bodies. It verifies the
// ES256 provider token against the key it generated, and the headers and
// payload of POST /3/device/{token}.
type APNs struct {
	script
	srv *httptest.Server
	// URL is the endpoint (APNsConfig.Endpoint).
	URL string
	// KeyFile is a .p8-style PKCS#8 PEM key; KeyID, TeamID and Topic are
	// what the sender must put in kid, iss and apns-topic.
	KeyFile string
	KeyID   string
	TeamID  string
	Topic   string
	Public  *ecdsa.PublicKey

	mu             sync.Mutex
	now            func() time.Time
	providerTokens map[string]bool
	notifications  []APNsNotification
}

// APNsNotification is one accepted request.
type APNsNotification struct {
	DeviceToken string
	Header      http.Header
	Payload     map[string]json.RawMessage
	// APS is Payload["aps"] decoded.
	APS struct {
		Alert struct {
			Title string `json:"title"`
			Body  string `json:"body"`
		} `json:"alert"`
		Badge    *int   `json:"badge"`
		ThreadID string `json:"thread-id"`
		Sound    string `json:"sound"`
	}
}

// NewAPNs starts the fake with a fresh P-256 signing key.
func NewAPNs(tb testing.TB) *APNs {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	a := &APNs{KeyID: "ABC123DEFG", TeamID: "DEF123GHIJ", Topic: "org.parley.app", Public: &key.PublicKey,
		now: time.Now, providerTokens: make(map[string]bool)}
	a.KeyFile = filepath.Join(tb.TempDir(), "AuthKey_"+a.KeyID+".p8")
	if err := os.WriteFile(a.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.srv.EnableHTTP2 = true
	a.srv.StartTLS()
	tb.Cleanup(a.srv.Close)
	a.URL = a.srv.URL
	return a
}

// Client returns an HTTP/2-capable client that trusts the fake's certificate.
func (a *APNs) Client() *http.Client { return a.srv.Client() }

// SetNow replaces the clock the fake checks iat against.
func (a *APNs) SetNow(now func() time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.now = now
}

// Respond makes every valid request for deviceToken get resp.
func (a *APNs) Respond(deviceToken string, resp Response) { a.set(deviceToken, resp) }

// Unregister makes deviceToken answer 410 Unregistered, as for an app that
// was uninstalled.
func (a *APNs) Unregister(deviceToken string) {
	body := fmt.Sprintf(`{"reason":"Unregistered","timestamp":%d}`, time.Now().UnixMilli())
	a.Respond(deviceToken, Response{Status: http.StatusGone, Body: body})
}

// APNsError is an error answer with Apple's body shape.
func APNsError(status int, reason string) Response {
	return Response{Status: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: `{"reason":"` + reason + `"}`}
}

// Notifications returns the accepted requests, oldest first.
func (a *APNs) Notifications() []APNsNotification {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]APNsNotification(nil), a.notifications...)
}

// ProviderTokens counts the distinct provider tokens seen, to check caching.
func (a *APNs) ProviderTokens() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.providerTokens)
}

var (
	apnsPath = regexp.MustCompile(`^/3/device/([0-9a-fA-F]+)$`)
	uuidForm = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

func (a *APNs) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, reason, detail string) {
		a.reject(reason + ": " + detail)
		write(w, APNsError(status, reason))
	}
	if r.ProtoMajor != 2 {
		fail(http.StatusHTTPVersionNotSupported, "HTTP2Required", r.Proto)
		return
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "MethodNotAllowed", r.Method)
		return
	}
	m := apnsPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		fail(http.StatusNotFound, "BadPath", r.URL.Path)
		return
	}
	device := m[1]
	a.mu.Lock()
	now := a.now()
	a.mu.Unlock()
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "bearer ")
	if !ok || bearer == "" {
		fail(http.StatusForbidden, "MissingProviderToken", r.Header.Get("Authorization"))
		return
	}
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(bearer, &claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != a.KeyID {
			return nil, fmt.Errorf("kid %q, want %q", kid, a.KeyID)
		}
		return a.Public, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(a.TeamID), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		fail(http.StatusForbidden, "InvalidProviderToken", err.Error())
		return
	}
	if claims.IssuedAt == nil || claims.IssuedAt.After(now.Add(time.Minute)) {
		fail(http.StatusForbidden, "InvalidProviderToken", "no iat, or iat in the future")
		return
	}
	if now.Sub(claims.IssuedAt.Time) > time.Hour {
		fail(http.StatusForbidden, "ExpiredProviderToken", "iat over an hour ago")
		return
	}
	a.mu.Lock()
	a.providerTokens[bearer] = true
	a.mu.Unlock()

	h := r.Header
	switch {
	case h.Get("apns-topic") == "":
		fail(http.StatusBadRequest, "MissingTopic", "")
	case h.Get("apns-topic") != a.Topic:
		fail(http.StatusBadRequest, "TopicDisallowed", h.Get("apns-topic"))
	case h.Get("apns-push-type") != "alert":
		fail(http.StatusBadRequest, "InvalidPushType", h.Get("apns-push-type"))
	case h.Get("apns-priority") != "" && h.Get("apns-priority") != "10" && h.Get("apns-priority") != "5" && h.Get("apns-priority") != "1":
		fail(http.StatusBadRequest, "BadPriority", h.Get("apns-priority"))
	case len(h.Get("apns-collapse-id")) > 64:
		fail(http.StatusBadRequest, "BadCollapseId", h.Get("apns-collapse-id"))
	case h.Get("apns-id") != "" && !uuidForm.MatchString(h.Get("apns-id")):
		fail(http.StatusBadRequest, "BadMessageId", h.Get("apns-id"))
	case h.Get("apns-expiration") != "" && !isDecimal(h.Get("apns-expiration")):
		fail(http.StatusBadRequest, "BadExpirationDate", h.Get("apns-expiration"))
	default:
		a.accept(w, r, device)
	}
}

func (a *APNs) accept(w http.ResponseWriter, r *http.Request, device string) {
	fail := func(status int, reason, detail string) {
		a.reject(reason + ": " + detail)
		write(w, APNsError(status, reason))
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4097))
	if len(body) > 4096 {
		fail(http.StatusRequestEntityTooLarge, "PayloadTooLarge", "over 4096 bytes")
		return
	}
	n := APNsNotification{DeviceToken: device, Header: r.Header.Clone()}
	if len(body) == 0 {
		fail(http.StatusBadRequest, "PayloadEmpty", "")
		return
	}
	if err := json.Unmarshal(body, &n.Payload); err != nil {
		fail(http.StatusBadRequest, "BadPayload", err.Error())
		return
	}
	dec := json.NewDecoder(strings.NewReader(string(n.Payload["aps"])))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&n.APS); err != nil {
		fail(http.StatusBadRequest, "BadPayload", "aps: "+err.Error())
		return
	}
	if n.APS.Alert.Body == "" && n.APS.Alert.Title == "" {
		fail(http.StatusBadRequest, "BadPayload", "alert push without alert text")
		return
	}
	if resp, ok := a.lookup(device); ok {
		write(w, resp)
		return
	}
	a.mu.Lock()
	a.notifications = append(a.notifications, n)
	a.mu.Unlock()
	if id := r.Header.Get("apns-id"); id != "" {
		w.Header().Set("apns-id", id)
	}
	w.WriteHeader(http.StatusOK)
}

func isDecimal(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}
