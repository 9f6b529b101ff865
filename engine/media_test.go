package engine

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// mediaBed is an engine with three users (1 alice, 2 bob, 3 carol), a
// device each (1, 2, 3) and a 1:1 between alice and bob (conv 1).
type mediaBed struct {
	t     *testing.T
	e     *Engine
	rec   *recorder
	index uint64
	ts    int64
	log   []entry // every entry applied, to replay elsewhere
}

func newMediaBed(t *testing.T, dir string) *mediaBed {
	b := &mediaBed{t: t, e: openEngine(t, dir), rec: &recorder{}, ts: 1_000_000}
	b.e.SetPublisher(b.rec)
	t.Cleanup(func() { b.e.Close() })
	for _, name := range []string{"alice", "bob", "carol"} {
		b.ok(&Command{Op: OpRegister, Username: name, PasswordHash: []byte("h")})
	}
	for u := uint64(1); u <= 3; u++ {
		b.ok(&Command{Op: OpAddDevice, User: u, DeviceName: "d"})
	}
	b.ok(&Command{Op: OpOpenDirect, User: 1, Peer: 2})
	return b
}

// apply applies cmds as one entry, one second after the previous one.
func (b *mediaBed) apply(cmds ...*Command) []*Result {
	b.t.Helper()
	b.index++
	b.ts += 1000
	en := entry{index: b.index, ts: b.ts, cmds: mustEncode(b.t, cmds...)}
	b.log = append(b.log, en)
	return applyEntry(b.t, b.e, en)
}

func (b *mediaBed) ok(c *Command) *Result {
	b.t.Helper()
	r := b.apply(c)[0]
	if r.Err != "" {
		b.t.Fatalf("%v: %s %s", c.Op, r.Err, r.Message)
	}
	return r
}

func (b *mediaBed) fail(c *Command, code ErrCode) {
	b.t.Helper()
	if r := b.apply(c)[0]; r.Err != code {
		b.t.Fatalf("%v: got %q (%s), want %q", c.Op, r.Err, r.Message, code)
	}
}

// fileBytes is n deterministic bytes, different for each seed.
func fileBytes(seed byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(i*7) ^ seed
	}
	return out
}

// chunkCmds cuts data into the chunk commands of an upload.
func chunkCmds(user, upload uint64, data []byte, quota uint64) []*Command {
	var cmds []*Command
	for i := 0; i*MediaChunkSize < len(data); i++ {
		part := data[i*MediaChunkSize : min(len(data), (i+1)*MediaChunkSize)]
		cmds = append(cmds, &Command{Op: OpMediaChunk, User: user, Media: &MediaArgs{
			Upload: upload, Index: uint64(i), Data: bytes.Clone(part), Quota: quota,
		}})
	}
	return cmds
}

func commitCmd(user, upload uint64, data []byte, name string) *Command {
	sum := sha256.Sum256(data)
	return &Command{Op: OpMediaCommit, User: user, Media: &MediaArgs{
		Upload: upload, Index: uint64((len(data) + MediaChunkSize - 1) / MediaChunkSize), Size: uint64(len(data)),
		ID: sum[:], Mime: "application/pdf", Name: name,
	}}
}

// upload stores data for user, a chunk per entry, and commits it.
func (b *mediaBed) upload(user, upload uint64, data []byte, name string) [MediaIDLen]byte {
	b.t.Helper()
	for _, c := range chunkCmds(user, upload, data, 0) {
		b.ok(c)
	}
	b.ok(commitCmd(user, upload, data, name))
	return sha256.Sum256(data)
}

// read reads an object back through the queries.
func (b *mediaBed) read(id [MediaIDLen]byte) []byte {
	b.t.Helper()
	m, ok := b.e.Media(id)
	if !ok {
		b.t.Fatalf("media %x not found", id[:4])
	}
	var out []byte
	for i := range int(m.Chunks) {
		c, err := b.e.MediaChunk(&m, i)
		if err != nil {
			b.t.Fatal(err)
		}
		out = append(out, c...)
	}
	return out
}

func (b *mediaBed) countKeys(prefix byte) int {
	n := 0
	for _, line := range strings.Split(dumpDB(b.t, b.e), "\n") {
		if strings.HasPrefix(line, fmt.Sprintf("%02x", prefix)) {
			n++
		}
	}
	return n
}

