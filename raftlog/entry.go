package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// An entry is the Data of one raft.LogCommand log entry: the commands the
// proposer packed together (group commit), each with the tag of the node
// that submitted it, and the leader's clock.
//
// Version 2 (written by this build):
//
//	version  1 byte (2)
//	ts       8 bytes big-endian int64, unix milliseconds, stamped by the leader
//	count    uvarint, number of commands (at least 1)
//	count x  origin 8 bytes big-endian, seq uvarint, length uvarint, command bytes
//
// Version 1 (still decoded, from before forwarding existed) has no tags:
//
//	version 1 byte (1), ts 8 bytes, count uvarint, count x (length uvarint, command bytes)
//
// Nothing follows the last command. Varints must be minimal, so an entry
// has exactly one encoding.
const (
	// EntryVersion is the entry format this build writes.
	EntryVersion byte = 2
	// entryVersion1 is the untagged format of earlier builds, read only.
	entryVersion1 byte = 1

	entryFixedHeader = 1 + 8
	tagOriginLen     = 8
)

// rehearsalEntryVersion, set at build time with
//
//	-ldflags "-X parley/raftlog.rehearsalEntryVersion=3"
//
// makes a build that writes, and reads, entries of that version: format 2
// under a later number. Two builds of one tree, one of them so made, are
// an old and a new release whose entry formats differ, to rehearse a
// rolling upgrade (faults/upgrade_test.go): the new one reads the old
// entries, the old one stops at a new one. Empty in every real build.
var rehearsalEntryVersion string

// writeVersion is the version this build writes; readVersion the latest
// it reads (both EntryVersion, unless rehearsalEntryVersion says more).
var writeVersion, readVersion = func() (byte, byte) {
	switch rehearsalEntryVersion {
	case "":
		return EntryVersion, EntryVersion
	case "3":
		return 3, 3
	}
	panic("raftlog: unknown rehearsalEntryVersion " + rehearsalEntryVersion)
}()

// Tag identifies a submitted command across the cluster: Origin is the
// random identity a node draws each time it opens (never 0), Seq counts the
// commands that incarnation submitted. Every node applies every entry; the
// node whose Origin a command carries resolves its caller with its own
// state machine's result. Version-1 entries carry the zero Tag.
type Tag struct {
	Origin uint64
	Seq    uint64
}

// Entry is a decoded log entry.
type Entry struct {
	TS   int64 // leader's clock, unix milliseconds
	Cmds [][]byte
	Tags []Tag // one per command; nil for a version-1 entry
}

// ErrCorruptEntry is returned (wrapped) by DecodeEntry for malformed input.
var ErrCorruptEntry = errors.New("raftlog: corrupt entry")

// ErrNewerEntry is returned (wrapped, with ErrCorruptEntry) by DecodeEntry
// for an entry of a later format than EntryVersion: a newer build wrote it.
var ErrNewerEntry = errors.New("raftlog: entry of a newer format")

// EntrySize is the exact encoded size of an entry holding cmds with tags.
func EntrySize(cmds [][]byte, tags []Tag) int {
	n := entryFixedHeader + uvarintLen(uint64(len(cmds)))
	for i, c := range cmds {
		n += entryCommandSize(tags[i], len(c))
	}
	return n
}

func entryCommandSize(tag Tag, cmdLen int) int {
	return tagOriginLen + uvarintLen(tag.Seq) + uvarintLen(uint64(cmdLen)) + cmdLen
}

// AppendEntry appends the encoding of an entry to dst and returns the
// extended slice. tags must have one element per command.
func AppendEntry(dst []byte, ts int64, cmds [][]byte, tags []Tag) []byte {
	if len(tags) != len(cmds) {
		panic(fmt.Sprintf("raftlog: AppendEntry with %d commands and %d tags", len(cmds), len(tags)))
	}
	dst = appendEntryHeader(dst, ts, len(cmds))
	for i, c := range cmds {
		dst = appendEntryCommand(dst, tags[i], c)
	}
	return dst
}

