package media

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// collect chunks data written in the given pieces and checks the chunks:
// indexes in order, every chunk full but the last, concatenation the data.
func collect(t *testing.T, chunkSize int, data []byte, pieces ...[]byte) (*Chunker, [][]byte) {
	t.Helper()
	var chunks [][]byte
	c := NewChunker(chunkSize, func(i int, chunk []byte) error {
		if i != len(chunks) {
			t.Fatalf("chunk index %d, want %d", i, len(chunks))
		}
		chunks = append(chunks, chunk)
		return nil
	})
	for _, p := range pieces {
		if n, err := c.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chunks {
		if i < len(chunks)-1 && len(ch) != chunkSize || len(ch) == 0 || len(ch) > chunkSize {
			t.Fatalf("chunk %d of %d is %d bytes (chunk size %d)", i, len(chunks), len(ch), chunkSize)
		}
	}
	if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
		t.Fatalf("chunks join to %d bytes, not the %d written", len(got), len(data))
	}
	if want := (len(data) + chunkSize - 1) / chunkSize; len(chunks) != want || c.Chunks() != want {
		t.Fatalf("%d chunks (Chunks() %d), want %d", len(chunks), c.Chunks(), want)
	}
	sum, size := c.Sum()
	if sum != sha256.Sum256(data) || size != int64(len(data)) {
		t.Fatalf("Sum = %x, %d; want %x, %d", sum, size, sha256.Sum256(data), len(data))
	}
	return c, chunks
}

func TestChunker(t *testing.T) {
	data := randomBytes(1<<20+123, 1)
	for _, size := range []int{1, 1000, 4096, DefaultChunkSize, 1 << 20, 2 << 20} {
		if size == 1 && testing.Short() {
			continue
		}
		// One write, then writes of awkward sizes.
		collect(t, size, data, data)
		var pieces [][]byte
		sizes := []int{1, 7, 4095, 4097, 65536, 3, 300_001}
		for rest, i := data, 0; len(rest) > 0; i++ {
			k := min(sizes[i%len(sizes)], len(rest))
			pieces = append(pieces, rest[:k])
			rest = rest[k:]
		}
		collect(t, size, data, pieces...)
	}
}

func TestChunkerEdges(t *testing.T) {
	t.Run("empty file has no chunks", func(t *testing.T) {
		c, _ := collect(t, 16, nil)
		if c.ID().String() != "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq" {
			t.Fatalf("empty id %s", c.ID())
		}
	})
	t.Run("exact multiple has no empty last chunk", func(t *testing.T) {
		data := randomBytes(64, 2)
		collect(t, 16, data, data)
	})
	t.Run("empty writes", func(t *testing.T) {
		data := randomBytes(40, 3)
		collect(t, 16, data, nil, data[:10], nil, data[10:], nil)
	})
	t.Run("zero chunk size means the default", func(t *testing.T) {
		data := randomBytes(DefaultChunkSize+1, 4)
		_, chunks := collect(t, DefaultChunkSize, data, data)
		c := NewChunker(0, func(int, []byte) error { return nil })
		if c.size != DefaultChunkSize || len(chunks) != 2 {
			t.Fatal(c.size, len(chunks))
		}
	})
	t.Run("bad chunk sizes panic", func(t *testing.T) {
		for _, size := range []int{-1, MaxChunkSize + 1} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("NewChunker(%d) did not panic", size)
					}
				}()
				NewChunker(size, nil)
			}()
		}
	})
}

// TestChunkerSplitEverywhere writes the same bytes split at every point,
// as a network read loop may deliver them, and gets the same chunks.
func TestChunkerSplitEverywhere(t *testing.T) {
	data := randomBytes(1000, 5)
	_, want := collect(t, 64, data, data)
	for i := 0; i <= len(data); i++ {
		for _, j := range []int{i, (i + len(data)) / 2} {
			_, got := collect(t, 64, data, data[:i], data[i:j], data[j:])
			if len(got) != len(want) {
				t.Fatalf("split at %d, %d: %d chunks, want %d", i, j, len(got), len(want))
			}
		}
	}
}

