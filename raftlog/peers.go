package raftlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The peer channel carries ephemeral, opaque messages between the members
// of the cluster (the node uses it for presence and typing, which never go
// through raft). Nothing is stored, acknowledged or resent: a message
// reaches a peer at most once, in the order it was broadcast, or is
// dropped.
//
// Each node keeps one outbound connection (kind connPeer) to every other
// member of the current raft configuration, re-reading the configuration
// every ReportInterval and redialing with backoff. A connection carries
// messages one way only, from the dialer:
//
//	hello (frameHello: version peerVersion, origin, the dialer's ID)
//	then framePeerMessage frames (payload: one message) and framePeerPing
//	frames (empty, sent when the link was idle for a ReportInterval)
//
// in the framing of link.go. The receiver never writes; it closes the
// connection on garbage and after a silence of TransportTimeout +
// 4*ReportInterval (a dead host), and the dialer notices the close at once
// through a reader that only waits for EOF.
//
// Loss is repaired by PeerUp, not by retries: a message broadcast while
// the link to a peer is down is dropped, and a message that finds the
// link's queue full is dropped and the link restarted, so that the peer
// gets the handler's greeting (typically the full state) before anything
// newer.

// PeerHandler receives the peer channel's events. Its methods may run
// concurrently with each other (for different peers, and PeerUp with the
// others for the same peer), so it synchronizes its own state; it must not
// block for long, since PeerMessage stalls that peer's link.
type PeerHandler interface {
	// PeerUp reports that this node's link to peer id has just been
	// established, for the first time or again; it runs on the link's
	// goroutine. It returns the greeting to send first on the new link (nil
	// for none): messages broadcast before this link came up were dropped,
	// so the greeting is where the node sends its full state. Messages
	// broadcast while PeerUp runs may follow the greeting.
	PeerUp(id string) (greeting []byte)
	// PeerMessage delivers a message that peer from broadcast, or its
	// greeting, in the order it sent them. It runs on the goroutine reading
	// the connection from that peer; msg is the handler's to keep.
	PeerMessage(from string, msg []byte)
	// PeerDown reports that the connection from peer id ended (it closed,
	// failed, fell silent or was replaced by a newer one): no more messages
	// from that link. It runs on the same goroutine as PeerMessage, after
	// its last message, and before any message of a later connection from
	// id.
	PeerDown(id string)
}

// MaxPeerMessage is the largest message the peer channel carries;
// Broadcast drops larger ones (counted in PeerStats.Dropped).
const MaxPeerMessage = 16 << 20

const (
	// Frame types of a peer connection (link.go has the others). The
	// connection opens with frameHello.
	framePeerMessage byte = 0x10
	framePeerPing    byte = 0x11

	// peerVersion is the peer protocol version sent in hello; a receiver
	// closes a connection of another version.
	peerVersion = 1

	// The pause between attempts to reach a peer grows from peerMinBackoff
	// to peerMaxBackoff; a link that worked for a while starts over.
	peerMinBackoff = 20 * time.Millisecond
	peerMaxBackoff = time.Second

	// peerWriteBatch bounds the messages copied into one write; the buffer
	// is dropped after an outsized message.
	peerWriteBatch      = 256 << 10
	peerWriteBufferKeep = 1 << 20
	peerReadBuffer      = 64 << 10
)

var (
	errPeerOverflow = errors.New("raftlog: peer queue full, restarting the link")
	errPeerClosed   = errors.New("raftlog: peer closed the link")
)

// PeerStats counts the peer channel's traffic. Counters only grow.
type PeerStats struct {
	Links   int // members of the configuration this node keeps a link to
	LinksUp int // of those, links connected now

	Sent     uint64 // messages written to a link (greetings included)
	Dropped  uint64 // messages not sent: link down, queue full, or too large
	Resets   uint64 // links restarted because their queue was full
	Received uint64 // messages handed to PeerHandler.PeerMessage
}

