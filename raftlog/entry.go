package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// An entry is the Data of one raft.LogCommand log entry: the commands the
// proposer packed together (group commit) and the leader's clock.
//
//	version  1 byte (EntryVersion)
//	ts       8 bytes big-endian int64, unix milliseconds, stamped by the leader
//	count    uvarint, number of commands (at least 1)
//	count x  uvarint length + command bytes
//
// Nothing follows the last command. Varints must be minimal, so an entry
// has exactly one encoding.
const (
	// EntryVersion is the entry format this build writes and reads.
	EntryVersion byte = 1

	entryFixedHeader = 1 + 8
)

// ErrCorruptEntry is returned (wrapped) by DecodeEntry for malformed input.
var ErrCorruptEntry = errors.New("raftlog: corrupt entry")

// EntrySize is the exact encoded size of an entry holding cmds.
func EntrySize(cmds [][]byte) int {
	n := entryFixedHeader + uvarintLen(uint64(len(cmds)))
	for _, c := range cmds {
		n += uvarintLen(uint64(len(c))) + len(c)
	}
	return n
}

// AppendEntry appends the encoding of an entry to dst and returns the
// extended slice.
func AppendEntry(dst []byte, ts int64, cmds [][]byte) []byte {
	dst = appendEntryHeader(dst, ts, len(cmds))
	for _, c := range cmds {
		dst = appendEntryCommand(dst, c)
	}
	return dst
}

func appendEntryHeader(dst []byte, ts int64, count int) []byte {
	dst = append(dst, EntryVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(ts))
	return binary.AppendUvarint(dst, uint64(count))
}

func appendEntryCommand(dst, cmd []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(cmd)))
	return append(dst, cmd...)
}

// DecodeEntry decodes an entry. The commands alias data (no copies); they
// are capacity-limited, so appending to one cannot overwrite the next.
//
// Malformed input yields an error wrapping ErrCorruptEntry. The input is
// validated completely before anything is allocated, and the only
// allocation is the slice of len(cmds) headers, so its size is bounded by
// the input's length.
func DecodeEntry(data []byte) (ts int64, cmds [][]byte, err error) {
	if len(data) < entryFixedHeader {
		return 0, nil, fmt.Errorf("%w: %d bytes is shorter than the header", ErrCorruptEntry, len(data))
	}
	if data[0] != EntryVersion {
		return 0, nil, fmt.Errorf("%w: unknown version %d", ErrCorruptEntry, data[0])
	}
	ts = int64(binary.BigEndian.Uint64(data[1:]))
	body := data[entryFixedHeader:]
	count, n := readUvarint(body)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: bad command count", ErrCorruptEntry)
	}
	body = body[n:]
	if count == 0 {
		return 0, nil, fmt.Errorf("%w: no commands", ErrCorruptEntry)
	}
	// Every command takes at least its one-byte length prefix.
	if count > uint64(len(body)) {
		return 0, nil, fmt.Errorf("%w: %d commands cannot fit in %d bytes", ErrCorruptEntry, count, len(body))
	}

	// First pass: validate the framing without allocating.
	rest := body
	for i := uint64(0); i < count; i++ {
		l, n := readUvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return 0, nil, fmt.Errorf("%w: command %d overruns the entry", ErrCorruptEntry, i)
		}
		rest = rest[n+int(l):]
	}
	if len(rest) != 0 {
		return 0, nil, fmt.Errorf("%w: %d trailing bytes", ErrCorruptEntry, len(rest))
	}

	// Second pass: slice out the commands.
	cmds = make([][]byte, count)
	rest = body
	for i := range cmds {
		l, n := binary.Uvarint(rest)
		end := n + int(l)
		cmds[i] = rest[n:end:end]
		rest = rest[end:]
	}
	return ts, cmds, nil
}

// readUvarint is binary.Uvarint that also rejects non-minimal encodings
// (n <= 0).
func readUvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 0 && n != uvarintLen(v) {
		return 0, -n
	}
	return v, n
}
