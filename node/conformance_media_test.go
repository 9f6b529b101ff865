package node_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"parley/wire"
)

// TestConformanceMedia walks docs/PROTOCOL.md section 9 (Media) as
// TestConformance walks the rest: one check per sentence it can check,
// over raw HTTP and a raw WebSocket.
func TestConformanceMedia(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.MediaMaxBytes = 1 << 20
	n := startNodeWith(t, cfg)
	base := n.HTTPURL()
	alice, bob, carol := register(t, n, "alice"), register(t, n, "bob"), register(t, n, "carol")
	ta, tb, tc := login(t, n, alice, "a"), login(t, n, bob, "b"), login(t, n, carol, "c")
	a, _ := dialConn(t, n, ta)
	b, _ := dialConn(t, n, tb)

	post := func(t *testing.T, token, query string, body []byte, hdr map[string]string) (int, map[string]any, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/media"+query, bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m, resp.Header
	}
	pic := testPNG(t, 100, 50)
	var picID string

	t.Run("§9 a request without a token is 401 unauthorized", func(t *testing.T) {
		st, m, _ := post(t, "", "", pic, nil)
		if st != 401 || m["code"] != string(wire.CodeUnauthorized) || m["message"] == "" {
			t.Fatalf("%d %v", st, m)
		}
		if resp, body := get(t, base, "", "/v1/media/"+strings.Repeat("a", 52), nil); resp.StatusCode != 401 || !strings.Contains(string(body), `"unauthorized"`) {
			t.Fatalf("GET: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("§9.1 success: 201 with id, mime, size, width, height, thumb, idx", func(t *testing.T) {
		st, m, _ := post(t, ta, "?name=cat.png", pic, nil)
		if st != 201 {
			t.Fatalf("%d %v", st, m)
		}
		for _, k := range []string{"id", "mime", "size", "width", "height", "thumb", "idx"} {
			if _, ok := m[k]; !ok {
				t.Fatalf("no %q in %v", k, m)
			}
		}
		picID, _ = m["id"].(string)
		if m["mime"] != "image/png" || m["size"] != float64(len(pic)) || m["width"] != float64(100) || m["height"] != float64(50) || m["thumb"] != true {
			t.Fatalf("%v", m)
		}
	})
	t.Run("§9.1 the id is 52 characters of a-z and 2-7", func(t *testing.T) {
		if !regexp.MustCompile(`^[a-z2-7]{52}$`).MatchString(picID) {
			t.Fatalf("id %q", picID)
		}
	})
	t.Run("§9.1 equal bytes have equal ids, whoever uploads them", func(t *testing.T) {
		st, m, _ := post(t, tc, "", pic, nil)
		if st != 201 || m["id"] != picID {
			t.Fatalf("%d %v", st, m)
		}
	})
	t.Run("§9.1 the type comes from the bytes, not the name or Content-Type", func(t *testing.T) {
		st, m, _ := post(t, ta, "?name=notes.txt", pic[:len(pic):len(pic)], map[string]string{"Content-Type": "text/plain"})
		if st != 201 || m["mime"] != "image/png" {
			t.Fatalf("png named .txt: %d %v", st, m)
		}
		st, m, _ = post(t, ta, "?name=cat.png", []byte("just some words, not a picture"), map[string]string{"Content-Type": "image/png"})
		if st != 201 || !strings.HasPrefix(m["mime"].(string), "text/plain") {
			t.Fatalf("text named .png: %d %v", st, m)
		}
	})
	t.Run("§9.1 html and svg are 415 unsupported_type", func(t *testing.T) {
		for _, body := range []string{"<html><body>hi</body></html>", `<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>`} {
			if st, m, _ := post(t, ta, "", []byte(body), nil); st != 415 || m["code"] != string(wire.CodeUnsupportedType) {
				t.Fatalf("%q: %d %v", body, st, m)
			}
		}
	})
	t.Run("§9.1 an image over 40 megapixels is 422 image_too_large", func(t *testing.T) {
		if st, m, _ := post(t, ta, "", pngBomb()[:4096], nil); st != 422 || m["code"] != string(wire.CodeImageTooLarge) {
			t.Fatalf("%d %v", st, m)
		}
	})
	t.Run("§9.1 an empty file is 400 invalid", func(t *testing.T) {
		if st, m, _ := post(t, ta, "", nil, nil); st != 400 || m["code"] != string(wire.CodeInvalid) {
			t.Fatalf("%d %v", st, m)
		}
	})
	t.Run("§9.1 a file over the limit is 413 too_large, before its bytes with Expect: 100-continue", func(t *testing.T) {
		c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST /v1/media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", ta, 2<<20)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 413 || !strings.Contains(string(body), `"too_large"`) {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("§9.1 the name keeps its last path element, without control characters or quotes", func(t *testing.T) {
		file := []byte("%PDF-1.4 a document")
		st, m, _ := post(t, ta, "?name="+url.QueryEscape("..\\dir/ \"re\x01port\".pdf "), file, nil)
		if st != 201 {
			t.Fatalf("%d %v", st, m)
		}
		resp, _ := get(t, base, ta, "/v1/media/"+m["id"].(string), nil)
		if d := resp.Header.Get("Content-Disposition"); d != `attachment; filename=report.pdf` {
			t.Fatalf("Content-Disposition %q", d)
		}
	})

	// §9.2 Attachments.
	dm := a.do(t, map[string]any{"t": "dm.open", "user": bob.user})
	wantOK(t, "dm.open", dm)
	conv := dm.Info.ID
	t.Run("§9.2 with att, body may be empty; the event carries id, name, mime, size, w, h, thumb", func(t *testing.T) {
		rep := a.do(t, map[string]any{"t": "send", "conv": conv, "cmid": "m1", "att": []map[string]any{{"id": picID, "name": "kitty.png"}}})
		wantOK(t, "send", rep)
		raw := b.frame(t, func(f []byte, typ string) bool {
			var ev wire.Event
			return typ == wire.TypeEvent && wire.Unmarshal(f, &ev) == nil && ev.Seq == rep.Seq
		})
		atts, _ := generic(t, raw)["att"].([]any)
		if len(atts) != 1 {
			t.Fatalf("att %v", generic(t, raw))
		}
		att := atts[0].(map[string]any)
		for _, k := range []string{"id", "name", "mime", "size", "w", "h", "thumb"} {
			if _, ok := att[k]; !ok {
				t.Fatalf("no %q in %v", k, att)
			}
		}
		if att["id"] != picID || att["name"] != "kitty.png" || att["mime"] != "image/png" {
			t.Fatalf("%v", att)
		}
	})
	t.Run("§9.2 history carries att too", func(t *testing.T) {
		rep := b.do(t, map[string]any{"t": "history", "conv": conv})
		wantOK(t, "history", rep)
		if len(rep.Events) == 0 || len(rep.Events[0].Att) != 1 || rep.Events[0].Att[0].ID != picID {
			t.Fatalf("%+v", rep.Events)
		}
	})
	t.Run("§9.2 a file the sender may not use is not_found, like an id no file has", func(t *testing.T) {
		_, m, _ := post(t, tc, "", []byte("carol's own words"), nil)
		carols := m["id"].(string)
		unknown := strings.Repeat("b", 51) + "a"
		for _, id := range []string{carols, unknown} {
			wantCode(t, "send "+id, a.do(t, map[string]any{"t": "send", "conv": conv, "cmid": "x-" + id, "att": []map[string]any{{"id": id}}}), wire.CodeNotFound)
		}
	})
	t.Run("§9.2 a malformed id, the same id twice are invalid", func(t *testing.T) {
		wantCode(t, "malformed", a.do(t, map[string]any{"t": "send", "conv": conv, "cmid": "y1", "att": []map[string]any{{"id": "NOPE"}}}), wire.CodeInvalid)
		wantCode(t, "twice", a.do(t, map[string]any{"t": "send", "conv": conv, "cmid": "y2", "att": []map[string]any{{"id": picID}, {"id": picID}}}), wire.CodeInvalid)
	})
	t.Run("§9.2 over 10 attachments, a name over 255 bytes are too_large", func(t *testing.T) {
		eleven := make([]map[string]any, 11)
		for i := range eleven {
			eleven[i] = map[string]any{"id": picID}
		}
		wantCode(t, "11", a.do(t, map[string]any{"t": "send", "conv": conv, "cmid": "z1", "att": eleven}), wire.CodeTooLarge)
		wantCode(t, "name", a.do(t, map[string]any{"t": "send", "conv": conv, "cmid": "z2", "att": []map[string]any{{"id": picID, "name": strings.Repeat("n", 256)}}}), wire.CodeTooLarge)
	})

	// §9.3 Download.
	t.Run("§9.3 a member of a conversation carrying the file downloads it, with the documented headers", func(t *testing.T) {
		resp, body := get(t, base, tb, "/v1/media/"+picID, nil)
		if resp.StatusCode != 200 || !bytes.Equal(body, pic) {
			t.Fatalf("%d, %d bytes", resp.StatusCode, len(body))
		}
		for k, want := range map[string]string{
			"Content-Type": "image/png", "Etag": `"` + picID + `"`, "Cache-Control": "private, max-age=31536000, immutable",
			"X-Content-Type-Options": "nosniff", "Content-Disposition": `inline; filename=cat.png`,
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s %q, want %q", k, got, want)
			}
		}
	})
	t.Run("§9.3 anyone else gets 404 not_found, exactly as for an unknown id", func(t *testing.T) {
		dave := register(t, n, "dave")
		td := login(t, n, dave, "d")
		r1, b1 := get(t, base, td, "/v1/media/"+picID, nil)
		r2, b2 := get(t, base, td, "/v1/media/"+strings.Repeat("c", 51)+"a", nil)
		var e1, e2 map[string]any
		_ = json.Unmarshal(b1, &e1)
		_ = json.Unmarshal(b2, &e2)
		if r1.StatusCode != 404 || r2.StatusCode != 404 || e1["code"] != "not_found" || e1["code"] != e2["code"] || e1["message"] != e2["message"] {
			t.Fatalf("%d %s / %d %s", r1.StatusCode, b1, r2.StatusCode, b2)
		}
	})
	t.Run("§9.3 a malformed id is 400 invalid", func(t *testing.T) {
		if resp, body := get(t, base, ta, "/v1/media/"+strings.Repeat("A", 52), nil); resp.StatusCode != 400 || !strings.Contains(string(body), `"invalid"`) {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("§9.3 thumb=1 serves the thumbnail, with its own ETag", func(t *testing.T) {
		resp, _ := get(t, base, tb, "/v1/media/"+picID+"?thumb=1", nil)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/jpeg" || resp.Header.Get("Etag") != `"`+picID+`-thumb"` {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
	})
	t.Run("§9.3 Range: one range 206, a suffix 206, unsatisfiable 416", func(t *testing.T) {
		for _, c := range []struct {
			rng    string
			status int
			want   []byte
		}{{"bytes=0-9", 206, pic[:10]}, {"bytes=-4", 206, pic[len(pic)-4:]}, {fmt.Sprintf("bytes=%d-", len(pic)), 416, nil}} {
			resp, body := get(t, base, tb, "/v1/media/"+picID, map[string]string{"Range": c.rng})
			if resp.StatusCode != c.status || (c.want != nil && !bytes.Equal(body, c.want)) {
				t.Fatalf("%s: %d, %d bytes", c.rng, resp.StatusCode, len(body))
			}
		}
	})
	t.Run("§9.3 If-None-Match with the ETag is 304", func(t *testing.T) {
		if resp, _ := get(t, base, tb, "/v1/media/"+picID, map[string]string{"If-None-Match": `"` + picID + `"`}); resp.StatusCode != 304 {
			t.Fatalf("%d", resp.StatusCode)
		}
	})
	t.Run("§9.3 Parley-Min-Index is honoured", func(t *testing.T) {
		if resp, _ := get(t, base, tb, "/v1/media/"+picID, map[string]string{minIndexHeader: "1"}); resp.StatusCode != 200 {
			t.Fatalf("%d", resp.StatusCode)
		}
		if resp, _ := get(t, base, tb, "/v1/media/"+picID, map[string]string{minIndexHeader: "x"}); resp.StatusCode != 400 {
			t.Fatalf("malformed: %d", resp.StatusCode)
		}
	})
	t.Run("§9.3 a user who left the conversation loses access", func(t *testing.T) {
		g := b.do(t, map[string]any{"t": "group.create", "name": "g", "users": []uint64{carol.user}})
		wantOK(t, "group.create", g)
		wantOK(t, "forward", b.do(t, map[string]any{"t": "send", "conv": g.Info.ID, "cmid": "f1", "att": []map[string]any{{"id": picID}}}))
		// Carol owns it too (she uploaded the same bytes): use dave instead.
		dave := register(t, n, "erin")
		td := login(t, n, dave, "e")
		wantOK(t, "add", b.do(t, map[string]any{"t": "group.add", "conv": g.Info.ID, "users": []uint64{dave.user}}))
		if resp, _ := get(t, base, td, "/v1/media/"+picID, nil); resp.StatusCode != 200 {
			t.Fatalf("member: %d", resp.StatusCode)
		}
		d, _ := dialConn(t, n, td)
		wantOK(t, "leave", d.do(t, map[string]any{"t": "group.leave", "conv": g.Info.ID}))
		if resp, _ := get(t, base, td, "/v1/media/"+picID, nil); resp.StatusCode != 404 {
			t.Fatalf("former member: %d", resp.StatusCode)
		}
	})
}

const minIndexHeader = "Parley-Min-Index"
