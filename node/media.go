package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"parley/engine"
	"parley/media"
	"parley/wire"
)

// Media attachments over HTTP (docs/PROTOCOL.md, section Media).
//
// POST /v1/media streams a file in: its type is sniffed from its first
// bytes, images are probed (bombs refused) and thumbnailed, and the bytes
// are cut into chunks that go through Raft one by one (OpMediaChunk), then
// an OpMediaCommit names the object by its SHA-256. Nothing is held whole
// in memory except an image small enough to thumbnail
// (mediaThumbSourceMax). GET /v1/media/{id} serves a file from the local
// replica with http.ServeContent (ranges, ETag) to its owners and to the
// members of a conversation where a message carries it.
//
// These routes have their own time limits: the server's read timeout
// (HTTPReadTimeout) and the 4 KiB body cap of the accounts API would cut
// any real file short, so a media request moves its connection's read or
// write deadline forward as long as bytes keep flowing (mediaIdle
// between reads or writes), up to mediaMaxDuration in all.

const (
	// mediaIdle is how long an upload or download may stall.
	mediaIdle = 30 * time.Second
	// mediaMaxDuration bounds one media request however it trickles.
	mediaMaxDuration = 2 * time.Hour
	// mediaThumbSourceMax: an image up to this size is kept in memory to
	// be thumbnailed; a larger one is stored without a thumbnail (its
	// dimensions are still probed).
	mediaThumbSourceMax = 32 << 20
	// mediaImageBudget bounds the bytes of images all uploads together
	// keep in memory for thumbnails (beyond the first mediaProbeAt bytes
	// of each); an image that finds it spent is stored without one.
	mediaImageBudget = 256 << 20
	// mediaThumbSlots bounds the thumbnails decoded at once: decoding
	// holds the whole picture (media.Limits).
	mediaThumbSlots = 2
	// mediaNameMax bounds a file name (engine.MaxAttachmentNameBytes).
	mediaNameMax = engine.MaxAttachmentNameBytes
	// mediaProbeAt: an image is probed once this much of it has arrived
	// (or it ended), before any of it is proposed, so that a bomb costs
	// no Raft entry. A header further in is probed at the end.
	mediaProbeAt = media.DefaultChunkSize
	// mediaChunksInFlight bounds an upload's chunks proposed and not yet
	// applied here (memory: this many chunks per upload).
	mediaChunksInFlight = 8
)

// mediaUploads is what all uploads share: it bounds the memory and CPU
// their thumbnails take (the HTTP API holds it).
type mediaUploads struct {
	thumbs     chan struct{} // thumbnail slots
	imageBytes atomic.Int64  // bytes of images kept for thumbnails, all uploads (mediaImageBudget)
}

// mediaSweep is the leader's sweep of expired media (expireMedia), held by
// the node; next is owned by the signal loop.
type mediaSweep struct {
	next     time.Time
	inflight atomic.Bool
}

func (a *httpAPI) mediaRoutes(mux *http.ServeMux) {
	a.uploads.thumbs = make(chan struct{}, mediaThumbSlots)
	mux.HandleFunc("POST /v1/media", a.handleMediaUpload)
	mux.HandleFunc("GET /v1/media/{id}", a.handleMediaGet)
}

// isMediaUpload reports whether r is an upload, whose body is bounded by
// the media size limit rather than the accounts API's.
func isMediaUpload(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == "/v1/media"
}

// bearer authenticates an HTTP request by its device token, as the
// WebSocket handshake does; it answers 401 or 503 itself.
func (a *httpAPI) bearer(w http.ResponseWriter, r *http.Request) (user, device uint64, ok bool) {
	if !a.tokens.hasKey() {
		writeRetry(w, http.StatusServiceUnavailable, wire.CodeUnavailable, errNoSigningKey.Error(), time.Second)
		return 0, 0, false
	}
	scheme, tok, found := strings.Cut(r.Header.Get("Authorization"), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "authorization must be a Bearer device token")
		return 0, 0, false
	}
	user, device, _, err := a.tokens.verify(strings.TrimSpace(tok))
	if err != nil {
		writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "invalid or expired token")
		return 0, 0, false
	}
	switch a.engine.DeviceStatus(user, device) {
	case engine.DeviceIsRevoked:
		writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "unknown or revoked device")
		return 0, 0, false
	case engine.DeviceNotYet:
		writeRetry(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "device not replicated to this node yet, retry", time.Second)
		return 0, 0, false
	}
	return user, device, true
}

