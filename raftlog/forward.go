package raftlog

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Leader forwarding. A follower's Submit queues the command (with its seq)
// for the forwarder, which keeps one connection to the leader and writes
// whatever queued as one submit frame per write. The leader tags each
// command with the follower's origin and feeds it to its proposer; it
// answers only refusals (not leader, busy, too large, timeout), so the
// follower fails those commands at once. Results never travel: every node
// applies every entry, and the follower's own FSM adapter resolves its
// command when it applies it (fsm.go). A command whose frame was written
// but neither refused nor applied (the leader died, the link broke) has an
// unknown outcome; it is never resent, so a Submit puts its command in the
// log at most once. It times out (SubmitTimeout), or sooner: once another
// leader is known, the commands sent to the old one still unresolved fail
// with ErrTimeout at once (failSentOnLeaderChange), so that a client
// retries them (idempotently) with the new leader instead of waiting for
// an old leader that may be paused or gone.
//
// The same connection carries the follower's index reports, from which the
// leader knows every member's progress (Status, Promote), and, first, what
// the follower is (an edge or not, its region: edge.go).

var errLeaderMoved = errors.New("raftlog: the leader refused a command as not leader")

const (
	// fwdReadBuffer and fwdWriteBufferKeep size the link's buffers: reads
	// are buffered, writes go out as one frame per batch from a buffer that
	// is dropped after an outsized batch.
	fwdReadBuffer      = 64 << 10
	fwdWriteBufferKeep = 4 << 20

	// The forwarder's pause between attempts to reach a leader it cannot
	// talk to; a leader change ends it early. Commands submitted meanwhile
	// fail at once, so the pause stays short: after a network blip the
	// node takes writes again within fwdMaxBackoff.
	fwdMinBackoff = 10 * time.Millisecond
	fwdMaxBackoff = 200 * time.Millisecond
)

// runForwarder owns the follower's side of the forwarding link: the
// connection to the leader (writes; a reader goroutine per connection
// handles refusals) and n.fwdQueue. It follows raft's view of the leader.
// While no connection is possible (no leader, this node leads, the leader
// could not be reached and the backoff has not passed) queued commands do
// not wait: they move to the local proposer when this node leads, or fail
// with ErrNotLeader.
func (n *Node) runForwarder() {
	defer close(n.fwdDone)
	var (
		buf     []byte       // frame being written, reused
		batch   []fwdCommand // commands of one frame, reused
		held    []fwdCommand // taken from the queue, to be sent first on the next connection
		backoff time.Duration
	)
	for {
		changed := n.leaderChanges()
		select {
		case <-n.stop:
			for _, c := range held {
				n.failSeq(c.seq, ErrClosed)
			}
			n.drainForwardQueue()
			return
		default:
		}
		// unreachable is the leader this attempt failed on, avoided until
		// the backoff passes or the leader changes.
		unreachable := ""
		addr, id := n.raft.LeaderWithID()
		if addr != "" && string(id) != n.cfg.ID {
			var err error
			start := time.Now()
			buf, batch, err = n.forwardTo(string(addr), changed, held, buf, batch)
			held = held[:0]
			switch {
			case errors.Is(err, errClosing):
				continue // the loop sees stop
			case err == nil:
				backoff = 0 // the leader changed: reconnect at once
				continue
			}
			n.logger.Debug("forwarding link to the leader ended", "leader", addr, "error", err)
			if time.Since(start) > fwdMaxBackoff {
				backoff = 0 // a link that worked for a while starts over
			}
			backoff = min(max(2*backoff, fwdMinBackoff), fwdMaxBackoff)
			unreachable = string(addr)
		}
		held = n.forwarderWait(changed, backoff, unreachable, held)
	}
}

// forwarderWait waits, while no link is up, for a leader change, stop, the
// backoff (when unreachable is set), or a command that a leader can take.
// Commands no leader can take now are disposed of at once. It returns the
// commands to send on the next connection.
func (n *Node) forwarderWait(changed <-chan struct{}, backoff time.Duration, unreachable string, held []fwdCommand) []fwdCommand {
	var timeout <-chan time.Time
	if unreachable != "" {
		t := time.NewTimer(backoff)
		defer t.Stop()
		timeout = t.C
	}
	for {
		select {
		case c := <-n.fwdQueue:
			// The observer may not have told us yet of a leader that Submit
			// already saw: ask raft.
			addr, id := n.raft.LeaderWithID()
			switch {
			case addr == "" || string(addr) == unreachable:
				n.failSeq(c.seq, ErrNotLeader)
			case string(id) == n.cfg.ID:
				if err := n.enqueueLocal(c); err != nil {
					n.failSeq(c.seq, err)
				}
			default:
				return append(held, c) // connect now
			}
		case <-changed:
			return held
		case <-timeout:
			return held
		case <-n.stop:
			return held
		}
	}
}

