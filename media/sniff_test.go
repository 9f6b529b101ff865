package media

import (
	"bytes"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"testing"
)

// encoded returns a real w x h image in format ("png", "jpeg" or "gif"),
// a gradient so that scaling and encoding have something to do.
func encoded(t testing.TB, format string, w, h int) []byte {
	t.Helper()
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetRGBA(x, y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	var b bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&b, m)
	case "jpeg":
		err = jpeg.Encode(&b, m, nil)
	case "gif":
		err = gif.Encode(&b, m, nil)
	default:
		t.Fatalf("no encoder for %q", format)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ftyp is an ISO base media file's first box with the given brands.
func ftyp(major string, compatible ...string) []byte {
	b := []byte{0, 0, 0, byte(16 + 4*len(compatible))}
	b = append(b, "ftyp"+major+"\x00\x00\x00\x00"...)
	for _, c := range compatible {
		b = append(b, c...)
	}
	// The box is followed by more of the file, as it is in a real one.
	return append(b, "\x00\x00\x00\x08free"...)
}

func TestSniff(t *testing.T) {
	tests := []struct {
		name    string
		head    []byte
		mime    string
		kind    Kind
		allowed bool
	}{
		{"png", encoded(t, "png", 4, 4), "image/png", KindImage, true},
		{"jpeg", encoded(t, "jpeg", 4, 4), "image/jpeg", KindImage, true},
		{"gif", encoded(t, "gif", 4, 4), "image/gif", KindImage, true},
		{"webp lossy", readTestdata(t, "blue-purple-pink.lossy.webp"), "image/webp", KindImage, true},
		{"webp lossless", readTestdata(t, "gopher-doc.with-alpha.lossless.webp"), "image/webp", KindImage, true},
		{"heic", ftyp("heic", "mif1", "heic"), "image/heic", KindImage, true},
		{"heif", ftyp("mif1", "mif1"), "image/heif", KindImage, true},
		{"heic with an mp4 brand too", ftyp("heic", "mp41"), "image/heic", KindImage, true},
		{"avif", ftyp("avif", "avif", "mif1", "miaf"), "image/avif", KindImage, true},
		{"bmp", []byte("BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00"), "image/bmp", KindImage, true},
		{"mp4 isom", ftyp("isom", "isom", "iso2", "avc1", "mp41"), "video/mp4", KindVideo, true},
		{"mp4 by compatible brand", ftyp("XXXX", "mp42"), "video/mp4", KindVideo, true},
		{"quicktime", ftyp("qt  ", "qt  "), "video/quicktime", KindVideo, true},
		{"3gp", ftyp("3gp4", "isom", "3gp4"), "video/3gpp", KindVideo, true},
		{"m4a", ftyp("M4A ", "M4A ", "mp42", "isom"), "audio/mp4", KindAudio, true},
		{"webm", []byte("\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm"), "video/webm", KindVideo, true},
		{"matroska", []byte("\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska"), "video/x-matroska", KindVideo, true},
		{"avi", []byte("RIFF\x00\x10\x00\x00AVI LIST"), "video/avi", KindVideo, true},
		{"mp3 with id3", []byte("ID3\x04\x00\x00\x00\x00\x00\x00"), "audio/mpeg", KindAudio, true},
		{"mp3 frame", []byte("\xff\xfb\x90\x64\x00\x00\x00\x00"), "audio/mpeg", KindAudio, true},
		{"aac adts", []byte("\xff\xf1\x50\x80\x02\x1f\xfc"), "audio/aac", KindAudio, true},
		{"ogg opus", []byte("OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x13OpusHead\x01\x01"), "audio/ogg", KindAudio, true},
		{"ogg vorbis", []byte("OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x1e\x01vorbis\x00"), "audio/ogg", KindAudio, true},
		{"ogg theora", []byte("OggS\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x2a\x80theora"), "video/ogg", KindVideo, true},
		{"flac", []byte("fLaC\x00\x00\x00\x22"), "audio/flac", KindAudio, true},
		{"wav", []byte("RIFF\x24\x08\x00\x00WAVEfmt "), "audio/wave", KindAudio, true},
		{"amr", []byte("#!AMR\n\x3c"), "audio/amr", KindAudio, true},
		{"pdf", []byte("%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"), "application/pdf", KindDocument, true},
		{"zip", []byte("PK\x03\x04\x14\x00\x00\x00\x08\x00"), "application/zip", KindArchive, true},
		{"gzip", []byte("\x1f\x8b\x08\x00\x00\x00\x00\x00"), "application/x-gzip", KindArchive, false},
		{"text, whatever the client called it (cat.png)", []byte("this is not a png\n"), "text/plain; charset=utf-8", KindText, true},
		{"text with a utf-16le bom (FF FE, not an mp3 frame)", []byte("\xff\xfeh\x00i\x00"), "text/plain; charset=utf-16le", KindText, true},
		{"utf-8 text", []byte("caf\xc3\xa9 \xe2\x98\x95\n"), "text/plain; charset=utf-8", KindText, true},
		{"html", []byte("<!doctype html><script>alert(1)</script>"), "text/html; charset=utf-8", KindText, false},
		{"svg with xml declaration", []byte("<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"><script/></svg>"), "text/xml; charset=utf-8", KindText, false},
		{"postscript", []byte("%!PS-Adobe-3.0\n"), "application/postscript", KindFile, false},
		{"wasm", []byte("\x00asm\x01\x00\x00\x00"), "application/wasm", KindFile, false},
		{"unknown binary", []byte("\x00\x07\x02\x03\xfe\xfd\x10\x11"), "application/octet-stream", KindFile, true},
		{"jpeg-like bytes that are not audio", []byte("\xff\xd8\x00\x00"), "application/octet-stream", KindFile, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, k := Sniff(tt.head)
			if m != tt.mime || k != tt.kind {
				t.Errorf("Sniff = %q, %v; want %q, %v", m, k, tt.mime, tt.kind)
			}
			if got := Allowed(m); got != tt.allowed {
				t.Errorf("Allowed(%q) = %v, want %v", m, got, tt.allowed)
			}
		})
	}
}

func TestSniffLooksAtSniffLenOnly(t *testing.T) {
	// Binary after the first SniffLen bytes of text does not matter: the
	// head alone decides, so the server can sniff before it has the rest.
	head := bytes.Repeat([]byte("a"), SniffLen)
	long := append(append([]byte{}, head...), 0x00, 0x01, 0x02)
	m1, _ := Sniff(head)
	m2, _ := Sniff(long)
	if m1 != m2 {
		t.Fatalf("Sniff(head) = %q, Sniff(longer) = %q", m1, m2)
	}
}

func TestAllowed(t *testing.T) {
	for m, want := range map[string]bool{
		"image/png":                 true,
		"IMAGE/PNG":                 true,
		"text/plain; charset=utf-8": true,
		"application/octet-stream":  true,
		"text/html":                 false,
		"image/svg+xml":             false,
		"application/javascript":    false,
		"":                          false,
		"image/png;;;":              false,
		"image/":                    false,
	} {
		if got := Allowed(m); got != want {
			t.Errorf("Allowed(%q) = %v, want %v", m, got, want)
		}
	}
}

func TestKindString(t *testing.T) {
	if KindImage.String() != "image" || KindFile.String() != "file" || Kind(200).String() != "unknown" {
		t.Fatal(KindImage.String(), KindFile.String(), Kind(200).String())
	}
}

func FuzzSniff(f *testing.F) {
	f.Add([]byte("\xff\xfb\x90\x64"))
	f.Add(ftyp("heic", "mif1"))
	f.Add([]byte("OggS\x00\x02"))
	f.Fuzz(func(t *testing.T, head []byte) {
		m, k := Sniff(head)
		if m == "" || kindOf(m) != k {
			t.Fatalf("Sniff = %q, %v", m, k)
		}
	})
}