func appendEntryHeader(dst []byte, ts int64, count int) []byte {
	dst = append(dst, writeVersion)
	dst = binary.BigEndian.AppendUint64(dst, uint64(ts))
	return binary.AppendUvarint(dst, uint64(count))
}

func appendEntryCommand(dst []byte, tag Tag, cmd []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, tag.Origin)
	dst = binary.AppendUvarint(dst, tag.Seq)
	dst = binary.AppendUvarint(dst, uint64(len(cmd)))
	return append(dst, cmd...)
}

// DecodeEntry decodes an entry of version 1 or 2. The commands alias data
// (no copies); they are capacity-limited, so appending to one cannot
// overwrite the next.
//
// Malformed input yields an error wrapping ErrCorruptEntry. The input is
// validated completely before anything is allocated, and the only
// allocations are the command headers and tags, whose count is bounded by
// the input's length.
func DecodeEntry(data []byte) (Entry, error) {
	if len(data) < entryFixedHeader {
		return Entry{}, fmt.Errorf("%w: %d bytes is shorter than the header", ErrCorruptEntry, len(data))
	}
	version := data[0]
	if version > readVersion {
		return Entry{}, fmt.Errorf("%w: %w: version %d, this build reads up to %d", ErrCorruptEntry, ErrNewerEntry, version, readVersion)
	}
	if version == 0 {
		return Entry{}, fmt.Errorf("%w: unknown version %d", ErrCorruptEntry, version)
	}
	tagged := version >= EntryVersion // 2, or a rehearsal's later number for the same format
	ts := int64(binary.BigEndian.Uint64(data[1:]))
	body := data[entryFixedHeader:]
	count, n := readUvarint(body)
	if n <= 0 {
		return Entry{}, fmt.Errorf("%w: bad command count", ErrCorruptEntry)
	}
	body = body[n:]
	if count == 0 {
		return Entry{}, fmt.Errorf("%w: no commands", ErrCorruptEntry)
	}
	// Every command takes at least its length prefix, and in version 2 its
	// origin and seq as well.
	minCmd := uint64(1)
	if tagged {
		minCmd += tagOriginLen + 1
	}
	if count > uint64(len(body))/minCmd {
		return Entry{}, fmt.Errorf("%w: %d commands cannot fit in %d bytes", ErrCorruptEntry, count, len(body))
	}

	// First pass: validate the framing without allocating.
	rest := body
	for i := uint64(0); i < count; i++ {
		if tagged {
			if len(rest) < tagOriginLen {
				return Entry{}, fmt.Errorf("%w: command %d overruns the entry", ErrCorruptEntry, i)
			}
			_, n := readUvarint(rest[tagOriginLen:])
			if n <= 0 {
				return Entry{}, fmt.Errorf("%w: command %d has a bad seq", ErrCorruptEntry, i)
			}
			rest = rest[tagOriginLen+n:]
		}
		l, n := readUvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return Entry{}, fmt.Errorf("%w: command %d overruns the entry", ErrCorruptEntry, i)
		}
		rest = rest[n+int(l):]
	}
	if len(rest) != 0 {
		return Entry{}, fmt.Errorf("%w: %d trailing bytes", ErrCorruptEntry, len(rest))
	}

	// Second pass: slice out the commands.
	e := Entry{TS: ts, Cmds: make([][]byte, count)}
	if tagged {
		e.Tags = make([]Tag, count)
	}
	rest = body
	for i := range e.Cmds {
		if tagged {
			e.Tags[i].Origin = binary.BigEndian.Uint64(rest)
			seq, n := binary.Uvarint(rest[tagOriginLen:])
			e.Tags[i].Seq = seq
			rest = rest[tagOriginLen+n:]
		}
		l, n := binary.Uvarint(rest)
		end := n + int(l)
		e.Cmds[i] = rest[n:end:end]
		rest = rest[end:]
	}
	return e, nil
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
