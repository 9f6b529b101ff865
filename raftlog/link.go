package raftlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// The internal link between nodes, besides raft's own RPCs, is a stream of
// frames:
//
//	length  4 bytes big-endian: size of type + payload
//	type    1 byte
//	payload
//
// On a forward connection (kind connForward) the follower sends frameHello
// first, then frameSubmit and frameReport frames in any order; the leader
// sends frameRefuse and frameRetry. On an admin connection (kind
// connAdmin) the caller sends one frameAdminRequest and the callee answers
// with one frameAdminReply (msgpack, see membership.go).
//
// Payloads of the hot path are hand-encoded with minimal uvarints:
//
//	hello:   version uvarint, origin 8 bytes big-endian, id (uvarint length + bytes)
//	submit:  count uvarint, count x (seq uvarint, length uvarint, command bytes)
//	report:  applied index uvarint, last log index uvarint
//	refuse:  count uvarint, count x (seq uvarint, code 1 byte)
//	retry:   wait in milliseconds uvarint
//	member:  flags uvarint, region (uvarint length + bytes), see edge.go
const (
	frameHello byte = iota + 1
	frameSubmit
	frameReport
	frameRefuse
	frameAdminRequest
	frameAdminReply
	frameMember
	// frameRetry carries the wait the leader asks of callers it refuses
	// busy (its admission's retry hint); it goes just before a refuse
	// frame with a busy refusal and holds for those. A follower of an
	// older build skips it as a frame of a newer protocol and a follower
	// that never got one uses DefaultAdmissionInterval, so no version
	// change was needed.
	frameRetry

	// linkVersion is the forward protocol version sent in hello; a leader
	// closes a connection of another version.
	linkVersion = 1

	frameHeader = 4 + 1
	// maxFrame bounds a frame a peer may send: a full batch of the largest
	// commands Validate allows, plus their framing.
	maxFrame = 2 * maxBatchBytesLimit
)

// Refusal codes: the leader did not append the command to its log.
const (
	refuseNotLeader byte = iota + 1
	refuseBusy
	refuseTooLarge
	refuseClosed      // the leader is shutting down
	refuseTimeout     // raft did not take the entry within EnqueueTimeout
	refuseStorageFull // the leader's disk is nearly full (StorageFull)
)

var errCorruptFrame = errors.New("raftlog: corrupt link frame")

// refusalError is the error a follower hands the caller of a refused
// command.
func refusalError(code byte) error {
	switch code {
	case refuseBusy:
		return ErrBusy
	case refuseTooLarge:
		return ErrTooLarge
	case refuseTimeout:
		return ErrTimeout
	case refuseStorageFull:
		return ErrStorageFull
	default: // refuseNotLeader, refuseClosed, and codes of newer builds
		return ErrNotLeader
	}
}

// beginFrame appends a frame header with a placeholder length; finishFrame
// fills it in once the payload is appended.
func beginFrame(dst []byte, typ byte) ([]byte, int) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, typ)
	return dst, start
}

func finishFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

