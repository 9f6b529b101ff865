package netpoll

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"
)

// Accepting. The server accepts sockets itself, on one goroutine, and hands
// each to an event loop with gnet.Client.EnrollContext; gnet's own acceptor
// is not used. In gnet v2.9.7 that acceptor turns every accept error other
// than EAGAIN, EINTR, ECONNRESET and ECONNABORTED (so EMFILE, ENFILE,
// ENOBUFS, ENOMEM) into errors.ErrAcceptSocket (acceptor_unix.go:42-44), on
// which the poller's loop returns (pkg/netpoll/poller_epoll_default.go:138)
// and the main reactor shuts the whole engine down (reactor_default.go:33-41:
// engine.shutdown), closing every connection and the listener: one moment
// out of descriptors and the port is gone until a restart. Here an accept
// error costs a pause (backing off from 5 ms to 1 s, as net/http does), and
// when the process is out of descriptors one kept in reserve is given up to
// accept the waiting socket, answer it 503 and close it, so that clients
// are told to come back rather than left in the backlog.

const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// ErrOutOfDescriptors is Ready's answer while accepted sockets cannot be
// handed to an event loop for want of a descriptor (each is answered 503).
var ErrOutOfDescriptors = errors.New("netpoll: out of descriptors: new sockets are refused with 503")

// ErrListenerDead wraps the reason the server no longer takes connections
// and never will again: its listener was closed, or its event loops
// stopped. Only a restart helps.
var ErrListenerDead = errors.New("netpoll: not accepting connections")

// acceptLoop accepts until Stop closes the listener.
func (s *Server) acceptLoop() {
	defer close(s.acceptDone)
	var delay time.Duration
	failures := 0
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.stopping.Load() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				s.acceptExit = err
				s.cfg.Logger.Error("netpoll: the listener was closed; no new WebSocket connections until a restart", "err", err)
				return
			}
			s.acceptErrors.Add(1)
			s.acceptErr.Store(&acceptFailure{err: err, at: time.Now()})
			if failures++; failures == 1 {
				s.cfg.Logger.Warn("netpoll: accept failed; backing off and retrying", "err", err)
			}
			if outOfDescriptors(err) && s.shedWithReserve() {
				continue
			}
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.stopCh:
				t.Stop()
				return
			}
			continue
		}
		if failures > 0 {
			s.cfg.Logger.Warn("netpoll: accepting again", "failed_accepts", failures)
			failures, delay = 0, 0
			s.acceptErr.Store(nil)
		}
		if s.reserve == nil {
			s.reserve, _ = os.Open(os.DevNull) // given up earlier; retake it
		}
		s.admit(nc)
	}
}

// outOfDescriptors: the process (EMFILE) or the system (ENFILE) has no
// descriptor left.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// admit hands an accepted socket to an event loop, unless too many are
// already in their handshake. EnrollContext returns once the loop ran
// OnOpen, which counts the socket as pending, so the next admit sees it.
func (s *Server) admit(nc net.Conn) {
	if limit := s.cfg.MaxPendingHandshakes; limit > 0 && s.pending.Load() >= int64(limit) {
		s.refusedPending.Add(1)
		shedConn(nc, s.shedResponse(reasonPendingFull))
		return
	}
	// EnrollContext dups the socket (and closes nc). When the accept took
	// the last descriptor the dup fails and the socket is dropped unanswered;
	// after that happened once, each socket is first checked with a dup of
	// our own until one succeeds, and answered 503 while none does.
	if s.fdShort.Load() {
		if err := tryDup(nc); err != nil {
			s.refusedNoFD.Add(1)
			shedConn(nc, s.shedResponse(reasonNoFD))
			return
		}
		s.fdShort.Store(false)
	}
	if _, err := s.cli.EnrollContext(nc, nil); err != nil { // nc is closed either way
		if outOfDescriptors(err) {
			s.refusedNoFD.Add(1)
			s.fdShort.Store(true)
		}
		s.cfg.Logger.Debug("netpoll: a socket could not be handed to an event loop", "err", err)
	}
}

// tryDup reports whether the process can still dup nc's descriptor.
func tryDup(nc net.Conn) error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var derr error
	if err := rc.Control(func(fd uintptr) {
		var nfd int
		if nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); derr == nil {
			_ = unix.Close(nfd)
		}
	}); err != nil {
		return err
	}
	return derr
}