// drainForwardQueue fails every queued command with ErrClosed. Called by
// the forwarder after stop; Close has set closed before closing stop, so
// the queue only shrinks now. Nothing was sent, so nothing can be
// duplicated.
func (n *Node) drainForwardQueue() {
	for {
		select {
		case c := <-n.fwdQueue:
			n.failSeq(c.seq, ErrClosed)
		default:
			return
		}
	}
}

var errClosing = errors.New("raftlog: closing")

// forwardTo runs one connection to the leader at addr, sending held first,
// until the leader changes (nil), the node stops (errClosing), or the link
// fails. It returns its buffers for reuse.
func (n *Node) forwardTo(addr string, changed <-chan struct{}, held []fwdCommand, buf []byte, batch []fwdCommand) ([]byte, []fwdCommand, error) {
	conn, err := n.mux.dial(addr, connForward, n.cfg.TransportTimeout)
	if err == nil {
		defer conn.Close()
		buf = appendHello(buf[:0], helloFrame{version: linkVersion, origin: n.origin, id: n.cfg.ID})
		buf = appendMember(buf, n.member())
		buf = appendReport(buf, n.report())
		_ = conn.SetWriteDeadline(time.Now().Add(n.cfg.TransportTimeout))
		_, err = conn.Write(buf)
	}
	if err != nil {
		for _, c := range held { // not sent
			n.failSeq(c.seq, ErrNotLeader)
		}
		return buf, batch, err
	}
	write := func(frame []byte) error {
		_ = conn.SetWriteDeadline(time.Now().Add(n.cfg.TransportTimeout))
		_, err := conn.Write(frame)
		return err
	}

	readerDone := make(chan error, 1)
	go func() { readerDone <- n.readRefusals(conn) }()
	var sent []uint64 // seqs written on this connection, not known resolved
	defer func() {
		conn.Close()
		<-readerDone
		if sent = n.waits.stillWaiting(sent); len(sent) > 0 {
			go n.failSentOnLeaderChange(addr, sent)
		}
	}()
	for i, c := range held {
		if buf, batch, err = n.sendCommands(write, c, buf, batch, &sent); err != nil {
			for _, c := range held[i+1:] {
				n.failSeq(c.seq, ErrNotLeader)
			}
			return buf, batch, err
		}
	}
	ticker := time.NewTicker(n.cfg.ReportInterval)
	defer ticker.Stop()
	for {
		select {
		case c := <-n.fwdQueue:
			var err error
			buf, batch, err = n.sendCommands(write, c, buf, batch, &sent)
			if err != nil {
				return buf, batch, err
			}
		case <-ticker.C:
			sent = n.waits.stillWaiting(sent)
			buf = appendReport(buf[:0], n.report())
			if err := write(buf); err != nil {
				return buf, batch, err
			}
		case <-changed:
			changed = n.leaderChanges()
			if a, _ := n.raft.LeaderWithID(); string(a) != addr {
				return buf, batch, nil
			}
		case err := <-readerDone:
			readerDone <- err // for the deferred wait
			if err == nil {
				err = errors.New("raftlog: leader closed the forwarding link")
			}
			return buf, batch, err
		case <-n.stop:
			return buf, batch, errClosing
		}
	}
}

