package pushtest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FCM is a fake of Google's OAuth2 token endpoint and the FCM HTTP v1 send
// endpoint. The token endpoint accepts only a JWT-bearer grant whose
// assertion is signed with the service account key it generated; the send
// endpoint accepts only a Bearer token it issued and a message that decodes
// strictly into the v1 schema.
type FCM struct {
	script
	srv *httptest.Server
	// URL is the API origin (FCMConfig.Endpoint).
	URL string
	// ServiceAccountFile is a service account JSON key whose token_uri
	// points at this fake.
	ServiceAccountFile string
	ProjectID          string
	ClientEmail        string

	key      *rsa.PrivateKey
	keyID    string
	tokenURL string

	mu           sync.Mutex
	accessTokens map[string]bool
	tokenGrants  int
	messages     []FCMMessage
}

// FCMMessage is the subset of the v1 Message resource the fake understands.
// Unknown fields are an error, as they are for FCM.
type FCMMessage struct {
	Name         string            `json:"name"`
	Token        string            `json:"token"`
	Topic        string            `json:"topic"`
	Condition    string            `json:"condition"`
	Data         map[string]string `json:"data"`
	Notification *struct {
		Title string `json:"title"`
		Body  string `json:"body"`
		Image string `json:"image"`
	} `json:"notification"`
	Android *struct {
		CollapseKey           string            `json:"collapse_key"`
		Priority              string            `json:"priority"`
		TTL                   string            `json:"ttl"`
		RestrictedPackageName string            `json:"restricted_package_name"`
		Data                  map[string]string `json:"data"`
		DirectBootOK          bool              `json:"direct_boot_ok"`
		Notification          *struct {
			Title       string `json:"title"`
			Body        string `json:"body"`
			Icon        string `json:"icon"`
			Color       string `json:"color"`
			Sound       string `json:"sound"`
			Tag         string `json:"tag"`
			ClickAction string `json:"click_action"`
			ChannelID   string `json:"channel_id"`
		} `json:"notification"`
	} `json:"android"`
	APNs *struct {
		Headers map[string]string `json:"headers"`
		// Payload is free-form JSON in the API; it must hold an "aps" object.
		Payload map[string]json.RawMessage `json:"payload"`
	} `json:"apns"`
	Webpush    json.RawMessage `json:"webpush"`
	FCMOptions json.RawMessage `json:"fcm_options"`
}

// NewFCM starts the fake with a fresh 2048-bit RSA service account key.
func NewFCM(tb testing.TB) *FCM {
	tb.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	f := &FCM{ProjectID: "parley-test", ClientEmail: "push@parley-test.iam.gserviceaccount.com",
		key: key, keyID: "test-key-1", accessTokens: make(map[string]bool)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", f.serveToken)
	mux.HandleFunc("POST /v1/projects/{project}/messages:send", f.serveSend)
	f.srv = httptest.NewServer(mux)
	tb.Cleanup(f.srv.Close)
	f.URL = f.srv.URL
	f.tokenURL = f.srv.URL + "/token"

	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	sa, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     f.ProjectID,
		"private_key_id": f.keyID,
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   f.ClientEmail,
		"client_id":      "100000000000000000001",
		"token_uri":      f.tokenURL,
	})
	f.ServiceAccountFile = filepath.Join(tb.TempDir(), "service-account.json")
	if err := os.WriteFile(f.ServiceAccountFile, sa, 0o600); err != nil {
		tb.Fatal(err)
	}
	return f
}

// Client returns a client that reaches the fake.
func (f *FCM) Client() *http.Client { return f.srv.Client() }

// Respond makes every valid send to token get resp.
func (f *FCM) Respond(token string, resp Response) { f.set(token, resp) }

// Unregister makes sends to token fail as FCM does for an uninstalled app:
// 404 NOT_FOUND with errorCode UNREGISTERED.
func (f *FCM) Unregister(token string) {
	f.Respond(token, FCMError(http.StatusNotFound, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."))
}

// FCMError builds an error answer in Google's envelope with an FcmError detail.
func FCMError(status int, rpcStatus, errorCode, message string) Response {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"code": status, "message": message, "status": rpcStatus,
		"details": []any{map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": errorCode}},
	}})
	return Response{Status: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: string(body)}
}

// Messages returns the accepted messages, oldest first.
func (f *FCM) Messages() []FCMMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]FCMMessage(nil), f.messages...)
}

// TokenGrants counts access tokens issued, to check that senders cache them.
func (f *FCM) TokenGrants() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenGrants
}

func googleError(w http.ResponseWriter, status int, rpcStatus, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": status, "message": msg, "status": rpcStatus}})
}

