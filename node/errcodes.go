package node

import (
	"parley/engine"
	"parley/wire"
)

// wireCode is the protocol code a client gets for an engine refusal. The
// engine's codes name the domain's refusals; the protocol's are what
// clients switch on: this is the one place the two meet (a test checks it
// over every engine code).
func wireCode(c engine.ErrCode) wire.Code {
	switch c {
	case engine.ErrCodeInvalid:
		return wire.CodeInvalid
	case engine.ErrCodeTooLarge:
		return wire.CodeTooLarge
	case engine.ErrCodeForbidden:
		return wire.CodeForbidden
	case engine.ErrCodeNotMember:
		return wire.CodeNotMember
	case engine.ErrCodeNotFound:
		return wire.CodeNotFound
	case engine.ErrCodeConflict:
		return wire.CodeConflict
	case engine.ErrCodeUsernameTaken:
		return wire.CodeUsernameTaken
	case engine.ErrCodeQuotaExceeded:
		return wire.CodeQuotaExceeded
	default: // ErrCodeInternal, and a code this switch does not know (a bug the test catches)
		return wire.CodeInternal
	}
}

// engineError is the protocol error for an engine refusal, with what the
// engine said or, failing that, the request it refused.
func engineError(c engine.ErrCode, msg string) *wire.Error {
	return wire.Errorf(wireCode(c), msg)
}
