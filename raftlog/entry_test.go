package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

// tagsFor gives cmds distinct tags.
func tagsFor(cmds [][]byte) []Tag {
	tags := make([]Tag, len(cmds))
	for i := range tags {
		tags[i] = Tag{Origin: 0xfeedface00000000 + uint64(i%3), Seq: uint64(i) * 1000003}
	}
	return tags
}

// appendEntryV1 is the encoder of the version-1 format, kept to check that
// old entries still decode.
func appendEntryV1(dst []byte, ts int64, cmds [][]byte) []byte {
	dst = append(dst, entryVersion1)
	dst = binary.BigEndian.AppendUint64(dst, uint64(ts))
	dst = binary.AppendUvarint(dst, uint64(len(cmds)))
	for _, c := range cmds {
		dst = binary.AppendUvarint(dst, uint64(len(c)))
		dst = append(dst, c...)
	}
	return dst
}

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
		tags := tagsFor(c.cmds)
		enc := AppendEntry(nil, c.ts, c.cmds, tags)
		if len(enc) != EntrySize(c.cmds, tags) {
			t.Fatalf("encoded %d bytes, EntrySize says %d", len(enc), EntrySize(c.cmds, tags))
		}
		// Appending to a non-empty dst keeps the prefix.
		withPrefix := AppendEntry([]byte("xy"), c.ts, c.cmds, tags)
		if !bytes.Equal(withPrefix[2:], enc) || string(withPrefix[:2]) != "xy" {
			t.Fatal("AppendEntry did not append")
		}
		for version, data := range map[string][]byte{"v2": enc, "v1": appendEntryV1(nil, c.ts, c.cmds)} {
			e, err := DecodeEntry(data)
			if err != nil {
				t.Fatalf("%s: %v", version, err)
			}
			if e.TS != c.ts || len(e.Cmds) != len(c.cmds) {
				t.Fatalf("%s: decoded ts %d, %d commands; want %d, %d", version, e.TS, len(e.Cmds), c.ts, len(c.cmds))
			}
			for i := range e.Cmds {
				if !bytes.Equal(e.Cmds[i], c.cmds[i]) {
					t.Fatalf("%s: command %d: %q, want %q", version, i, e.Cmds[i], c.cmds[i])
				}
			}
			wantTags := tags
			if version == "v1" {
				wantTags = nil // old entries carry no origin: nobody waits for them
			}
			if !slices.Equal(e.Tags, wantTags) || (version == "v1") != (e.Tags == nil) {
				t.Fatalf("%s: tags %v, want %v", version, e.Tags, wantTags)
			}
		}
	}
}

// TestDecodeEntryCommandsAreCapped: appending to a decoded command must not
// overwrite the next one in the shared buffer.
func TestDecodeEntryCommandsAreCapped(t *testing.T) {
	cmds := [][]byte{[]byte("ab"), []byte("cd")}
	e, err := DecodeEntry(AppendEntry(nil, 1, cmds, tagsFor(cmds)))
	if err != nil {
		t.Fatal(err)
	}
	_ = append(e.Cmds[0], 'X', 'Y', 'Z')
	if string(e.Cmds[1]) != "cd" {
		t.Fatalf("second command clobbered: %q", e.Cmds[1])
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	cmds := [][]byte{[]byte("hello"), []byte("world")}
	good := AppendEntry(nil, 42, cmds, tagsFor(cmds))
	hdr := func(b ...byte) []byte { return append(append([]byte(nil), good[:entryFixedHeader]...), b...) }
	origin := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	bad := map[string][]byte{
		"empty":           nil,
		"version 0":       append([]byte{0}, good[1:]...),
		"version 3":       append([]byte{EntryVersion + 1}, good[1:]...),
		"zero commands":   AppendEntry(nil, 1, nil, nil),
		"trailing byte":   append(append([]byte(nil), good...), 0),
		"count overflows": hdr(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"huge count":      cat(hdr(0xff, 0xff, 0xff, 0xff, 0x0f), origin, []byte{1, 1, 'a'}),
		"huge length":     cat(hdr(1), origin, []byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}),
		"padded count":    cat(hdr(0x81, 0x00), origin, []byte{1, 1, 'a'}),
		"padded length":   cat(hdr(1), origin, []byte{1, 0x81, 0x00, 'a'}),
		"padded seq":      cat(hdr(1), origin, []byte{0x81, 0x00, 1, 'a'}),
		"short origin":    cat(hdr(1), origin[:7]),
		"v1 padded count": append(appendEntryV1(nil, 1, nil)[:entryFixedHeader], 0x81, 0x00, 1, 'a'),
		"v1 overrun":      append(appendEntryV1(nil, 1, nil)[:entryFixedHeader], 1, 5, 'a'),
	}
	// Every strict prefix of a valid entry is invalid.
	for i := 0; i < len(good); i++ {
		bad[fmt.Sprintf("prefix of %d bytes", i)] = good[:i]
	}
	for name, data := range bad {
		if _, err := DecodeEntry(data); !errors.Is(err, ErrCorruptEntry) {
			t.Errorf("%s: err = %v, want ErrCorruptEntry", name, err)
		}
	}
}

// FuzzDecodeEntry: arbitrary input never panics, a success re-encodes to
// the same bytes, and the command headers allocated stay within the input
// size (no over-allocation from a forged count).
func FuzzDecodeEntry(f *testing.F) {
	one := [][]byte{{}}
	three := [][]byte{[]byte("a"), []byte("bc"), bytes.Repeat([]byte{1}, 300)}
	f.Add(AppendEntry(nil, 0, one, tagsFor(one)))
	f.Add(AppendEntry(nil, 1700000000000, three, tagsFor(three)))
	f.Add(appendEntryV1(nil, 1700000000000, three))
	f.Add([]byte{EntryVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEntry(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("error does not wrap ErrCorruptEntry: %v", err)
			}
			return
		}
		if len(e.Cmds) == 0 || len(e.Cmds) > len(data) {
			t.Fatalf("%d commands from %d bytes", len(e.Cmds), len(data))
		}
		var re []byte
		if data[0] == entryVersion1 {
			re = appendEntryV1(nil, e.TS, e.Cmds)
		} else {
			re = AppendEntry(nil, e.TS, e.Cmds, e.Tags)
		}
		if !bytes.Equal(re, data) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", data, re)
		}
	})
}

func BenchmarkEntryCodec(b *testing.B) {
	cmds := make([][]byte, 256)
	for i := range cmds {
		cmds[i] = bytes.Repeat([]byte{byte(i)}, 200)
	}
	tags := tagsFor(cmds)
	buf := make([]byte, 0, EntrySize(cmds, tags))
	b.SetBytes(int64(EntrySize(cmds, tags)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEntry(buf[:0], 1, cmds, tags)
		if _, err := DecodeEntry(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeEntryNewerVersion: an entry of a later format is told apart
// from a corrupt one, so the node stops for an upgrade instead.
func TestDecodeEntryNewerVersion(t *testing.T) {
	good := AppendEntry(nil, 7, [][]byte{[]byte("x")}, []Tag{{}})
	newer := append([]byte{EntryVersion + 1}, good[1:]...)
	if _, err := DecodeEntry(newer); !errors.Is(err, ErrNewerEntry) || !errors.Is(err, ErrCorruptEntry) {
		t.Fatalf("newer entry: %v", err)
	}
	if _, err := DecodeEntry(append([]byte{0}, good[1:]...)); errors.Is(err, ErrNewerEntry) || !errors.Is(err, ErrCorruptEntry) {
		t.Fatalf("version 0: %v", err)
	}
}