// peerChannel is a node's side of the peer channel: its outbound links
// and the sessions of inbound connections.
//
// Goroutines: the manager (run), started by Open and stopped by Close,
// keeps one link goroutine (peerLink.run) per other member; each link runs
// one more goroutine per connection that waits for its EOF. Inbound
// connections are served on the mux's handler goroutines (serve), which
// call the handler.
type peerChannel struct {
	n        *Node
	handler  PeerHandler
	queueLen int

	// links is the current set of outbound links, replaced whole by the
	// manager: Broadcast reads it without a lock.
	links atomic.Pointer[[]*peerLink]
	wg    sync.WaitGroup // link goroutines, stopped ones included
	done  chan struct{}  // closed when the manager and every link stopped

	// inMu guards inbound: the current session of each peer connected to
	// this node, so that a newer connection from a peer ends the older one
	// before it delivers anything.
	inMu    sync.Mutex
	inbound map[string]*peerSession

	sent, dropped, resets, received atomic.Uint64
}

func newPeerChannel(n *Node, h PeerHandler, queueLen int) *peerChannel {
	p := &peerChannel{n: n, handler: h, queueLen: queueLen, done: make(chan struct{}), inbound: make(map[string]*peerSession)}
	p.links.Store(new([]*peerLink))
	return p
}

// Broadcast sends msg to every other member of the configuration, without
// blocking: it is queued for each peer whose link is up and dropped for the
// others, or when a peer's queue is full (which also restarts that link, so
// the peer gets a fresh PeerUp greeting). msg is shared by the queues and
// must not be modified afterwards. Without Config.Peers it does nothing.
func (n *Node) Broadcast(msg []byte) {
	p := n.peers
	if p == nil {
		return
	}
	links := *p.links.Load()
	if len(msg) > MaxPeerMessage {
		p.dropped.Add(uint64(len(links)))
		n.logger.Warn("dropping an outsized peer message", "bytes", len(msg))
		return
	}
	for _, l := range links {
		l.send(msg)
	}
}

// PeerStats reads the peer channel's counters; zero without Config.Peers.
func (n *Node) PeerStats() PeerStats {
	p := n.peers
	if p == nil {
		return PeerStats{}
	}
	links := *p.links.Load()
	st := PeerStats{
		Links:    len(links),
		Sent:     p.sent.Load(),
		Dropped:  p.dropped.Load(),
		Resets:   p.resets.Load(),
		Received: p.received.Load(),
	}
	for _, l := range links {
		if l.up.Load() {
			st.LinksUp++
		}
	}
	return st
}

// run follows the raft configuration until the node stops, then stops the
// links and waits for them.
func (p *peerChannel) run() {
	defer close(p.done)
	t := time.NewTicker(p.n.cfg.ReportInterval)
	defer t.Stop()
	for {
		// A leader change often comes with a configuration change: look
		// again then too.
		changed := p.n.leaderChanges()
		p.refresh()
		select {
		case <-t.C:
		case <-changed:
		case <-p.n.stop:
			for _, l := range *p.links.Load() {
				l.close()
			}
			p.links.Store(new([]*peerLink))
			p.wg.Wait()
			return
		}
	}
}

// refresh makes the links match the latest configuration: one per other
// member, at its current address. It does not wait for the links it stops.
func (p *peerChannel) refresh() {
	f := p.n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	want := peerServers(f.Configuration(), p.n.cfg.ID)
	old := *p.links.Load()
	same := len(old) == len(want)
	for _, l := range old {
		if want[l.id] != l.addr {
			same = false
		}
	}
	if same {
		return
	}
	next := make([]*peerLink, 0, len(want))
	for _, l := range old {
		if addr, ok := want[l.id]; ok && addr == l.addr {
			next = append(next, l)
			delete(want, l.id)
		} else {
			l.close()
		}
	}
	for id, addr := range want {
		l := &peerLink{p: p, id: id, addr: addr, queue: make(chan []byte, p.queueLen), stop: make(chan struct{})}
		next = append(next, l)
		p.wg.Add(1)
		go l.run()
	}
	p.links.Store(&next)
}

// peerLink is the outbound link to one peer. Its goroutine (run) owns the
// connection's writes and the queue's receiving end; send runs on any
// goroutine.
type peerLink struct {
	p        *peerChannel
	id, addr string
	queue    chan []byte   // messages waiting for the connection, bounded
	stop     chan struct{} // closed by close
	stopOnce sync.Once
	up       atomic.Bool // a connection is established and greeted

	// mu guards conn, the current connection (nil while down), which send
	// closes when the queue overflows, and overflowed, set by the first
	// overflow on that connection.
	mu         sync.Mutex
	conn       net.Conn
	overflowed bool
}