// deadlines moves a media request's connection deadlines forward while
// bytes flow; see the package comment above.
type deadlines struct {
	rc    *http.ResponseController
	end   time.Time // mediaMaxDuration after the start
	last  time.Time // when the deadline was last moved
	write bool
}

func newDeadlines(w http.ResponseWriter, write bool) *deadlines {
	d := &deadlines{rc: http.NewResponseController(w), end: time.Now().Add(mediaMaxDuration), write: write}
	d.touch()
	return d
}

// touch moves the deadline to mediaIdle from now (at most once a second).
func (d *deadlines) touch() {
	now := time.Now()
	if now.Sub(d.last) < time.Second {
		return
	}
	d.last = now
	t := now.Add(mediaIdle)
	if t.After(d.end) {
		t = d.end
	}
	if d.write {
		_ = d.rc.SetWriteDeadline(t)
	} else {
		_ = d.rc.SetReadDeadline(t)
		// The reply comes after the whole body: the server's write
		// deadline, set when the request arrived, must not cut it off.
		_ = d.rc.SetWriteDeadline(t.Add(mediaIdle))
	}
}

// progressReader reads the upload, moving the read deadline.
type progressReader struct {
	r io.Reader
	d *deadlines
}

func (p *progressReader) Read(b []byte) (int, error) {
	p.d.touch()
	return p.r.Read(b)
}

// uploadError is a refusal of an upload: the status, code and message.
type uploadError struct {
	status int
	code   wire.Code
	msg    string
	retry  time.Duration // > 0: a Retry-After
}

func (e *uploadError) Error() string { return string(e.code) + ": " + e.msg }

func (e *uploadError) write(w http.ResponseWriter) {
	if e.retry > 0 {
		writeRetry(w, e.status, e.code, e.msg, e.retry)
		return
	}
	writeError(w, e.status, e.code, e.msg)
}

// uploadWireError is a refused proposal as an upload error.
func uploadWireError(e *wire.Error) *uploadError {
	ue := &uploadError{status: http.StatusInternalServerError, code: e.Code, msg: e.Message}
	switch e.Code {
	case wire.CodeQuotaExceeded, wire.CodeTooLarge:
		ue.status = http.StatusRequestEntityTooLarge
	case wire.CodeInvalid:
		ue.status = http.StatusBadRequest
	case wire.CodeNotFound, wire.CodeConflict:
		// The upload vanished (collected, or an id clash): start again.
		ue.status, ue.code, ue.retry = http.StatusServiceUnavailable, wire.CodeUnavailable, time.Second
	case wire.CodeBusy, wire.CodeUnavailable, wire.CodeTimeout:
		ue.status, ue.retry = http.StatusServiceUnavailable, time.Second
	case wire.CodeStorageFull:
		ue.status, ue.retry = http.StatusServiceUnavailable, storageRetryAfter
	}
	return ue
}

func tooLargeUpload(limit int64) *uploadError {
	return &uploadError{status: http.StatusRequestEntityTooLarge, code: wire.CodeTooLarge, msg: fmt.Sprintf("file over %d bytes", limit)}
}

