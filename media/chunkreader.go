package media

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// ChunkReader is an io.ReadSeeker over a file stored as fixed-size chunks
// (as a Chunker cut it), fetching a chunk only when a read reaches it. It
// is what the server hands to net/http.ServeContent, which then answers
// Range (single, suffix and multiple ranges, 416 when unsatisfiable),
// If-Range, and with an ETag header set by the caller (the quoted id),
// If-None-Match and If-Match; see chunkreader_test.go.
//
// It keeps the last chunk fetched, so a sequential read fetches each chunk
// once. A ChunkReader is not safe for concurrent use; ServeContent uses it
// from one goroutine.
type ChunkReader struct {
	fetch     func(index int) ([]byte, error)
	chunkSize int
	size      int64
	off       int64

	cur    []byte // chunk curIdx, or nil
	curIdx int
}

// ErrBadChunk: the fetcher returned a chunk whose length disagrees with the
// chunk size and total size the ChunkReader was made with. Storage is
// corrupt or the metadata is wrong; the server logs it as internal.
var ErrBadChunk = errors.New("media: stored chunk has the wrong length")

// NewChunkReader returns a reader over size bytes stored as chunks of
// chunkSize bytes (the last one shorter), chunk i got by fetch(i). The
// fetched slice is only read. It panics on a chunk size outside
// (0, MaxChunkSize] or a negative size.
func NewChunkReader(size int64, chunkSize int, fetch func(index int) ([]byte, error)) *ChunkReader {
	if chunkSize <= 0 || chunkSize > MaxChunkSize || size < 0 {
		panic(fmt.Sprintf("media: NewChunkReader(size %d, chunk size %d)", size, chunkSize))
	}
	return &ChunkReader{fetch: fetch, chunkSize: chunkSize, size: size, curIdx: -1}
}

// Size is the total size.
func (r *ChunkReader) Size() int64 { return r.size }

// Read reads from the chunk holding the current offset, at most to its end.
func (r *ChunkReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	idx := int(r.off / int64(r.chunkSize))
	if idx != r.curIdx {
		chunk, err := r.fetch(idx)
		if err != nil {
			return 0, err
		}
		want := min(int64(r.chunkSize), r.size-int64(idx)*int64(r.chunkSize))
		if int64(len(chunk)) != want {
			return 0, fmt.Errorf("%w: chunk %d is %d bytes, want %d", ErrBadChunk, idx, len(chunk), want)
		}
		r.cur, r.curIdx = chunk, idx
	}
	n := copy(p, r.cur[r.off-int64(idx)*int64(r.chunkSize):])
	r.off += int64(n)
	return n, nil
}

var errSeekNegative = errors.New("media: seek to a negative offset")

// Seek sets the offset for the next Read, as io.Seeker says; seeking past
// the end is allowed and reads io.EOF there.
func (r *ChunkReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, fmt.Errorf("media: seek whence %d", whence)
	}
	if abs < 0 {
		return 0, errSeekNegative
	}
	r.off = abs
	return abs, nil
}

// MaxRanges is how many ranges one request may ask for before
// TooManyRanges says to ignore them.
const MaxRanges = 16

// TooManyRanges reports whether a Range header asks for more than
// MaxRanges ranges. net/http.ServeContent serves any number of ranges,
// overlapping ones included, as long as their total length is no more
// than the file's: "bytes=0-0,0-0,..." makes one part, with its headers,
// per five bytes of request. The server drops such a header (and serves
// the whole file) before calling ServeContent. It only counts commas: the
// header is not otherwise parsed.
func TooManyRanges(header string) bool {
	return strings.Count(header, ",") >= MaxRanges
}
