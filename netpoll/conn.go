package netpoll

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// Errors returned by Conn.Send.
var (
	// ErrQueueFull: the frame would have pushed the connection over
	// Config.SendQueueBytes; the connection is being closed with 1008.
	ErrQueueFull = errors.New("netpoll: send queue full, connection closed as a slow consumer")
	// ErrClosed: the connection is closed or closing.
	ErrClosed = errors.New("netpoll: connection closed")
	// ErrServerStopped is the OnClose reason for connections closed by Stop
	// before they could be sent a close frame.
	ErrServerStopped = errors.New("netpoll: server stopped")
)

// phase is where a connection is in its life; owned by its event loop.
type phase uint8

const (
	phaseHandshake phase = iota // waiting for the HTTP upgrade request
	phaseOpen                   // upgraded; OnOpen has run
	phaseClosing                // the server sent a close frame and waits for the peer's
	phaseClosed                 // gnet closed the socket
)

// closeRequest is a close asked for from outside the event loop.
type closeRequest struct {
	code        uint16
	reason      string
	dropPending bool // a slow consumer: queued frames are discarded, not sent
}

// Conn is one client connection. Handler callbacks run on the connection's
// event loop; Send and Close may be called from any goroutine.
//
// Ownership: the fields in the first group are immutable after the upgrade,
// those in the second are owned by the event loop, and mu guards the third
// (the hand-off from senders to the loop).
type Conn struct {
	id       uint64
	srv      *Server
	loop     *loop
	remote   string
	session  any
	ipKey    uint64 // per-address cap key (limits.go)
	limitKey uint64 // Request.LimitKey as Authorize set it

	gc        gnet.Conn // nil once closed
	phase     phase
	held      slot // cap slots to give back (limits.go)
	inputDead bool // the stream is garbage: read and drop everything
	wantClose bool // close the socket when the current read returns
	lastRecv  time.Duration
	lastPing  time.Duration
	closeErr  error // why the connection is closing, for OnClose
	timer     timer[*Conn]
	hs        handshakeBuffer
	dec       decoder

	mu           sync.Mutex
	pending      *frameQueue // frames handed to Send, not yet written; nil when none (pooled)
	pendingBytes int
	queued       bool // on the loop's dirty list
	sendClosed   bool // Send returns ErrClosed
	closeReq     *closeRequest
}

// ID is unique among the connections of this process.
func (c *Conn) ID() uint64 { return c.id }

// Session is what Handler.Authorize returned for this connection.
func (c *Conn) Session() any { return c.session }

// RemoteAddr is the client's address, host:port.
func (c *Conn) RemoteAddr() string { return c.remote }

// Send queues a complete server frame (from PrepareBinary or PrepareText)
// for the connection. The bytes are not copied: the caller must not modify
// them afterwards, and may hand the same slice to any number of
// connections. Frames queued by concurrent callers go out whole, in the
// order their Send calls took the connection's lock.
//
// It returns ErrQueueFull, after starting to close the connection with
// 1008 "slow consumer", if the frame would push the bytes queued and not
// yet accepted by the socket over Config.SendQueueBytes; and ErrClosed once
// the connection is closing or closed. The event loop applies the same
// bound, counting gnet's outbound buffer exactly, when it writes the queue;
// a connection over it there is closed the same way although its Send
// returned nil.
func (c *Conn) Send(frame []byte) error {
	c.mu.Lock()
	if c.sendClosed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.pendingBytes+len(frame) > c.srv.cfg.SendQueueBytes {
		wake := c.requestCloseLocked(&closeRequest{code: ClosePolicyViolation, reason: "slow consumer", dropPending: true})
		c.mu.Unlock()
		c.srv.queueOverflows.Add(1)
		if wake {
			c.loop.wake()
		}
		return ErrQueueFull
	}
	if c.pending == nil {
		c.pending = getFrameQueue()
	}
	c.pending.frames = append(c.pending.frames, frame)
	c.pendingBytes += len(frame)
	wake := c.scheduleFlushLocked()
	c.mu.Unlock()
	if wake {
		c.loop.wake()
	}
	return nil
}

// Close sends a close frame with code and reason after the frames already
// queued, and closes the connection once the peer answers (or after
// Config.CloseTimeout). An invalid code is sent as 1000; a reason longer
// than 123 bytes is cut. Closing a closed connection does nothing.
func (c *Conn) Close(code uint16, reason string) {
	if !validCloseCode(code) {
		code = CloseNormal
	}
	c.mu.Lock()
	wake := false
	if !c.sendClosed {
		wake = c.requestCloseLocked(&closeRequest{code: code, reason: reason})
	}
	c.mu.Unlock()
	if wake {
		c.loop.wake()
	}
}

// requestCloseLocked records a close for the loop to carry out; it reports
// whether the loop must be woken (after c.mu is released).
func (c *Conn) requestCloseLocked(req *closeRequest) (wake bool) {
	c.sendClosed = true
	c.closeReq = req
	if req.dropPending {
		c.dropPendingLocked()
	}
	return c.scheduleFlushLocked()
}

