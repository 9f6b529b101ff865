// Package push delivers one notification to one device through the provider
// that device registered with: Firebase Cloud Messaging (HTTP v1), Apple Push
// Notification service (HTTP/2, token auth), Web Push (RFC 8030 with RFC 8291
// encryption and RFC 8292 VAPID) or a signed webhook (Standard Webhooks).
//
// The package decides nothing about who is notified, when, or how often a
// failed send is tried again: the caller (the node's notification queue) does.
// A Sender reports what the provider said in a Result so the caller can drop a
// dead token (Gone) or schedule a retry (Retryable, RetryAfter).
//
// Payloads are built by pure functions (fcmBody, apnsBody, webPushPlaintext,
// encryptRFC8291, webhookBody) that take everything, including the time and
// randomness, as arguments; the Senders are the thin I/O shell around them.
// Fakes of all four providers, which check the real formats, are in
// push/pushtest.
package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Provider names, as stored in Target.Provider.
const (
	ProviderFCM     = "fcm"
	ProviderAPNs    = "apns"
	ProviderWebPush = "webpush"
	ProviderWebhook = "webhook"
)

// Target is one device's registration with one provider.
type Target struct {
	// Provider is one of the Provider* constants.
	Provider string
	// Token is the FCM registration token, the APNs device token (hex), or
	// the webhook URL. Unused for webpush.
	Token string
	// Endpoint, P256dh and Auth come from the browser's PushSubscription
	// (webpush only); P256dh and Auth are base64url, padded or not.
	Endpoint string
	P256dh   string
	Auth     string
}

// Notification is what the device shows. It carries no secrets beyond what the
// user already agreed to show on the lock screen: with previews off the caller
// leaves Title and Body empty and the device shows GenericBody.
type Notification struct {
	Title string
	Body  string
	Conv  uint64
	Seq   uint64
	// Badge is the unread count shown on the app icon. Zero omits the key
	// and leaves the icon as it is: a notification always means at least one
	// unread message, so a zero here is an unset field, not a count.
	Badge int
	// CollapseKey makes a newer notification replace an older undelivered or
	// displayed one; the caller uses one per conversation.
	CollapseKey string
	// ThreadID groups notifications in the iOS notification centre.
	ThreadID string
	// IdempotencyKey is unique per message and device and stays the same
	// across retries, so a provider (APNs apns-id, webhook-id) or receiver can
	// drop a duplicate.
	IdempotencyKey string
	// TTL is how long the provider keeps trying an offline device; zero means
	// DefaultTTL.
	TTL time.Duration
	// Data is small string-to-string metadata for the app; conv and seq are
	// added to it as decimal strings.
	Data map[string]string
}

// GenericBody is shown when a notification has neither title nor body (the
// user turned previews off): the device still learns that something arrived.
const GenericBody = "New message"

// DefaultTTL is used when Notification.TTL is zero: a chat notification that
// could not be delivered within a day is noise, and the app syncs on open.
const DefaultTTL = 24 * time.Hour

// Result is what the provider's answer means for the caller.
type Result struct {
	// Gone means the provider says the token or subscription will never work
	// again (the app was uninstalled, the subscription expired): the caller
	// removes the registration and does not retry.
	Gone bool
	// Retryable means the same send may succeed later (rate limit, provider
	// outage, network error). RetryAfter is the provider's hint, zero if it
	// gave none.
	Retryable  bool
	RetryAfter time.Duration
	// Status is the provider's HTTP status, 0 when no response arrived.
	Status int
}

// Sender delivers one notification to one device. A nil error means the
// provider accepted the notification; otherwise the Result says whether the
// caller should drop the target, retry, or give up on this one message.
type Sender interface {
	Send(ctx context.Context, t Target, n Notification) (Result, error)
}

// ErrNotConfigured is returned (wrapped) by the Dispatcher for a provider
// whose credentials were not configured.
var ErrNotConfigured = errors.New("push provider not configured")

// ProviderError is a non-success answer from a provider.
type ProviderError struct {
	Provider string
	Status   int
	// Reason is the provider's machine-readable reason when it gives one
	// (APNs "Unregistered", FCM "UNREGISTERED", ...), else the status text.
	Reason string
}

func (e *ProviderError) Error() string {
	return fmt.Sprintf("push: %s answered %d %s", e.Provider, e.Status, e.Reason)
}

// visibleText returns the title and body to show, substituting GenericBody
// when previews are off so that no provider is sent an empty alert (APNs
// and some browsers show nothing, or the app name alone, for an empty one).
func (n *Notification) visibleText() (title, body string) {
	if n.Title == "" && n.Body == "" {
		return "", GenericBody
	}
	return n.Title, n.Body
}

func (n *Notification) ttl() time.Duration {
	if n.TTL <= 0 {
		return DefaultTTL
	}
	return n.TTL
}

// data returns Data plus conv and seq as decimal strings, the only value type
// FCM's data map accepts.
func (n *Notification) data() map[string]string {
	d := make(map[string]string, len(n.Data)+2)
	for k, v := range n.Data {
		d[k] = v
	}
	d["conv"] = strconv.FormatUint(n.Conv, 10)
	d["seq"] = strconv.FormatUint(n.Seq, 10)
	return d
}

// retryAfter parses a Retry-After header, which is either delay-seconds or an
// HTTP-date (RFC 9110 section 10.2.3). It returns 0 when absent or unparsable.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// uuidFromKey derives a version 8 (RFC 9562 "custom") UUID from an
// idempotency key, so the same message to the same device always carries the
// same apns-id across retries.
func uuidFromKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}

// transportFailure is the Result for a request that got no answer: the
// network or the provider may recover, so it is retryable, unless the caller's
// context ended, which is the caller's decision and not the provider's.
func transportFailure(ctx context.Context, err error) (Result, error) {
	if ctx.Err() != nil {
		return Result{}, err
	}
	return Result{Retryable: true}, err
}

// apnsCollapseID fits a collapse key into apns-collapse-id, which APNs caps
// at 64 bytes: a longer key is replaced by its SHA-256 in hex (64 bytes), so
// distinct keys stay distinct.
func apnsCollapseID(key string) string {
	if len(key) <= 64 {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
