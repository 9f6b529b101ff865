package media

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"runtime"
	"testing"

	"golang.org/x/image/draw"
)

// pngHeader is a PNG signature and an IHDR chunk (8-bit RGBA) claiming
// w x h, with a correct CRC, then the start of an IDAT: all a decoder needs
// to believe in the image and allocate for it.
func pngHeader(w, h uint32) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b = append(b, chunk...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
	return append(b, 0, 0, 0x10, 0, 'I', 'D', 'A', 'T', 0x78, 0x9c)
}

// jpegHeader is SOI, a JFIF APP0 segment and a baseline SOF0 frame header
// claiming w x h, three components. (Without JFIF, DecodeConfig reads on to
// the scan header to learn the color transform.)
func jpegHeader(w, h uint16) []byte {
	b := []byte("\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
	b = append(b, 0xFF, 0xC0, 0, 17, 8)
	b = binary.BigEndian.AppendUint16(b, h)
	b = binary.BigEndian.AppendUint16(b, w)
	return append(b, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1)
}

// gifHeader is a GIF89a logical screen of w x h.
func gifHeader(w, h uint16) []byte {
	b := []byte("GIF89a")
	b = binary.LittleEndian.AppendUint16(b, w)
	b = binary.LittleEndian.AppendUint16(b, h)
	return append(b, 0, 0, 0)
}

// webpHeader is a RIFF/WEBP file with a VP8X chunk claiming a w x h canvas.
func webpHeader(w, h uint32) []byte {
	vp8x := []byte{0, 0, 0, 0}
	vp8x = append(vp8x, byte(w-1), byte((w-1)>>8), byte((w-1)>>16))
	vp8x = append(vp8x, byte(h-1), byte((h-1)>>8), byte((h-1)>>16))
	b := []byte("RIFF")
	b = binary.LittleEndian.AppendUint32(b, uint32(4+8+len(vp8x)))
	b = append(b, "WEBPVP8X"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(vp8x)))
	return append(b, vp8x...)
}

func TestProbeRefusesBombsBeforeDecoding(t *testing.T) {
	tests := []struct {
		name string
		src  []byte
	}{
		{"png 100000x100000", pngHeader(100000, 100000)},
		{"png 20000x10, a side over 16384", pngHeader(20000, 10)},
		{"png 8000x6000, 48 megapixels", pngHeader(8000, 6000)},
		{"jpeg 65535x65535", jpegHeader(65535, 65535)},
		{"gif 65535x65535", gifHeader(65535, 65535)},
		{"webp 16384x16384", webpHeader(16384, 16384)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Probe(bytes.NewReader(tt.src)); !errors.Is(err, ErrImageTooLarge) {
				t.Fatalf("Probe: %v, want ErrImageTooLarge", err)
			}
			if _, _, err := Thumbnail(tt.src, 256); !errors.Is(err, ErrImageTooLarge) {
				t.Fatalf("Thumbnail: %v, want ErrImageTooLarge", err)
			}
		})
	}
}

