package raftlog

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Every node listens on one internal TCP port. With a cluster key, a
// connection starts with the handshake of handshake.go, run here for every
// kind: by the accept side in route and by every dialer in dial. Then the
// dialer of a connection writes one byte saying what the connection
// carries, and the mux routes it:
// raft's RPCs go to raft's NetworkTransport through raftStream, the
// forwarding link, admin calls and the peer channel to the node's handlers
// (forward.go, membership.go, peers.go).
const (
	connRaft    byte = 'R'
	connForward byte = 'F'
	connAdmin   byte = 'A'
	connPeer    byte = 'P'

	// sniffTimeout bounds how long an accepted connection may take to send
	// its first byte.
	sniffTimeout = 10 * time.Second
	// handshakeTimeout bounds the accept side's cluster-key handshake; the
	// dialer's is bounded by its dial timeout (TransportTimeout).
	handshakeTimeout = 5 * time.Second
	// authWarnEvery rate-limits the warning logged for failed handshakes.
	authWarnEvery = time.Second
)

var errIsolated = errors.New("raftlog: transport isolated")

// mux owns the internal listener and tracks every connection made through
// it, accepted or dialed, so that Close (and isolate, in tests) can cut
// them all.
//
// Goroutines: the accept loop, and one per accepted connection that reads
// the first byte and then, for forward, admin and peer connections, runs
// the handler for the connection's lifetime. Close waits for all of them.
type mux struct {
	ln        net.Listener
	advertise net.Addr // nil: the listener's address
	// key is the cluster key (Config.ClusterKey); nil: no handshake, for
	// tests and trusted networks only.
	key    []byte
	logger hclog.Logger
	// handle serves a forward, admin or peer connection until it ends; it
	// owns c.
	handle func(kind byte, c net.Conn)

	raftConns chan net.Conn // routed raft connections, taken by raftStream.Accept
	done      chan struct{} // closed by Close
	wg        sync.WaitGroup

	// wrapForTest, set by benchmarks only, wraps every connection this
	// mux dials or accepts (a simulated WAN link: edge_bench_test.go).
	wrapForTest atomic.Pointer[func(net.Conn) net.Conn]

	authFailures atomic.Uint64 // failed handshakes, both directions (Stats)
	lastAuthWarn atomic.Int64  // unix nanos of the last warning logged for one

	mu       sync.Mutex // guards the fields below
	conns    map[*muxConn]struct{}
	isolated bool
	closed   bool
}

func newMux(bindAddr string, advertise net.Addr, key []byte, logger hclog.Logger) (*mux, error) {
	ln, err := net.Listen("tcp", bindAddr)
	if err != nil {
		return nil, err
	}
	return &mux{
		ln:        ln,
		advertise: advertise,
		key:       key,
		logger:    logger,
		raftConns: make(chan net.Conn),
		done:      make(chan struct{}),
		conns:     make(map[*muxConn]struct{}),
	}, nil
}

// serve starts the accept loop; handle serves forward and admin
// connections.
func (m *mux) serve(handle func(kind byte, c net.Conn)) {
	m.handle = handle
	m.wg.Add(1)
	go m.acceptLoop()
}

func (m *mux) addr() net.Addr {
	if m.advertise != nil {
		return m.advertise
	}
	return m.ln.Addr()
}

func (m *mux) acceptLoop() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			// Out of file descriptors and the like: back off, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.logger.Error("accept", "error", err, "retry-in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-m.done:
				return
			}
		}
		delay = 0
		if w := m.wrapForTest.Load(); w != nil {
			c = (*w)(c)
		}
		tc := m.track(c)
		if tc == nil {
			continue
		}
		m.wg.Add(1)
		go m.route(tc)
	}
}

