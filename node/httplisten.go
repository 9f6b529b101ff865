package node

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// addrCapListener refuses a connection whose client address already holds
// perAddr connections: it answers 429 at once and closes it, so that one
// address cannot take every slot of the HTTP API's connection bound (which
// would stall health checks and logins for everyone). Addresses are keyed
// like the auth throttle's: an IPv4 address, or the /64 of an IPv6 one.
// Connections from a trusted proxy carry many clients and are not capped.
//
// Accept runs on the HTTP server's accept goroutine; the counts are shared
// with the goroutines that close connections, under mu.
type addrCapListener struct {
	net.Listener
	perAddr int
	trusted []netip.Prefix
	refused func() // counts a refusal (metrics)

	mu     sync.Mutex // guards counts
	counts map[netip.Prefix]int
}

func newAddrCapListener(ln net.Listener, perAddr int, trusted []netip.Prefix, refused func()) *addrCapListener {
	return &addrCapListener{Listener: ln, perAddr: perAddr, trusted: trusted, refused: refused, counts: make(map[netip.Prefix]int)}
}

// tooManyConns is the whole answer to a connection over the cap.
var tooManyConns = func() []byte {
	body := `{"code":"rate_limited","message":"too many connections from this address"}` + "\n"
	return fmt.Appendf(nil, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"+
		"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", int(httpConnRetryAfter/time.Second), len(body), body)
}()

// httpConnRetryAfter is the Retry-After of a connection refused for its
// address's cap.
const httpConnRetryAfter = 5 * time.Second

func (l *addrCapListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, ok := l.key(c.RemoteAddr())
		if !ok {
			return c, nil
		}
		l.mu.Lock()
		n := l.counts[key]
		if n < l.perAddr {
			l.counts[key] = n + 1
		}
		l.mu.Unlock()
		if n < l.perAddr {
			return &addrCapConn{Conn: c, l: l, key: key}, nil
		}
		// The socket is new and its send buffer empty: the write does not
		// block; the deadline is only a guard for the accept loop.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = c.Write(tooManyConns)
		_ = c.Close()
		if l.refused != nil {
			l.refused()
		}
	}
}

// key is the capped address of a connection; false for one that is not
// capped (a trusted proxy, or an address that is not IP).
func (l *addrCapListener) key(a net.Addr) (netip.Prefix, bool) {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	for _, p := range l.trusted {
		if p.Contains(ip) {
			return netip.Prefix{}, false
		}
	}
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p, true
}

func (l *addrCapListener) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.counts[key] - 1; n > 0 {
		l.counts[key] = n
	} else {
		delete(l.counts, key)
	}
}

// addrCapConn gives its slot back once, on the first Close.
type addrCapConn struct {
	net.Conn
	l    *addrCapListener
	key  netip.Prefix
	once sync.Once
}

func (c *addrCapConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.key) })
	return err
}