// upload is one upload in progress.
type upload struct {
	api    *httpAPI
	ctx    context.Context
	user   uint64
	id     uint64 // the upload id, random
	quota  uint64
	chunks int // chunks proposed

	head     []byte // the first bytes, for Sniff
	mimeType string
	kind     media.Kind
	img      []byte // an image's bytes, while under mediaThumbSourceMax; nil otherwise
	imgOver  bool   // the image outgrew mediaThumbSourceMax or the node's budget
	reserved int64  // of mediaUploads.imageBytes, for img
	probed   *media.Image
	chunker  *media.Chunker

	window  chan struct{}  // chunks in flight
	pending sync.WaitGroup // their callbacks
	mu      sync.Mutex     // guards refusal
	refusal *uploadError   // the first failure of a chunk (or the probe)
}

func newUploadID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := binary.BigEndian.Uint64(b[:]) >> 1; id != 0 {
			return id
		}
	}
}

func (a *httpAPI) handleMediaUpload(w http.ResponseWriter, r *http.Request) {
	user, _, ok := a.bearer(w, r)
	if !ok {
		return
	}
	limit := a.cfg.MediaMaxBytes
	if r.ContentLength > limit {
		w.Header().Set("Connection", "close")
		tooLargeUpload(limit).write(w)
		return
	}
	if a.storage.isFull() {
		writeWireError(w, wire.Errorf(wire.CodeStorageFull, "the disk of this node is nearly full; retry later"))
		return
	}
	var quota uint64
	if a.cfg.MediaQuotaBytes > 0 {
		quota = uint64(a.cfg.MediaQuotaBytes)
		if used := a.engine.MediaUsage(user); r.ContentLength > 0 && used+uint64(r.ContentLength) > quota {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, wire.CodeQuotaExceeded,
				fmt.Sprintf("storage quota of %d bytes: %d used", quota, used))
			return
		}
	}
	up := &upload{api: a, ctx: r.Context(), user: user, id: newUploadID(), quota: quota,
		window: make(chan struct{}, mediaChunksInFlight)}
	res, uerr := up.run(&progressReader{r: r.Body, d: newDeadlines(w, false)}, limit, sanitizeFileName(r.URL.Query().Get("name")))
	up.pending.Wait() // a failed upload may have chunks in flight
	up.release()
	if uerr != nil && up.chunks > 0 {
		up.abandon()
	}
	if uerr != nil {
		// The body may be unread. The answer goes first, then up to
		// mediaDrainMax of the rest is read and dropped, so that a client
		// still sending reads the answer (closing on unread bytes resets
		// the connection, and the client would see only the reset); beyond
		// that the connection closes.
		rc := http.NewResponseController(w)
		_ = rc.EnableFullDuplex()
		w.Header().Set("Connection", "close")
		uerr.write(w)
		_ = rc.Flush()
		_ = rc.SetReadDeadline(time.Now().Add(mediaDrainTime))
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, mediaDrainMax))
		return
	}
	writeJSON(w, http.StatusCreated, res)
}

// After a refused upload, at most mediaDrainMax more bytes of its body
// are read, for at most mediaDrainTime, before the connection closes.
const (
	mediaDrainMax  = 8 << 20
	mediaDrainTime = 5 * time.Second
)

// mediaReply is the answer to an upload.
type mediaReply struct {
	ID     string `json:"id"`
	Mime   string `json:"mime"`
	Size   uint64 `json:"size"`
	Width  uint64 `json:"width"`
	Height uint64 `json:"height"`
	Thumb  bool   `json:"thumb"`
	Index  uint64 `json:"idx"`
}

