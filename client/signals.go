package client

import (
	"context"

	"parley/wire"
)

// Signal is a frame from the server that is not a conversation event:
// exactly one field is set. Typing and presence are ephemeral; receipts and
// read counts reflect durable cursors, which sync and conv.get return too.
type Signal struct {
	Typing     *wire.Typing
	Presence   *wire.Presence
	Receipt    *wire.Receipt
	ReadCounts *wire.ReadCounts
}

// Signals returns typing, presence, receipt and read-count frames as they
// arrive. None of them needs replay: when the app does not drain the channel
// and its buffer (Config.EventBuffer) is full, new ones are dropped rather
// than stall the connection; the cursors they carry are in sync and
// conv.get. After a reconnect, call WatchPresence again for the current
// states.
func (c *Client) Signals() <-chan Signal { return c.signals }

// signal hands a signal to the app without ever blocking the reader.
func (c *Client) signal(s Signal) {
	select {
	case c.signals <- s:
	default:
	}
}

// Typing tells the conversation's other members that the user started (on)
// or stopped typing. Renew a start every few seconds while typing lasts.
func (c *Client) Typing(ctx context.Context, conv uint64, on bool) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypeTyping, Conv: conv, On: on})
	return err
}

// WatchPresence replaces the list of users whose presence the connection
// watches (at most wire.MaxPresenceWatch) and returns their current states.
// Changes then arrive on Signals. The list belongs to the connection: after
// a reconnect, watch again.
func (c *Client) WatchPresence(ctx context.Context, users []uint64) ([]wire.Presence, error) {
	rep, err := c.Request(ctx, &wire.Request{Type: wire.TypePresenceSub, Users: users})
	if err != nil {
		return nil, err
	}
	return rep.Presence, nil
}

// Receipt reports that the user's device has received (delivered) and
// read messages of conv up to those seqs; 0 leaves a cursor as it is.
// Cursors only move forward. The server coalesces reports, so reporting
// every message is fine.
func (c *Client) Receipt(ctx context.Context, conv, delivered, read uint64) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypeReceipt, Conv: conv, Delivered: delivered, Read: read})
	return err
}

// Readers returns how many members have received and read message seq of
// conv and a page of who read it (after the user id after).
func (c *Client) Readers(ctx context.Context, conv, seq, after uint64, limit int) (*wire.Reply, error) {
	return c.read(ctx, &wire.Request{Type: wire.TypeReadGet, Conv: conv, Seq: seq, After: after, Limit: limit})
}

// SetLastSeenHidden hides (or shows) the user's last_seen from others.
func (c *Client) SetLastSeenHidden(ctx context.Context, hide bool) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypePrivacySet, Hide: hide})
	return err
}

// Devices lists the user's devices, a page after the device id after (a
// page bounded in count and bytes: with more, page on from the last id).
func (c *Client) Devices(ctx context.Context, after uint64, limit int) ([]wire.DeviceInfo, bool, error) {
	rep, err := c.read(ctx, &wire.Request{Type: wire.TypeDeviceList, After: after, Limit: limit})
	if err != nil {
		return nil, false, err
	}
	return rep.Devices, rep.More, nil
}

// RevokeDevice revokes one of the user's devices: its token stops working
// and its connections close.
func (c *Client) RevokeDevice(ctx context.Context, device uint64) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypeDeviceRevoke, Device: device})
	return err
}
