package netpoll

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// RFC 6455 opcodes.
const (
	opContinuation byte = 0x0
	opText         byte = 0x1
	opBinary       byte = 0x2
	opClose        byte = 0x8
	opPing         byte = 0x9
	opPong         byte = 0xA
)

// Close codes (RFC 6455 section 7.4.1) that this package sends or reports.
const (
	CloseNormal          uint16 = 1000
	CloseGoingAway       uint16 = 1001
	CloseProtocolError   uint16 = 1002
	CloseUnsupportedData uint16 = 1003
	CloseNoStatus        uint16 = 1005 // reported when a peer's close frame had no code; never sent
	CloseAbnormal        uint16 = 1006 // never sent
	CloseInvalidPayload  uint16 = 1007
	ClosePolicyViolation uint16 = 1008
	CloseMessageTooBig   uint16 = 1009
	CloseInternalError   uint16 = 1011
)

const (
	maxControlPayload = 125
	maxCloseReason    = maxControlPayload - 2
	maxFrameHeader    = 14 // 2 + 8 (64-bit length) + 4 (mask key)
)

// CloseError is the reason a connection closed with a WebSocket close code:
// either the code the peer sent (Remote) or the one the server sent.
type CloseError struct {
	Code   uint16
	Reason string
	Remote bool // the peer started the close handshake
}

func (e *CloseError) Error() string {
	who := "server"
	if e.Remote {
		who = "peer"
	}
	if e.Reason == "" {
		return fmt.Sprintf("websocket: closed by %s with %d", who, e.Code)
	}
	return fmt.Sprintf("websocket: closed by %s with %d (%s)", who, e.Code, e.Reason)
}

// protocolError is a violation found while decoding client bytes; the
// connection is failed with its code.
func protocolError(code uint16, reason string) *CloseError {
	return &CloseError{Code: code, Reason: reason}
}

// PrepareBinary builds one complete, unmasked server frame carrying payload
// as a binary message. Encode once, then Send the same bytes to every
// recipient; the result must not be modified afterwards.
func PrepareBinary(payload []byte) []byte {
	return appendFrame(make([]byte, 0, frameHeaderLen(len(payload))+len(payload)), opBinary, payload)
}

// PrepareText is PrepareBinary for a text message; payload must be UTF-8
// (browsers fail the connection otherwise, and it is not checked here).
func PrepareText(payload []byte) []byte {
	return appendFrame(make([]byte, 0, frameHeaderLen(len(payload))+len(payload)), opText, payload)
}

// FrameHeadroom is the room BinaryFrameInPlace needs in front of a
// payload: the longest header of a server frame.
const FrameHeadroom = 10

// BinaryFrameInPlace is PrepareBinary for a payload built in place, after
// FrameHeadroom bytes of room: b is those bytes and then the payload. The
// header is written into the end of the room and the frame returned is
// the tail of b, so the payload is neither copied nor allocated twice.
// Build b as append(make([]byte, FrameHeadroom, FrameHeadroom+size), ...).
// The result must not be modified afterwards.
func BinaryFrameInPlace(b []byte) []byte {
	if len(b) < FrameHeadroom {
		panic("netpoll: BinaryFrameInPlace without FrameHeadroom bytes of room")
	}
	n := len(b) - FrameHeadroom
	start := FrameHeadroom - frameHeaderLen(n)
	appendFrameHeader(b[start:start], opBinary, n) // fills b[start:FrameHeadroom]
	return b[start:]
}

// frameHeaderLen is the size of an unmasked header for n payload bytes.
func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	default:
		return 10
	}
}

// appendFrame appends a final, unmasked frame (the only kind a server sends).
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	return append(appendFrameHeader(dst, op, len(payload)), payload...)
}

// appendFrameHeader appends the header of a final, unmasked frame of n
// payload bytes.
func appendFrameHeader(dst []byte, op byte, n int) []byte {
	switch {
	case n < 126:
		return append(dst, 0x80|op, byte(n))
	case n <= 0xFFFF:
		return append(dst, 0x80|op, 126, byte(n>>8), byte(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, 0x80|op, 127), uint64(n))
}

// closeFrame builds a close frame with code and reason; the reason is cut
// to fit a control frame at a rune boundary.
func closeFrame(code uint16, reason string) []byte {
	if len(reason) > maxCloseReason {
		reason = reason[:maxCloseReason]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	b := make([]byte, 0, 4+len(reason))
	b = append(b, 0x80|opClose, byte(2+len(reason)), byte(code>>8), byte(code))
	return append(b, reason...)
}

// emptyCloseFrame answers a peer close frame that carried no status code.
var emptyCloseFrame = []byte{0x80 | opClose, 0}

// validCloseCode reports whether code may appear in a close frame on the
// wire (RFC 6455 7.4, plus the IANA registered 1012-1014).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// frameHeader is a decoded client frame header.
type frameHeader struct {
	fin    bool
	op     byte
	key    [4]byte
	length uint64 // payload length
	size   int    // header length in bytes
}

func isControl(op byte) bool { return op&0x8 != 0 }

// parseHeader decodes the frame header at the start of b. If b is too short
// it returns need > 0: the number of bytes the header needs in total (which
// can grow once the length byte is known). Violations that the header alone
// shows are returned as errors: RSV bits (no extension is negotiated),
// reserved opcodes, unmasked frames, fragmented or oversized control frames
// and 64-bit lengths with the top bit set.
func parseHeader(b []byte) (h frameHeader, need int, err *CloseError) {
	if len(b) < 2 {
		return h, 2, nil
	}
	b0, b1 := b[0], b[1]
	if b0&0x70 != 0 {
		return h, 0, protocolError(CloseProtocolError, "reserved bits set")
	}
	h.fin = b0&0x80 != 0
	h.op = b0 & 0x0F
	switch h.op {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
	default:
		return h, 0, protocolError(CloseProtocolError, "reserved opcode")
	}
	if b1&0x80 == 0 {
		return h, 0, protocolError(CloseProtocolError, "client frame not masked")
	}
	len7 := b1 & 0x7F
	if isControl(h.op) {
		if !h.fin {
			return h, 0, protocolError(CloseProtocolError, "fragmented control frame")
		}
		if len7 > maxControlPayload {
			return h, 0, protocolError(CloseProtocolError, "control frame too large")
		}
	}
	size := 2 + 4
	switch len7 {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if len(b) < size {
		return h, size, nil
	}
	switch len7 {
	case 126:
		h.length = uint64(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		h.length = binary.BigEndian.Uint64(b[2:10])
		if h.length>>63 != 0 {
			return h, 0, protocolError(CloseProtocolError, "frame length has the top bit set")
		}
	default:
		h.length = uint64(len7)
	}
	copy(h.key[:], b[size-4:size])
	h.size = size
	return h, 0, nil
}

// maskBytes XORs b with the 4-byte key, as if b started at a key-aligned
// offset. It works a machine word at a time; 8 is a multiple of 4, so the
// key stays aligned across words.
func maskBytes(key [4]byte, b []byte) {
	if len(b) >= 8 {
		k32 := uint64(binary.LittleEndian.Uint32(key[:]))
		k := k32 | k32<<32
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}
