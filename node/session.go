package node

import (
	"sync/atomic"

	"golang.org/x/time/rate"

	"parley/netpoll"
	"parley/wire"
)

// session is one authenticated WebSocket connection: a (user, device) on
// this node. Created in Authorize on the event loop; the loop owns limiter
// (only OnMessage touches it), inflight is shared with the goroutines that
// complete requests.
type session struct {
	user, device uint64
	expires      int64 // Unix ms: the token's expiry, when closeExpired ends the connection
	conn         *netpoll.Conn
	limiter      *rate.Limiter
	limited      int          // rate_limited replies in a row; the loop owns it
	inflight     atomic.Int32 // requests received and not yet replied to
	reads        atomic.Int32 // expensive reads admitted and not yet replied to (queries.go)
	closed       atomic.Bool
	// revokingSelf counts this connection's device.revoke requests of its
	// own device in flight: closeDevice leaves the connection open for their
	// replies, and the last of them closes it (requests.go).
	revokingSelf atomic.Int32
}

// send queues a prepared frame; false if the connection is gone or was just
// closed for overflowing its queue.
func (s *session) send(frame []byte) bool {
	if s.closed.Load() {
		return false
	}
	return s.conn.Send(frame) == nil
}

// reply encodes and queues the answer to one request and releases its
// in-flight slot.
func (n *Node) reply(s *session, r *wire.Reply) {
	s.inflight.Add(-1)
	if r.Type == wire.TypeError {
		n.metrics.requestErrors.WithLabelValues(string(r.Code)).Inc()
	}
	s.send(replyFrame(r))
}

// replyFrame and eventFrame encode a frame in place, behind room for its
// WebSocket header: one allocation of the right size, no reflection, no
// copy (msgpack.Marshal then PrepareBinary cost ~20 allocations and two
// copies).
func replyFrame(r *wire.Reply) []byte {
	b := make([]byte, netpoll.FrameHeadroom, netpoll.FrameHeadroom+wire.ReplySize(r))
	return netpoll.BinaryFrameInPlace(wire.AppendReply(b, r))
}

func eventFrame(e *wire.Event) []byte {
	b := make([]byte, netpoll.FrameHeadroom, netpoll.FrameHeadroom+wire.EventSize(e))
	return netpoll.BinaryFrameInPlace(wire.AppendEvent(b, e))
}

func (n *Node) replyError(s *session, id uint64, e *wire.Error) {
	n.reply(s, wire.ErrorReply(id, e))
}
