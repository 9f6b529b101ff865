package wire

// Code is a stable, machine-readable error code. Codes are part of the
// protocol: clients switch on them, so they never change meaning.
type Code string

const (
	// Frame-level problems: the request was not understood.
	CodeBadFrame    Code = "bad_frame"    // not a msgpack map, malformed (a length beyond the frame's end, say), or a field of the wrong type
	CodeUnknownType Code = "unknown_type" // "t" names no request type
	CodeTooLarge    Code = "too_large"    // frame, body or list over its limit
	CodeInvalid     Code = "invalid"      // a field is missing, empty or malformed, or a number is out of range (negative, above 2^53-1)

	// Rights and state.
	CodeUnauthorized  Code = "unauthorized"   // bad, expired or revoked token
	CodeForbidden     Code = "forbidden"      // authenticated, but not allowed (e.g. not an admin)
	CodeNotMember     Code = "not_member"     // the conversation exists but the user is not in it
	CodeNotFound      Code = "not_found"      // no such user, conversation or message
	CodeConflict      Code = "conflict"       // the operation contradicts current state
	CodeUsernameTaken Code = "username_taken" // registration with a name already in use

	// Media (the HTTP API's /v1/media, docs/PROTOCOL.md).
	CodeQuotaExceeded   Code = "quota_exceeded"   // the user's stored files would exceed their quota
	CodeUnsupportedType Code = "unsupported_type" // the file's content is of a type the server does not accept
	CodeImageTooLarge   Code = "image_too_large"  // an image's dimensions are over the limit (a decompression bomb)

	// Load and availability: the request was not applied; retrying later is safe
	// (sends are idempotent by client_msg_id).
	CodeRateLimited Code = "rate_limited" // this connection sends faster than its allowance
	CodeBusy        Code = "busy"         // the server's write queue is full (backpressure)
	CodeUnavailable Code = "unavailable"  // no Raft leader reachable, or shutting down
	CodeTimeout     Code = "timeout"      // not confirmed in time; outcome unknown, retry with the same client_msg_id
	CodeStorageFull Code = "storage_full" // the disk of this node or of the leader is nearly full: the write was refused, nothing written (reads work); retry later
	CodeInternal    Code = "internal"     // a bug or an I/O failure on the server

	// The operator API (/v1/admin/, see admin.go). A missing or wrong admin
	// token is CodeUnauthorized; no leader reachable is CodeUnavailable.
	CodeUnknownServer       Code = "unknown_server"       // the server ID is not in the cluster configuration
	CodeNotCaughtUp         Code = "not_caught_up"        // a joining server did not catch up in time; it stays a non-voter, join again later
	CodeAlreadyBootstrapped Code = "already_bootstrapped" // init on a node that already belongs to another cluster configuration
	CodeNothingToSnapshot   Code = "nothing_to_snapshot"  // nothing was applied since the latest snapshot
	CodeEdgeNode            Code = "edge_node"            // the server is an edge node, which never votes: not promoted, not a leadership target
	CodeNotEdge             Code = "not_edge"             // join with edge: the server was not started as an edge (parley -edge); it was added as a non-voter
)

// Retryable reports whether a request that failed with c may be sent again
// unchanged. For a send, the retry must reuse the same client_msg_id.
func (c Code) Retryable() bool {
	switch c {
	case CodeRateLimited, CodeBusy, CodeUnavailable, CodeTimeout, CodeStorageFull:
		return true
	}
	return false
}

// Error is a protocol error: a code and a human-readable message.
type Error struct {
	Code    Code
	Message string
	// RetryMS: for busy, the wait the server asks for before a retry
	// (Reply.RetryMS); 0 when it names none.
	RetryMS int64
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Errorf is a shorthand for &Error{Code: code, Message: msg}.
func Errorf(code Code, msg string) *Error { return &Error{Code: code, Message: msg} }