// scheduleFlushLocked puts c on its loop's dirty list once; the loop writes
// every dirty connection in one task per wakeup, so a broadcast to
// thousands of connections costs one wakeup per loop, not one per frame.
// It reports whether the loop must be woken.
func (c *Conn) scheduleFlushLocked() (wake bool) {
	if c.queued {
		return false
	}
	c.queued = true
	return c.loop.addDirty(c)
}

// dropPendingLocked discards the queued frames.
func (c *Conn) dropPendingLocked() {
	putFrameQueue(c.pending)
	c.pending, c.pendingBytes = nil, 0
}

// flush writes the queued frames and carries out a pending close request.
// It runs on the event loop.
func (c *Conn) flush() {
	c.mu.Lock()
	q, n, req := c.pending, c.pendingBytes, c.closeReq
	c.pending, c.pendingBytes, c.closeReq, c.queued = nil, 0, nil, false
	c.mu.Unlock()
	defer putFrameQueue(q)

	if c.phase != phaseOpen {
		return
	}
	if n > 0 {
		if c.gc.OutboundBuffered()+n > c.srv.cfg.SendQueueBytes {
			c.srv.queueOverflows.Add(1)
			c.startClose(ClosePolicyViolation, "slow consumer")
			return
		}
		if !c.writeFrames(q.frames, n) {
			return // the connection is closed
		}
	}
	if req != nil {
		c.startClose(req.code, req.reason)
	}
}

// write puts a frame built on the loop (control frames) into gnet.
func (c *Conn) write(frame []byte) {
	if c.phase == phaseClosed {
		return
	}
	if _, err := c.gc.Write(frame); err == nil {
		c.loop.stats.framesOut.Add(1)
		c.loop.stats.bytesOut.Add(int64(len(frame)))
	}
}

// startClose begins the close handshake from the server side: the close
// frame goes out after what gnet already holds, queued frames are dropped,
// and the socket is closed when the peer's close frame arrives or after
// CloseTimeout.
func (c *Conn) startClose(code uint16, reason string) {
	if c.phase != phaseOpen {
		return
	}
	c.closeErr = &CloseError{Code: code, Reason: reason}
	c.mu.Lock()
	c.sendClosed = true
	c.dropPendingLocked()
	c.mu.Unlock()
	c.phase = phaseClosing
	c.write(closeFrame(code, reason))
	if c.phase == phaseClosing { // the write did not fail and close the socket
		c.loop.wheel.schedule(&c.timer, c.loop.now+c.srv.cfg.CloseTimeout)
	}
}

// closeSocket closes the socket now; gnet calls OnClose before it returns.
func (c *Conn) closeSocket() {
	if c.phase != phaseClosed {
		_ = c.loop.el.Close(c.gc)
	}
}

// onTraffic handles bytes read from the socket. The bytes belong to gnet's
// loop read buffer, which gnet does not read again once they are consumed,
// so frames are unmasked in place.
func (c *Conn) onTraffic(data []byte) gnet.Action {
	c.lastRecv = c.loop.now
	c.loop.stats.bytesIn.Add(int64(len(data)))
	if c.phase == phaseHandshake {
		return c.readHandshake(data)
	}
	c.readFrames(data)
	if c.wantClose {
		return gnet.Close
	}
	return gnet.None
}

func (c *Conn) readFrames(data []byte) {
	if c.inputDead || len(data) == 0 {
		return
	}
	frames, perr := c.dec.feed(data, c.srv.cfg.MaxMessageSize, c)
	c.loop.stats.framesIn.Add(int64(frames))
	if perr == nil {
		return
	}
	// Drop the rest of this read; the peer's answer to our close frame
	// comes in a later one, and a fresh decoder can still find it unless
	// the stream is garbage (a second error), after which input is ignored
	// until the peer closes TCP or CloseTimeout passes.
	c.dec.release()
	if c.phase != phaseOpen {
		c.inputDead = true
		return
	}
	c.loop.stats.protocolErrors.Add(1)
	c.startClose(perr.Code, perr.Reason)
}

// onMessage implements frameSink. It and onControl stop the decoder once
// the socket is closed (a failed write closes it).
func (c *Conn) onMessage(binary bool, payload []byte) bool {
	if c.phase == phaseOpen {
		c.srv.handler.OnMessage(c, binary, payload)
	}
	return c.phase != phaseClosed
}

// onControl implements frameSink.
func (c *Conn) onControl(op byte, payload []byte) bool {
	switch op {
	case opPing:
		if c.phase == phaseOpen {
			if c.gc.OutboundBuffered() > c.srv.cfg.SendQueueBytes {
				// A peer that pings without reading must not grow the buffer.
				c.srv.queueOverflows.Add(1)
				c.startClose(ClosePolicyViolation, "slow consumer")
				return true
			}
			c.write(appendFrame(make([]byte, 0, 2+len(payload)), opPong, payload))
		}
		return c.phase != phaseClosed
	case opClose:
		if c.phase == phaseOpen {
			// The peer started the close handshake: echo its code, then
			// close the socket (the server closes TCP first, RFC 6455 7.1.1).
			ce := &CloseError{Code: CloseNoStatus, Remote: true}
			reply := emptyCloseFrame
			if len(payload) >= 2 {
				ce.Code = uint16(payload[0])<<8 | uint16(payload[1])
				ce.Reason = string(payload[2:])
				reply = closeFrame(ce.Code, "")
			}
			c.closeErr = ce
			c.mu.Lock()
			c.sendClosed = true
			c.mu.Unlock()
			c.write(reply)
		}
		// In phaseClosing this is the answer to our close frame.
		c.wantClose = true
		return false
	default: // pong: receiving it already refreshed lastRecv
		return c.phase != phaseClosed
	}
}

