package media

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"hash"
)

// DefaultChunkSize is the chunk size the server uses unless it sets its
// own: small enough that one chunk is one modest Raft entry, large enough
// that a 100 MB video is 400 entries, not thousands.
const DefaultChunkSize = 256 << 10

// MaxChunkSize bounds the chunk size NewChunker and NewChunkReader accept.
const MaxChunkSize = 16 << 20

// Chunker is an io.Writer that cuts what is written into chunks of a fixed
// size (the last one shorter) and hands each to a callback as soon as it is
// full, hashing everything with SHA-256 on the way, so the server can
// propose a file chunk by chunk through Raft without holding all of it.
//
// Each chunk passed to the callback is a new slice that the callback owns
// and may keep (put in a Raft entry, say); the Chunker never touches it
// again. An error from the callback stops the Chunker: that Write and every
// later Write and Close return it.
//
// A Chunker is not safe for concurrent use.
type Chunker struct {
	size  int
	emit  func(index int, chunk []byte) error
	h     hash.Hash
	buf   []byte // the chunk being filled; nil between chunks
	index int    // of the chunk being filled
	n     int64  // bytes written
	err   error
	done  bool
}

// NewChunker returns a Chunker that cuts chunks of chunkSize bytes
// (0 means DefaultChunkSize) and passes them, in order from index 0, to
// emit. It panics on a chunk size outside (0, MaxChunkSize]: that is a bug
// in the caller, not bad input.
func NewChunker(chunkSize int, emit func(index int, chunk []byte) error) *Chunker {
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < 0 || chunkSize > MaxChunkSize {
		panic(fmt.Sprintf("media: chunk size %d outside (0, %d]", chunkSize, MaxChunkSize))
	}
	return &Chunker{size: chunkSize, emit: emit, h: sha256.New()}
}

var errChunkerClosed = errors.New("media: write to a closed Chunker")

// Write hashes p and emits every chunk it completes. It returns len(p) or
// the callback's error (n is then how many bytes were taken, the failed
// chunk's included).
func (c *Chunker) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.done {
		return 0, errChunkerClosed
	}
	written := 0
	for len(p) > 0 {
		if c.buf == nil {
			c.buf = make([]byte, 0, c.size)
		}
		k := min(len(p), c.size-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		c.h.Write(p[:k])
		c.n += int64(k)
		written += k
		p = p[k:]
		if len(c.buf) == c.size {
			if err := c.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (c *Chunker) flush() error {
	chunk := c.buf
	c.buf = nil
	idx := c.index
	c.index++
	if err := c.emit(idx, chunk); err != nil {
		c.err = err
		return err
	}
	return nil
}

// Close emits the last, partial chunk, if any. An empty file has no
// chunks. Close after Close does nothing.
func (c *Chunker) Close() error {
	if c.err != nil {
		return c.err
	}
	if c.done {
		return nil
	}
	c.done = true
	if len(c.buf) > 0 {
		return c.flush()
	}
	return nil
}

// Chunks is how many chunks have been passed to the callback.
func (c *Chunker) Chunks() int { return c.index }

// Sum returns the SHA-256 of all bytes written and their count. After
// Close it describes the whole file.
func (c *Chunker) Sum() (sum [sha256.Size]byte, size int64) {
	c.h.Sum(sum[:0])
	return sum, c.n
}

// ID returns the media id of all bytes written; see ID.
func (c *Chunker) ID() ID {
	sum, _ := c.Sum()
	return ID(sum)
}

// ID names a media object by its content: the SHA-256 of its bytes, as
// computed by the server (a Chunker), never taken from the client. Equal
// files have equal ids, so the server stores each once; it must not tell a
// user that an id exists unless the user may see it, or a user could test
// whether anyone has uploaded a given file.
//
// Its text form is the 32 bytes in RFC 4648 base32 with the lower-case
// alphabet and no padding: IDLen characters of [a-z2-7], safe in URL
// paths, file names and Pebble keys, and shorter than hex's 64.
type ID [sha256.Size]byte

// IDLen is the length of an ID's text form.
const IDLen = 52

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// String is the id's text form.
func (id ID) String() string { return idEncoding.EncodeToString(id[:]) }

// AppendText appends the id's text form to b.
func (id ID) AppendText(b []byte) ([]byte, error) {
	return idEncoding.AppendEncode(b, id[:]), nil
}

// ErrInvalidID: a media id from a client is not IDLen characters of
// [a-z2-7] in canonical form. The server maps it to invalid (HTTP 400).
var ErrInvalidID = errors.New("media: invalid media id")

// ParseID parses a media id from a client. It checks the length first,
// then the alphabet (upper case, padding, newlines and anything else are
// refused rather than normalized, so each id has exactly one spelling),
// then that the unused low bits of the last character are zero.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != IDLen {
		return id, ErrInvalidID
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return id, ErrInvalidID
		}
	}
	var b [IDLen]byte
	copy(b[:], s)
	n, err := idEncoding.Decode(id[:], b[:])
	if err != nil || n != len(id) {
		return ID{}, ErrInvalidID
	}
	// 52 characters carry 260 bits, 256 of them the id: the last
	// character's low 4 bits are zero (it is 'a' or 'q'), or two strings
	// would name one id.
	if v := idLastValue(s[IDLen-1]); v&0x0F != 0 {
		return ID{}, ErrInvalidID
	}
	return id, nil
}

// idLastValue is the 5-bit value of an id character already checked to be
// in the alphabet.
func idLastValue(c byte) byte {
	if c >= 'a' {
		return c - 'a'
	}
	return c - '2' + 26
}
