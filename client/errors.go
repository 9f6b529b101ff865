package client

import (
	"errors"

	"parley/wire"
)

var (
	// ErrUnauthorized means the server refused the token (HTTP 401). Dialing
	// again with the same token cannot succeed, so the client never retries
	// it: Dial returns it, and a 401 while reconnecting ends the Client (its
	// Events channel closes and every call returns ErrUnauthorized).
	ErrUnauthorized = errors.New("client: unauthorized (HTTP 401)")

	// ErrClosed is returned by calls on a Client after Close.
	ErrClosed = errors.New("client: closed")

	// ErrDisconnected fails a request whose connection dropped before its
	// reply arrived. The request may or may not have been applied. It carries
	// wire.CodeUnavailable, so Retryable reports true and errors.As finds a
	// *wire.Error, exactly as for the server's own "unavailable".
	ErrDisconnected = &wire.Error{Code: wire.CodeUnavailable, Message: "client: connection lost before the reply"}

	// ErrRequestTimeout fails a request that got no reply within
	// Config.RequestTimeout while the caller's context was still live. Like
	// the server's "timeout", the outcome is unknown and a retry is safe for
	// idempotent requests (a send retried with the same cmid).
	ErrRequestTimeout = &wire.Error{Code: wire.CodeTimeout, Message: "client: no reply within RequestTimeout"}
)

// Retryable reports whether err is worth retrying unchanged: a server error
// with a retryable code (rate_limited, busy, unavailable, timeout),
// ErrDisconnected or ErrRequestTimeout. Context errors, ErrClosed and
// ErrUnauthorized are not retryable.
func Retryable(err error) bool {
	var we *wire.Error
	return errors.As(err, &we) && we.Code.Retryable()
}
