package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"testing"
)

func TestEntryRoundTrip(t *testing.T) {
	cases := []struct {
		ts   int64
		cmds [][]byte
	}{
		{0, [][]byte{{}}},
		{1700000000123, [][]byte{[]byte("a")}},
		{-1, [][]byte{[]byte("one"), {}, []byte("three")}},
		{math.MaxInt64, [][]byte{bytes.Repeat([]byte{7}, 200), bytes.Repeat([]byte{9}, 70000)}},
		{math.MinInt64, make([][]byte, 1000)},
	}
	for _, c := range cases {
		enc := AppendEntry(nil, c.ts, c.cmds)
		if len(enc) != EntrySize(c.cmds) {
			t.Fatalf("encoded %d bytes, EntrySize says %d", len(enc), EntrySize(c.cmds))
		}
		// Appending to a non-empty dst keeps the prefix.
		withPrefix := AppendEntry([]byte("xy"), c.ts, c.cmds)
		if !bytes.Equal(withPrefix[2:], enc) || string(withPrefix[:2]) != "xy" {
			t.Fatal("AppendEntry did not append")
		}
		ts, cmds, err := DecodeEntry(enc)
		if err != nil {
			t.Fatal(err)
		}
		if ts != c.ts || len(cmds) != len(c.cmds) {
			t.Fatalf("decoded ts %d, %d commands; want %d, %d", ts, len(cmds), c.ts, len(c.cmds))
		}
		for i := range cmds {
			if !bytes.Equal(cmds[i], c.cmds[i]) {
				t.Fatalf("command %d: %q, want %q", i, cmds[i], c.cmds[i])
			}
		}
	}
}

// TestDecodeEntryCommandsAreCapped: appending to a decoded command must not
// overwrite the next one in the shared buffer.
func TestDecodeEntryCommandsAreCapped(t *testing.T) {
	enc := AppendEntry(nil, 1, [][]byte{[]byte("ab"), []byte("cd")})
	_, cmds, err := DecodeEntry(enc)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(cmds[0], 'X', 'Y', 'Z')
	if string(cmds[1]) != "cd" {
		t.Fatalf("second command clobbered: %q", cmds[1])
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	good := AppendEntry(nil, 42, [][]byte{[]byte("hello"), []byte("world")})
	bad := map[string][]byte{
		"empty":           nil,
		"wrong version":   append([]byte{EntryVersion + 1}, good[1:]...),
		"zero commands":   AppendEntry(nil, 1, nil),
		"trailing byte":   append(append([]byte(nil), good...), 0),
		"count overflows": append(append([]byte(nil), good[:entryFixedHeader]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"huge count":      append(append([]byte(nil), good[:entryFixedHeader]...), 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 'a'),
		"huge length":     append(append([]byte(nil), good[:entryFixedHeader]...), 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"padded count":    append(append([]byte(nil), good[:entryFixedHeader]...), 0x81, 0x00, 1, 'a'),
		"padded length":   append(append([]byte(nil), good[:entryFixedHeader]...), 1, 0x81, 0x00, 'a'),
	}
	// Every strict prefix of a valid entry is invalid.
	for i := 0; i < len(good); i++ {
		bad[fmt.Sprintf("prefix of %d bytes", i)] = good[:i]
	}
	for name, data := range bad {
		if _, _, err := DecodeEntry(data); !errors.Is(err, ErrCorruptEntry) {
			t.Errorf("%s: err = %v, want ErrCorruptEntry", name, err)
		}
	}
}

// FuzzDecodeEntry: arbitrary input never panics, a success re-encodes to
// the same bytes, and the command headers allocated stay within the input
// size (no over-allocation from a forged count).
func FuzzDecodeEntry(f *testing.F) {
	f.Add(AppendEntry(nil, 0, [][]byte{{}}))
	f.Add(AppendEntry(nil, 1700000000000, [][]byte{[]byte("a"), []byte("bc"), bytes.Repeat([]byte{1}, 300)}))
	f.Add([]byte{EntryVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, cmds, err := DecodeEntry(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("error does not wrap ErrCorruptEntry: %v", err)
			}
			return
		}
		if len(cmds) == 0 || len(cmds) > len(data) {
			t.Fatalf("%d commands from %d bytes", len(cmds), len(data))
		}
		if re := AppendEntry(nil, ts, cmds); !bytes.Equal(re, data) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", data, re)
		}
	})
}

func BenchmarkEntryCodec(b *testing.B) {
	cmds := make([][]byte, 256)
	for i := range cmds {
		cmds[i] = bytes.Repeat([]byte{byte(i)}, 200)
	}
	buf := make([]byte, 0, EntrySize(cmds))
	b.SetBytes(int64(EntrySize(cmds)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEntry(buf[:0], 1, cmds)
		if _, _, err := DecodeEntry(buf); err != nil {
			b.Fatal(err)
		}
	}
}
