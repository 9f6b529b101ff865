package media

import (
	"bytes"
	"encoding/binary"
	"mime"
	"net/http"
)

// SniffLen is how many leading bytes Sniff looks at; more are ignored. It
// is the length net/http.DetectContentType considers.
const SniffLen = 512

// Kind is the coarse class of an attachment, for how a client shows it.
type Kind uint8

const (
	KindFile     Kind = iota // anything else: offered as a download
	KindImage                // shown inline; Probe and Thumbnail apply to jpeg, png, gif and webp
	KindVideo                // played inline by clients that can
	KindAudio                // voice notes and music
	KindDocument             // pdf
	KindText                 // plain text (and, refused by Allowed, html and xml)
	KindArchive              // zip and other archives
)

var kindNames = [...]string{"file", "image", "video", "audio", "document", "text", "archive"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Sniff names the content type of an upload from its first bytes (head;
// SniffLen of them are enough, fewer are judged as they are). The name a
// client gives a file and the Content-Type it sends are never consulted:
// a text file called cat.png is text/plain.
//
// It starts from net/http.DetectContentType (the WHATWG sniffing table) and
// adds what that misses: ISO base media files other than mp4 (heic, heif,
// avif, m4a, quicktime, 3gp), FLAC, MPEG audio without an ID3 tag, ADTS
// AAC, AMR, Matroska (which the table calls webm) and the codec inside an
// Ogg file. Unknown bytes are application/octet-stream, a generic file.
func Sniff(head []byte) (mimeType string, kind Kind) {
	if len(head) > SniffLen {
		head = head[:SniffLen]
	}
	if m := sniffExtra(head); m != "" {
		return m, kindOf(m)
	}
	m := http.DetectContentType(head)
	switch m {
	case "application/octet-stream":
		if w := sniffWeak(head); w != "" {
			m = w
		}
	case "application/ogg":
		m = sniffOgg(head)
	case "video/webm":
		// The table matches any EBML header; webm is the Matroska profile
		// whose DocType is "webm".
		if bytes.Contains(head, []byte("matroska")) {
			m = "video/x-matroska"
		}
	}
	return m, kindOf(m)
}

// sniffExtra recognizes, before DetectContentType runs, the types it misses
// or misnames that have a strong signature (a HEIC with an mp4 compatible
// brand would otherwise be video).
func sniffExtra(h []byte) string {
	if m := sniffFtyp(h); m != "" {
		return m
	}
	switch {
	case bytes.HasPrefix(h, []byte("fLaC")):
		return "audio/flac"
	case bytes.HasPrefix(h, []byte("#!AMR")):
		return "audio/amr"
	}
	return ""
}

// sniffWeak recognizes audio whose only signature is a frame header, for
// bytes DetectContentType could not name (so a UTF-16 byte order mark,
// FF FE, stays text).
func sniffWeak(h []byte) string {
	if len(h) < 3 || h[0] != 0xFF || h[1]&0xE0 != 0xE0 {
		return ""
	}
	if h[1]&0x06 == 0 {
		// Layer 00: ADTS, when the 12-bit sync is complete and the
		// sampling frequency index (h[2] bits 5-2) is not reserved.
		if h[1]&0xF0 == 0xF0 && (h[2]>>2)&0x0F < 13 {
			return "audio/aac"
		}
		return ""
	}
	// An MPEG audio frame with no ID3 tag in front: version not reserved
	// (01), bitrate index not 1111, sample rate not 11.
	if (h[1]>>3)&0x03 != 0x01 && h[2]>>4 != 0x0F && (h[2]>>2)&0x03 != 0x03 {
		return "audio/mpeg"
	}
	return ""
}

// ftypBrands maps ISO base media (ISO/IEC 14496-12) brands to types. The
// major brand decides; failing that the first known compatible brand.
var ftypBrands = map[string]string{
	"heic": "image/heic", "heix": "image/heic", "heim": "image/heic", "heis": "image/heic",
	"hevc": "image/heic-sequence", "hevx": "image/heic-sequence",
	"mif1": "image/heif", "msf1": "image/heif-sequence",
	"avif": "image/avif", "avis": "image/avif",
	"M4A ": "audio/mp4", "M4B ": "audio/mp4", "F4A ": "audio/mp4",
	"qt  ": "video/quicktime",
	"3gp4": "video/3gpp", "3gp5": "video/3gpp", "3gp6": "video/3gpp", "3gg6": "video/3gpp",
	"3g2a": "video/3gpp2",
	"isom": "video/mp4", "iso2": "video/mp4", "iso4": "video/mp4", "iso5": "video/mp4", "iso6": "video/mp4",
	"mp41": "video/mp4", "mp42": "video/mp4", "avc1": "video/mp4", "dash": "video/mp4",
	"M4V ": "video/mp4", "M4VH": "video/mp4", "M4VP": "video/mp4", "F4V ": "video/mp4",
}

func sniffFtyp(h []byte) string {
	if len(h) < 12 || !bytes.Equal(h[4:8], []byte("ftyp")) {
		return ""
	}
	if m, ok := ftypBrands[string(h[8:12])]; ok {
		return m
	}
	// Compatible brands follow the minor version (h[12:16]), up to the end
	// of the box or of what we were given.
	end := int(binary.BigEndian.Uint32(h[:4]))
	if end > len(h) {
		end = len(h)
	}
	for i := 16; i+4 <= end; i += 4 {
		if m, ok := ftypBrands[string(h[i:i+4])]; ok {
			return m
		}
	}
	return ""
}

// sniffOgg names an Ogg file by the codec of its first stream, whose
// identification header begins the first page's payload.
func sniffOgg(h []byte) string {
	switch {
	case bytes.Contains(h, []byte("OpusHead")), bytes.Contains(h, []byte("\x01vorbis")),
		bytes.Contains(h, []byte("\x7fFLAC")), bytes.Contains(h, []byte("Speex   ")):
		return "audio/ogg"
	case bytes.Contains(h, []byte("\x80theora")):
		return "video/ogg"
	}
	return "application/ogg"
}

// kindOf classes a media type (parameters ignored).
func kindOf(m string) Kind {
	base := baseType(m)
	switch base {
	case "application/pdf":
		return KindDocument
	case "application/zip", "application/x-gzip", "application/x-rar-compressed", "application/x-7z-compressed":
		return KindArchive
	case "application/ogg":
		return KindAudio
	}
	switch {
	case hasPrefix(base, "image/"):
		return KindImage
	case hasPrefix(base, "video/"):
		return KindVideo
	case hasPrefix(base, "audio/"):
		return KindAudio
	case hasPrefix(base, "text/"):
		return KindText
	}
	return KindFile
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// baseType is m without parameters, lower case; "" if m does not parse.
func baseType(m string) string {
	base, _, err := mime.ParseMediaType(m)
	if err != nil {
		return ""
	}
	return base
}

// allowed is what a chat server accepts as an attachment, by media type
// without parameters. Everything here is inert when served with
// "X-Content-Type-Options: nosniff": no html, xml (svg), javascript or
// postscript, which a browser would run or render as a page of our origin.
var allowed = map[string]bool{
	// images
	"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true,
	"image/heic": true, "image/heic-sequence": true, "image/heif": true, "image/heif-sequence": true,
	"image/avif": true, "image/bmp": true,
	// video
	"video/mp4": true, "video/quicktime": true, "video/webm": true, "video/x-matroska": true,
	"video/3gpp": true, "video/3gpp2": true, "video/ogg": true, "video/avi": true,
	// audio
	"audio/mpeg": true, "audio/mp4": true, "audio/aac": true, "audio/ogg": true, "application/ogg": true,
	"audio/flac": true, "audio/wave": true, "audio/aiff": true, "audio/amr": true,
	// documents, text, archives, generic files
	"application/pdf": true,
	"text/plain":      true,
	"application/zip": true,
	// Anything Sniff cannot name. Served as a download, never inline.
	"application/octet-stream": true,
}

// Allowed reports whether a chat server accepts an attachment of media
// type m, as Sniff returned it (parameters such as charset are ignored).
// It is an allow-list: images, audio, video, pdf, plain text, zip, and
// application/octet-stream for any file Sniff cannot name. It refuses what
// a browser would execute or render as a page (text/html, text/xml and so
// svg, application/postscript, application/wasm) and the rest of what
// DetectContentType names but the list does not (fonts, gzip, rar).
func Allowed(m string) bool {
	return allowed[baseType(m)]
}
