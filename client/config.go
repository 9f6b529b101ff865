package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"parley/wire"
)

// Config configures a Client. Only URLs and Token are required; every other
// zero field takes the default named in its comment.
type Config struct {
	// URLs of the nodes, e.g. "ws://10.0.0.1:7000/v1/ws" (a URL without a
	// path gets /v1/ws). The client uses the first; when a connection fails
	// or drops it moves to the next, round robin.
	URLs []string
	// Token is sent as "Authorization: Bearer <Token>".
	Token string
	// Cursor is where event sync resumes: the last index the device had
	// fully synced (see Client.Cursor). 0 is a new device.
	Cursor uint64
	// MinIndex seeds the client's session consistency: the idx of the
	// login (or register) response, or Client.MinIndex of an earlier
	// client. Every request carries the highest idx the client has seen
	// (this, replies, events) as min_idx, so no node serves it a state
	// older than what it has seen (PROTOCOL.md, Consistency).
	MinIndex uint64

	// RequestTimeout bounds one request attempt, including the wait for a
	// connection while reconnecting, and each write to the socket. Default 10s.
	RequestTimeout time.Duration
	// DialTimeout bounds one connection attempt: TCP connect, WebSocket
	// handshake and the server's hello. Default 5s.
	DialTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between reconnection attempts and between Send retries. Defaults 100ms
	// and 5s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// EventBuffer is the capacity of the Events channel, and of the queue of
	// live events waiting for the dispatcher. Default 4096.
	EventBuffer int
	// NoEvents makes a client that only makes requests (a load generator's
	// sender): it does not sync, and drops the conversation events the
	// server pushes, so Events() stays empty until Close and State().Synced
	// false. Signals, replies and MinIndex work as usual.
	NoEvents bool
	// OnEvent, when set, receives the conversation events in place of
	// Events(), which stays empty until Close: the same events, each
	// (conv, seq) once and in order, handed over by the client's dispatcher
	// goroutine without a channel between (a load generator's receivers).
	// While it runs, no other event is delivered: it must return promptly
	// and must not call the client. No call is made after Close returns.
	OnEvent func(wire.Event)

	// NetDial opens the TCP connection to a node (host:port), e.g. through a
	// proxy or with socket options set; nil uses a plain net.Dialer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS configures wss:// connections; nil uses crypto/tls defaults with
	// the URL's host as server name.
	TLS *tls.Config
	// Logger receives connection changes and protocol anomalies; nil
	// discards them.
	Logger *slog.Logger
}

const (
	defaultRequestTimeout = 10 * time.Second
	defaultDialTimeout    = 5 * time.Second
	defaultReconnectMin   = 100 * time.Millisecond
	defaultReconnectMax   = 5 * time.Second
	defaultEventBuffer    = 4096

	// defaultPath is the WebSocket endpoint of a node.
	defaultPath = "/v1/ws"
)

// withDefaults returns a copy of c with defaults filled in and URLs
// normalised. Call Validate first: it assumes the URLs parse.
func (c Config) withDefaults() Config {
	if c.RequestTimeout == 0 {
		c.RequestTimeout = defaultRequestTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = defaultDialTimeout
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = defaultReconnectMin
		if c.ReconnectMax > 0 {
			c.ReconnectMin = min(c.ReconnectMin, c.ReconnectMax)
		}
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = max(defaultReconnectMax, c.ReconnectMin)
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = defaultEventBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	urls := make([]string, len(c.URLs))
	for i, raw := range c.URLs {
		u, _ := url.Parse(raw)
		if u.Path == "" || u.Path == "/" {
			u.Path = defaultPath
		}
		urls[i] = u.String()
	}
	c.URLs = urls
	return c
}

// Validate reports every problem with c at once.
func (c *Config) Validate() error {
	var errs []error
	if len(c.URLs) == 0 {
		errs = append(errs, errors.New("client: URLs is empty"))
	}
	for _, raw := range c.URLs {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("client: URL %q: %w", raw, err))
		case u.Scheme != "ws" && u.Scheme != "wss":
			errs = append(errs, fmt.Errorf("client: URL %q: scheme must be ws or wss", raw))
		case u.Host == "":
			errs = append(errs, fmt.Errorf("client: URL %q: no host", raw))
		}
	}
	if c.Token == "" {
		errs = append(errs, errors.New("client: Token is empty"))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"RequestTimeout", c.RequestTimeout},
		{"DialTimeout", c.DialTimeout},
		{"ReconnectMin", c.ReconnectMin},
		{"ReconnectMax", c.ReconnectMax},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("client: %s is negative", d.name))
		}
	}
	if c.ReconnectMax > 0 && c.ReconnectMin > c.ReconnectMax {
		errs = append(errs, errors.New("client: ReconnectMin is above ReconnectMax"))
	}
	if c.EventBuffer < 0 {
		errs = append(errs, errors.New("client: EventBuffer is negative"))
	}
	return errors.Join(errs...)
}