func send(user, conv uint64, cmid, body string, ids ...[MediaIDLen]byte) *Command {
	c := &Command{Op: OpSend, User: user, Device: user, Conv: conv, ClientMsgID: cmid, Body: body}
	for _, id := range ids {
		if c.Media == nil {
			c.Media = &MediaArgs{}
		}
		c.Media.Attachments = append(c.Media.Attachments, AttachmentRef{ID: bytes.Clone(id[:]), Name: "f.pdf"})
	}
	return c
}

func TestMediaUploadCommitDedup(t *testing.T) {
	b := newMediaBed(t, t.TempDir())
	data := fileBytes(1, 2*MediaChunkSize+1234)
	id := b.upload(1, 77, data, "report.pdf")
	if got := b.read(id); !bytes.Equal(got, data) {
		t.Fatal("object read back differs")
	}
	m, _ := b.e.Media(id)
	if m.Size != uint64(len(data)) || m.Chunks != 3 || m.Mime != "application/pdf" || m.Name != "report.pdf" || m.Refs != 0 {
		t.Fatalf("media info %+v", m)
	}
	if u := b.e.MediaUsage(1); u != uint64(len(data)) {
		t.Fatalf("alice charged %d, want %d", u, len(data))
	}
	if !b.e.MediaAllowed(1, id) || b.e.MediaAllowed(2, id) || b.e.MediaAllowed(3, id) {
		t.Fatal("only the owner may use a new object")
	}

	// Bob uploads the same bytes: one object, two owners, his chunks dropped.
	chunksBefore := b.countKeys(prefixMediaChunk)
	if id2 := b.upload(2, 88, data, "copy.pdf"); id2 != id {
		t.Fatal("same bytes, another id")
	}
	if n := b.countKeys(prefixMediaChunk); n != chunksBefore {
		t.Fatalf("%d chunk keys after a duplicate upload, want %d", n, chunksBefore)
	}
	if b.countKeys(prefixMediaUpload) != 0 {
		t.Fatal("upload records left after commit")
	}
	if u := b.e.MediaUsage(2); u != uint64(len(data)) || !b.e.MediaAllowed(2, id) {
		t.Fatalf("bob: charged %d, allowed %v", u, b.e.MediaAllowed(2, id))
	}
	if m2, _ := b.e.Media(id); m2.Name != "report.pdf" {
		t.Fatalf("the first uploader's name is kept, got %q", m2.Name)
	}
	// Bob again: no double charge.
	b.upload(2, 89, data, "")
	if u := b.e.MediaUsage(2); u != uint64(len(data)) {
		t.Fatalf("bob charged %d after owning twice", u)
	}

	// Chunks and commit, in the same entry as each other (group commit).
	small := fileBytes(2, MediaChunkSize+10)
	cmds := append(chunkCmds(3, 90, small, 0), commitCmd(3, 90, small, "x"))
	for i, r := range b.apply(cmds...) {
		if r.Err != "" {
			t.Fatalf("command %d: %s", i, r.Message)
		}
	}
	if got := b.read(sha256.Sum256(small)); !bytes.Equal(got, small) {
		t.Fatal("object of one entry differs")
	}
}