// serveToken implements the JWT-bearer grant (RFC 7523) as Google does for
// service accounts: an RS256 assertion with kid, iss = client_email, aud =
// the token URL, the requested scope, and at most an hour between iat and exp.
func (f *FCM) serveToken(w http.ResponseWriter, r *http.Request) {
	fail := func(msg string) {
		f.reject("token: " + msg)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": msg})
	}
	if err := r.ParseForm(); err != nil {
		fail(err.Error())
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail(fmt.Sprintf("grant_type %q", g))
		return
	}
	var claims struct {
		jwt.RegisteredClaims
		Scope string `json:"scope"`
	}
	tok, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), &claims, func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != f.keyID {
			return nil, fmt.Errorf("kid %q, want %q", kid, f.keyID)
		}
		return &f.key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(f.tokenURL), jwt.WithIssuer(f.ClientEmail),
		jwt.WithIssuedAt(), jwt.WithExpirationRequired(), jwt.WithLeeway(time.Minute))
	if err != nil || !tok.Valid {
		fail(fmt.Sprintf("assertion: %v", err))
		return
	}
	if claims.IssuedAt == nil || claims.ExpiresAt.Sub(claims.IssuedAt.Time) > time.Hour {
		fail("assertion lifetime over an hour or no iat")
		return
	}
	if !contains(strings.Fields(claims.Scope), "https://www.googleapis.com/auth/firebase.messaging") {
		fail(fmt.Sprintf("scope %q lacks firebase.messaging", claims.Scope))
		return
	}
	access := f.IssueAccessToken()
	f.mu.Lock()
	f.tokenGrants++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": 3600})
}

// IssueAccessToken mints an access token the send endpoint accepts, for
// tests that post to the fake directly. It is not counted in TokenGrants.
func (f *FCM) IssueAccessToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	access := "ya29.fake-" + hex.EncodeToString(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accessTokens[access] = true
	return access
}

var protoDuration = regexp.MustCompile(`^[0-9]+(\.[0-9]{1,9})?s$`)

func (f *FCM) serveSend(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, rpcStatus, msg string) {
		f.reject("send: " + msg)
		googleError(w, status, rpcStatus, msg)
	}
	access, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	known := f.accessTokens[access]
	f.mu.Unlock()
	if !ok || !known {
		fail(http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
		return
	}
	if p := r.PathValue("project"); p != f.ProjectID {
		fail(http.StatusForbidden, "PERMISSION_DENIED", fmt.Sprintf("project %q, want %q", p, f.ProjectID))
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		fail(http.StatusBadRequest, "INVALID_ARGUMENT", "Content-Type "+ct)
		return
	}
	var req struct {
		ValidateOnly bool       `json:"validate_only"`
		Message      FCMMessage `json:"message"`
	}
	var buf bytes.Buffer
	buf.ReadFrom(r.Body)
	dec := json.NewDecoder(&buf)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received. "+err.Error())
		return
	}
	if msg := checkFCMMessage(&req.Message); msg != "" {
		fail(http.StatusBadRequest, "INVALID_ARGUMENT", msg)
		return
	}
	if resp, ok := f.lookup(req.Message.Token); ok {
		write(w, resp)
		return
	}
	f.mu.Lock()
	f.messages = append(f.messages, req.Message)
	n := len(f.messages)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"name":"projects/%s/messages/0:%d"}`, f.ProjectID, n)
}

// checkFCMMessage applies the v1 API's rules that a JSON schema alone does
// not catch; it returns "" for a valid message.
func checkFCMMessage(m *FCMMessage) string {
	targets := 0
	for _, s := range []string{m.Token, m.Topic, m.Condition} {
		if s != "" {
			targets++
		}
	}
	if targets != 1 {
		return "exactly one of token, topic, condition is required"
	}
	if a := m.Android; a != nil {
		if a.TTL != "" && !protoDuration.MatchString(a.TTL) {
			return fmt.Sprintf("android.ttl %q is not a Duration like \"3.5s\"", a.TTL)
		}
		if a.Priority != "" && a.Priority != "NORMAL" && a.Priority != "HIGH" {
			return fmt.Sprintf("android.priority %q", a.Priority)
		}
	}
	if a := m.APNs; a != nil {
		if id := a.Headers["apns-collapse-id"]; len(id) > 64 {
			return "apns-collapse-id over 64 bytes"
		}
		if a.Payload != nil {
			var aps map[string]json.RawMessage
			if err := json.Unmarshal(a.Payload["aps"], &aps); err != nil {
				return "apns.payload.aps is not an object"
			}
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// RejectTokenAsInvalid makes sends to token fail as FCM does for a malformed
// registration token: 400 INVALID_ARGUMENT naming the message.token field.
func (f *FCM) RejectTokenAsInvalid(token string) {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"code": 400, "message": "The registration token is not a valid FCM registration token", "status": "INVALID_ARGUMENT",
		"details": []any{
			map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"},
			map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": []any{
				map[string]any{"field": "message.token", "description": "Invalid registration token"}}},
		},
	}})
	f.Respond(token, Response{Status: 400, Header: http.Header{"Content-Type": {"application/json"}}, Body: string(body)})
}