// sendCommands writes first and whatever else is queued, in frames of at
// most MaxBatchCommands commands and MaxBatchBytes command bytes (a single
// larger command cannot exist: Submit refuses it). Commands in a frame
// whose write failed have an unknown outcome and are left to time out; a
// command taken from the queue but not yet written fails with
// ErrNotLeader.
func (n *Node) sendCommands(write func([]byte) error, first fwdCommand, buf []byte, batch []fwdCommand, sent *[]uint64) ([]byte, []fwdCommand, error) {
	next, hasNext := first, true
	for hasNext {
		batch = append(batch[:0], next)
		size := len(next.cmd)
		hasNext = false
	fill:
		for len(batch) < n.cfg.MaxBatchCommands {
			select {
			case c := <-n.fwdQueue:
				if size+len(c.cmd) > n.cfg.MaxBatchBytes {
					next, hasNext = c, true
					break fill
				}
				batch = append(batch, c)
				size += len(c.cmd)
			default:
				break fill
			}
		}
		buf = appendSubmit(buf[:0], batch)
		err := write(buf)
		for _, c := range batch { // written or cut: the outcome is the leader's now
			*sent = append(*sent, c.seq)
		}
		clear(batch) // drop the commands
		if cap(buf) > fwdWriteBufferKeep {
			buf = nil
		}
		if err != nil {
			if hasNext {
				n.failSeq(next.seq, ErrNotLeader)
			}
			return buf, batch, err
		}
		n.stats.commandsForwarded.Add(uint64(len(batch)))
	}
	return buf, batch, nil
}

// readRefusals reads the leader's refusals on a forwarding connection and
// fails the refused commands. It returns when the connection fails, or
// with errLeaderMoved after a frame that refused a command as not leader:
// the forwarder then looks for the new leader.
func (n *Node) readRefusals(conn net.Conn) error {
	r := bufio.NewReaderSize(conn, fwdReadBuffer)
	var retry time.Duration // the leader's latest hint; 0: none yet
	for {
		typ, p, err := readFrame(r)
		if err != nil {
			return err
		}
		if typ == frameRetry {
			if retry, err = decodeRetry(p); err != nil {
				return err
			}
			continue
		}
		if typ != frameRefuse {
			continue // a frame of a newer protocol
		}
		moved := false
		err = decodeRefuse(p, func(rf refusal) {
			if rf.code == refuseNotLeader || rf.code == refuseClosed {
				moved = true
			}
			err := refusalError(rf.code)
			if rf.code == refuseBusy {
				n.stats.commandsRejected.Add(1)
				if retry > 0 {
					err = &BusyError{RetryAfter: retry}
				}
			}
			n.failSeq(rf.seq, err)
		})
		if err != nil {
			return err
		}
		if moved {
			return errLeaderMoved
		}
	}
}

// report is what this node tells the leader about its progress.
func (n *Node) report() reportFrame {
	return reportFrame{applied: n.raft.AppliedIndex(), last: n.raft.LastIndex()}
}

// fwdSession is the leader's side of one follower's forwarding link. The
// session's handler goroutine reads (serveForward); its writer goroutine
// owns writes and sends the refusals queued by the reader and the proposer's
// waiter.
type fwdSession struct {
	conn   net.Conn
	peerID string
	origin uint64
	wake   chan struct{} // 1-buffered: refusals are waiting
	// retryAfter is the leader's admission hint, sent ahead of busy
	// refusals (frameRetry).
	retryAfter func() time.Duration

	mu       sync.Mutex // guards refusals and ended
	refusals []refusal
	ended    bool
}

// refuse queues a refusal for the follower; it never blocks. After the
// session ended it does nothing: the follower's command times out.
func (s *fwdSession) refuse(seq uint64, code byte) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.refusals = append(s.refusals, refusal{seq: seq, code: code})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// writeLoop sends queued refusals, all that queued in one frame (behind a
// retry frame if any is busy), until the session ends or a write fails.
func (s *fwdSession) writeLoop(done <-chan struct{}, timeout time.Duration) {
	var buf []byte
	var out []refusal
	for {
		select {
		case <-s.wake:
		case <-done:
			return
		}
		s.mu.Lock()
		out, s.refusals = s.refusals, out[:0]
		s.mu.Unlock()
		if len(out) == 0 {
			continue
		}
		buf = buf[:0]
		for _, r := range out {
			if r.code == refuseBusy {
				buf = appendRetry(buf, s.retryAfter())
				break
			}
		}
		buf = appendRefuse(buf, out)
		_ = s.conn.SetWriteDeadline(time.Now().Add(timeout))
		if _, err := s.conn.Write(buf); err != nil {
			s.conn.Close() // ends the reader too
			return
		}
	}
}