func TestMediaChunkRules(t *testing.T) {
	b := newMediaBed(t, t.TempDir())
	data := fileBytes(3, 3*MediaChunkSize)
	cs := chunkCmds(1, 5, data, 0)
	b.fail(cs[1], ErrCodeNotFound) // no chunk 0 yet
	b.ok(cs[0])
	b.ok(cs[0]) // a retry: stored once
	b.fail(cs[2], ErrCodeInvalid)
	other := *cs[1]
	other.User = 2
	b.fail(&other, ErrCodeConflict) // another user's upload id
	b.ok(cs[1])
	short := &Command{Op: OpMediaChunk, User: 1, Media: &MediaArgs{Upload: 5, Index: 2, Data: []byte("x")}}
	b.ok(short)
	b.fail(&Command{Op: OpMediaChunk, User: 1, Media: &MediaArgs{Upload: 5, Index: 3, Data: []byte("y")}}, ErrCodeInvalid)
	b.fail(&Command{Op: OpMediaChunk, User: 1, Media: &MediaArgs{Upload: 6, Data: make([]byte, MediaChunkSize+1)}}, ErrCodeTooLarge)
	b.fail(&Command{Op: OpMediaChunk, User: 1, Media: &MediaArgs{Upload: 6}}, ErrCodeInvalid)
	if u := b.e.MediaUsage(1); u != 2*MediaChunkSize+1 {
		t.Fatalf("charged %d", u)
	}
	// A commit that disagrees with the upload, or of another user's.
	c := commitCmd(1, 5, data, "")
	b.fail(c, ErrCodeInvalid) // 3 full chunks claimed, 2 and a byte stored
	c2 := commitCmd(1, 5, data[:2*MediaChunkSize+1], "")
	c2.User = 2
	b.fail(c2, ErrCodeNotFound)
	c2.User = 1
	c2.Media.Name = string([]byte{0xff})
	b.fail(c2, ErrCodeInvalid)
	c2.Media.Name = ""
	c2.Media.Thumb = make([]byte, MaxThumbBytes+1)
	c2.Media.ThumbMime = "image/jpeg"
	b.fail(c2, ErrCodeTooLarge)
	c2.Media.Thumb = []byte("thumb")
	b.ok(c2)
	id := sha256.Sum256(data[:2*MediaChunkSize+1])
	if th, ok := b.e.MediaThumb(id); !ok || string(th) != "thumb" {
		t.Fatalf("thumb %q %v", th, ok)
	}
}

func TestMediaQuota(t *testing.T) {
	b := newMediaBed(t, t.TempDir())
	quota := uint64(MediaChunkSize + 100)
	data := fileBytes(4, 2*MediaChunkSize)
	cs := chunkCmds(1, 9, data, quota)
	b.ok(cs[0])
	b.fail(cs[1], ErrCodeQuotaExceeded)
	if u := b.e.MediaUsage(1); u != MediaChunkSize {
		t.Fatalf("charged %d after a refused chunk", u)
	}
	// Another user is not affected.
	b.ok(chunkCmds(2, 10, data, quota)[0])
	// Two uploads of one user in one entry count together.
	rs := b.apply(chunkCmds(3, 11, data[:60], 100)[0], chunkCmds(3, 12, data[:60], 100)[0])
	if rs[0].Err != "" || rs[1].Err != ErrCodeQuotaExceeded {
		t.Fatalf("same entry: %q, %q", rs[0].Err, rs[1].Err)
	}
}

func TestMediaAttachmentRights(t *testing.T) {
	b := newMediaBed(t, t.TempDir())
	pdf := fileBytes(5, 1000)
	id := b.upload(1, 1, pdf, "a.pdf")
	carols := b.upload(3, 2, fileBytes(6, 10), "c.pdf")
	var unknown [MediaIDLen]byte
	unknown[0] = 1

	b.fail(send(1, 1, "m0", "hi", unknown), ErrCodeNotFound)
	b.fail(send(1, 1, "m1", "hi", carols), ErrCodeNotFound) // not hers
	b.fail(send(1, 1, "m2", "hi", id, id), ErrCodeInvalid)
	many := make([][MediaIDLen]byte, MaxAttachments+1)
	b.fail(send(1, 1, "m3", "hi", many...), ErrCodeTooLarge)
	b.fail(send(1, 1, "m4", ""), ErrCodeInvalid) // no text, no attachment

	b.rec.take()
	r := b.ok(send(1, 1, "m5", "", id)) // an attachment without text
	evs := b.rec.take()
	if len(evs) != 1 || len(evs[0].Attachments) != 1 {
		t.Fatalf("events %+v", evs)
	}
	want := Attachment{ID: id, Name: "f.pdf", Mime: "application/pdf", Size: uint64(len(pdf))}
	if got := evs[0].Attachments[0]; got != want {
		t.Fatalf("attachment %+v, want %+v", got, want)
	}
	hist, _, code := b.e.History(2, 1, 0, Before, 10, Budget{})
	if code != "" || len(hist) == 0 || hist[0].Seq != r.Seq || len(hist[0].Attachments) != 1 || hist[0].Attachments[0] != want {
		t.Fatalf("history %+v %q", hist, code)
	}
	if m, _ := b.e.Media(id); m.Refs != 1 {
		t.Fatalf("refs %d", m.Refs)
	}
	// Bob is a member of a conversation where it is carried: he may
	// download and forward it; carol may not.
	if !b.e.MediaAllowed(2, id) || b.e.MediaAllowed(3, id) {
		t.Fatal("access after the send")
	}
	b.fail(send(3, 1, "c1", "x", id), ErrCodeNotMember)
	g := b.ok(&Command{Op: OpCreateGroup, User: 2, Name: "g", Members: []uint64{3}})
	b.ok(send(2, g.Conv, "b1", "fwd", id))
	if !b.e.MediaAllowed(3, id) {
		t.Fatal("carol, a member of the group it was forwarded to")
	}
	b.ok(send(3, g.Conv, "c2", "again", id))
	// Leaving the group takes the access away.
	b.ok(&Command{Op: OpLeave, User: 3, Conv: g.Conv})
	if b.e.MediaAllowed(3, id) {
		t.Fatal("a former member keeps access")
	}
	// A send and a forward in one entry: the second sees the first's reference.
	other := b.upload(1, 3, fileBytes(7, 50), "o.pdf")
	g2 := b.ok(&Command{Op: OpCreateGroup, User: 2, Name: "g2", Members: []uint64{3}})
	rs := b.apply(send(1, 1, "m6", "x", other), send(2, g2.Conv, "b2", "fwd", other))
	if rs[0].Err != "" || rs[1].Err != "" {
		t.Fatalf("same entry: %q %q", rs[0].Message, rs[1].Message)
	}
	if m, _ := b.e.Media(other); m.Refs != 2 {
		t.Fatalf("refs %d", m.Refs)
	}
}

