package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"parley/wire"
)

// NewClientMsgID returns a fresh client message id: 16 hex characters from
// crypto/rand (64 bits, so collisions among one user's sends are not a
// practical concern).
func NewClientMsgID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics on an unusable source)
	return hex.EncodeToString(b[:])
}

// Send posts body to conv under a new client message id; see SendWithID.
func (c *Client) Send(ctx context.Context, conv uint64, body string) (*wire.Reply, error) {
	return c.SendWithID(ctx, conv, NewClientMsgID(), body)
}

// SendWithID posts body to conv and returns the ack (conv, seq, ts, idx,
// cmid, dup). On a retryable failure (rate_limited, busy, unavailable,
// timeout, a lost connection) it retries with the same cmid, with backoff,
// until ctx ends; the server stores the message at most once and answers a
// repeat with the original seq and dup=true. Other errors return at once.
// Give ctx a deadline: without one, SendWithID retries as long as the
// cluster is unreachable.
func (c *Client) SendWithID(ctx context.Context, conv uint64, cmid, body string) (*wire.Reply, error) {
	req := wire.Request{Type: wire.TypeSend, Conv: conv, ClientMsgID: cmid, Body: body}
	for attempt := 0; ; attempt++ {
		rep, err := c.Request(ctx, &req)
		if err == nil || !Retryable(err) {
			return rep, err
		}
		c.log.Debug("parley client: retrying send", "cmid", cmid, "attempt", attempt, "err", err)
		if !sleep(ctx, retryDelay(err, attempt, c.cfg.ReconnectMin, c.cfg.ReconnectMax)) {
			return nil, fmt.Errorf("client: send %s not confirmed: %w (last error: %w)", cmid, ctx.Err(), err)
		}
	}
}

// OpenDirect returns the 1:1 conversation with user, creating it if needed.
func (c *Client) OpenDirect(ctx context.Context, user uint64) (*wire.ConvInfo, error) {
	return needInfo(c.Request(ctx, &wire.Request{Type: wire.TypeDirectOpen, User: user}))
}

// CreateGroup creates a group named name with the caller (as admin) and users.
func (c *Client) CreateGroup(ctx context.Context, name string, users []uint64) (*wire.ConvInfo, error) {
	return needInfo(c.Request(ctx, &wire.Request{Type: wire.TypeGroupCreate, Name: name, Users: users}))
}

// AddMembers adds users to group conv (admins only). The returned info is
// nil if the server sent none.
func (c *Client) AddMembers(ctx context.Context, conv uint64, users []uint64) (*wire.ConvInfo, error) {
	return info(c.Request(ctx, &wire.Request{Type: wire.TypeGroupAdd, Conv: conv, Users: users}))
}

// RemoveMember removes user from group conv (admins only). The returned info
// is nil if the server sent none.
func (c *Client) RemoveMember(ctx context.Context, conv, user uint64) (*wire.ConvInfo, error) {
	return info(c.Request(ctx, &wire.Request{Type: wire.TypeGroupRemove, Conv: conv, User: user}))
}

// Leave leaves group conv.
func (c *Client) Leave(ctx context.Context, conv uint64) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypeGroupLeave, Conv: conv})
	return err
}

// SetAdmin grants or revokes user's admin right in group conv (admins only).
// The returned info is nil if the server sent none.
func (c *Client) SetAdmin(ctx context.Context, conv, user uint64, admin bool) (*wire.ConvInfo, error) {
	return info(c.Request(ctx, &wire.Request{Type: wire.TypeGroupAdmin, Conv: conv, User: user, Admin: admin}))
}

// Rename renames group conv (admins only). The returned info is nil if the
// server sent none.
func (c *Client) Rename(ctx context.Context, conv uint64, name string) (*wire.ConvInfo, error) {
	return info(c.Request(ctx, &wire.Request{Type: wire.TypeGroupRename, Conv: conv, Name: name}))
}

// Conversation returns one conversation's metadata with its whole member
// list: the server lists members a page at a time (by user id, up to
// wire.MaxMembersPage each), and Conversation follows the pages.
func (c *Client) Conversation(ctx context.Context, conv uint64) (*wire.ConvInfo, error) {
	rep, err := c.read(ctx, &wire.Request{Type: wire.TypeConvGet, Conv: conv})
	info, err := needInfo(rep, err)
	if err != nil {
		return nil, err
	}
	for rep.More {
		if rep.Next == 0 || (len(info.Members) > 0 && rep.Next < info.Members[len(info.Members)-1]) {
			return nil, fmt.Errorf("client: conv.get member page did not advance (next %d)", rep.Next)
		}
		if rep, err = c.read(ctx, &wire.Request{Type: wire.TypeConvGet, Conv: conv, After: rep.Next}); err != nil {
			return nil, err
		}
		if rep.Info == nil {
			return nil, errors.New("client: reply without conversation info")
		}
		info.Members = append(info.Members, rep.Info.Members...)
		info.Admins = append(info.Admins, rep.Info.Admins...)
		info.LastSeq, info.LastIndex, info.MemberCount = rep.Info.LastSeq, rep.Info.LastIndex, rep.Info.MemberCount
	}
	return info, nil
}

