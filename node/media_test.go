package node_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"parley/client"
	"parley/internal/testwait"
	"parley/media"
	"parley/node"
	"parley/wire"
)

// mediaNode is one node with small media limits, and three users: alice
// and bob share a 1:1, carol shares nothing.
type mediaNode struct {
	n                 *node.Node
	base              string
	alice, bob, carol string // tokens
	aliceAcc, bobAcc  account
}

const (
	testMediaMax   = 2 << 20
	testMediaQuota = 3 << 20
)

func newMediaNode(t *testing.T) *mediaNode {
	t.Helper()
	cfg := testConfig(t.TempDir())
	cfg.MediaMaxBytes = testMediaMax
	cfg.MediaQuotaBytes = testMediaQuota
	n := startNodeWith(t, cfg)
	m := &mediaNode{n: n, base: n.HTTPURL()}
	m.aliceAcc, m.bobAcc = register(t, n, "alice"), register(t, n, "bob")
	carol := register(t, n, "carol")
	m.alice, m.bob, m.carol = login(t, n, m.aliceAcc, "a"), login(t, n, m.bobAcc, "b"), login(t, n, carol, "c")
	return m
}

// testPNG is a w x h opaque gradient.
func testPNG(t testing.TB, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// noiseFile is n bytes that sniff as application/octet-stream.
func noiseFile(seed byte, n int) []byte {
	out := make([]byte, n)
	x := uint32(seed) + 1
	for i := range out {
		x = x*1664525 + 1013904223
		out[i] = byte(x >> 24)
	}
	out[0], out[1] = 0, 0xfe // no known signature
	return out
}

// hidden hides the length of a reader, so the upload is chunked.
type hidden struct{ r io.Reader }

func (h hidden) Read(p []byte) (int, error) { return h.r.Read(p) }

func uploadCode(t *testing.T, base, token string, r io.Reader, name string) (*client.Media, int, wire.Code) {
	t.Helper()
	m, err := client.Upload(ctxT(t), base, token, r, name)
	if err == nil {
		return m, http.StatusCreated, ""
	}
	var he *client.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("upload: %v", err)
	}
	return nil, he.Status, he.Err.Code
}