func TestChunkerCallbackError(t *testing.T) {
	boom := errors.New("raft said no")
	calls := 0
	c := NewChunker(10, func(i int, _ []byte) error {
		calls++
		if i == 1 {
			return boom
		}
		return nil
	})
	n, err := c.Write(make([]byte, 35))
	if !errors.Is(err, boom) || n != 20 || calls != 2 {
		t.Fatalf("Write = %d, %v after %d calls; want 20, boom after 2", n, err, calls)
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, boom) {
		t.Fatalf("Write after failure: %v", err)
	}
	if err := c.Close(); !errors.Is(err, boom) || calls != 2 {
		t.Fatalf("Close after failure: %v, %d calls", err, calls)
	}
}

func TestChunkerWriteAfterClose(t *testing.T) {
	c := NewChunker(10, func(int, []byte) error { return nil })
	c.Write([]byte("abc"))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.Write([]byte("d")); err == nil {
		t.Fatal("Write after Close accepted")
	}
}

func TestIDEncoding(t *testing.T) {
	data := []byte("hello, parley")
	sum := sha256.Sum256(data)
	id := ID(sum)
	// The text form is RFC 4648 base32, lower case, unpadded.
	want := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:]))
	if id.String() != want || len(want) != IDLen {
		t.Fatalf("String = %q, want %q", id, want)
	}
	b, _ := id.AppendText([]byte("x"))
	if string(b) != "x"+want {
		t.Fatalf("AppendText = %q", b)
	}
	got, err := ParseID(want)
	if err != nil || got != id {
		t.Fatalf("ParseID = %x, %v", got, err)
	}
}

func TestParseIDRefuses(t *testing.T) {
	good := ID(sha256.Sum256([]byte("x"))).String()
	replace := func(i int, c byte) string { b := []byte(good); b[i] = c; return string(b) }
	for name, s := range map[string]string{
		"empty":                  "",
		"short":                  good[:IDLen-1],
		"long":                   good + "a",
		"very long":              strings.Repeat("a", 1<<20),
		"upper case":             strings.ToUpper(good),
		"padding":                good[:IDLen-1] + "=",
		"newline":                replace(10, '\n'),
		"carriage return":        replace(10, '\r'),
		"digit 1":                replace(3, '1'),
		"digit 8":                replace(3, '8'),
		"slash":                  replace(3, '/'),
		"dot":                    replace(0, '.'),
		"nul":                    replace(0, 0),
		"high byte":              replace(0, 0xc3),
		"non-canonical last (b)": replace(IDLen-1, 'b'),
		"non-canonical last (7)": replace(IDLen-1, '7'),
		"hex":                    strings.Repeat("ab", 32),
	} {
		if _, err := ParseID(s); !errors.Is(err, ErrInvalidID) {
			t.Errorf("%s: ParseID accepted %q", name, s)
		}
	}
}

func FuzzParseID(f *testing.F) {
	f.Add(ID(sha256.Sum256(nil)).String())
	f.Add(ID{}.String())
	f.Add(strings.Repeat("7", IDLen))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			if id != (ID{}) {
				t.Fatalf("ParseID(%q) failed but returned %x", s, id)
			}
			return
		}
		// One spelling per id: what parses prints back as the same text.
		if id.String() != s {
			t.Fatalf("ParseID(%q) = %x, which prints as %q", s, id, id)
		}
	})
}

func BenchmarkChunker(b *testing.B) {
	data := randomBytes(8<<20, 6)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c := NewChunker(DefaultChunkSize, func(int, []byte) error { return nil })
		for p := data; len(p) > 0; p = p[min(len(p), 32<<10):] {
			c.Write(p[:min(len(p), 32<<10)])
		}
		c.Close()
		c.Sum()
	}
}