// ConvList returns the user's conversations, the most recently active
// first, following the server's pages (each bounded in count and bytes).
// Groups larger than wire.SyncInfoMembers come with MemberCount but no
// Members: Conversation has those.
func (c *Client) ConvList(ctx context.Context) ([]wire.ConvInfo, error) {
	var out []wire.ConvInfo
	var after, afterConv uint64
	for {
		rep, err := c.read(ctx, &wire.Request{Type: wire.TypeConvList, After: after, AfterConv: afterConv, Limit: wire.MaxConvListLimit})
		if err != nil {
			return nil, err
		}
		out = append(out, rep.Convs...)
		if !rep.More || len(rep.Convs) == 0 {
			return out, nil
		}
		if rep.NextConv == 0 || (rep.Next == after && rep.NextConv == afterConv) {
			return nil, fmt.Errorf("client: conv.list page did not advance (after %d/%d, next %d/%d)", after, afterConv, rep.Next, rep.NextConv)
		}
		after, afterConv = rep.Next, rep.NextConv
	}
}

// History returns a page of conv's events: with dir wire.DirBefore, those
// with seq < seq (newest first; seq 0 = from the latest); with
// wire.DirAfter, those with seq > seq (oldest first). limit 0 takes the
// server default. more reports whether further events exist in that
// direction. A page is also bounded in bytes (hello's max_reply), so it may
// hold fewer than limit events while more is true: page on from the last
// event returned. History does not feed Events().
func (c *Client) History(ctx context.Context, conv uint64, dir string, seq uint64, limit int) (events []wire.Event, more bool, err error) {
	rep, err := c.read(ctx, &wire.Request{Type: wire.TypeHistory, Conv: conv, Dir: dir, Seq: seq, Limit: limit})
	if err != nil {
		return nil, false, err
	}
	return rep.Events, rep.More, nil
}

// UserByName looks a user up by username.
func (c *Client) UserByName(ctx context.Context, name string) (*wire.UserInfo, error) {
	return needUser(c.read(ctx, &wire.Request{Type: wire.TypeUserGet, Name: name}))
}

// UserByID looks a user up by id.
func (c *Client) UserByID(ctx context.Context, id uint64) (*wire.UserInfo, error) {
	return needUser(c.read(ctx, &wire.Request{Type: wire.TypeUserGet, User: id}))
}

// Ping makes an application-level round trip.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.Request(ctx, &wire.Request{Type: wire.TypePing})
	return err
}

// read makes a read request, retrying it with backoff while the server
// answers busy or rate_limited (a connection may have only a few reads in
// flight: hello's limits), until ctx ends.
func (c *Client) read(ctx context.Context, req *wire.Request) (*wire.Reply, error) {
	for attempt := 0; ; attempt++ {
		rep, err := c.Request(ctx, req)
		if !isBackoff(err) {
			return rep, err
		}
		if !sleep(ctx, retryDelay(err, attempt, c.cfg.ReconnectMin, c.cfg.ReconnectMax)) {
			return nil, fmt.Errorf("client: %s: %w (last error: %w)", req.Type, ctx.Err(), err)
		}
	}
}

// isBackoff reports whether err asks to retry the same request later on the
// same connection: busy or rate_limited.
func isBackoff(err error) bool {
	var we *wire.Error
	return errors.As(err, &we) && (we.Code == wire.CodeBusy || we.Code == wire.CodeRateLimited)
}

func info(rep *wire.Reply, err error) (*wire.ConvInfo, error) {
	if err != nil {
		return nil, err
	}
	return rep.Info, nil
}

func needInfo(rep *wire.Reply, err error) (*wire.ConvInfo, error) {
	if err != nil {
		return nil, err
	}
	if rep.Info == nil {
		return nil, errors.New("client: reply without conversation info")
	}
	return rep.Info, nil
}

func needUser(rep *wire.Reply, err error) (*wire.UserInfo, error) {
	if err != nil {
		return nil, err
	}
	if rep.UserInfo == nil {
		return nil, errors.New("client: user.get reply without user")
	}
	return rep.UserInfo, nil
}

// DeleteMessage deletes a message of conv for everyone: its sender may,
// and in a group an admin. The message keeps its seq with no body or
// attachments (Event.Deleted); a "deleted" event (its seq returned, its
// Target the message) tells every member. Deleting twice returns the
// first deletion's seq.
func (c *Client) DeleteMessage(ctx context.Context, conv, seq uint64) (uint64, error) {
	rep, err := c.Request(ctx, &wire.Request{Type: wire.TypeMsgDelete, Conv: conv, Seq: seq})
	if err != nil {
		return 0, err
	}
	return rep.Seq, nil
}