// route runs the handshake, when there is a cluster key, then reads the
// connection's kind byte and hands it on.
func (m *mux) route(c *muxConn) {
	defer m.wg.Done()
	if m.key != nil {
		_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
		if err := acceptHandshake(c, m.key); err != nil {
			if !errors.Is(err, net.ErrClosed) { // not cut by Close or isolate
				m.authFailed("inbound", c.RemoteAddr(), err)
			}
			c.Close()
			return
		}
	}
	var kind [1]byte
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	if _, err := c.Read(kind[:]); err != nil {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	switch kind[0] {
	case connRaft:
		select {
		case m.raftConns <- c:
		case <-m.done:
			c.Close()
		}
	case connForward, connAdmin, connPeer:
		m.handle(kind[0], c)
	default:
		m.logger.Warn("closing a connection of unknown kind", "kind", kind[0], "remote", c.RemoteAddr())
		c.Close()
	}
}

// dial connects to a peer's mux, runs the handshake when there is a cluster
// key, and announces the connection's kind. Every internal dialer comes
// through here: raft's transport (raftStream), the forwarder, the peer
// channel and membership calls.
func (m *mux) dial(addr string, kind byte, timeout time.Duration) (net.Conn, error) {
	m.mu.Lock()
	isolated, closed := m.isolated, m.closed
	m.mu.Unlock()
	if closed {
		return nil, net.ErrClosed
	}
	if isolated {
		return nil, errIsolated
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if w := m.wrapForTest.Load(); w != nil {
		c = (*w)(c)
	}
	// Tracked from here, so that Close and isolate cut a handshake too.
	tc := m.track(c)
	if tc == nil {
		return nil, errIsolated
	}
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if m.key != nil {
		if err := dialHandshake(tc, m.key); err != nil {
			if errors.Is(err, errBadProof) {
				m.authFailed("outbound", tc.RemoteAddr(), err)
			}
			tc.Close()
			return nil, fmt.Errorf("raftlog: cluster key handshake with %s: %w", addr, err)
		}
	}
	if _, err := tc.Write([]byte{kind}); err != nil {
		tc.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// authFailed counts a failed handshake and logs it, at most once per
// authWarnEvery: a stranger probing the port must not flood the log.
func (m *mux) authFailed(dir string, remote net.Addr, err error) {
	total := m.authFailures.Add(1)
	now := time.Now().UnixNano()
	last := m.lastAuthWarn.Load()
	if now-last < int64(authWarnEvery) || !m.lastAuthWarn.CompareAndSwap(last, now) {
		return
	}
	m.logger.Warn("internal connection failed the cluster key handshake; closed",
		"direction", dir, "remote", remote, "error", err, "failures-total", total)
}

// track registers c, or closes it and returns nil when the mux is closed
// or isolated.
func (m *mux) track(c net.Conn) *muxConn {
	tc := &muxConn{Conn: c, m: m}
	m.mu.Lock()
	refuse := m.closed || m.isolated
	if !refuse {
		m.conns[tc] = struct{}{}
	}
	m.mu.Unlock()
	if refuse {
		c.Close()
		return nil
	}
	return tc
}

// isolate cuts every connection and refuses new ones while on: the node is
// partitioned from its peers, in both directions. For fault tests.
func (m *mux) isolate(on bool) {
	m.mu.Lock()
	m.isolated = on
	var cut []*muxConn
	if on {
		for c := range m.conns {
			cut = append(cut, c)
		}
	}
	m.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

// Close stops accepting, closes every connection and waits for the mux's
// goroutines, handlers included.
func (m *mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	conns := make([]*muxConn, 0, len(m.conns))
	for c := range m.conns {
		conns = append(conns, c)
	}
	m.mu.Unlock()
	close(m.done)
	err := m.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	m.wg.Wait()
	return err
}

// muxConn is a tracked connection; closing it untracks it.
type muxConn struct {
	net.Conn
	m    *mux
	once sync.Once
}

func (c *muxConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.m.mu.Lock()
		delete(c.m.conns, c)
		c.m.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

// raftStream is the raft.StreamLayer over the mux: raft's NetworkTransport
// accepts the connections routed to it and dials with the raft kind byte.
// Closing it (raft does, on Shutdown) stops Accept; the listener belongs to
// the mux.
type raftStream struct {
	m         *mux
	closeOnce sync.Once
	closed    chan struct{}
}

var _ raft.StreamLayer = (*raftStream)(nil)

func newRaftStream(m *mux) *raftStream { return &raftStream{m: m, closed: make(chan struct{})} }

func (s *raftStream) Accept() (net.Conn, error) {
	select {
	case c := <-s.m.raftConns:
		return c, nil
	case <-s.closed:
	case <-s.m.done:
	}
	return nil, net.ErrClosed
}

func (s *raftStream) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

func (s *raftStream) Addr() net.Addr { return s.m.addr() }

func (s *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.m.dial(string(address), connRaft, timeout)
	if err != nil {
		return nil, fmt.Errorf("raftlog: dial %s: %w", address, err)
	}
	return c, nil
}
