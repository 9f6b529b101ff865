package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// FCMScope is the OAuth2 scope a service account needs to send messages.
const FCMScope = "https://www.googleapis.com/auth/firebase.messaging"

// DefaultFCMEndpoint is the FCM HTTP v1 API's origin.
const DefaultFCMEndpoint = "https://fcm.googleapis.com"

// FCMConfig configures Firebase Cloud Messaging through the HTTP v1 API.
type FCMConfig struct {
	// ServiceAccountFile is the service account's JSON key as downloaded from
	// the Google Cloud console. Its token_uri is where access tokens are
	// fetched from (tests point it at a fake).
	ServiceAccountFile string
	// ProjectID defaults to the key's project_id.
	ProjectID string
	// Endpoint replaces DefaultFCMEndpoint (tests).
	Endpoint string
	// Timeout bounds each request when HTTPClient is nil; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// HTTPClient carries both the token requests and the sends; nil means a
	// client with DefaultTimeout.
	HTTPClient *http.Client
	// Now is the clock for apns-expiration and Retry-After dates; nil means
	// time.Now.
	Now func() time.Time
}

// FCM is the Sender for ProviderFCM: Target.Token is the registration token.
type FCM struct {
	sendURL string
	client  *http.Client
	// tokens caches the OAuth2 access token and refreshes it shortly before
	// it expires (oauth2.ReuseTokenSource); it is safe for concurrent use.
	tokens oauth2.TokenSource
	now    func() time.Time
}

// NewFCM reads the service account key. It does not fetch a token yet: the
// first Send does, so a node starts while Google is unreachable.
func NewFCM(cfg FCMConfig) (*FCM, error) {
	raw, err := os.ReadFile(cfg.ServiceAccountFile)
	if err != nil {
		return nil, fmt.Errorf("push: fcm service account: %w", err)
	}
	jwtCfg, err := google.JWTConfigFromJSON(raw, FCMScope)
	if err != nil {
		return nil, fmt.Errorf("push: fcm service account: %w", err)
	}
	project := cfg.ProjectID
	if project == "" {
		var key struct {
			ProjectID string `json:"project_id"`
		}
		json.Unmarshal(raw, &key) // JWTConfigFromJSON already proved it is JSON
		project = key.ProjectID
	}
	if project == "" {
		return nil, errors.New("push: fcm: no ProjectID and no project_id in the service account key")
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = DefaultFCMEndpoint
	}
	client := cfg.HTTPClient
	if client == nil {
		client = newHTTPClient(cfg.Timeout, false)
	} else {
		client = withoutRedirects(client)
	}
	// The token source keeps this context for every refresh; it only
	// carries the client (timeouts bound each refresh), never a deadline.
	tokenCtx := context.WithValue(context.Background(), oauth2.HTTPClient, client)
	f := &FCM{
		sendURL: strings.TrimRight(endpoint, "/") + "/v1/projects/" + url.PathEscape(project) + "/messages:send",
		client:  client,
		tokens:  jwtCfg.TokenSource(tokenCtx),
		now:     cfg.Now,
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f, nil
}

// The v1 message, only the fields we set. Field names are the API's JSON
// names; the fake in pushtest decodes strictly, as FCM does.
type fcmRequest struct {
	Message fcmMessage `json:"message"`
}

type fcmMessage struct {
	Token        string            `json:"token"`
	Notification fcmNotification   `json:"notification"`
	Data         map[string]string `json:"data,omitempty"`
	Android      fcmAndroid        `json:"android"`
	APNs         fcmAPNs           `json:"apns"`
}

type fcmNotification struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body"`
}

type fcmAndroid struct {
	CollapseKey string `json:"collapse_key,omitempty"`
	// Priority HIGH wakes a dozing device, which a chat message warrants.
	Priority     string                 `json:"priority"`
	TTL          string                 `json:"ttl"`
	Notification fcmAndroidNotification `json:"notification"`
}

type fcmAndroidNotification struct {
	// Tag replaces the displayed notification with the same tag, the
	// Android counterpart of apns-collapse-id.
	Tag string `json:"tag,omitempty"`
}

type fcmAPNs struct {
	Headers map[string]string `json:"headers,omitempty"`
	Payload fcmAPNsPayload    `json:"payload"`
}