func get(t *testing.T, base, token, path string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+path, nil)
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
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func TestMediaUploadDownload(t *testing.T) {
	m := newMediaNode(t)
	pic := testPNG(t, 800, 600)
	up, code, _ := uploadCode(t, m.base, m.alice, bytes.NewReader(pic), "../holiday\x00 photo.png")
	if code != http.StatusCreated {
		t.Fatalf("upload: HTTP %d", code)
	}
	sum := sha256.Sum256(pic)
	if up.ID != media.ID(sum).String() || up.Mime != "image/png" || up.Size != uint64(len(pic)) ||
		up.Width != 800 || up.Height != 600 || !up.Thumb || up.Index == 0 {
		t.Fatalf("upload reply %+v", up)
	}
	resp, body := get(t, m.base, m.alice, "/v1/media/"+up.ID, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, pic) {
		t.Fatalf("download: HTTP %d, %d bytes", resp.StatusCode, len(body))
	}
	for k, want := range map[string]string{
		"Content-Type":           "image/png",
		"Etag":                   `"` + up.ID + `"`,
		"Cache-Control":          "private, max-age=31536000, immutable",
		"X-Content-Type-Options": "nosniff",
		"Content-Disposition":    `inline; filename="holiday photo.png"`,
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	resp, body = get(t, m.base, m.alice, "/v1/media/"+up.ID+"?thumb=1", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("thumbnail: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if cfg, _, err := image.DecodeConfig(bytes.NewReader(body)); err != nil || cfg.Width != 320 || cfg.Height != 240 {
		t.Fatalf("thumbnail %dx%d, %v", cfg.Width, cfg.Height, err)
	}

	// A file of three chunks, sent chunked (no Content-Length), by the SDK.
	file := noiseFile(1, 2*media.DefaultChunkSize+777)
	f, code, _ := uploadCode(t, m.base, m.alice, hidden{bytes.NewReader(file)}, "data.bin")
	if code != http.StatusCreated || f.Mime != "application/octet-stream" || f.Width != 0 || f.Thumb {
		t.Fatalf("upload: HTTP %d %+v", code, f)
	}
	dl, err := client.Download(ctxT(t), m.base, m.alice, f.ID, client.DownloadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(dl.Body)
	dl.Body.Close()
	if !bytes.Equal(got, file) || dl.Header.Get("Content-Disposition") != `attachment; filename=data.bin` {
		t.Fatalf("download: %d bytes, disposition %q", len(got), dl.Header.Get("Content-Disposition"))
	}
	if _, err := client.Download(ctxT(t), m.base, m.alice, f.ID, client.DownloadOptions{Thumb: true}); !isCode(err, wire.CodeNotFound) {
		t.Fatalf("thumbnail of a non-image: %v", err)
	}

	// Ranges and validators.
	id := "/v1/media/" + f.ID
	for _, c := range []struct {
		name, rng string
		status    int
		want      []byte
	}{
		{"single", "bytes=10-19", http.StatusPartialContent, file[10:20]},
		{"across chunks", fmt.Sprintf("bytes=%d-%d", media.DefaultChunkSize-3, media.DefaultChunkSize+3), http.StatusPartialContent,
			file[media.DefaultChunkSize-3 : media.DefaultChunkSize+4]},
		{"suffix", "bytes=-5", http.StatusPartialContent, file[len(file)-5:]},
		{"open end", fmt.Sprintf("bytes=%d-", len(file)-3), http.StatusPartialContent, file[len(file)-3:]},
		{"unsatisfiable", fmt.Sprintf("bytes=%d-", len(file)), http.StatusRequestedRangeNotSatisfiable, nil},
	} {
		resp, body := get(t, m.base, m.alice, id, map[string]string{"Range": c.rng})
		if resp.StatusCode != c.status || (c.want != nil && !bytes.Equal(body, c.want)) {
			t.Errorf("%s: HTTP %d, %d bytes", c.name, resp.StatusCode, len(body))
		}
	}
	etag := `"` + f.ID + `"`
	if resp, _ := get(t, m.base, m.alice, id, map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: HTTP %d", resp.StatusCode)
	}
	if resp, body := get(t, m.base, m.alice, id, map[string]string{"If-Range": etag, "Range": "bytes=0-0"}); resp.StatusCode != http.StatusPartialContent || len(body) != 1 {
		t.Errorf("If-Range, same: HTTP %d", resp.StatusCode)
	}
	if resp, body := get(t, m.base, m.alice, id, map[string]string{"If-Range": `"other"`, "Range": "bytes=0-0"}); resp.StatusCode != http.StatusOK || len(body) != len(file) {
		t.Errorf("If-Range, changed: HTTP %d", resp.StatusCode)
	}
	many := "bytes=" + strings.Repeat("0-0,", media.MaxRanges) + "0-0"
	if resp, body := get(t, m.base, m.alice, id, map[string]string{"Range": many}); resp.StatusCode != http.StatusOK || len(body) != len(file) {
		t.Errorf("too many ranges: HTTP %d", resp.StatusCode)
	}

	// Nobody else sees it, and cannot tell it from a missing file.
	var unknown media.ID
	unknown[0] = 1
	for _, c := range []struct{ name, token, id string }{{"bob", m.bob, f.ID}, {"carol", m.carol, f.ID}, {"unknown id", m.alice, unknown.String()}} {
		resp, body := get(t, m.base, c.token, "/v1/media/"+c.id, nil)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
			t.Errorf("%s: HTTP %d %s", c.name, resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, m.base, "", id, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: HTTP %d", resp.StatusCode)
	}
	if resp, _ := get(t, m.base, m.alice, "/v1/media/NOT-AN-ID", nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed id: HTTP %d", resp.StatusCode)
	}

	// The same bytes from bob: the same object, now his too.
	again, code, _ := uploadCode(t, m.base, m.bob, bytes.NewReader(file), "mine.bin")
	if code != http.StatusCreated || again.ID != f.ID {
		t.Fatalf("duplicate upload: HTTP %d %+v", code, again)
	}
	if resp, body := get(t, m.base, m.bob, id, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, file) {
		t.Fatalf("owner by duplicate: HTTP %d", resp.StatusCode)
	}
}

func TestMediaAttachments(t *testing.T) {
	m := newMediaNode(t)
	pic := testPNG(t, 64, 48)
	up, code, _ := uploadCode(t, m.base, m.alice, bytes.NewReader(pic), "cat.png")
	if code != http.StatusCreated {
		t.Fatalf("upload: HTTP %d", code)
	}
	ca := dial(t, []string{m.n.WSURL()}, m.alice, 0)
	cb := dial(t, []string{m.n.WSURL()}, m.bob, 0)
	cc := dial(t, []string{m.n.WSURL()}, m.carol, 0)
	ctx := ctxT(t)
	dm, err := ca.OpenDirect(ctx, m.bobAcc.user)
	if err != nil {
		t.Fatal(err)
	}
	// Carol cannot attach alice's file anywhere.
	carolsDM, err := cc.OpenDirect(ctx, m.aliceAcc.user)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.SendAttachments(ctx, carolsDM.ID, "", []wire.Attachment{{ID: up.ID}}); !isCode(err, wire.CodeNotFound) {
		t.Fatalf("carol attaches alice's file: %v", err)
	}
	if _, err := ca.SendAttachments(ctx, dm.ID, "", []wire.Attachment{{ID: "nope"}}); !isCode(err, wire.CodeInvalid) {
		t.Fatalf("malformed id: %v", err)
	}
	eleven := make([]wire.Attachment, wire.MaxAttachments+1)
	for i := range eleven {
		eleven[i].ID = up.ID
	}
	if _, err := ca.SendAttachments(ctx, dm.ID, "x", eleven); !isCode(err, wire.CodeTooLarge) {
		t.Fatalf("11 attachments: %v", err)
	}
	rep, err := ca.SendAttachments(ctx, dm.ID, "look", []wire.Attachment{{ID: up.ID, Name: "kitty.png"}})
	if err != nil {
		t.Fatal(err)
	}
	want := wire.Attachment{ID: up.ID, Name: "kitty.png", Mime: "image/png", Size: uint64(len(pic)), Width: 64, Height: 48, Thumb: true}
	evs := collect(t, cb, "bob gets the message", func(evs []wire.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Seq == rep.Seq
	})
	if ev := evs[len(evs)-1]; len(ev.Att) != 1 || ev.Att[0] != want || ev.Body != "look" {
		t.Fatalf("event %+v", ev)
	}
	hist, _, err := cb.History(ctx, dm.ID, wire.DirBefore, 0, 10)
	if err != nil || len(hist) == 0 || len(hist[0].Att) != 1 || hist[0].Att[0] != want {
		t.Fatalf("history %+v %v", hist, err)
	}
	// Bob may download it now; carol still may not.
	if resp, body := get(t, m.base, m.bob, "/v1/media/"+up.ID, nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, pic) {
		t.Fatalf("bob: HTTP %d", resp.StatusCode)
	}
	if resp, _ := get(t, m.base, m.carol, "/v1/media/"+up.ID, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("carol: HTTP %d", resp.StatusCode)
	}
	// Bob forwards it to a group with carol: then she may.
	g, err := cb.CreateGroup(ctx, "g", []uint64{3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cb.SendAttachments(ctx, g.ID, "", []wire.Attachment{{ID: up.ID}}); err != nil {
		t.Fatalf("forward: %v", err)
	}
	if resp, _ := get(t, m.base, m.carol, "/v1/media/"+up.ID, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("carol after the forward: HTTP %d", resp.StatusCode)
	}
}

// pngBomb is a PNG header claiming 100000 x 100000 pixels (40 GB as RGBA).
func pngBomb() []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, 100000)
	ihdr = binary.BigEndian.AppendUint32(ihdr, 100000)
	ihdr = append(ihdr, 8, 6, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b = append(b, chunk...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
	b = append(b, 0, 0, 0x10, 0, 'I', 'D', 'A', 'T', 0x78, 0x9c)
	return append(b, make([]byte, 600<<10)...)
}

func TestMediaRefusals(t *testing.T) {
	m := newMediaNode(t)
	for _, c := range []struct {
		name   string
		body   io.Reader
		status int
		code   wire.Code
	}{
		{"over the size limit", bytes.NewReader(noiseFile(2, testMediaMax+1)), http.StatusRequestEntityTooLarge, wire.CodeTooLarge},
		{"over the size limit, chunked", hidden{bytes.NewReader(noiseFile(3, testMediaMax+1))}, http.StatusRequestEntityTooLarge, wire.CodeTooLarge},
		{"html", strings.NewReader("<!DOCTYPE html><html><script>alert(1)</script></html>"), http.StatusUnsupportedMediaType, wire.CodeUnsupportedType},
		{"svg", strings.NewReader(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>`), http.StatusUnsupportedMediaType, wire.CodeUnsupportedType},
		{"bomb", bytes.NewReader(pngBomb()), http.StatusUnprocessableEntity, wire.CodeImageTooLarge},
		{"empty", strings.NewReader(""), http.StatusBadRequest, wire.CodeInvalid},
	} {
		if _, status, code := uploadCode(t, m.base, m.alice, c.body, "x"); status != c.status || code != c.code {
			t.Errorf("%s: HTTP %d %s, want %d %s", c.name, status, code, c.status, c.code)
		}
	}
	// Quota: 3 MiB each; two files of 1.5 MiB fit, a third does not
	// (announced by its length or not).
	for i := range 2 {
		if _, status, _ := uploadCode(t, m.base, m.alice, bytes.NewReader(noiseFile(byte(10+i), 3<<19)), "f"); status != http.StatusCreated {
			t.Fatalf("file %d: HTTP %d", i, status)
		}
	}
	if _, status, code := uploadCode(t, m.base, m.alice, bytes.NewReader(noiseFile(20, 1<<20)), "f"); status != http.StatusRequestEntityTooLarge || code != wire.CodeQuotaExceeded {
		t.Errorf("over quota: HTTP %d %s", status, code)
	}
	if _, status, code := uploadCode(t, m.base, m.alice, hidden{bytes.NewReader(noiseFile(21, 1<<20))}, "f"); status != http.StatusRequestEntityTooLarge || code != wire.CodeQuotaExceeded {
		t.Errorf("over quota, chunked: HTTP %d %s", status, code)
	}
	// Bob has his own quota.
	if _, status, _ := uploadCode(t, m.base, m.bob, bytes.NewReader(noiseFile(22, 1<<20)), "f"); status != http.StatusCreated {
		t.Errorf("bob: HTTP %d", status)
	}
	// Tokens are checked.
	if _, status, code := uploadCode(t, m.base, "garbage", strings.NewReader("hello"), "f"); status != http.StatusUnauthorized || code != wire.CodeUnauthorized {
		t.Errorf("bad token: HTTP %d %s", status, code)
	}
	// The accounts API keeps its 4 KiB body cap.
	big := map[string]string{"username": "dave", "password": strings.Repeat("p", 5000)}
	if status := postJSON(t, m.base+"/v1/register", big, nil); status != http.StatusRequestEntityTooLarge {
		t.Errorf("a 5 KB register: HTTP %d", status)
	}
}

// TestMediaExpiry: the leader collects a file no message carries once the
// grace period is over, and keeps one a message carries.
func TestMediaExpiry(t *testing.T) {
	clk := &fakeClock{now: time.Now()}
	cfg := testConfig(t.TempDir())
	cfg.Clock = clk.Now
	cfg.SignalTick = 5 * time.Millisecond
	cfg.MediaGrace = 24 * time.Hour
	cfg.MediaExpireEvery = time.Millisecond
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	tok := login(t, n, alice, "a")
	ca := dial(t, []string{n.WSURL()}, tok, 0)
	ctx := ctxT(t)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	base := n.HTTPURL()
	kept, _, _ := uploadCode(t, base, tok, bytes.NewReader(noiseFile(1, 1000)), "kept")
	lost, _, _ := uploadCode(t, base, tok, bytes.NewReader(noiseFile(2, 1000)), "lost")
	if kept == nil || lost == nil {
		t.Fatal("uploads failed")
	}
	sent, err := ca.SendAttachments(ctx, dm.ID, "", []wire.Attachment{{ID: kept.ID}})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour) // within the grace period: both stay
	if resp, _ := get(t, base, tok, "/v1/media/"+lost.ID, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("collected within the grace period: HTTP %d", resp.StatusCode)
	}
	clk.Advance(24 * time.Hour)
	testwait.Eventually(t, "the unreferenced file to go", func() bool {
		resp, _ := get(t, base, tok, "/v1/media/"+lost.ID, nil)
		return resp.StatusCode == http.StatusNotFound
	})
	if resp, _ := get(t, base, tok, "/v1/media/"+kept.ID, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("a file a message carries: HTTP %d", resp.StatusCode)
	}

	// Deleting the last message that carries it frees it. (That the grace
	// period counts from the deletion is engine.TestMediaExpiry's: here
	// the entries' time is the real clock, the sweep's the fake one.)
	if _, err := ca.DeleteMessage(ctx, dm.ID, sent.Seq); err != nil {
		t.Fatal(err)
	}
	clk.Advance(25 * time.Hour)
	testwait.Eventually(t, "the file of the deleted message to go", func() bool {
		resp, _ := get(t, base, tok, "/v1/media/"+kept.ID, nil)
		return resp.StatusCode == http.StatusNotFound
	})
}

// trigger calls f once the reader has given after bytes.
type trigger struct {
	r     io.Reader
	n     int
	after int
	f     func()
}

func (tr *trigger) Read(p []byte) (int, error) {
	if tr.f != nil && tr.n >= tr.after {
		tr.f()
		tr.f = nil
	}
	k, err := tr.r.Read(p[:min(len(p), 32<<10)])
	tr.n += k
	return k, err
}

// TestMediaUploadStorageFull: a disk that fills during an upload fails it
// with 503 storage_full and Retry-After, and leaves no file behind; once
// space is back the same upload succeeds.
func TestMediaUploadStorageFull(t *testing.T) {
	var free atomic.Uint64
	free.Store(plenty)
	n := startNodeWith(t, storageConfig(t.TempDir(), &free))
	alice := register(t, n, "alice")
	tok := login(t, n, alice, "a")
	file := noiseFile(5, 6*media.DefaultChunkSize)
	id := media.ID(sha256.Sum256(file)).String()
	body := &trigger{r: bytes.NewReader(file), after: 2 * media.DefaultChunkSize, f: func() {
		free.Store(testMinFree - 1)
		n.CheckStorageForTest()
	}}
	_, err := client.Upload(ctxT(t), n.HTTPURL(), tok, hidden{body}, "f")
	var he *client.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || he.Err.Code != wire.CodeStorageFull || he.RetryAfter == 0 {
		t.Fatalf("upload onto a full disk: %v", err)
	}
	free.Store(plenty)
	n.CheckStorageForTest()
	if resp, _ := get(t, n.HTTPURL(), tok, "/v1/media/"+id, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a failed upload is visible: HTTP %d", resp.StatusCode)
	}
	if m, status, _ := uploadCode(t, n.HTTPURL(), tok, bytes.NewReader(file), "f"); status != http.StatusCreated || m.ID != id {
		t.Fatalf("upload once space is back: HTTP %d", status)
	}
}