// shedWithReserve gives up the reserve descriptor to accept one waiting
// socket and answer it 503, then takes the reserve back. It reports whether
// it answered one; the accept loop then goes on at once, so a backlog that
// arrived while the process was out of descriptors is answered quickly.
func (s *Server) shedWithReserve() bool {
	if s.reserve == nil {
		return false
	}
	_ = s.reserve.Close()
	s.reserve = nil
	sc, ok := s.ln.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	nfd := -1
	_ = rc.Control(func(fd uintptr) {
		// One non-blocking try: if the socket went away, do not wait.
		if fd, _, err := unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC); err == nil {
			nfd = fd
		}
	})
	if nfd >= 0 {
		s.refusedNoFD.Add(1)
		shedFD(nfd, s.shedResponse(reasonNoFD))
		_ = unix.Close(nfd)
	}
	s.reserve, _ = os.Open(os.DevNull)
	return nfd >= 0
}

// shedResponse is the 503 for a socket refused before its request is read.
func (s *Server) shedResponse(reason string) []byte {
	return refusalResponse(&handshakeError{status: http.StatusServiceUnavailable, reason: reason, header: s.retryAfter})
}

// shedConn answers and closes a socket that is refused unread.
func shedConn(nc net.Conn, resp []byte) {
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { shedFD(int(fd), resp) })
		}
	}
	_ = nc.Close()
}

// shedFD writes resp to a fresh non-blocking socket (it fits in the empty
// send buffer) and reads away what the client already sent, so that the
// close that follows sends a FIN, not a reset that could destroy the
// response before the client reads it. Best effort: nothing waits.
func shedFD(fd int, resp []byte) {
	_, _ = unix.Write(fd, resp)
	var buf [4096]byte
	for range 4 {
		if n, err := unix.Read(fd, buf[:]); n <= 0 || err != nil {
			return
		}
	}
}

// Alive reports nil while the server can take connections, and otherwise an
// error wrapping ErrListenerDead: the server was stopped, its listener was
// closed under it, or its event loops stopped (gnet shuts them all down
// when one fails; the ticker, which runs on the same context, then stops
// too). It is cheap and never waits: a liveness check.
func (s *Server) Alive() error {
	s.mu.Lock()
	st := s.state
	s.mu.Unlock()
	if st != stateStarted {
		return fmt.Errorf("%w: server not running", ErrListenerDead)
	}
	select {
	case <-s.acceptDone:
		if !s.stopping.Load() {
			return fmt.Errorf("%w: listener closed: %v", ErrListenerDead, s.acceptExit)
		}
		return fmt.Errorf("%w: server stopping", ErrListenerDead)
	default:
	}
	if since := time.Duration(time.Now().UnixNano() - s.lastTick.Load()); since > s.tickStaleAfter {
		return fmt.Errorf("%w: event loops stopped (no tick for %v)", ErrListenerDead, since.Round(time.Second))
	}
	return nil
}

// descriptorsFree tells whether the process can open n more descriptors
// now (the accept loop, blocked in accept, does not know they came free).
func descriptorsFree(n int) bool {
	ok := true
	for range n {
		probe, err := os.Open(os.DevNull)
		if err != nil {
			ok = false
			break
		}
		defer probe.Close()
	}
	return ok
}

// acceptFailure is the last failed accept, until one succeeds.
type acceptFailure struct {
	err error
	at  time.Time
}

// stillFailing tells whether the condition behind a failed accept lasts:
// for want of descriptors, whether the process still cannot open one (the
// accept loop, blocked in accept, does not know it cleared); for other
// errors, which are retried at least every second, whether it failed
// within acceptErrFresh.
func (s *Server) stillFailing(f *acceptFailure) bool {
	if outOfDescriptors(f.err) {
		return !descriptorsFree(1)
	}
	return time.Since(f.at) < s.acceptErrFresh
}

// Ready reports nil when the server takes and serves connections right
// now: it is Alive, accepting does not fail (it is not out of descriptors,
// nor backing off from ENOBUFS or the like), and every event loop that has
// connections runs a task before ctx ends. Errors other than
// ErrListenerDead may pass.
func (s *Server) Ready(ctx context.Context) error {
	if err := s.Alive(); err != nil {
		return err
	}
	if f := s.acceptErr.Load(); f != nil && s.stillFailing(f) {
		return fmt.Errorf("netpoll: accept failing: %w", f.err)
	}
	if s.fdShort.Load() && !descriptorsFree(2) {
		// Accept works, but the loops cannot take the sockets (a socket
		// and its dup take two descriptors): each is answered 503.
		return ErrOutOfDescriptors
	}
	s.mu.Lock()
	loops := s.loops
	s.mu.Unlock()
	answered := make(chan struct{}, len(loops))
	probe := gnet.RunnableFunc(func(context.Context) error {
		answered <- struct{}{}
		return nil
	})
	for _, l := range loops {
		if err := l.el.Execute(ctx, probe); err != nil {
			return fmt.Errorf("netpoll: event loop: %w", err)
		}
	}
	for range loops {
		select {
		case <-answered:
		case <-ctx.Done():
			return fmt.Errorf("netpoll: an event loop did not answer: %w", ctx.Err())
		}
	}
	return nil
}