type fcmAPNsPayload struct {
	APS fcmAPS `json:"aps"`
}

type fcmAPS struct {
	Badge    int    `json:"badge,omitempty"`
	ThreadID string `json:"thread-id,omitempty"`
	Sound    string `json:"sound"`
}

// fcmDuration formats d as a protobuf Duration in JSON: seconds with an "s"
// suffix and up to nine fractional digits.
func fcmDuration(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// fcmBody builds the request body for one registration token.
func fcmBody(token string, n *Notification, now time.Time) ([]byte, error) {
	title, body := n.visibleText()
	ttl := n.ttl()
	m := fcmMessage{
		Token:        token,
		Notification: fcmNotification{Title: title, Body: body},
		Data:         n.data(),
		Android: fcmAndroid{
			CollapseKey:  n.CollapseKey,
			Priority:     "HIGH",
			TTL:          fcmDuration(ttl),
			Notification: fcmAndroidNotification{Tag: n.CollapseKey},
		},
		APNs: fcmAPNs{
			Headers: map[string]string{
				"apns-expiration": strconv.FormatInt(now.Add(ttl).Unix(), 10),
				"apns-priority":   "10",
			},
			Payload: fcmAPNsPayload{APS: fcmAPS{Badge: max(n.Badge, 0), ThreadID: n.ThreadID, Sound: "default"}},
		},
	}
	if n.CollapseKey != "" {
		m.APNs.Headers["apns-collapse-id"] = apnsCollapseID(n.CollapseKey)
	}
	return json.Marshal(fcmRequest{Message: m})
}

// fcmError is Google's error envelope with the FCM-specific details.
type fcmError struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Status  string `json:"status"`
		Details []struct {
			Type            string `json:"@type"`
			ErrorCode       string `json:"errorCode"`
			FieldViolations []struct {
				Field string `json:"field"`
			} `json:"fieldViolations"`
		} `json:"details"`
	} `json:"error"`
}

// fcmGone decides from an error answer whether the registration token is
// dead: 404 or UNREGISTERED (the app was uninstalled or the token expired),
// or INVALID_ARGUMENT that names message.token (the token is malformed).
// Other INVALID_ARGUMENTs are our payload's fault and must not cost the user
// their registration.
func fcmGone(status int, e *fcmError) bool {
	if status == http.StatusNotFound || e.Error.Status == "NOT_FOUND" {
		return true
	}
	for _, d := range e.Error.Details {
		if d.ErrorCode == "UNREGISTERED" {
			return true
		}
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return true
			}
		}
	}
	return false
}

// Send posts one message. 200 is success; see fcmGone for Gone; 429, 500 and
// 503 are retryable with Retry-After.
func (f *FCM) Send(ctx context.Context, t Target, n Notification) (Result, error) {
	if t.Token == "" {
		return Result{Gone: true}, errors.New("push: fcm target has no token")
	}
	tok, err := f.tokens.Token()
	if err != nil {
		// A token endpoint that answered 4xx means our key is bad or revoked:
		// retrying will not help, and no device is at fault.
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 && re.Response.StatusCode != http.StatusTooManyRequests {
			return Result{}, fmt.Errorf("push: fcm access token: %w", err)
		}
		r, err := transportFailure(ctx, fmt.Errorf("push: fcm access token: %w", err))
		return r, err
	}
	body, err := fcmBody(t.Token, &n, f.now())
	if err != nil {
		return Result{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.sendURL, bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	tok.SetAuthHeader(req)
	resp, err := f.client.Do(req)
	if err != nil {
		return transportFailure(ctx, err)
	}
	defer resp.Body.Close()
	answer := readLimited(resp.Body)
	if resp.StatusCode == http.StatusOK {
		return Result{Status: resp.StatusCode}, nil
	}
	r := classify(resp, f.now())
	var e fcmError
	json.Unmarshal(answer, &e) // an unparsable body leaves e empty: status alone decides
	r.Gone = fcmGone(resp.StatusCode, &e)
	reason := e.Error.Status
	for _, d := range e.Error.Details {
		if d.ErrorCode != "" {
			reason = d.ErrorCode
		}
	}
	if reason == "" {
		reason = http.StatusText(resp.StatusCode)
	}
	return r, &ProviderError{Provider: ProviderFCM, Status: resp.StatusCode, Reason: reason}
}
