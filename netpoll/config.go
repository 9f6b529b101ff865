package netpoll

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Config is the WebSocket server's configuration. The zero value of a field
// means "use the default"; call WithDefaults to see the effective values.
type Config struct {
	// Addr is the TCP address to listen on; port 0 picks a free port
	// (Server.Addr reports it).
	Addr string
	// Path is the only request path that is upgraded; any other gets 404.
	Path string
	// NumEventLoops is the number of gnet event loops; 0 means one per CPU.
	NumEventLoops int
	// MaxMessageSize bounds a reassembled message (all fragments); larger
	// ones close the connection with 1009.
	MaxMessageSize int
	// MaxHandshakeSize bounds the HTTP upgrade request (request line and
	// headers); larger ones get 431.
	MaxHandshakeSize int
	// SendQueueBytes bounds the bytes queued for a connection but not yet
	// accepted by its socket: frames handed to Send and not yet written, plus
	// gnet's outbound buffer. A connection over the bound is closed with 1008.
	SendQueueBytes int
	// SocketSendBuffer is the kernel send buffer of each connection
	// (SO_SNDBUF; Linux reserves twice this). Fixing it turns off the
	// kernel's autotuning, which otherwise lets the socket of a client that
	// stopped reading hold up to 4 MiB before SendQueueBytes sees anything:
	// with it, a slow consumer costs at most about 2x this plus
	// SendQueueBytes before it is dropped. Negative leaves the kernel's
	// autotuning on.
	SocketSendBuffer int
	// PingInterval: a connection from which nothing was received for this
	// long gets a ping (and another one every PingInterval after that).
	PingInterval time.Duration
	// IdleTimeout: a connection from which nothing was received for this
	// long is closed with 1001 "idle timeout".
	IdleTimeout time.Duration
	// HandshakeTimeout: a socket that has not completed the upgrade after
	// this long is closed.
	HandshakeTimeout time.Duration
	// CloseTimeout: after the server sends a close frame it waits this long
	// for the peer's close frame before it closes the socket anyway.
	CloseTimeout time.Duration
	// TickInterval is the granularity of the timing wheel that drives pings
	// and timeouts; every timeout fires up to one tick late.
	TickInterval time.Duration
	// Logger receives gnet's and the server's own log lines; nil means
	// slog.Default().
	Logger *slog.Logger

	// Connection caps, checked during the handshake before the 101 (see
	// limits.go). Every slot a connection takes is given back exactly once,
	// when its socket closes, whatever phase it reached. Zero means no cap.
	//
	// MaxConnections caps the upgraded connections of the server: the
	// upgrade beyond it is refused with 503 and Retry-After.
	MaxConnections int
	// MaxConnectionsPerIP caps the upgraded connections from one client
	// address (one IPv4 address, or one IPv6 /64): 429 and Retry-After.
	MaxConnectionsPerIP int
	// MaxConnectionsPerKey caps the upgraded connections that Authorize
	// gave the same Request.LimitKey (the node's key is the user): 429 and
	// Retry-After.
	MaxConnectionsPerKey int
	// MaxPendingHandshakes caps the sockets accepted and not yet upgraded or
	// refused. A socket beyond it is answered 503 at once, without its
	// request being read, and closed. Zero: MaxConnections/16, at least 16,
	// when MaxConnections is set; else no cap.
	MaxPendingHandshakes int
	// RetryAfter is the Retry-After (in whole seconds, at least 1) sent
	// with every 503 and 429 refusal, the handler's included.
	RetryAfter time.Duration
}

// Defaults used for zero fields of Config.
const (
	DefaultAddr             = "127.0.0.1:7071"
	DefaultPath             = "/v1/ws"
	DefaultMaxMessageSize   = 64 << 10
	DefaultMaxHandshakeSize = 8 << 10
	DefaultSendQueueBytes   = 1 << 20
	DefaultSocketSendBuffer = 128 << 10
	DefaultPingInterval     = 25 * time.Second
	DefaultIdleTimeout      = 60 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultCloseTimeout     = 5 * time.Second
	DefaultTickInterval     = time.Second
	DefaultRetryAfter       = 5 * time.Second
	minPendingHandshakes    = 16
)

// WithDefaults returns a copy of c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MaxHandshakeSize == 0 {
		c.MaxHandshakeSize = DefaultMaxHandshakeSize
	}
	if c.SendQueueBytes == 0 {
		c.SendQueueBytes = DefaultSendQueueBytes
	}
	if c.SocketSendBuffer == 0 {
		c.SocketSendBuffer = DefaultSocketSendBuffer
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.CloseTimeout == 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.TickInterval == 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxPendingHandshakes == 0 && c.MaxConnections > 0 {
		c.MaxPendingHandshakes = max(minPendingHandshakes, c.MaxConnections/16)
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	return c
}

// Validate reports every problem with the effective configuration (after
// defaults), joined into one error.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("netpoll: "+format, args...))
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad("Addr %q: %v", c.Addr, err)
	}
	if !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, "?# \t") {
		bad("Path %q must start with / and hold no query, fragment or blanks", c.Path)
	}
	if c.NumEventLoops < 0 {
		bad("NumEventLoops %d is negative", c.NumEventLoops)
	}
	if c.MaxMessageSize < 125 {
		bad("MaxMessageSize %d is below 125 bytes", c.MaxMessageSize)
	}
	if c.MaxHandshakeSize < 256 || c.MaxHandshakeSize > 1<<20 {
		bad("MaxHandshakeSize %d is outside [256, 1 MiB]", c.MaxHandshakeSize)
	}
	if c.SendQueueBytes < 1024 {
		bad("SendQueueBytes %d is below 1 KiB", c.SendQueueBytes)
	}
	if c.TickInterval < time.Millisecond {
		bad("TickInterval %v is below 1ms", c.TickInterval)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"PingInterval", c.PingInterval},
		{"IdleTimeout", c.IdleTimeout},
		{"HandshakeTimeout", c.HandshakeTimeout},
		{"CloseTimeout", c.CloseTimeout},
	} {
		if d.v < c.TickInterval {
			bad("%s %v is shorter than TickInterval %v", d.name, d.v, c.TickInterval)
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"MaxConnections", c.MaxConnections},
		{"MaxConnectionsPerIP", c.MaxConnectionsPerIP},
		{"MaxConnectionsPerKey", c.MaxConnectionsPerKey},
		{"MaxPendingHandshakes", c.MaxPendingHandshakes},
	} {
		if n.v < 0 {
			bad("%s %d is negative (0 means no cap)", n.name, n.v)
		}
	}
	if c.RetryAfter < 0 {
		bad("RetryAfter %v is negative", c.RetryAfter)
	}
	// The wheel fires a timer up to a tick late, so a ping can leave a
	// tick after PingInterval of quiet; its pong then needs time to
	// arrive before the idle check, which is also a tick late at worst.
	// With less margin a client that answers every ping is closed as idle
	// (seen with PingInterval 1s, IdleTimeout 2s, the 1s tick).
	if c.IdleTimeout < c.PingInterval+2*c.TickInterval {
		bad("IdleTimeout %v must be at least PingInterval %v plus two TickIntervals (%v), or a pong may not arrive in time",
			c.IdleTimeout, c.PingInterval, c.TickInterval)
	}
	return errors.Join(errs...)
}