// readFrame reads one frame. The payload is a new slice the caller owns
// (submit payloads are aliased by the commands until they are proposed).
func readFrame(r *bufio.Reader) (typ byte, payload []byte, err error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 1 || n-1 > maxFrame {
		return 0, nil, fmt.Errorf("%w: length %d", errCorruptFrame, n)
	}
	payload = make([]byte, n-1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[4], payload, nil
}

type helloFrame struct {
	version uint64
	origin  uint64
	id      string
}

func appendHello(dst []byte, h helloFrame) []byte {
	dst, start := beginFrame(dst, frameHello)
	dst = binary.AppendUvarint(dst, h.version)
	dst = binary.BigEndian.AppendUint64(dst, h.origin)
	dst = binary.AppendUvarint(dst, uint64(len(h.id)))
	dst = append(dst, h.id...)
	return finishFrame(dst, start)
}

func decodeHello(p []byte) (helloFrame, error) {
	var h helloFrame
	v, n := readUvarint(p)
	if n <= 0 || len(p)-n < tagOriginLen {
		return h, fmt.Errorf("%w: hello", errCorruptFrame)
	}
	h.version = v
	p = p[n:]
	h.origin = binary.BigEndian.Uint64(p)
	p = p[tagOriginLen:]
	l, n := readUvarint(p)
	if n <= 0 || l != uint64(len(p)-n) {
		return h, fmt.Errorf("%w: hello id", errCorruptFrame)
	}
	h.id = string(p[n:])
	return h, nil
}

// fwdCommand is a command on its way to the leader.
type fwdCommand struct {
	seq uint64
	cmd []byte
}

func appendSubmit(dst []byte, cmds []fwdCommand) []byte {
	dst, start := beginFrame(dst, frameSubmit)
	dst = binary.AppendUvarint(dst, uint64(len(cmds)))
	for _, c := range cmds {
		dst = binary.AppendUvarint(dst, c.seq)
		dst = binary.AppendUvarint(dst, uint64(len(c.cmd)))
		dst = append(dst, c.cmd...)
	}
	return finishFrame(dst, start)
}

// decodeSubmit calls fn for each command of a submit payload, after
// validating all of it; the commands alias p and are capacity-limited.
func decodeSubmit(p []byte, fn func(seq uint64, cmd []byte)) error {
	count, n := readUvarint(p)
	if n <= 0 || count == 0 || count > uint64(len(p)-n)/2 {
		return fmt.Errorf("%w: submit count", errCorruptFrame)
	}
	body := p[n:]
	rest := body
	for i := uint64(0); i < count; i++ {
		_, n := readUvarint(rest)
		if n <= 0 {
			return fmt.Errorf("%w: submit seq", errCorruptFrame)
		}
		rest = rest[n:]
		l, n := readUvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return fmt.Errorf("%w: submit command overruns the frame", errCorruptFrame)
		}
		rest = rest[n+int(l):]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorruptFrame, len(rest))
	}
	rest = body
	for range count {
		seq, n := binary.Uvarint(rest)
		rest = rest[n:]
		l, n := binary.Uvarint(rest)
		end := n + int(l)
		fn(seq, rest[n:end:end])
		rest = rest[end:]
	}
	return nil
}

type reportFrame struct {
	applied uint64 // raft's applied index
	last    uint64 // last log index
}

func appendReport(dst []byte, r reportFrame) []byte {
	dst, start := beginFrame(dst, frameReport)
	dst = binary.AppendUvarint(dst, r.applied)
	dst = binary.AppendUvarint(dst, r.last)
	return finishFrame(dst, start)
}

func decodeReport(p []byte) (reportFrame, error) {
	var r reportFrame
	v, n := readUvarint(p)
	if n <= 0 {
		return r, fmt.Errorf("%w: report", errCorruptFrame)
	}
	r.applied = v
	v, m := readUvarint(p[n:])
	if m <= 0 || n+m != len(p) {
		return r, fmt.Errorf("%w: report", errCorruptFrame)
	}
	r.last = v
	return r, nil
}

// maxForwardedRetry bounds the wait a leader's retry frame may ask for: a
// peer's number is checked like any other input.
const maxForwardedRetry = time.Minute

func appendRetry(dst []byte, wait time.Duration) []byte {
	dst, start := beginFrame(dst, frameRetry)
	dst = binary.AppendUvarint(dst, uint64(wait.Milliseconds()))
	return finishFrame(dst, start)
}

// decodeRetry returns the wait of a retry frame, at most maxForwardedRetry.
func decodeRetry(p []byte) (time.Duration, error) {
	ms, n := readUvarint(p)
	if n <= 0 || n != len(p) {
		return 0, fmt.Errorf("%w: retry", errCorruptFrame)
	}
	return time.Duration(min(ms, uint64(maxForwardedRetry.Milliseconds()))) * time.Millisecond, nil
}

type refusal struct {
	seq  uint64
	code byte
}

func appendRefuse(dst []byte, rs []refusal) []byte {
	dst, start := beginFrame(dst, frameRefuse)
	dst = binary.AppendUvarint(dst, uint64(len(rs)))
	for _, r := range rs {
		dst = binary.AppendUvarint(dst, r.seq)
		dst = append(dst, r.code)
	}
	return finishFrame(dst, start)
}

// decodeRefuse calls fn for each refusal, after validating all of them.
func decodeRefuse(p []byte, fn func(refusal)) error {
	count, n := readUvarint(p)
	if n <= 0 || count == 0 || count > uint64(len(p)-n)/2 {
		return fmt.Errorf("%w: refuse count", errCorruptFrame)
	}
	body := p[n:]
	rest := body
	for range count {
		_, n := readUvarint(rest)
		if n <= 0 || n >= len(rest) {
			return fmt.Errorf("%w: refusal", errCorruptFrame)
		}
		rest = rest[n+1:]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorruptFrame, len(rest))
	}
	rest = body
	for range count {
		seq, n := binary.Uvarint(rest)
		fn(refusal{seq: seq, code: rest[n]})
		rest = rest[n+1:]
	}
	return nil
}
