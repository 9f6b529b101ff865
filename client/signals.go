package client

import (
	"context"

	"parley/wire"
)

// Signal is an ephemeral frame from the server: exactly one field is set.
type Signal struct {
	Typing   *wire.Typing
	Presence *wire.Presence
}

// Signals returns typing and presence frames as they arrive. They are
// ephemeral (never stored, never replayed): when the app does not drain the
// channel and its buffer (Config.EventBuffer) is full, new ones are dropped
// rather than stall the connection. After a reconnect, call WatchPresence
// again for the current states.
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