// send queues msg without blocking, or drops it.
func (l *peerLink) send(msg []byte) {
	if !l.up.Load() {
		l.p.dropped.Add(1)
		return
	}
	select {
	case l.queue <- msg:
		return
	default:
	}
	l.p.dropped.Add(1)
	// The peer (or the network) does not keep up and the peer has now
	// missed a message: restart the link, so that it gets a fresh greeting.
	// Closing the connection also ends a write blocked on it.
	l.mu.Lock()
	c := l.conn
	first := c != nil && !l.overflowed
	l.overflowed = true
	l.mu.Unlock()
	if first {
		l.p.resets.Add(1)
		c.Close()
	}
}

func (l *peerLink) close() { l.stopOnce.Do(func() { close(l.stop) }) }

// run keeps the link up until it is closed.
func (l *peerLink) run() {
	defer l.p.wg.Done()
	logger := l.p.n.logger
	var (
		backoff time.Duration
		buf     []byte
	)
	for {
		select {
		case <-l.stop:
			return
		default:
		}
		start := time.Now()
		var err error
		buf, err = l.connect(buf)
		if err == nil {
			return // closed
		}
		logger.Debug("peer link ended", "peer", l.id, "addr", l.addr, "error", err)
		if time.Since(start) > peerMaxBackoff || errors.Is(err, errPeerOverflow) {
			backoff = 0
		}
		backoff = min(max(2*backoff, peerMinBackoff), peerMaxBackoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-l.stop:
			t.Stop()
			return
		}
	}
}

// connect runs one connection until the link is closed (nil) or the
// connection fails. It returns its write buffer for reuse.
func (l *peerLink) connect(buf []byte) ([]byte, error) {
	n := l.p.n
	conn, err := n.mux.dial(l.addr, connPeer, n.cfg.TransportTimeout)
	if err != nil {
		return buf, err
	}
	defer conn.Close()
	// What queued for the previous connection is stale: the greeting
	// supersedes it.
	for len(l.queue) > 0 {
		<-l.queue
	}
	l.mu.Lock()
	l.conn, l.overflowed = conn, false
	l.mu.Unlock()
	defer func() {
		l.up.Store(false)
		l.mu.Lock()
		l.conn = nil
		l.mu.Unlock()
	}()
	// Up before the greeting is made, so that nothing broadcast after the
	// handler read its state is dropped.
	l.up.Store(true)
	greeting := l.p.handler.PeerUp(l.id)

	write := func(b []byte) error {
		_ = conn.SetWriteDeadline(time.Now().Add(n.cfg.TransportTimeout))
		_, err := conn.Write(b)
		return err
	}
	buf = appendHello(buf[:0], helloFrame{version: peerVersion, origin: n.origin, id: n.cfg.ID})
	if len(greeting) > MaxPeerMessage {
		n.logger.Warn("dropping an outsized peer greeting", "peer", l.id, "bytes", len(greeting))
		l.p.dropped.Add(1)
		greeting = nil
	}
	if greeting != nil {
		buf = appendPeerMessage(buf, greeting)
	}
	if err := write(buf); err != nil {
		return buf, l.overflowOr(err)
	}
	if greeting != nil {
		l.p.sent.Add(1)
	}

	// The receiver never writes: a read ends only when it closes.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		_, _ = io.Copy(io.Discard, conn)
	}()
	defer func() {
		conn.Close()
		<-readerDone
	}()
	ticker := time.NewTicker(n.cfg.ReportInterval)
	defer ticker.Stop()
	idle := true
	for {
		select {
		case msg := <-l.queue:
			buf = appendPeerMessage(buf[:0], msg)
			count := uint64(1)
		fill:
			for len(buf) < peerWriteBatch {
				select {
				case msg := <-l.queue:
					buf = appendPeerMessage(buf, msg)
					count++
				default:
					break fill
				}
			}
			err := write(buf)
			if cap(buf) > peerWriteBufferKeep {
				buf = nil
			}
			if err != nil {
				return buf, l.overflowOr(err)
			}
			l.p.sent.Add(count)
			idle = false
		case <-ticker.C:
			if idle {
				buf = appendPeerPing(buf[:0])
				if err := write(buf); err != nil {
					return buf, l.overflowOr(err)
				}
			}
			idle = true
		case <-readerDone:
			return buf, errPeerClosed
		case <-l.stop:
			return buf, nil
		}
	}
}