// dropMedia runs DropMessageMedia as an entry of its own, as a message
// deletion will.
func TestMediaExpiry(t *testing.T) {
	defer func(n int) { mediaExpireBudget = n }(mediaExpireBudget)
	mediaExpireBudget = 2 // resume across commands

	b := newMediaBed(t, t.TempDir())
	kept := b.upload(1, 1, fileBytes(8, 300), "kept.pdf")
	r := b.ok(send(1, 1, "k", "x", kept))
	unref := b.upload(1, 2, fileBytes(9, MediaChunkSize+5), "unref.pdf")
	b.upload(2, 3, fileBytes(9, MediaChunkSize+5), "") // bob owns it too
	b.ok(chunkCmds(3, 4, fileBytes(10, 100), 0)[0])    // never committed
	for range 6 {                                      // budget 2: sweeps the records in steps
		b.ok(&Command{Op: OpMediaExpire, Ts: b.ts})
	}
	if _, ok := b.e.Media(unref); ok {
		t.Fatal("an object no message references survived")
	}
	if _, ok := b.e.Media(kept); !ok {
		t.Fatal("a referenced object was collected")
	}
	for u := uint64(1); u <= 3; u++ {
		want := uint64(0)
		if u == 1 {
			want = 300
		}
		if got := b.e.MediaUsage(u); got != want {
			t.Fatalf("user %d charged %d, want %d", u, got, want)
		}
	}
	if n := b.countKeys(prefixMediaChunk); n != 1 {
		t.Fatalf("%d chunks left, want 1", n)
	}
	if b.countKeys(prefixMediaUpload) != 0 || b.countKeys(prefixMediaOwner) != 1 {
		t.Fatal("upload or owner records left")
	}

	// Deleting the message drops its references; the object goes after the
	// grace period counted from then, not before. Deleting it again
	// changes nothing.
	del := b.ok(&Command{Op: OpDeleteMessage, User: 1, Conv: 1, Seq: r.Seq})
	dropAt := b.ts
	if again := b.ok(&Command{Op: OpDeleteMessage, User: 1, Conv: 1, Seq: r.Seq}); again.Seq != del.Seq {
		t.Fatalf("a second deletion appended %d, want the first's %d", again.Seq, del.Seq)
	}
	if m, _ := b.e.Media(kept); m.Refs != 0 {
		t.Fatalf("refs %d after the deletion", m.Refs)
	}
	if b.e.MediaAllowed(2, kept) {
		t.Fatal("bob keeps access through a dropped message")
	}
	for range 3 {
		b.ok(&Command{Op: OpMediaExpire, Ts: dropAt - 1})
	}
	if _, ok := b.e.Media(kept); !ok {
		t.Fatal("collected within the grace period")
	}
	for range 3 {
		b.ok(&Command{Op: OpMediaExpire, Ts: dropAt + 1})
	}
	if _, ok := b.e.Media(kept); ok {
		t.Fatal("an object whose last message was dropped survived")
	}
	if b.countKeys(prefixMediaChunk) != 0 || b.countKeys(prefixMediaThumb) != 0 || b.countKeys(prefixMediaUsage) != 0 ||
		b.countKeys(prefixMediaConv) != 0 || b.countKeys(prefixMediaMsg) != 0 || b.countKeys(prefixMediaObject) != 0 {
		t.Fatalf("media keys left:\n%s", dumpDB(t, b.e))
	}
	b.fail(&Command{Op: OpMediaExpire}, ErrCodeInvalid)
}