func (up *upload) run(body io.Reader, limit int64, name string) (*mediaReply, *uploadError) {
	up.chunker = media.NewChunker(engine.MediaChunkSize, up.emit)
	buf := make([]byte, 32<<10)
	var total int64
	for {
		k, err := body.Read(buf)
		if k > 0 {
			total += int64(k)
			if total > limit {
				return nil, tooLargeUpload(limit)
			}
			if e := up.take(buf[:k]); e != nil {
				return nil, e
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
				return nil, tooLargeUpload(limit)
			}
			return nil, &uploadError{status: http.StatusBadRequest, code: wire.CodeInvalid, msg: "reading the body: " + err.Error()}
		}
	}
	if total == 0 {
		return nil, &uploadError{status: http.StatusBadRequest, code: wire.CodeInvalid, msg: "empty file"}
	}
	if up.mimeType == "" { // under media.SniffLen bytes
		if e := up.start(); e != nil {
			return nil, e
		}
	}
	if up.kind == media.KindImage && up.probed == nil {
		if e := up.probe(true); e != nil {
			return nil, e
		}
	}
	if err := up.chunker.Close(); err != nil {
		return nil, up.failure(err)
	}
	if e := up.flush(); e != nil {
		return nil, e
	}
	var thumb []byte
	var thumbMime string
	if up.probed != nil && up.img != nil && !up.imgOver {
		thumb, thumbMime = up.thumbnail()
	}
	sum, size := up.chunker.Sum()
	cmd := &engine.Command{Op: engine.OpMediaCommit, User: up.user, Media: &engine.MediaArgs{
		Upload: up.id, Index: uint64(up.chunker.Chunks()), Size: uint64(size), ID: sum[:], Mime: up.mimeType,
		Thumb: thumb, ThumbMime: thumbMime, Name: name,
	}}
	if up.probed != nil {
		cmd.Media.Width, cmd.Media.Height = uint64(up.probed.Width), uint64(up.probed.Height)
	}
	res, werr := up.api.propose(up.ctx, cmd)
	if werr != nil {
		return nil, uploadWireError(werr)
	}
	// A duplicate keeps the stored object's description.
	info, ok := up.api.engine.Media(sum)
	if !ok { // collected already: cannot happen within the grace period
		return nil, &uploadError{status: http.StatusServiceUnavailable, code: wire.CodeUnavailable, msg: "stored file vanished; retry", retry: time.Second}
	}
	return &mediaReply{
		ID: media.ID(sum).String(), Mime: info.Mime, Size: info.Size, Width: info.Width, Height: info.Height,
		Thumb: info.ThumbMime != "", Index: res.Index,
	}, nil
}

// take passes the next bytes of the body on: to the sniffer until it has
// media.SniffLen, to the image buffer, to the chunker.
func (up *upload) take(p []byte) *uploadError {
	if up.mimeType == "" {
		k := min(len(p), media.SniffLen-len(up.head))
		up.head = append(up.head, p[:k]...)
		p = p[k:]
		if len(up.head) < media.SniffLen {
			return nil // held until there is enough to judge
		}
		if e := up.start(); e != nil {
			return e
		}
	}
	if len(p) == 0 {
		return nil
	}
	return up.write(p)
}

// start sniffs the head and passes it on.
func (up *upload) start() *uploadError {
	if e := up.sniff(); e != nil {
		return e
	}
	return up.write(up.head)
}

func (up *upload) write(p []byte) *uploadError {
	if up.kind == media.KindImage && !up.imgOver {
		if !up.keep(len(up.img) + len(p)) {
			up.imgOver = true
			if up.probed == nil {
				// Probe what we have, the header surely among it.
				if e := up.probe(true); e != nil {
					return e
				}
			}
			up.release()
		} else {
			up.img = append(up.img, p...)
		}
	}
	if _, err := up.chunker.Write(p); err != nil {
		return up.failure(err)
	}
	return nil
}

// keep reports whether the image buffer may grow to n bytes: up to
// mediaThumbSourceMax, and beyond its first mediaProbeAt bytes (always
// kept, for the probe) within the node's mediaImageBudget, which it
// reserves.
func (up *upload) keep(n int) bool {
	if n > mediaThumbSourceMax {
		return false
	}
	extra := int64(max(0, n-mediaProbeAt)) - up.reserved
	if extra <= 0 {
		return true
	}
	if up.api.uploads.imageBytes.Add(extra) > mediaImageBudget {
		up.api.uploads.imageBytes.Add(-extra)
		return false
	}
	up.reserved += extra
	return true
}

