package media

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// stored is a file as the server keeps it: chunks by index, as a Chunker
// cut them, and the count of fetches.
type stored struct {
	data    []byte
	chunks  [][]byte
	fetches int
}

func store(t testing.TB, data []byte, chunkSize int) *stored {
	s := &stored{data: data}
	c := NewChunker(chunkSize, func(_ int, chunk []byte) error {
		s.chunks = append(s.chunks, chunk)
		return nil
	})
	c.Write(data)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stored) fetch(i int) ([]byte, error) {
	s.fetches++
	if i < 0 || i >= len(s.chunks) {
		return nil, fmt.Errorf("no chunk %d", i)
	}
	return s.chunks[i], nil
}

func TestChunkReaderIOTest(t *testing.T) {
	for _, n := range []int{0, 1, 1023, 1024, 1025, 10_000} {
		s := store(t, randomBytes(n, uint64(n)), 1024)
		r := NewChunkReader(int64(n), 1024, s.fetch)
		if err := iotest.TestReader(r, s.data); err != nil {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

func TestChunkReaderSequentialFetchesEachChunkOnce(t *testing.T) {
	s := store(t, randomBytes(10_000, 7), 1024)
	r := NewChunkReader(10_000, 1024, s.fetch)
	got, err := io.ReadAll(iotest.OneByteReader(r))
	if err != nil || !bytes.Equal(got, s.data) {
		t.Fatalf("ReadAll: %d bytes, %v", len(got), err)
	}
	if s.fetches != 10 {
		t.Fatalf("%d fetches for 10 chunks", s.fetches)
	}
}

func TestChunkReaderBadChunk(t *testing.T) {
	s := store(t, randomBytes(3000, 8), 1024)
	s.chunks[1] = s.chunks[1][:1000] // storage lost bytes
	r := NewChunkReader(3000, 1024, s.fetch)
	if _, err := io.ReadAll(r); !errors.Is(err, ErrBadChunk) {
		t.Fatalf("short middle chunk: %v", err)
	}
	// The metadata claims more than is stored: the last chunk is short.
	s = store(t, randomBytes(3000, 9), 1024)
	r = NewChunkReader(3100, 1024, s.fetch)
	if _, err := io.ReadAll(r); !errors.Is(err, ErrBadChunk) {
		t.Fatalf("size over the stored bytes: %v", err)
	}
	fetchErr := errors.New("pebble: closed")
	r = NewChunkReader(10, 1024, func(int) ([]byte, error) { return nil, fetchErr })
	if _, err := r.Read(make([]byte, 4)); !errors.Is(err, fetchErr) {
		t.Fatalf("fetch error: %v", err)
	}
}

func TestChunkReaderSeek(t *testing.T) {
	s := store(t, randomBytes(5000, 10), 1024)
	r := NewChunkReader(5000, 1024, s.fetch)
	if _, err := r.Seek(-1, io.SeekStart); err == nil {
		t.Error("seek to -1 accepted")
	}
	if _, err := r.Seek(0, 7); err == nil {
		t.Error("whence 7 accepted")
	}
	if off, err := r.Seek(100, io.SeekEnd); off != 5100 || err != nil {
		t.Fatalf("seek past the end: %d, %v", off, err)
	}
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read past the end: %d, %v", n, err)
	}
	if off, _ := r.Seek(-5100+2047, io.SeekCurrent); off != 2047 {
		t.Fatalf("SeekCurrent to %d", off)
	}
	b := make([]byte, 10)
	n, _ := io.ReadFull(r, b) // across the chunk boundary at 2048
	if n != 10 || !bytes.Equal(b, s.data[2047:2057]) {
		t.Fatalf("read across a boundary: %d %x", n, b)
	}
}

// TestServeContentOverChunkReader shows that net/http.ServeContent, given
// a ChunkReader and the media id as ETag, does what a media endpoint
// needs: ranges, suffix ranges, 416, multipart ranges, conditional GETs.
func TestServeContentOverChunkReader(t *testing.T) {
	const size = 10_000
	s := store(t, randomBytes(size, 11), 1024)
	c := NewChunker(1024, func(int, []byte) error { return nil })
	c.Write(s.data)
	c.Close()
	etag := `"` + c.ID().String() + `"`
	modtime := time.Unix(1_700_000_000, 0) // the upload's commit time, from the replicated record

	serve := func(t *testing.T, hdr map[string]string) *httptest.ResponseRecorder {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/v1/media/x", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Type", "application/octet-stream") // Sniff's, so ServeContent does not sniff
		http.ServeContent(w, req, "", modtime, NewChunkReader(size, 1024, s.fetch))
		return w
	}

	t.Run("whole file", func(t *testing.T) {
		w := serve(t, nil)
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), s.data) || w.Header().Get("Accept-Ranges") != "bytes" ||
			w.Header().Get("Content-Length") != "10000" {
			t.Fatalf("%d, %d bytes, %v", w.Code, w.Body.Len(), w.Header())
		}
	})
	single := []struct {
		rng, contentRange string
		from, to          int
	}{
		{"bytes=0-99", "bytes 0-99/10000", 0, 100},
		{"bytes=1000-3000", "bytes 1000-3000/10000", 1000, 3001}, // spans three chunks
		{"bytes=-500", "bytes 9500-9999/10000", 9500, 10000},     // suffix
		{"bytes=9990-", "bytes 9990-9999/10000", 9990, 10000},    // open-ended
		{"bytes=9990-20000", "bytes 9990-9999/10000", 9990, 10000},
		{"bytes=-20000", "bytes 0-9999/10000", 0, 10000}, // suffix longer than the file
	}
	for _, tt := range single {
		t.Run(tt.rng, func(t *testing.T) {
			w := serve(t, map[string]string{"Range": tt.rng})
			if w.Code != http.StatusPartialContent || w.Header().Get("Content-Range") != tt.contentRange ||
				!bytes.Equal(w.Body.Bytes(), s.data[tt.from:tt.to]) {
				t.Fatalf("%d, Content-Range %q, %d bytes", w.Code, w.Header().Get("Content-Range"), w.Body.Len())
			}
		})
	}
	t.Run("unsatisfiable", func(t *testing.T) {
		w := serve(t, map[string]string{"Range": "bytes=20000-"})
		if w.Code != http.StatusRequestedRangeNotSatisfiable || w.Header().Get("Content-Range") != "bytes */10000" {
			t.Fatalf("%d, Content-Range %q", w.Code, w.Header().Get("Content-Range"))
		}
	})
	t.Run("multiple ranges", func(t *testing.T) {
		w := serve(t, map[string]string{"Range": "bytes=0-9,5000-5009,-3"})
		mt, params, err := mime.ParseMediaType(w.Header().Get("Content-Type"))
		if w.Code != http.StatusPartialContent || err != nil || mt != "multipart/byteranges" {
			t.Fatalf("%d, Content-Type %q", w.Code, w.Header().Get("Content-Type"))
		}
		mr := multipart.NewReader(w.Body, params["boundary"])
		want := []struct {
			cr       string
			from, to int
		}{{"bytes 0-9/10000", 0, 10}, {"bytes 5000-5009/10000", 5000, 5010}, {"bytes 9997-9999/10000", 9997, 10000}}
		for i, wp := range want {
			p, err := mr.NextPart()
			if err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			body, _ := io.ReadAll(p)
			if p.Header.Get("Content-Range") != wp.cr || p.Header.Get("Content-Type") != "application/octet-stream" ||
				!bytes.Equal(body, s.data[wp.from:wp.to]) {
				t.Fatalf("part %d: %v, %d bytes", i, p.Header, len(body))
			}
		}
		if _, err := mr.NextPart(); err != io.EOF {
			t.Fatalf("after the parts: %v", err)
		}
	})
	t.Run("If-None-Match with the id is 304", func(t *testing.T) {
		w := serve(t, map[string]string{"If-None-Match": etag})
		if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
			t.Fatalf("%d, %d bytes", w.Code, w.Body.Len())
		}
		w = serve(t, map[string]string{"If-None-Match": `"other"`})
		if w.Code != 200 {
			t.Fatalf("other etag: %d", w.Code)
		}
	})
	t.Run("If-Range", func(t *testing.T) {
		w := serve(t, map[string]string{"Range": "bytes=0-9", "If-Range": etag})
		if w.Code != http.StatusPartialContent || w.Body.Len() != 10 {
			t.Fatalf("matching If-Range: %d, %d bytes", w.Code, w.Body.Len())
		}
		w = serve(t, map[string]string{"Range": "bytes=0-9", "If-Range": `"other"`})
		if w.Code != 200 || w.Body.Len() != size {
			t.Fatalf("stale If-Range: %d, %d bytes", w.Code, w.Body.Len())
		}
	})
	t.Run("a range reads only its chunks", func(t *testing.T) {
		s.fetches = 0
		serve(t, map[string]string{"Range": "bytes=5000-5009"})
		if s.fetches != 1 {
			t.Fatalf("%d fetches for a range inside one chunk", s.fetches)
		}
	})
	t.Run("many overlapping ranges", func(t *testing.T) {
		// ServeContent serves them all, a part each: the server must
		// drop such a header itself, which TooManyRanges tells it to.
		rng := "bytes=" + strings.Repeat("1-2,", 999) + "1-2"
		w := serve(t, map[string]string{"Range": rng})
		if w.Code != http.StatusPartialContent || w.Body.Len() < 1000*50 {
			t.Fatalf("ServeContent changed: %d, %d bytes", w.Code, w.Body.Len())
		}
		if !TooManyRanges(rng) {
			t.Fatal("TooManyRanges let 1000 ranges through")
		}
	})
}

func TestTooManyRanges(t *testing.T) {
	for h, want := range map[string]bool{
		"":                   false,
		"bytes=0-99":         false,
		"bytes=0-9,20-29,-3": false,
		"bytes=" + strings.Repeat("0-0,", MaxRanges-1) + "0-0": false,
		"bytes=" + strings.Repeat("0-0,", MaxRanges) + "0-0":   true,
	} {
		if got := TooManyRanges(h); got != want {
			t.Errorf("TooManyRanges(%.40q...) = %v", h, got)
		}
	}
}