// TestMediaDeterminismAndSnapshot: the media scenarios replayed on another
// replica give the same state, byte for byte; a snapshot carries the media
// keys (a Pebble checkpoint holds every key) and a restored replica serves
// the files.
func TestMediaDeterminismAndSnapshot(t *testing.T) {
	defer func(n int) { mediaExpireBudget = n }(mediaExpireBudget)
	mediaExpireBudget = 3
	parent := t.TempDir()
	b := newMediaBed(t, filepath.Join(parent, "a"))
	data := fileBytes(11, 3*MediaChunkSize/2)
	id := b.upload(1, 1, data, "a.pdf")
	b.upload(2, 2, data, "b.pdf")
	b.ok(send(1, 1, "m", "x", id))
	b.upload(3, 3, fileBytes(12, 10), "c.pdf")
	b.ok(chunkCmds(2, 4, fileBytes(13, 10), 0)[0])
	for range 4 {
		b.ok(&Command{Op: OpMediaExpire, Ts: b.ts})
	}

	replica := openEngine(t, filepath.Join(parent, "b"))
	defer replica.Close()
	for _, en := range b.log {
		applyEntry(t, replica, en)
	}
	if da, db := dumpState(t, b.e), dumpState(t, replica); da != db {
		t.Fatalf("replicas differ:\n%s", diff(da, db))
	}

	snap := snapshotBytes(t, b.e)
	restored := openEngine(t, filepath.Join(parent, "c"))
	defer restored.Close()
	if err := restored.Restore(snap); err != nil {
		t.Fatal(err)
	}
	if da, dc := dumpState(t, b.e), dumpState(t, restored); da != dc {
		t.Fatalf("restored state differs:\n%s", diff(da, dc))
	}
	b.e = restored
	if got := b.read(id); !bytes.Equal(got, data) {
		t.Fatal("restored replica reads another file")
	}
	if !restored.MediaAllowed(2, id) {
		t.Fatal("restored replica forgot the reference")
	}
}

func TestMediaCommandCodec(t *testing.T) {
	c := &Command{Op: OpSend, User: 1, Device: 1, Conv: 1, ClientMsgID: "x", Media: &MediaArgs{
		Attachments: make([]AttachmentRef, maxCommandAttachments+1)}}
	for i := range c.Media.Attachments {
		c.Media.Attachments[i] = AttachmentRef{ID: []byte{1}}
	}
	raw, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	var got Command
	if err := DecodeCommand(raw, &got); err == nil {
		t.Fatal("decoded more attachments than any command carries")
	}
}

func TestMediaAbandonUpload(t *testing.T) {
	b := newMediaBed(t, t.TempDir())
	cs := chunkCmds(1, 5, fileBytes(1, MediaChunkSize+9), 0)
	b.ok(cs[0])
	b.ok(cs[1])
	abandon := &Command{Op: OpMediaExpire, User: 2, Media: &MediaArgs{Upload: 5}}
	if r := b.ok(abandon); r.Expired != 0 || b.e.MediaUsage(1) == 0 {
		t.Fatal("another user abandoned alice's upload")
	}
	abandon.User = 1
	if r := b.ok(abandon); r.Expired != 1 || b.e.MediaUsage(1) != 0 || b.countKeys(prefixMediaChunk) != 0 || b.countKeys(prefixMediaUpload) != 0 {
		t.Fatalf("abandoned upload left: usage %d\n%s", b.e.MediaUsage(1), dumpDB(t, b.e))
	}
	if r := b.ok(abandon); r.Expired != 0 {
		t.Fatal("abandoned twice")
	}
	b.fail(commitCmd(1, 5, fileBytes(1, MediaChunkSize+9), ""), ErrCodeNotFound)
}