// release gives the image buffer's reservation back.
func (up *upload) release() {
	up.api.uploads.imageBytes.Add(-up.reserved)
	up.reserved = 0
	up.img = nil
}

// failure is the upload error behind an error of the chunker.
func (up *upload) failure(err error) *uploadError {
	if e := up.inflightFailure(); e != nil {
		return e
	}
	return &uploadError{status: http.StatusInternalServerError, code: wire.CodeInternal, msg: err.Error()}
}

func (up *upload) sniff() *uploadError {
	up.mimeType, up.kind = media.Sniff(up.head)
	if !media.Allowed(up.mimeType) {
		return &uploadError{status: http.StatusUnsupportedMediaType, code: wire.CodeUnsupportedType,
			msg: "files of type " + up.mimeType + " are not accepted"}
	}
	if up.kind == media.KindImage {
		up.img = make([]byte, 0, 64<<10)
	}
	return nil
}

// probe reads the image's dimensions from what has arrived. final: all of
// it, or as much as will be kept; a header not found then is corrupt.
func (up *upload) probe(final bool) *uploadError {
	img, err := media.Probe(bytes.NewReader(up.img))
	switch {
	case err == nil:
		up.probed = &img
	case errors.Is(err, media.ErrImageTooLarge):
		return &uploadError{status: http.StatusUnprocessableEntity, code: wire.CodeImageTooLarge, msg: err.Error()}
	case errors.Is(err, media.ErrUnsupportedImage):
		// heic, avif, bmp: stored as they are, without dimensions.
		up.imgOver = true
		up.release()
	case final:
		return &uploadError{status: http.StatusBadRequest, code: wire.CodeInvalid, msg: "corrupt image: " + err.Error()}
	}
	return nil
}

// emit proposes one chunk, without waiting for it: up to
// mediaChunksInFlight chunks of an upload are in the log's pipeline at
// once (one at a time, a follower would wait for a heartbeat to learn each
// commit). One goroutine submits them, so they land in the log in order
// (raftlog.Submit); should a leader change reorder them, Apply refuses the
// chunk out of order and the upload fails (the client uploads again). The
// first chunk is held back until an image is probed, so that a bomb is
// refused before anything is written.
func (up *upload) emit(index int, chunk []byte) error {
	if up.kind == media.KindImage && up.probed == nil && !up.imgOver && len(up.img) >= mediaProbeAt {
		if e := up.probe(false); e != nil {
			return up.fail(e)
		}
	}
	if e := up.inflightFailure(); e != nil {
		return e
	}
	select {
	case up.window <- struct{}{}:
	case <-up.ctx.Done():
		return up.fail(&uploadError{status: http.StatusBadRequest, code: wire.CodeInvalid, msg: "upload abandoned"})
	}
	if e := up.inflightFailure(); e != nil {
		<-up.window
		return e
	}
	b, err := engine.EncodeCommand(&engine.Command{Op: engine.OpMediaChunk, User: up.user, Media: &engine.MediaArgs{
		Upload: up.id, Index: uint64(index), Data: chunk, Quota: up.quota,
	}})
	if err != nil {
		<-up.window
		return up.fail(&uploadError{status: http.StatusInternalServerError, code: wire.CodeInternal, msg: "encode chunk"})
	}
	up.chunks++ // proposed, whatever comes of it (a timeout may still commit)
	up.pending.Add(1)
	err = up.api.raft.Submit(b, func(result any, _ uint64, err error) {
		defer up.pending.Done()
		defer func() { <-up.window }()
		if err != nil {
			up.fail(uploadWireError(proposeError(err)))
			return
		}
		if res, _ := result.(*engine.Result); res == nil {
			up.fail(&uploadError{status: http.StatusInternalServerError, code: wire.CodeInternal, msg: "no result"})
		} else if res.Err != "" {
			up.fail(uploadWireError(engineError(res.Err, res.Message)))
		}
	})
	if err != nil {
		up.pending.Done()
		<-up.window
		return up.fail(uploadWireError(proposeError(err)))
	}
	return nil
}

