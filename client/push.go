package client

import (
	"context"

	"parley/wire"
)

// PushTarget is where this device's notifications go (push.set): Provider
// is "fcm", "apns" or "webhook" with Token (the registration token, the
// APNs device token in hex, or the webhook URL), or "webpush" with the
// browser's PushSubscription: Endpoint, P256dh and Auth.
type PushTarget struct {
	Provider string
	Token    string
	Endpoint string
	P256dh   string
	Auth     string
}

// SetPush registers this device's push target, replacing any other: the
// device gets a notification for each message while none of the user's
// devices is online. A provider the server does not send to is invalid.
func (c *Client) SetPush(ctx context.Context, t PushTarget) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypePushSet, Provider: t.Provider, Token: t.Token,
		Endpoint: t.Endpoint, P256dh: t.P256dh, Auth: t.Auth})
	return err
}

// ClearPush removes this device's push target (on logout, say).
func (c *Client) ClearPush(ctx context.Context) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypePushClear})
	return err
}

// SetNotify sets the user's notification settings, for all their devices:
// preview shows the sender and text (off: just "New message"); dnd turns
// notifications off.
func (c *Client) SetNotify(ctx context.Context, preview, dnd bool) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypeNotifySet, Preview: preview, DND: dnd})
	return err
}

// MuteForever is Mute's until for a mute that lasts until unmuted.
const MuteForever int64 = -1

// Mute mutes the notifications of a conversation for this user until
// until (unix ms; MuteForever; 0 unmutes).
func (c *Client) Mute(ctx context.Context, conv uint64, until int64) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypeConvMute, Conv: conv, Until: until})
	return err
}