// readHandshake accumulates and answers the HTTP upgrade request.
func (c *Conn) readHandshake(data []byte) gnet.Action {
	cfg := &c.srv.cfg
	raw, rest, done, tooLarge := c.hs.feed(data, cfg.MaxHandshakeSize)
	if tooLarge {
		return c.refuse(&handshakeError{status: 431, reason: "upgrade request too large"})
	}
	if !done {
		return gnet.None
	}
	defer c.hs.release() // raw and rest may point into it

	req, key, herr := parseHandshake(raw, cfg.Path)
	if herr != nil {
		return c.refuse(herr)
	}
	req.RemoteAddr = c.remote
	if herr := c.admitUpgrade(); herr != nil {
		return c.refuse(herr)
	}
	session, status, reason := c.srv.handler.Authorize(req)
	if status != 0 {
		if status < 400 || status > 599 {
			c.srv.cfg.Logger.Error("netpoll: Authorize returned a status that is not an HTTP error; refusing with 500", "status", status)
			status, reason = 500, "internal error"
		}
		return c.refuse(&handshakeError{status: status, reason: reason})
	}
	if herr := c.admitKey(req.LimitKey); herr != nil {
		return c.refuse(herr)
	}

	resp := acceptResponse(key)
	if _, err := c.gc.Write(resp); err != nil {
		return gnet.None // gnet closed the socket
	}
	c.loop.stats.bytesOut.Add(int64(len(resp)))
	c.session = session
	c.phase = phaseOpen
	c.release(slotPending)
	c.loop.stats.handshakesAccepted.Add(1)
	c.loop.stats.open.Add(1)
	c.loop.wheel.schedule(&c.timer, c.loop.now+cfg.PingInterval)
	c.srv.handler.OnOpen(c)

	// Frames the client sent right behind its request.
	if len(rest) > 0 && c.phase == phaseOpen {
		c.readFrames(rest)
	}
	if c.wantClose {
		return gnet.Close
	}
	return gnet.None
}

func (c *Conn) refuse(herr *handshakeError) gnet.Action {
	c.loop.stats.handshakesRefused.Add(1)
	if wantsRetryAfter(herr.status) {
		herr.header += c.srv.retryAfter
	}
	resp := refusalResponse(herr)
	if _, err := c.gc.Write(resp); err == nil {
		c.loop.stats.bytesOut.Add(int64(len(resp)))
	}
	return gnet.Close
}

// onTimer runs when the connection's timer fires, on its event loop.
func (c *Conn) onTimer() {
	cfg := &c.srv.cfg
	now := c.loop.now
	switch c.phase {
	case phaseHandshake:
		c.loop.stats.handshakeTimeouts.Add(1)
		c.closeSocket()
	case phaseOpen:
		if now-c.lastRecv >= cfg.IdleTimeout {
			c.loop.stats.idleTimeouts.Add(1)
			c.startClose(CloseGoingAway, "idle timeout")
			return
		}
		quietSince := max(c.lastRecv, c.lastPing)
		if now-quietSince >= cfg.PingInterval {
			c.write(pingFrame)
			c.lastPing = now
			quietSince = now
		}
		if c.phase == phaseOpen {
			c.loop.wheel.schedule(&c.timer, min(quietSince+cfg.PingInterval, c.lastRecv+cfg.IdleTimeout))
		}
	case phaseClosing:
		c.closeSocket() // the peer did not answer our close frame in time
	}
}

var pingFrame = []byte{0x80 | opPing, 0}

// onClose runs when gnet has closed the socket, on the event loop; it is
// the only place a connection's resources are released.
func (c *Conn) onClose(err error) {
	wasOpen := c.phase == phaseOpen || c.phase == phaseClosing
	c.phase = phaseClosed
	c.loop.wheel.cancel(&c.timer)
	c.hs.release()
	c.dec.release()
	c.mu.Lock()
	c.sendClosed = true
	c.dropPendingLocked()
	c.closeReq = nil
	c.mu.Unlock()
	c.gc = nil
	c.release(c.held)
	if !wasOpen {
		return
	}
	c.loop.stats.open.Add(-1)
	reason := c.closeErr
	switch {
	case reason != nil:
	case err == nil:
		reason = ErrServerStopped
	case errors.Is(err, io.EOF):
		reason = io.ErrUnexpectedEOF // TCP closed without a close frame
	default:
		reason = err
	}
	c.srv.handler.OnClose(c, reason)
}
