package netpoll

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const testKey = "dGhlIHNhbXBsZSBub25jZQ==" // the RFC 6455 example key

func upgradeRequest(target string, extra ...string) string {
	lines := []string{
		"GET " + target + " HTTP/1.1",
		"Host: example.com",
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: " + testKey,
		"Sec-WebSocket-Version: 13",
	}
	lines = append(lines, extra...)
	return strings.Join(lines, "\r\n") + "\r\n\r\n"
}

// editRequest replaces (or, with value "", removes) a header line.
func editRequest(req, name, value string) string {
	lines := strings.Split(strings.TrimSuffix(req, "\r\n\r\n"), "\r\n")
	out := lines[:1]
	for _, l := range lines[1:] {
		if strings.HasPrefix(strings.ToLower(l), strings.ToLower(name)+":") {
			if value != "" {
				out = append(out, name+": "+value)
			}
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\r\n") + "\r\n\r\n"
}

func TestParseHandshakeAccepts(t *testing.T) {
	raw := upgradeRequest("/v1/ws?token=abc&x=1", "Authorization: Bearer T0K", "X-Multi: a", "x-multi: b")
	req, key, herr := parseHandshake([]byte(raw), "/v1/ws")
	if herr != nil {
		t.Fatalf("refused: %+v", herr)
	}
	if key != testKey || req.Path != "/v1/ws" || req.Query.Get("token") != "abc" || req.Query.Get("x") != "1" {
		t.Fatalf("got key %q path %q query %v", key, req.Path, req.Query)
	}
	if req.Header.Get("Authorization") != "Bearer T0K" || !reflect.DeepEqual(req.Header.Values("X-Multi"), []string{"a", "b"}) {
		t.Fatalf("headers %v", req.Header)
	}
	// RFC 6455 section 1.3 gives the accept value for this key.
	if resp := string(acceptResponse(key)); !strings.Contains(resp, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") ||
		!strings.HasPrefix(resp, "HTTP/1.1 101 ") || !strings.HasSuffix(resp, "\r\n\r\n") {
		t.Fatalf("101 response %q", resp)
	}
}

func TestParseHandshakeTokens(t *testing.T) {
	for _, tc := range []struct{ upgrade, connection string }{
		{"WebSocket", "upgrade"},
		{"websocket", "keep-alive, Upgrade"},
		{"h2c, WEBSOCKET", "Keep-Alive,upgrade"},
		{" websocket ", "\tUpgrade "},
	} {
		raw := editRequest(editRequest(upgradeRequest("/ws"), "Upgrade", tc.upgrade), "Connection", tc.connection)
		if _, _, herr := parseHandshake([]byte(raw), "/ws"); herr != nil {
			t.Errorf("Upgrade %q Connection %q refused: %+v", tc.upgrade, tc.connection, herr)
		}
	}
}

func TestParseHandshakeRefuses(t *testing.T) {
	base := upgradeRequest("/ws")
	tests := []struct {
		name   string
		raw    string
		status int
		header string
	}{
		{"POST", strings.Replace(base, "GET", "POST", 1), 405, "Allow: GET"},
		{"HTTP/1.0", strings.Replace(base, "HTTP/1.1", "HTTP/1.0", 1), 400, ""},
		{"garbage line", "HELLO\r\n\r\n", 400, ""},
		{"wrong path", strings.Replace(base, "/ws", "/other", 1), 404, ""},
		{"path prefix", strings.Replace(base, "/ws", "/ws/x", 1), 404, ""},
		{"no upgrade", editRequest(base, "Upgrade", ""), 426, "Upgrade: websocket"},
		{"upgrade h2c", editRequest(base, "Upgrade", "h2c"), 426, ""},
		{"no connection upgrade", editRequest(base, "Connection", "keep-alive"), 400, ""},
		{"version 12", editRequest(base, "Sec-WebSocket-Version", "12"), 426, "Sec-WebSocket-Version: 13"},
		{"no version", editRequest(base, "Sec-WebSocket-Version", ""), 426, ""},
		{"no key", editRequest(base, "Sec-WebSocket-Key", ""), 400, ""},
		{"short key", editRequest(base, "Sec-WebSocket-Key", base64.StdEncoding.EncodeToString([]byte("short"))), 400, ""},
		{"key not base64", editRequest(base, "Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!=="), 400, ""},
		{"two keys", strings.Replace(base, "\r\n\r\n", "\r\nSec-WebSocket-Key: "+testKey+"\r\n\r\n", 1), 400, ""},
		{"no host", editRequest(base, "Host", ""), 400, ""},
		{"folded header", strings.Replace(base, "\r\n\r\n", "\r\n continued\r\n\r\n", 1), 400, ""},
		{"header without colon", strings.Replace(base, "\r\n\r\n", "\r\nBroken\r\n\r\n", 1), 400, ""},
		{"control char in value", strings.Replace(base, "\r\n\r\n", "\r\nX: a\x00b\r\n\r\n", 1), 400, ""},
		{"bad query", strings.Replace(base, "/ws", "/ws?a=%zz", 1), 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, herr := parseHandshake([]byte(tt.raw), "/ws")
			if herr == nil {
				t.Fatal("accepted")
			}
			if herr.status != tt.status || !strings.Contains(herr.header, tt.header) {
				t.Fatalf("got %d %q (%s), want %d with %q", herr.status, herr.header, herr.reason, tt.status, tt.header)
			}
			resp := string(refusalResponse(herr))
			_, body, _ := strings.Cut(resp, "\r\n\r\n")
			var e struct{ Code, Message string }
			if !strings.HasPrefix(resp, "HTTP/1.1 ") || json.Unmarshal([]byte(body), &e) != nil ||
				e.Code != refusalCode(herr.status) || e.Code == "" || e.Message != herr.reason {
				t.Fatalf("response %q", resp)
			}
		})
	}
}

// feedHandshake feeds input cut at the given offsets and reports what the
// buffer returned on the call that finished (or refused) the request.
type handshakeOutcome struct {
	req, rest      string
	done, tooLarge bool
}

func feedHandshakePieces(input []byte, limit int, cuts ...int) handshakeOutcome {
	var hb handshakeBuffer
	defer hb.release()
	prev := 0
	for _, end := range append(cuts, len(input)) {
		var rest []byte
		req, r, done, tooLarge := hb.feed(input[prev:end], limit)
		prev = end
		if tooLarge {
			return handshakeOutcome{tooLarge: true}
		}
		if done {
			// Bytes after the last cut also follow the request.
			rest = append(append(rest, r...), input[end:]...)
			return handshakeOutcome{req: string(req), rest: string(rest), done: true}
		}
	}
	return handshakeOutcome{}
}

func TestHandshakeBuffer(t *testing.T) {
	req := upgradeRequest("/ws")
	pipelined := string(clientFrame(true, opText, []byte("early")))
	input := []byte(req + pipelined)
	want := handshakeOutcome{req: req, rest: pipelined, done: true}
	for cut := 0; cut <= len(input); cut++ {
		if got := feedHandshakePieces(input, 1024, cut); got != want {
			t.Fatalf("cut at %d: got %+v", cut, got)
		}
	}
	// Over the limit, whether or not the blank line ever comes.
	long := upgradeRequest("/ws", "X-Pad: "+strings.Repeat("p", 2000))
	for _, cut := range []int{0, 10, 900, 1500} {
		if got := feedHandshakePieces([]byte(long), 1024, cut); !got.tooLarge {
			t.Fatalf("cut at %d: oversized request not refused: %+v", cut, got)
		}
		if got := feedHandshakePieces([]byte(long[:1500]), 1024, cut); !got.tooLarge {
			t.Fatalf("cut at %d: unterminated oversized request not refused: %+v", cut, got)
		}
	}
}

// FuzzHandshake checks that the request parser never panics, that
// accumulation does not depend on how reads cut the bytes, and that an
// accepted request satisfies RFC 6455's requirements.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte(upgradeRequest("/ws?token=x", "Authorization: Bearer y")))
	f.Add([]byte(upgradeRequest("/ws") + "\x81\x80abcd"))
	f.Add([]byte("GET /ws HTTP/1.1\r\n\r\n"))
	f.Add([]byte(editRequest(upgradeRequest("/ws"), "Connection", "keep-alive, upgrade")))
	f.Fuzz(func(t *testing.T, input []byte) {
		const limit = 1024
		whole := feedHandshakePieces(input, limit)
		for cut := 0; cut <= len(input); cut += 1 + len(input)/64 {
			if got := feedHandshakePieces(input, limit, cut); got != whole {
				t.Fatalf("cut at %d: got %+v, want %+v", cut, got, whole)
			}
		}
		if !whole.done {
			return
		}
		if !bytes.HasSuffix([]byte(whole.req), headerEnd) || len(whole.req) > limit {
			t.Fatalf("request %q", whole.req)
		}
		req, key, herr := parseHandshake([]byte(whole.req), "/ws")
		if herr != nil {
			if herr.status < 400 || herr.status > 599 {
				t.Fatalf("refusal status %d", herr.status)
			}
			return
		}
		k, err := base64.StdEncoding.DecodeString(key)
		if err != nil || len(k) != 16 || req.Path != "/ws" ||
			!hasToken(req.Header.Values("Upgrade"), "websocket") || !hasToken(req.Header.Values("Connection"), "upgrade") ||
			req.Header.Get("Sec-Websocket-Version") != "13" || !strings.HasPrefix(whole.req, "GET ") {
			t.Fatalf("accepted a request that breaks RFC 6455: %q", whole.req)
		}
	})
}