func TestProbeBombAllocatesLittle(t *testing.T) {
	src := pngHeader(100000, 100000) // 40 GB as RGBA
	r := bytes.NewReader(src)
	probe := func() {
		r.Reset(src)
		if _, err := Probe(r); !errors.Is(err, ErrImageTooLarge) {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(100, probe); n > 20 {
		t.Errorf("Probe of a bomb header: %v allocations, want a handful", n)
	}
	// And few bytes: the decoder's header state and a bufio.Reader.
	const runs = 100
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		probe()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 32<<10 {
		t.Errorf("Probe of a bomb header: %d bytes allocated per call, want under 32 KiB", per)
	}
	// Thumbnail refuses it the same way: probing first, never decoding.
	runtime.ReadMemStats(&before)
	for range runs {
		if _, _, err := Thumbnail(src, 256); !errors.Is(err, ErrImageTooLarge) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 32<<10 {
		t.Errorf("Thumbnail of a bomb header: %d bytes allocated per call, want under 32 KiB", per)
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name string
		src  []byte
		want Image
		err  error
	}{
		{"png", encoded(t, "png", 64, 48), Image{64, 48, "png"}, nil},
		{"jpeg", encoded(t, "jpeg", 64, 48), Image{64, 48, "jpeg"}, nil},
		{"gif", encoded(t, "gif", 64, 48), Image{64, 48, "gif"}, nil},
		{"webp lossy", readTestdata(t, "blue-purple-pink.lossy.webp"), Image{150, 100, "webp"}, nil},
		{"webp lossless", readTestdata(t, "gopher-doc.with-alpha.lossless.webp"), Image{75, 100, "webp"}, nil},
		{"16384 x 2441 is under both limits", pngHeader(16384, 2441), Image{16384, 2441, "png"}, nil},
		{"zero width", pngHeader(0, 10), Image{}, ErrInvalidImage},
		{"text", []byte("not an image at all"), Image{}, ErrUnsupportedImage},
		{"heic", ftyp("heic", "mif1", "heic"), Image{}, ErrUnsupportedImage},
		{"bmp, not accepted even if registered", []byte("BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00"), Image{}, ErrUnsupportedImage},
		{"truncated png", encoded(t, "png", 64, 48)[:20], Image{}, ErrInvalidImage},
		{"empty", nil, Image{}, ErrUnsupportedImage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Probe(bytes.NewReader(tt.src))
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("Probe: %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("Probe = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// decodeThumb decodes Thumbnail's output and checks it against what
// Thumbnail said it made.
func decodeThumb(t *testing.T, out []byte, info Image) image.Image {
	t.Helper()
	m, format, err := image.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if format != info.Format || m.Bounds().Dx() != info.Width || m.Bounds().Dy() != info.Height {
		t.Fatalf("thumbnail is %s %v, Thumbnail said %+v", format, m.Bounds(), info)
	}
	return m
}

func TestThumbnail(t *testing.T) {
	tests := []struct {
		name    string
		src     []byte
		maxSide int
		want    Image
	}{
		{"landscape jpeg", encoded(t, "jpeg", 640, 480), 160, Image{160, 120, "jpeg"}},
		{"landscape png", encoded(t, "png", 640, 480), 160, Image{160, 120, "jpeg"}},
		{"portrait gif", encoded(t, "gif", 300, 1000), 160, Image{48, 160, "jpeg"}},
		{"small image is not enlarged", encoded(t, "png", 100, 50), 160, Image{100, 50, "jpeg"}},
		{"thin strip keeps a pixel", encoded(t, "png", 2000, 1), 100, Image{100, 1, "jpeg"}},
		{"webp lossy", readTestdata(t, "blue-purple-pink.lossy.webp"), 60, Image{60, 40, "jpeg"}},
		{"webp with alpha becomes png", readTestdata(t, "gopher-doc.with-alpha.lossless.webp"), 50, Image{38, 50, "png"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, info, err := Thumbnail(tt.src, tt.maxSide)
			if err != nil {
				t.Fatal(err)
			}
			if info != tt.want {
				t.Fatalf("Thumbnail = %+v, want %+v", info, tt.want)
			}
			decodeThumb(t, out, info)
		})
	}
}

func TestThumbnailTransparentPNG(t *testing.T) {
	m := image.NewNRGBA(image.Rect(0, 0, 200, 100))
	for x := 0; x < 100; x++ { // left half opaque red, right half transparent
		for y := 0; y < 100; y++ {
			m.SetNRGBA(x, y, color.NRGBA{255, 0, 0, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	out, info, err := Thumbnail(b.Bytes(), 50)
	if err != nil {
		t.Fatal(err)
	}
	if info != (Image{50, 25, "png"}) {
		t.Fatalf("Thumbnail = %+v", info)
	}
	th := decodeThumb(t, out, info)
	if _, _, _, a := th.At(45, 12).RGBA(); a != 0 {
		t.Errorf("right side alpha %d, want transparent", a)
	}
	if r, _, _, a := th.At(5, 12).RGBA(); a != 0xffff || r < 0xf000 {
		t.Errorf("left side r=%d a=%d, want opaque red", r, a)
	}
}

// withExif inserts an APP1 Exif segment carrying Orientation o (big-endian
// TIFF, one IFD0 entry) right after a JPEG's SOI.
func withExif(jpg []byte, o uint16) []byte {
	tiff := []byte("MM\x00*\x00\x00\x00\x08")
	tiff = binary.BigEndian.AppendUint16(tiff, 1) // one entry
	tiff = binary.BigEndian.AppendUint16(tiff, 0x0112)
	tiff = binary.BigEndian.AppendUint16(tiff, 3) // SHORT
	tiff = binary.BigEndian.AppendUint32(tiff, 1) // count
	tiff = binary.BigEndian.AppendUint16(tiff, o)
	tiff = append(tiff, 0, 0, 0, 0, 0, 0) // value padding, next IFD offset 0
	seg := append([]byte("Exif\x00\x00"), tiff...)
	out := []byte{0xFF, 0xD8, 0xFF, 0xE1}
	out = binary.BigEndian.AppendUint16(out, uint16(len(seg)+2))
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

func TestThumbnailAppliesExifOrientation(t *testing.T) {
	// Stored 80x40: left half red, right half blue.
	m := image.NewRGBA(image.Rect(0, 0, 80, 40))
	for y := 0; y < 40; y++ {
		for x := 0; x < 80; x++ {
			c := color.RGBA{255, 0, 0, 255}
			if x >= 40 {
				c = color.RGBA{0, 0, 255, 255}
			}
			m.SetRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	red := func(c color.Color) bool { r, _, bl, _ := c.RGBA(); return r > 0xc000 && bl < 0x4000 }
	blue := func(c color.Color) bool { r, _, bl, _ := c.RGBA(); return bl > 0xc000 && r < 0x4000 }
	tests := []struct {
		o              uint16
		w, h           int
		topLeft, other func(color.Color) bool // at (2,2) and at the far corner
	}{
		{1, 80, 40, red, blue},
		{2, 80, 40, blue, red}, // mirrored
		{3, 80, 40, blue, red},
		{6, 40, 80, red, blue}, // turned clockwise: the left edge is now the top
		{8, 40, 80, blue, red}, // counter-clockwise: the right edge is the top
		{5, 40, 80, red, blue},
		{9, 80, 40, red, blue}, // not an orientation: left alone
	}
	for _, tt := range tests {
		src := withExif(b.Bytes(), tt.o)
		if got := jpegOrientation(src); tt.o <= 8 && got != orientation(tt.o) {
			t.Fatalf("orientation %d read as %d", tt.o, got)
		}
		out, info, err := Thumbnail(src, 200)
		if err != nil {
			t.Fatal(err)
		}
		if info.Width != tt.w || info.Height != tt.h {
			t.Fatalf("orientation %d: %dx%d, want %dx%d", tt.o, info.Width, info.Height, tt.w, tt.h)
		}
		th := decodeThumb(t, out, info)
		if !tt.topLeft(th.At(2, 2)) || !tt.other(th.At(tt.w-3, tt.h-3)) {
			t.Errorf("orientation %d: corners %v and %v", tt.o, th.At(2, 2), th.At(tt.w-3, tt.h-3))
		}
	}
}

func TestJPEGOrientationHostile(t *testing.T) {
	for _, b := range [][]byte{
		nil,
		{0xFF, 0xD8},
		{0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF}, // length past the end
		{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x01}, // length under 2
		{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x0A, 'E', 'x', 'i', 'f', 0, 0, 'M', 'M'},                                     // truncated TIFF
		append([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x16}, "Exif\x00\x00MM\x00*\xff\xff\xff\xff\x00\x00\x00\x00"...), // IFD offset past the end
	} {
		if o := jpegOrientation(b); o != orientNormal {
			t.Errorf("jpegOrientation(% x) = %d", b, o)
		}
	}
}

func TestThumbnailErrors(t *testing.T) {
	if _, _, err := Thumbnail(encoded(t, "png", 8, 8), 0); err == nil {
		t.Error("maxSide 0 accepted")
	}
	if _, _, err := Thumbnail([]byte("hello"), 64); !errors.Is(err, ErrUnsupportedImage) {
		t.Errorf("text: %v", err)
	}
	// A header that passes the probe over a body that is not there.
	if _, _, err := Thumbnail(pngHeader(64, 64), 64); !errors.Is(err, ErrInvalidImage) {
		t.Errorf("truncated png: %v", err)
	}
}

func TestFit(t *testing.T) {
	for _, tt := range []struct{ w, h, max, ww, wh int }{
		{640, 480, 160, 160, 120},
		{480, 640, 160, 120, 160},
		{100, 100, 100, 100, 100},
		{101, 100, 100, 100, 99},
		{16384, 1, 256, 256, 1},
		{1, 16384, 256, 1, 256},
		{3, 2, 1, 1, 1},
	} {
		if w, h := fit(tt.w, tt.h, tt.max); w != tt.ww || h != tt.wh {
			t.Errorf("fit(%d, %d, %d) = %d, %d; want %d, %d", tt.w, tt.h, tt.max, w, h, tt.ww, tt.wh)
		}
	}
}

func FuzzProbe(f *testing.F) {
	for _, seed := range [][]byte{
		encoded(f, "png", 3, 2), encoded(f, "jpeg", 3, 2), encoded(f, "gif", 3, 2),
		readTestdata(f, "blue-purple-pink.lossy.webp"), pngHeader(100000, 100000),
		jpegHeader(65535, 65535), gifHeader(1, 1), webpHeader(16384, 16384),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		img, err := Probe(bytes.NewReader(src))
		if err != nil {
			if !errors.Is(err, ErrImageTooLarge) && !errors.Is(err, ErrUnsupportedImage) && !errors.Is(err, ErrInvalidImage) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if img.Width <= 0 || img.Height <= 0 || img.Width > DefaultLimits.MaxSide || img.Height > DefaultLimits.MaxSide ||
			int64(img.Width)*int64(img.Height) > DefaultLimits.MaxPixels || !imageFormats[img.Format] {
			t.Fatalf("Probe accepted %+v", img)
		}
	})
}

// FuzzThumbnail decodes under small limits, so that the fuzzer spends its
// time in the decoders rather than on allocating large images.
func FuzzThumbnail(f *testing.F) {
	for _, seed := range [][]byte{
		encoded(f, "png", 3, 2), encoded(f, "jpeg", 3, 2), encoded(f, "gif", 3, 2),
		readTestdata(f, "gopher-doc.with-alpha.lossless.webp"), withExif(encoded(f, "jpeg", 3, 2), 6),
	} {
		f.Add(seed)
	}
	small := Limits{MaxPixels: 1 << 16, MaxSide: 1024}
	f.Fuzz(func(t *testing.T, src []byte) {
		out, info, err := small.Thumbnail(src, 16)
		if err != nil {
			return
		}
		if info.Width < 1 || info.Height < 1 || info.Width > 16 || info.Height > 16 {
			t.Fatalf("thumbnail %+v", info)
		}
		m, format, err := image.Decode(bytes.NewReader(out))
		if err != nil || format != info.Format || m.Bounds().Dx() != info.Width || m.Bounds().Dy() != info.Height {
			t.Fatalf("thumbnail %+v decodes as %s %v, %v", info, format, m, err)
		}
	})
}

// BenchmarkThumbnail compares, for a 12-megapixel JPEG, decoding alone with
// scaling the decoded picture to 320 pixels by each interpolator, and the
// whole Thumbnail.
func BenchmarkThumbnail(b *testing.B) {
	src := encoded(b, "jpeg", 4000, 3000)
	m, _, err := image.Decode(bytes.NewReader(src))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			image.Decode(bytes.NewReader(src))
		}
	})
	for name, scaler := range map[string]draw.Scaler{"scale-catmullrom": draw.CatmullRom, "scale-approxbilinear": draw.ApproxBiLinear} {
		b.Run(name, func(b *testing.B) {
			dst := image.NewRGBA(image.Rect(0, 0, 320, 240))
			for b.Loop() {
				scaler.Scale(dst, dst.Bounds(), m, m.Bounds(), draw.Src, nil)
			}
		})
	}
	b.Run("thumbnail", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := Thumbnail(src, 320); err != nil {
				b.Fatal(err)
			}
		}
	})
}