// overflowOr names the cause of a failed write: send closed the connection
// because the queue overflowed, or err.
func (l *peerLink) overflowOr(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.overflowed {
		return errPeerOverflow
	}
	return err
}

// peerSession is one inbound connection from a peer.
type peerSession struct {
	conn net.Conn
	done chan struct{} // closed after its PeerDown
}

// serve reads one inbound peer connection until it fails, falls silent, is
// replaced by a newer connection from the same peer, or the node closes
// (the mux closes every connection). It runs on the mux's handler
// goroutine.
func (p *peerChannel) serve(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReaderSize(conn, peerReadBuffer)
	_ = conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	typ, payload, err := readPeerFrame(r)
	if err != nil {
		return
	}
	var hello helloFrame
	if typ == frameHello {
		hello, err = decodeHello(payload)
	} else {
		err = fmt.Errorf("%w: first frame of type %d, not hello", errCorruptFrame, typ)
	}
	if err == nil && (hello.version != peerVersion || hello.id == "" || hello.id == p.n.cfg.ID) {
		err = fmt.Errorf("raftlog: peer hello version %d from %q", hello.version, hello.id)
	}
	if err != nil {
		p.n.logger.Warn("refusing a peer connection", "remote", conn.RemoteAddr(), "error", err)
		return
	}
	s := &peerSession{conn: conn, done: make(chan struct{})}
	if !p.register(hello.id, s) {
		return
	}
	defer func() {
		p.inMu.Lock()
		if p.inbound[hello.id] == s {
			delete(p.inbound, hello.id)
		}
		p.inMu.Unlock()
		p.handler.PeerDown(hello.id)
		close(s.done)
	}()
	// The dialer pings an idle link every ReportInterval: silence this long
	// means the peer's host or network is gone.
	silence := p.n.cfg.TransportTimeout + 4*p.n.cfg.ReportInterval
	for {
		_ = conn.SetReadDeadline(time.Now().Add(silence))
		typ, payload, err := readPeerFrame(r)
		if err != nil {
			return
		}
		switch typ {
		case framePeerMessage:
			p.received.Add(1)
			p.handler.PeerMessage(hello.id, payload)
		case framePeerPing:
		default:
			// A frame of a newer protocol: ignored.
		}
	}
}

// register makes s the current session of peer id. An older session from
// the same peer is closed first and has finished (PeerDown included) when
// register returns, so that the handler sees the peer's connections one
// after another. It returns false when the node is closing.
func (p *peerChannel) register(id string, s *peerSession) bool {
	for {
		p.inMu.Lock()
		old := p.inbound[id]
		if old == nil {
			p.inbound[id] = s
			p.inMu.Unlock()
			return true
		}
		p.inMu.Unlock()
		old.conn.Close()
		select {
		case <-old.done:
		case <-p.n.mux.done:
			return false
		}
	}
}

// serveInternal serves a connection routed by the mux: peer connections
// here, forward and admin connections in serveConn.
func (n *Node) serveInternal(kind byte, c net.Conn) {
	if kind != connPeer {
		n.serveConn(kind, c)
		return
	}
	if n.peers == nil {
		c.Close() // this node takes no part in the peer channel
		return
	}
	n.peers.serve(c)
}

func appendPeerMessage(dst, msg []byte) []byte {
	dst, start := beginFrame(dst, framePeerMessage)
	dst = append(dst, msg...)
	return finishFrame(dst, start)
}

func appendPeerPing(dst []byte) []byte {
	dst, start := beginFrame(dst, framePeerPing)
	return finishFrame(dst, start)
}

// readPeerFrame reads one frame of a peer connection, refusing lengths
// beyond MaxPeerMessage before allocating. The payload is a new slice.
func readPeerFrame(r *bufio.Reader) (typ byte, payload []byte, err error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	if size < 1 || size-1 > MaxPeerMessage {
		return 0, nil, fmt.Errorf("%w: peer frame length %d", errCorruptFrame, size)
	}
	payload = make([]byte, size-1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[4], payload, nil
}

// peerServers maps the members of c other than self to their addresses.
func peerServers(c raft.Configuration, self string) map[string]string {
	out := make(map[string]string)
	for _, s := range c.Servers {
		if string(s.ID) != self {
			out[string(s.ID)] = string(s.Address)
		}
	}
	return out
}
