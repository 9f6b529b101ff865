package client

import (
	"context"
	"fmt"

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

// SetLastSeenHidden hides (or shows) the user's last_seen from others. It
// leaves the group-add setting as it is.
func (c *Client) SetLastSeenHidden(ctx context.Context, hide bool) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypePrivacySet, Hide: hide})
	return err
}

// SetPrivacy sets both privacy settings: whether last_seen is hidden, and
// who may add the user to groups (wire.GroupAddEveryone, GroupAddContacts
// or GroupAddNobody; "" leaves it as it is). The current settings are in
// UserByID of oneself (HideLastSeen, GroupAdd).
func (c *Client) SetPrivacy(ctx context.Context, hideLastSeen bool, groupAdd string) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypePrivacySet, Hide: hideLastSeen, GroupAdd: groupAdd})
	return err
}

// Block blocks user: they can no longer open a 1:1 with this user, send
// into an existing one, or add this user to a group (all forbidden). In
// groups their messages still arrive. Blocking twice is not an error.
func (c *Client) Block(ctx context.Context, user uint64) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypeBlock, User: user})
	return err
}

// Unblock lifts a block; unblocking a user who is not blocked is not an
// error.
func (c *Client) Unblock(ctx context.Context, user uint64) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypeUnblock, User: user})
	return err
}

// BlockList returns the users this user blocks, ascending (at most
// wire.MaxBlocksPerUser), following the server's pages.
func (c *Client) BlockList(ctx context.Context) ([]uint64, error) {
	var out []uint64
	var after uint64
	for {
		rep, err := c.read(ctx, &wire.Request{Type: wire.TypeBlockList, After: after, Limit: wire.MaxBlockListLimit})
		if err != nil {
			return nil, err
		}
		out = append(out, rep.Blocked...)
		if !rep.More || len(rep.Blocked) == 0 {
			return out, nil
		}
		if rep.Next <= after {
			return nil, fmt.Errorf("client: block.list page did not advance (after %d, next %d)", after, rep.Next)
		}
		after = rep.Next
	}
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