// serveForward runs the leader's side of a forwarding connection until it
// fails or the node closes (the mux closes every connection).
func (n *Node) serveForward(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReaderSize(conn, fwdReadBuffer)
	_ = conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	typ, p, err := readFrame(r)
	if err != nil || typ != frameHello {
		return
	}
	hello, err := decodeHello(p)
	if err != nil || hello.version != linkVersion || hello.origin == 0 {
		n.logger.Warn("refusing a forwarding link", "remote", conn.RemoteAddr(), "version", hello.version, "error", err)
		return
	}
	s := &fwdSession{conn: conn, peerID: hello.id, origin: hello.origin, wake: make(chan struct{}, 1),
		retryAfter: n.admit.retryAfter}
	done := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.writeLoop(done, n.cfg.TransportTimeout)
	}()
	defer func() {
		s.mu.Lock()
		s.ended = true
		s.refusals = nil
		s.mu.Unlock()
		close(done)
		conn.Close()
		<-writerDone
	}()
	for {
		// Followers report every ReportInterval, so a silent link is dead.
		_ = conn.SetReadDeadline(time.Now().Add(n.cfg.TransportTimeout + 4*n.cfg.ReportInterval))
		typ, p, err := readFrame(r)
		if err != nil {
			return
		}
		switch typ {
		case frameSubmit:
			if err := n.acceptForwarded(s, p); err != nil {
				n.logger.Warn("closing a forwarding link", "peer", s.peerID, "error", err)
				return
			}
		case frameReport:
			rep, err := decodeReport(p)
			if err != nil {
				n.logger.Warn("closing a forwarding link", "peer", s.peerID, "error", err)
				return
			}
			n.progress.record(s.peerID, rep, n.raft.CommitIndex())
		case frameMember:
			m, err := decodeMember(p)
			if err != nil {
				n.logger.Warn("closing a forwarding link", "peer", s.peerID, "error", err)
				return
			}
			n.progress.recordMember(s.peerID, m)
		}
		// Other types: frames of a newer protocol, ignored.
	}
}

// acceptForwarded queues the commands of a submit frame for the proposer,
// tagged with the follower's origin, and refuses those it cannot take.
func (n *Node) acceptForwarded(s *fwdSession, payload []byte) error {
	n.submitMu.RLock()
	defer n.submitMu.RUnlock()
	closed := n.closed
	leader := n.raft.State() == raft.Leader
	if n.swallowForwardedForTest.Load() {
		return nil // a paused leader, for tests: neither proposed nor refused
	}
	return decodeSubmit(payload, func(seq uint64, cmd []byte) {
		var code byte
		switch {
		case closed:
			code = refuseClosed
		case !leader:
			code = refuseNotLeader
		case n.storageFull():
			code = refuseStorageFull
		case len(cmd) > n.cfg.MaxBatchBytes:
			code = refuseTooLarge
		default:
			code = refuseBusy
			now := n.now()
			if !n.admit.admits(len(n.queue), now) {
				n.admit.refused.Add(1)
				break
			}
			select {
			case n.queue <- request{cmd: cmd, tag: Tag{Origin: s.origin, Seq: seq}, from: s, enqueued: now}:
				n.stats.commandsReceived.Add(1)
				return
			default:
			}
		}
		s.refuse(seq, code)
	})
}

// serveConn serves a forward or admin connection routed by the mux.
func (n *Node) serveConn(kind byte, c net.Conn) {
	switch kind {
	case connForward:
		n.serveForward(c)
	case connAdmin:
		n.serveAdmin(c)
	default:
		c.Close()
		panic(fmt.Sprintf("raftlog: mux routed a connection of kind %d", kind))
	}
}

// errLeaderChanged is the error of forwarded commands failed early by
// failSentOnLeaderChange: their outcome is unknown.
var errLeaderChanged = fmt.Errorf("%w: the leader changed after the command was forwarded to it; outcome unknown", ErrTimeout)

// failSentOnLeaderChange fails the commands of seqs, forwarded to the
// leader at old, that are still unresolved once another leader is known:
// the old one may be paused or cut off, and a paused leader's commands
// otherwise hold their clients for the whole SubmitTimeout although a new
// leader was elected long before. Their outcome is unknown (the old
// leader may have replicated them, and the new one commit them); the
// client retries with the same idempotency key and learns it. It gives up
// on its own after SubmitTimeout, when the waiters time out anyway.
func (n *Node) failSentOnLeaderChange(old string, seqs []uint64) {
	deadline := time.NewTimer(n.cfg.SubmitTimeout)
	defer deadline.Stop()
	for {
		changed := n.leaderChanges()
		if addr, _ := n.raft.LeaderWithID(); addr != "" && string(addr) != old {
			for _, seq := range seqs {
				n.failSeq(seq, errLeaderChanged)
			}
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			return
		case <-n.stop:
			return
		}
	}
}
