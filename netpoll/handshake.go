package netpoll

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
)

// Request is the client's HTTP upgrade request as Handler.Authorize sees it.
// Browsers cannot set headers on a WebSocket, so credentials may come in the
// query (?token=...) as well as in headers (Authorization: Bearer ...).
type Request struct {
	Path       string
	Query      url.Values
	Header     http.Header // canonical keys, as net/http
	RemoteAddr string
	// LimitKey is Authorize's to set, not the client's: upgrades given the
	// same non-zero key count together against Config.MaxConnectionsPerKey
	// (the node sets the user's id).
	LimitKey uint64
}

// handshakeError is a refused upgrade: an HTTP status, a reason for the
// body, and any extra headers the status calls for.
type handshakeError struct {
	status int
	reason string
	header string // extra header lines, each ending in CRLF
}

const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

var headerEnd = []byte("\r\n\r\n")

// handshakeBuffer accumulates the bytes of an upgrade request that arrive
// in several reads. It owns a pooled buffer only while a request is partial.
type handshakeBuffer struct {
	buf *buffer
}

// feed adds data and, once the request is complete, returns it together
// with the bytes that followed it (pipelined frames). The returned slices
// point into data or into the handshakeBuffer's own buffer, which stays
// valid until release. tooLarge reports a request over limit bytes.
func (hb *handshakeBuffer) feed(data []byte, limit int) (req, rest []byte, done, tooLarge bool) {
	if hb.buf == nil {
		if i := bytes.Index(data, headerEnd); i >= 0 {
			end := i + len(headerEnd)
			return data[:end], data[end:], end <= limit, end > limit
		}
		if len(data) > limit {
			return nil, nil, false, true
		}
		hb.buf = getBuffer(limit)
		hb.buf.b = append(hb.buf.b, data...)
		return nil, nil, false, false
	}
	prev := len(hb.buf.b)
	hb.buf = hb.buf.grow(len(data))
	hb.buf.b = append(hb.buf.b, data...)
	from := max(0, prev-len(headerEnd)+1)
	if i := bytes.Index(hb.buf.b[from:], headerEnd); i >= 0 {
		end := from + i + len(headerEnd)
		return hb.buf.b[:end], hb.buf.b[end:], end <= limit, end > limit
	}
	return nil, nil, false, len(hb.buf.b) > limit
}

func (hb *handshakeBuffer) release() {
	putBuffer(hb.buf)
	hb.buf = nil
}

// parseHandshake validates a complete upgrade request (through the blank
// line) against RFC 6455 section 4.2.1 and returns the request and its
// Sec-WebSocket-Key, or the HTTP refusal to send.
func parseHandshake(raw []byte, path string) (*Request, string, *handshakeError) {
	text := string(raw[:len(raw)-2]) // keep one CRLF after the last header
	line, text, _ := strings.Cut(text, "\r\n")
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || target == "" {
		return nil, "", badRequest("malformed request line")
	}
	major, minor, ok := http.ParseHTTPVersion(proto)
	if !ok || major != 1 || minor < 1 {
		return nil, "", badRequest("HTTP/1.1 required")
	}
	if method != http.MethodGet {
		return nil, "", &handshakeError{status: http.StatusMethodNotAllowed, reason: "only GET upgrades", header: "Allow: GET\r\n"}
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, "", badRequest("malformed request target")
	}
	if u.Path != path {
		return nil, "", &handshakeError{status: http.StatusNotFound, reason: "not found"}
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, "", badRequest("malformed query")
	}

	header := make(http.Header, 8)
	for text != "" {
		var hl string
		hl, text, _ = strings.Cut(text, "\r\n")
		if hl == "" {
			return nil, "", badRequest("malformed header block")
		}
		name, value, ok := strings.Cut(hl, ":")
		if !ok || !validHeaderName(name) {
			return nil, "", badRequest("malformed header line")
		}
		value = strings.Trim(value, " \t")
		if !validHeaderValue(value) {
			return nil, "", badRequest("malformed header value")
		}
		header.Add(textproto.CanonicalMIMEHeaderKey(name), value)
	}

	if len(header.Values("Host")) != 1 {
		return nil, "", badRequest("exactly one Host header required")
	}
	if !hasToken(header.Values("Upgrade"), "websocket") {
		return nil, "", &handshakeError{
			status: http.StatusUpgradeRequired, reason: "websocket upgrade required",
			header: "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
		}
	}
	if !hasToken(header.Values("Connection"), "upgrade") {
		return nil, "", badRequest("Connection header must include upgrade")
	}
	if v := header.Values("Sec-Websocket-Version"); len(v) != 1 || v[0] != "13" {
		return nil, "", &handshakeError{
			status: http.StatusUpgradeRequired, reason: "unsupported websocket version",
			header: "Sec-WebSocket-Version: 13\r\n",
		}
	}
	keys := header.Values("Sec-Websocket-Key")
	if len(keys) != 1 {
		return nil, "", badRequest("exactly one Sec-WebSocket-Key required")
	}
	if k, err := base64.StdEncoding.DecodeString(keys[0]); err != nil || len(k) != 16 {
		return nil, "", badRequest("malformed Sec-WebSocket-Key")
	}
	return &Request{Path: u.Path, Query: query, Header: header}, keys[0], nil
}

func badRequest(reason string) *handshakeError {
	return &handshakeError{status: http.StatusBadRequest, reason: reason}
}

// hasToken reports whether any of the comma-separated header values holds
// token, compared case-insensitively.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.Trim(part, " \t"), token) {
				return true
			}
		}
	}
	return false
}

// validHeaderName reports whether name is an RFC 9110 token (this also
// rejects obsolete line folding, which starts a line with a blank).
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7F || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7F {
			return false
		}
	}
	return true
}

// acceptResponse is the 101 that completes the upgrade.
func acceptResponse(key string) []byte {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(websocketGUID))
	var sum [sha1.Size]byte
	accept := base64.StdEncoding.EncodeToString(h.Sum(sum[:0]))
	b := make([]byte, 0, 160)
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = append(b, accept...)
	return append(b, "\r\n\r\n"...)
}

// refusalResponse is the HTTP response for a refused upgrade; the server
// closes the socket after it. Its body is the JSON error of the HTTP API,
// {"code": "<code>", "message": "<reason>"}, with the code that API uses
// for the status (refusalCode).
func refusalResponse(e *handshakeError) []byte {
	text := http.StatusText(e.status)
	if text == "" {
		text = "Error"
	}
	body := make([]byte, 0, 32+len(e.reason))
	body = append(body, `{"code":"`...)
	body = append(body, refusalCode(e.status)...)
	body = append(body, `","message":`...)
	body = appendJSONString(body, e.reason)
	body = append(body, "}\n"...)
	b := make([]byte, 0, 160+len(e.header)+len(body))
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(e.status), 10)
	b = append(b, ' ')
	b = append(b, text...)
	b = append(b, "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	b = append(b, e.header...)
	b = append(b, "\r\n"...)
	return append(b, body...)
}

// refusalCode is the stable error code (docs/PROTOCOL.md, section 6; the
// strings of package wire, which netpoll does not import) for a refusal's
// HTTP status.
func refusalCode(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusRequestHeaderFieldsTooLarge, http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusForbidden:
		return "forbidden"
	}
	if status >= 500 {
		return "internal"
	}
	return "invalid" // 400, 405, 426: not a valid WebSocket upgrade
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, other bytes as they are.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