// fail records the first failure of the upload's chunks and returns it.
func (up *upload) fail(e *uploadError) *uploadError {
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.refusal == nil {
		up.refusal = e
	}
	return up.refusal
}

func (up *upload) inflightFailure() *uploadError {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.refusal
}

// flush waits for the chunks in flight and reports the first failure.
func (up *upload) flush() *uploadError {
	up.pending.Wait()
	return up.inflightFailure()
}

// abandon collects the chunks an upload that failed has stored, so that
// they stop counting against the quota at once (the sweep would take them
// after the grace period). It waits for the outcome, briefly, so that the
// client's next upload finds its quota back; failing that, the sweep does
// it.
func (up *upload) abandon() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, werr := up.api.propose(ctx, &engine.Command{Op: engine.OpMediaExpire, User: up.user,
		Media: &engine.MediaArgs{Upload: up.id}}); werr != nil {
		up.api.log.Debug("abandoning an upload", "err", werr)
	}
}

// thumbnail makes the thumbnail of a probed image, at most
// engine.MaxThumbBytes (a smaller side is tried once); none on failure.
func (up *upload) thumbnail() ([]byte, string) {
	select {
	case up.api.uploads.thumbs <- struct{}{}:
		defer func() { <-up.api.uploads.thumbs }()
	case <-up.ctx.Done():
		return nil, ""
	}
	for _, side := range []int{up.api.cfg.MediaThumbSide, up.api.cfg.MediaThumbSide / 2} {
		b, img, err := media.Thumbnail(up.img, side)
		if err != nil {
			return nil, ""
		}
		if len(b) <= engine.MaxThumbBytes {
			return b, "image/" + img.Format
		}
	}
	return nil, ""
}

// sanitizeFileName keeps the last path element of a client's file name,
// without control or format characters, invalid UTF-8 or surrounding
// blanks and dots, cut to mediaNameMax bytes on a character boundary.
func sanitizeFileName(s string) string {
	if i := strings.LastIndexAny(s, `/\`); i >= 0 {
		s = s[i+1:]
	}
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '"' {
			continue
		}
		if b.Len()+utf8.RuneLen(r) > mediaNameMax {
			break
		}
		b.WriteRune(r)
	}
	return strings.Trim(b.String(), " .")
}

func (a *httpAPI) handleMediaGet(w http.ResponseWriter, r *http.Request) {
	user, _, ok := a.bearer(w, r)
	if !ok {
		return
	}
	mid, err := media.ParseID(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, "malformed media id")
		return
	}
	ctx, cancel := a.workContext(r)
	defer cancel()
	if !a.httpMinIndex(ctx, w, r) {
		return
	}
	id := [engine.MediaIDLen]byte(mid)
	info, found := a.engine.Media(id)
	allowed := found && a.engine.MediaAllowed(user, id)
	if !allowed && r.Header.Get(MinIndexHeader) == "" {
		// Uploaded or sent through another node a moment ago? The
		// leader's read index settles it, as for a login.
		rctx, cancel := context.WithTimeout(ctx, minIndexWait)
		idx, err := a.raft.ReadIndex(rctx)
		if err != nil || !a.waitApplied(idx, rctx.Done()) {
			cancel()
			writeRetry(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "cannot reach the leader to look the file up; retry", time.Second)
			return
		}
		cancel()
		info, found = a.engine.Media(id)
		allowed = found && a.engine.MediaAllowed(user, id)
	}
	if !allowed {
		// The same answer whether the file exists or not.
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such file")
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Vary", "Authorization")
	text := mid.String()
	if r.URL.Query().Get("thumb") == "1" {
		thumb, ok := a.engine.MediaThumb(id)
		if !ok || info.ThumbMime == "" {
			writeError(w, http.StatusNotFound, wire.CodeNotFound, "no thumbnail")
			return
		}
		h.Set("Content-Type", info.ThumbMime)
		h.Set("ETag", `"`+text+`-thumb"`)
		h.Set("Content-Disposition", "inline")
		http.ServeContent(w, r, "", time.UnixMilli(info.CreatedAt), bytes.NewReader(thumb))
		return
	}
	h.Set("Content-Type", info.Mime)
	h.Set("ETag", `"`+text+`"`)
	h.Set("Content-Disposition", contentDisposition(info.Mime, info.Name))
	if media.TooManyRanges(r.Header.Get("Range")) {
		r.Header.Del("Range")
	}
	dl := newDeadlines(w, true)
	rd := media.NewChunkReader(int64(info.Size), engine.MediaChunkSize, func(i int) ([]byte, error) {
		dl.touch()
		return a.engine.MediaChunk(&info, i)
	})
	http.ServeContent(w, r, "", time.UnixMilli(info.CreatedAt), rd)
}

// contentDisposition is inline for images, audio and video, attachment
// for anything else, with the file name when there is one.
func contentDisposition(mimeType, name string) string {
	disp := "attachment"
	if base, _, err := mime.ParseMediaType(mimeType); err == nil &&
		(strings.HasPrefix(base, "image/") || strings.HasPrefix(base, "audio/") || strings.HasPrefix(base, "video/")) {
		disp = "inline"
	}
	if name == "" {
		return disp
	}
	if v := mime.FormatMediaType(disp, map[string]string{"filename": name}); v != "" {
		return v
	}
	return disp
}

// expireMedia: on the leader, every MediaExpireEvery, an OpMediaExpire
// collects the uploads never committed and the files no message
// references that are older than MediaGrace (a budget of records at a
// time; the engine sweeps them all in such steps). One at a time; runs
// on the signal loop, like expireSends.
func (n *Node) expireMedia(now time.Time) {
	m := &n.mediaSweep
	if n.cfg.MediaExpireEvery == 0 || now.Before(m.next) || !n.raft.IsLeader() || m.inflight.Load() {
		return
	}
	m.next = now.Add(n.cfg.MediaExpireEvery)
	cmd, err := engine.EncodeCommand(&engine.Command{Op: engine.OpMediaExpire, Ts: now.Add(-n.cfg.MediaGrace).UnixMilli()})
	if err != nil {
		n.log.Error("encode media_expire", "err", err)
		return
	}
	m.inflight.Store(true)
	err = n.raft.Submit(cmd, func(result any, _ uint64, err error) {
		m.inflight.Store(false)
		if err != nil {
			n.log.Debug("media_expire", "err", err)
			return
		}
		if res, _ := result.(*engine.Result); res != nil && res.Expired > 0 {
			n.log.Debug("media_expire", "collected", res.Expired)
		}
	})
	if err != nil {
		m.inflight.Store(false)
	}
}

// attachmentRefs are send's attachments as the engine takes them; a
// malformed id is invalid.
func attachmentRefs(atts []wire.Attachment) ([]engine.AttachmentRef, *wire.Error) {
	refs := make([]engine.AttachmentRef, len(atts))
	for i, a := range atts {
		id, err := media.ParseID(a.ID)
		if err != nil {
			return nil, wire.Errorf(wire.CodeInvalid, fmt.Sprintf("att[%d]: malformed media id", i))
		}
		refs[i] = engine.AttachmentRef{ID: id[:], Name: sanitizeFileName(a.Name)}
	}
	return refs, nil
}

// wireAttachments are an event's attachments as clients get them; nil
// when there are none.
func wireAttachments(atts []engine.Attachment) []wire.Attachment {
	if len(atts) == 0 {
		return nil
	}
	out := make([]wire.Attachment, len(atts))
	for i := range atts {
		a := &atts[i]
		out[i] = wire.Attachment{
			ID: media.ID(a.ID).String(), Name: a.Name, Mime: a.Mime, Size: a.Size,
			Width: a.Width, Height: a.Height, Thumb: a.Thumb,
		}
	}
	return out
}
