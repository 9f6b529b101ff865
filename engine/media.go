package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2"
	"github.com/vmihailenco/msgpack/v5"
)

// Media attachments.
//
// An upload reaches the state as a run of OpMediaChunk commands, each one
// chunk of at most MediaChunkSize bytes, in order, under an upload id the
// proposing node picked at random; then one OpMediaCommit names the upload
// as a media object: its SHA-256 (the media id, computed by the node as the
// bytes streamed in), size, type, dimensions, thumbnail and file name.
// Objects are content-addressed: a commit of bytes already stored drops the
// new chunks and makes the committer an owner of the object that exists.
//
// A user is charged the size of every upload in progress and of every
// object they own; a chunk that would take the charge over the quota the
// proposer stamped into the command fails with ErrCodeQuotaExceeded.
//
// A send may carry up to MaxAttachments objects. The sender must be an
// owner of each, or a current member of a conversation where a message
// already carries it (forwarding). Each attachment of a message is a
// reference: per message ('t'), per conversation ('y', a count, which is
// what grants the conversation's members access) and in total (the
// object's refs). DropMessageMedia removes a message's references, for a
// message deletion to come.
//
// OpMediaExpire, submitted by the leader, collects uploads never committed
// and objects no message references, once they are older than the cutoff
// in the command (the node's grace period), a bounded number of records
// per command, resuming where the previous one stopped (as OpExpireSends).
//
// Chunks are keyed by upload, not by media id: a commit then writes a few
// small records instead of moving the file, whatever its size.

// Limits of media, enforced by Apply.
const (
	// MediaChunkSize is the size of every chunk but an upload's last
	// (media.DefaultChunkSize).
	MediaChunkSize = 256 << 10
	// MaxMediaBytes bounds one object whatever the node's own limit.
	MaxMediaBytes = 1 << 40
	// MaxAttachments is how many objects one message carries at most.
	MaxAttachments = 10
	// MaxAttachmentNameBytes bounds a file name (UTF-8).
	MaxAttachmentNameBytes = 255
	// MaxMimeBytes bounds a media type.
	MaxMimeBytes = 127
	// MaxThumbBytes bounds a thumbnail.
	MaxThumbBytes = 64 << 10
	// MediaIDLen is the length of a media id (a SHA-256).
	MediaIDLen = 32

	// MediaExpireBudget is how many upload and object records one
	// OpMediaExpire examines.
	MediaExpireBudget = 1000
)

// ErrCodeQuotaExceeded: the user's uploads and objects would exceed their
// storage quota.
const ErrCodeQuotaExceeded ErrCode = "quota_exceeded"

// mediaExpireBudget is MediaExpireBudget; tests lower it.
var mediaExpireBudget = MediaExpireBudget

// MediaArgs are the fields of the media commands, and the attachments of
// an OpSend. Only the fields listed for an Op are read.
//
//	OpMediaChunk:  Upload, Index (from 0, in order), Data (1 to
//	               MediaChunkSize bytes; all but the last exactly that),
//	               Quota (bytes the user may hold; 0: no quota)
//	OpMediaCommit: Upload, Index (the chunk count), Size, ID (SHA-256 of
//	               the bytes), Mime, Width, Height (images), Thumb and
//	               ThumbMime (optional), Name (the file name, sanitized)
//	OpMediaExpire: Ts on the Command: the cutoff (unix ms); or, with
//	               Upload set, that upload of the Command's User at once
//	OpSend:        Attachments
type MediaArgs struct {
	Upload      uint64
	Index       uint64
	Data        []byte
	Quota       uint64
	ID          []byte
	Size        uint64
	Mime        string
	Width       uint64
	Height      uint64
	Thumb       []byte
	ThumbMime   string
	Name        string
	Attachments []AttachmentRef
}

// AttachmentRef is an attachment as a sender names it: the media id and
// the file name to show with it (optional; at most
// MaxAttachmentNameBytes).
type AttachmentRef struct {
	ID   []byte
	Name string
}

// Attachment is an attachment of a message event, as stored with it.
type Attachment struct {
	ID     [MediaIDLen]byte
	Name   string // the sender's, else the object's file name
	Mime   string
	Size   uint64
	Width  uint64 // images; 0 otherwise
	Height uint64
	Thumb  bool // a thumbnail exists
}

// MediaInfo describes a stored media object.
type MediaInfo struct {
	ID            [MediaIDLen]byte
	Size          uint64
	Chunks        uint64
	Width, Height uint64
	Mime          string
	ThumbMime     string // "" when there is no thumbnail
	Name          string // the first uploader's file name
	CreatedAt     int64
	Refs          uint64 // messages carrying it
	upload        uint64
}

// media is c.Media, or zero fields when it has none.
func (c *Command) media() *MediaArgs {
	if c.Media == nil {
		return &noMedia
	}
	return c.Media
}

var noMedia MediaArgs

// size is a size to reserve for encoding a's bytes.
func (a *MediaArgs) size() int {
	if a == nil {
		return 0
	}
	return len(a.Data) + len(a.Thumb)
}

// isZero: nothing to encode (nil included).
func (a *MediaArgs) isZero() bool {
	return a == nil || a.Upload == 0 && a.Index == 0 && len(a.Data) == 0 && a.Quota == 0 && len(a.ID) == 0 && a.Size == 0 &&
		a.Mime == "" && a.Width == 0 && a.Height == 0 && len(a.Thumb) == 0 && a.ThumbMime == "" && a.Name == "" &&
		len(a.Attachments) == 0
}

// Keys of the media state (see keys.go).
const (
	prefixMediaChunk  byte = 'f' // + upload + index -> chunk bytes
	prefixMediaUpload byte = 'g' // + upload -> upload in progress
	prefixMediaObject byte = 'h' // + id -> media record
	prefixMediaUsage  byte = 'i' // + user -> bytes charged
	prefixMediaOwner  byte = 'j' // + id + user -> (empty) owner
	prefixMediaThumb  byte = 'o' // + id -> thumbnail bytes
	prefixMediaMsg    byte = 't' // + id + conv + seq -> (empty) the message carries id
	prefixMediaConv   byte = 'y' // + id + conv -> messages of conv carrying id

	metaMediaExpiry byte = 'f'
)

func mediaIDKey(prefix byte, id []byte) []byte {
	return append(append(make([]byte, 0, 1+MediaIDLen+16), prefix), id...)
}

func mediaIDKey1(prefix byte, id []byte, a uint64) []byte {
	return binary.BigEndian.AppendUint64(mediaIDKey(prefix, id), a)
}

func mediaIDKey2(prefix byte, id []byte, a, b uint64) []byte {
	return binary.BigEndian.AppendUint64(mediaIDKey1(prefix, id, a), b)
}

// uploadRecord is the value of a 'g' key: an upload in progress.
type uploadRecord struct {
	user      uint64
	createdAt int64
	bytes     uint64
	chunks    uint64
}

func appendUploadRecord(dst []byte, u uploadRecord) []byte {
	return appendU64s(dst, u.user, uint64(u.createdAt), u.bytes, u.chunks)
}

func decodeUploadRecord(v []byte) (uploadRecord, bool) {
	if len(v) != 32 {
		return uploadRecord{}, false
	}
	return uploadRecord{user: u64At(v, 0), createdAt: int64(u64At(v, 8)), bytes: u64At(v, 16), chunks: u64At(v, 24)}, true
}

// The media record ('h'):
//
//	upload(8) size(8) chunks(8) width(8) height(8) createdAt(8) refs(8)
//	unrefAt(8) mime(1 + n) thumbMime(1 + n) name
//
// unrefAt is when refs last became 0 (the commit, at first): the grace
// period of the collector runs from then.
type mediaRecord struct {
	MediaInfo
	unrefAt int64
}

func appendMediaRecord(dst []byte, m *mediaRecord) []byte {
	dst = appendU64s(dst, m.upload, m.Size, m.Chunks, m.Width, m.Height, uint64(m.CreatedAt), m.Refs, uint64(m.unrefAt))
	dst = append(append(dst, byte(len(m.Mime))), m.Mime...)
	dst = append(append(dst, byte(len(m.ThumbMime))), m.ThumbMime...)
	return append(dst, m.Name...)
}

func decodeMediaRecord(id []byte, v []byte) (mediaRecord, bool) {
	var m mediaRecord
	if len(v) < 66 {
		return m, false
	}
	copy(m.ID[:], id)
	m.upload, m.Size, m.Chunks = u64At(v, 0), u64At(v, 8), u64At(v, 16)
	m.Width, m.Height, m.CreatedAt = u64At(v, 24), u64At(v, 32), int64(u64At(v, 40))
	m.Refs, m.unrefAt = u64At(v, 48), int64(u64At(v, 56))
	rest := v[64:]
	str := func() (string, bool) {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return "", false
		}
		s := string(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
		return s, true
	}
	var ok1, ok2 bool
	m.Mime, ok1 = str()
	m.ThumbMime, ok2 = str()
	m.Name = string(rest)
	return m, ok1 && ok2
}

// mediaWork holds the media keys the entry being applied wrote or deleted,
// so that its later commands read them (the batch is not readable). It is
// cleared when a new entry first uses it.
type mediaWork struct {
	index uint64
	kv    map[string]mediaVal
}

type mediaVal struct {
	v   []byte
	del bool
}

func (t *txn) mwork() map[string]mediaVal {
	m := &t.media
	if m.kv == nil {
		m.kv = make(map[string]mediaVal)
	}
	if m.index != t.index {
		clear(m.kv)
		m.index = t.index
	}
	return m.kv
}

// mget reads a media key as of the commands before this one.
func (t *txn) mget(k []byte) ([]byte, bool) {
	if mv, ok := t.mwork()[string(k)]; ok {
		return mv.v, !mv.del
	}
	return t.get(nil, k)
}

func (t *txn) mset(k, v []byte) {
	t.mwork()[string(k)] = mediaVal{v: bytes.Clone(v)}
	t.set(k, v)
}

func (t *txn) mdel(k []byte) {
	t.mwork()[string(k)] = mediaVal{del: true}
	if err := t.b.Delete(k, nil); err != nil {
		panic(fmt.Sprintf("engine: batch delete: %v", err))
	}
}

// mscan calls f for every live media key with prefix p, as of the commands
// before this one: the committed ones not deleted in this entry, then
// those this entry added. Values are the entry's where it changed them.
func (t *txn) mscan(p []byte, f func(k, v []byte)) {
	work := t.mwork()
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		panic(fmt.Sprintf("engine: iterate %x at entry %d: %v", p, t.index, err))
	}
	for valid := it.First(); valid; valid = it.Next() {
		if mv, ok := work[string(it.Key())]; ok {
			if !mv.del {
				f(it.Key(), mv.v)
			}
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			panic(fmt.Sprintf("engine: read %x at entry %d: %v", it.Key(), t.index, err))
		}
		f(it.Key(), v)
	}
	if err := it.Close(); err != nil {
		panic(fmt.Sprintf("engine: iterate %x at entry %d: %v", p, t.index, err))
	}
	for k, mv := range work {
		if mv.del || !bytes.HasPrefix([]byte(k), p) {
			continue
		}
		if _, committed := t.get(nil, []byte(k)); !committed {
			f([]byte(k), mv.v)
		}
	}
}

// prefixEnd is the smallest key after every key starting with p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

func (t *txn) usage(user uint64) uint64 {
	v, ok := t.mget(key1(prefixMediaUsage, user))
	if !ok || len(v) != 8 {
		return 0
	}
	return u64At(v, 0)
}

func (t *txn) charge(user uint64, delta int64) {
	u := t.usage(user)
	switch {
	case delta < 0 && uint64(-delta) >= u:
		u = 0
	default:
		u = uint64(int64(u) + delta)
	}
	k := key1(prefixMediaUsage, user)
	if u == 0 {
		t.mdel(k)
		return
	}
	t.mset(k, appendU64s(nil, u))
}

func (t *txn) mediaRecord(id []byte) (mediaRecord, bool) {
	v, ok := t.mget(mediaIDKey(prefixMediaObject, id))
	if !ok {
		return mediaRecord{}, false
	}
	m, ok := decodeMediaRecord(id, v)
	if !ok {
		panic(corrupt("media record", mediaIDKey(prefixMediaObject, id)).Error())
	}
	return m, true
}

func (t *txn) putMediaRecord(m *mediaRecord) {
	t.mset(mediaIDKey(prefixMediaObject, m.ID[:]), appendMediaRecord(nil, m))
}

func chunkKey(upload, index uint64) []byte { return key2(prefixMediaChunk, upload, index) }

// deleteChunks deletes every chunk of an upload.
func (t *txn) deleteChunks(upload uint64) {
	if err := t.b.DeleteRange(key1(prefixMediaChunk, upload), prefixEnd(key1(prefixMediaChunk, upload)), nil); err != nil {
		panic(fmt.Sprintf("engine: batch delete range: %v", err))
	}
}

func (t *txn) mediaChunk(c *Command) *Result {
	a := c.media()
	switch {
	case !t.userExists(c.User):
		return failure(ErrCodeNotFound, "no such user")
	case a.Upload == 0:
		return failure(ErrCodeInvalid, "no upload id")
	case len(a.Data) == 0:
		return failure(ErrCodeInvalid, "empty chunk")
	case len(a.Data) > MediaChunkSize:
		return failure(ErrCodeTooLarge, fmt.Sprintf("chunk over %d bytes", MediaChunkSize))
	}
	uk := key1(prefixMediaUpload, a.Upload)
	var rec uploadRecord
	if v, ok := t.mget(uk); ok {
		if rec, ok = decodeUploadRecord(v); !ok {
			panic(corrupt("upload record", uk).Error())
		}
		if rec.user != c.User {
			return failure(ErrCodeConflict, "upload id in use")
		}
	} else if a.Index != 0 {
		return failure(ErrCodeNotFound, "no such upload (expired?)")
	} else {
		rec = uploadRecord{user: c.User, createdAt: t.ts}
	}
	switch {
	case a.Index < rec.chunks:
		return t.ok(0, 0) // a retry of a chunk already stored
	case a.Index > rec.chunks:
		return failure(ErrCodeInvalid, fmt.Sprintf("chunk %d out of order, want %d", a.Index, rec.chunks))
	case rec.bytes%MediaChunkSize != 0:
		return failure(ErrCodeInvalid, "a chunk follows a short one")
	case rec.bytes+uint64(len(a.Data)) > MaxMediaBytes:
		return failure(ErrCodeTooLarge, "upload over the size limit")
	}
	if a.Quota > 0 && t.usage(c.User)+uint64(len(a.Data)) > a.Quota {
		return failure(ErrCodeQuotaExceeded, fmt.Sprintf("storage quota of %d bytes exceeded", a.Quota))
	}
	t.set(chunkKey(a.Upload, a.Index), a.Data)
	rec.bytes += uint64(len(a.Data))
	rec.chunks++
	t.mset(uk, appendUploadRecord(nil, rec))
	t.charge(c.User, int64(len(a.Data)))
	return t.ok(0, 0)
}

func (t *txn) mediaCommit(c *Command) *Result {
	a := c.media()
	switch {
	case len(a.ID) != MediaIDLen:
		return failure(ErrCodeInvalid, "media id is not 32 bytes")
	case a.Mime == "" || len(a.Mime) > MaxMimeBytes:
		return failure(ErrCodeInvalid, "bad media type")
	case len(a.ThumbMime) > MaxMimeBytes || (len(a.Thumb) == 0) != (a.ThumbMime == ""):
		return failure(ErrCodeInvalid, "bad thumbnail type")
	case len(a.Thumb) > MaxThumbBytes:
		return failure(ErrCodeTooLarge, fmt.Sprintf("thumbnail over %d bytes", MaxThumbBytes))
	case len(a.Name) > MaxAttachmentNameBytes || !utf8.ValidString(a.Name):
		return failure(ErrCodeInvalid, "bad file name")
	}
	uk := key1(prefixMediaUpload, a.Upload)
	v, ok := t.mget(uk)
	if !ok {
		return failure(ErrCodeNotFound, "no such upload (expired?)")
	}
	rec, ok := decodeUploadRecord(v)
	if !ok {
		panic(corrupt("upload record", uk).Error())
	}
	switch {
	case rec.user != c.User:
		return failure(ErrCodeNotFound, "no such upload")
	case rec.chunks != a.Index || rec.bytes != a.Size || a.Size == 0:
		return failure(ErrCodeInvalid, fmt.Sprintf("upload holds %d chunks, %d bytes", rec.chunks, rec.bytes))
	}
	t.mdel(uk)
	ok2 := t.ok(0, 0)
	if m, exists := t.mediaRecord(a.ID); exists {
		// The same bytes are stored already: drop these, charge the user
		// as an owner of that object (once).
		t.deleteChunks(a.Upload)
		t.charge(c.User, -int64(rec.bytes))
		ok := mediaIDKey1(prefixMediaOwner, a.ID, c.User)
		if _, owner := t.mget(ok); !owner {
			t.mset(ok, nil)
			t.charge(c.User, int64(m.Size))
		}
		return ok2
	}
	m := mediaRecord{unrefAt: t.ts}
	copy(m.ID[:], a.ID)
	m.upload, m.Size, m.Chunks = a.Upload, a.Size, a.Index
	m.Width, m.Height, m.CreatedAt = a.Width, a.Height, t.ts
	m.Mime, m.ThumbMime, m.Name = a.Mime, a.ThumbMime, a.Name
	t.putMediaRecord(&m)
	if len(a.Thumb) > 0 {
		t.mset(mediaIDKey(prefixMediaThumb, a.ID), a.Thumb)
	}
	t.mset(mediaIDKey1(prefixMediaOwner, a.ID, c.User), nil)
	return ok2 // the upload's charge becomes the owner's
}

// mayUseMedia reports whether user may attach or download the object:
// they own it, or they are a current member of a conversation where a
// message carries it.
func (t *txn) mayUseMedia(user uint64, id []byte) bool {
	if _, ok := t.mget(mediaIDKey1(prefixMediaOwner, id, user)); ok {
		return true
	}
	found := false
	t.mscan(mediaIDKey(prefixMediaConv, id), func(k, _ []byte) {
		if !found {
			c := t.peekConv(u64At(k, 1+MediaIDLen))
			found = c != nil && c.isMember(user)
		}
	})
	return found
}

// attachments checks the attachments of a send and returns them as the
// event carries them; nil when there are none.
func (t *txn) attachments(user uint64, refs []AttachmentRef) ([]Attachment, *Result) {
	if len(refs) == 0 {
		return nil, nil
	}
	if len(refs) > MaxAttachments {
		return nil, failure(ErrCodeTooLarge, fmt.Sprintf("over %d attachments", MaxAttachments))
	}
	out := make([]Attachment, len(refs))
	for i, r := range refs {
		switch {
		case len(r.ID) != MediaIDLen:
			return nil, failure(ErrCodeInvalid, "attachment id is not a media id")
		case len(r.Name) > MaxAttachmentNameBytes:
			return nil, failure(ErrCodeTooLarge, fmt.Sprintf("attachment name over %d bytes", MaxAttachmentNameBytes))
		case !utf8.ValidString(r.Name):
			return nil, failure(ErrCodeInvalid, "attachment name is not UTF-8")
		}
		for _, prev := range refs[:i] {
			if bytes.Equal(prev.ID, r.ID) {
				return nil, failure(ErrCodeInvalid, "the same attachment twice")
			}
		}
		m, ok := t.mediaRecord(r.ID)
		if !ok || !t.mayUseMedia(user, r.ID) {
			// The same answer for both: ids cannot be probed.
			return nil, failure(ErrCodeNotFound, "no such media")
		}
		name := r.Name
		if name == "" {
			name = m.Name
		}
		out[i] = Attachment{ID: m.ID, Name: name, Mime: m.Mime, Size: m.Size, Width: m.Width, Height: m.Height, Thumb: m.ThumbMime != ""}
	}
	return out, nil
}

// refAttachments records that the message conv/seq carries atts.
func (t *txn) refAttachments(conv, seq uint64, atts []Attachment) {
	for i := range atts {
		id := atts[i].ID[:]
		t.mset(mediaIDKey2(prefixMediaMsg, id, conv, seq), nil)
		ck := mediaIDKey1(prefixMediaConv, id, conv)
		var n uint64
		if v, ok := t.mget(ck); ok && len(v) == 8 {
			n = u64At(v, 0)
		}
		t.mset(ck, appendU64s(nil, n+1))
		m, ok := t.mediaRecord(id)
		if !ok {
			panic("engine: attachment of a missing media object")
		}
		m.Refs++
		t.putMediaRecord(&m)
	}
}

// DropMessageMedia removes the references of the message conv/seq to its
// attachments, as a message deletion will: the conversation's members
// lose access through it once no other message of the conversation
// carries the object, and an object no message references any more is
// collected after the grace period (counted from now). It reports how
// many references it dropped; a message without attachments, or whose
// references were dropped before, has none.
func (t *txn) DropMessageMedia(conv, seq uint64) int {
	ev, ok := t.storedEvent(conv, seq)
	if !ok {
		return 0
	}
	dropped := 0
	for i := range ev.Attachments {
		id := ev.Attachments[i].ID[:]
		mk := mediaIDKey2(prefixMediaMsg, id, conv, seq)
		if _, ok := t.mget(mk); !ok {
			continue
		}
		t.mdel(mk)
		ck := mediaIDKey1(prefixMediaConv, id, conv)
		if v, ok := t.mget(ck); ok && len(v) == 8 && u64At(v, 0) > 1 {
			t.mset(ck, appendU64s(nil, u64At(v, 0)-1))
		} else {
			t.mdel(ck)
		}
		if m, ok := t.mediaRecord(id); ok && m.Refs > 0 {
			m.Refs--
			if m.Refs == 0 {
				m.unrefAt = t.ts
			}
			t.putMediaRecord(&m)
		}
		dropped++
	}
	return dropped
}

// storedEvent reads a committed event.
func (t *txn) storedEvent(conv, seq uint64) (Event, bool) {
	var ev Event
	k := key2(prefixEvent, conv, seq)
	v, ok := t.get(nil, k)
	if !ok {
		return ev, false
	}
	if err := decodeEvent(conv, seq, v, &ev); err != nil {
		panic(corrupt("event", k).Error())
	}
	return ev, true
}

// expireMedia collects, among the next mediaExpireBudget upload and
// object records from where the previous OpMediaExpire stopped, the
// uploads started before the cutoff and never committed, and the objects
// no message has referenced since before the cutoff: their chunks,
// thumbnail, owners and records go, and the users are no longer charged.
func (t *txn) expireMedia(c *Command) *Result {
	if a := c.media(); a.Upload != 0 {
		return t.abandonUpload(c.User, a.Upload)
	}
	cutoff := min(c.Ts, t.ts)
	if cutoff <= 0 {
		return failure(ErrCodeInvalid, "media_expire needs a cutoff time")
	}
	lower, upper := []byte{prefixMediaUpload}, []byte{prefixMediaObject + 1}
	if cur, ok := t.get(nil, metaKey(metaMediaExpiry)); ok {
		lower = append(cur, 0)
	}
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		panic(fmt.Sprintf("engine: iterate media records at entry %d: %v", t.index, err))
	}
	// Collect the candidates first: deleting updates the overlay that the
	// iteration consults.
	type cand struct {
		key []byte
	}
	var cands []cand
	examined := 0
	var last []byte
	valid := it.First()
	for ; valid && examined < mediaExpireBudget; valid = it.Next() {
		examined++
		last = append(last[:0], it.Key()...)
		cands = append(cands, cand{key: bytes.Clone(it.Key())})
	}
	if err := it.Close(); err != nil {
		panic(fmt.Sprintf("engine: iterate media records at entry %d: %v", t.index, err))
	}
	expired := 0
	for _, cd := range cands {
		v, ok := t.mget(cd.key)
		if !ok {
			continue
		}
		switch cd.key[0] {
		case prefixMediaUpload:
			rec, ok := decodeUploadRecord(v)
			if !ok {
				panic(corrupt("upload record", cd.key).Error())
			}
			if rec.createdAt < cutoff {
				t.deleteChunks(u64At(cd.key, 1))
				t.mdel(cd.key)
				t.charge(rec.user, -int64(rec.bytes))
				expired++
			}
		case prefixMediaObject:
			id := cd.key[1:]
			m, ok := decodeMediaRecord(id, v)
			if !ok {
				panic(corrupt("media record", cd.key).Error())
			}
			if m.Refs == 0 && m.unrefAt < cutoff {
				t.dropMedia(&m)
				expired++
			}
		}
	}
	if valid {
		t.set(metaKey(metaMediaExpiry), last)
	} else if err := t.b.Delete(metaKey(metaMediaExpiry), nil); err != nil {
		panic(fmt.Sprintf("engine: batch delete: %v", err))
	}
	r := t.ok(0, 0)
	r.Expired = expired
	return r
}

// abandonUpload collects one upload in progress of user at once: the node
// that took it gave up (the client went away, a limit was hit), so it
// need not wait for the grace period, nor count against the quota.
// Abandoning an upload that is not there (committed, collected, another
// user's) changes nothing.
func (t *txn) abandonUpload(user, upload uint64) *Result {
	uk := key1(prefixMediaUpload, upload)
	r := t.ok(0, 0)
	v, ok := t.mget(uk)
	if !ok {
		return r
	}
	rec, ok := decodeUploadRecord(v)
	if !ok {
		panic(corrupt("upload record", uk).Error())
	}
	if rec.user != user {
		return r
	}
	t.deleteChunks(upload)
	t.mdel(uk)
	t.charge(user, -int64(rec.bytes))
	r.Expired = 1
	return r
}

// dropMedia deletes an object and uncharges its owners.
func (t *txn) dropMedia(m *mediaRecord) {
	id := m.ID[:]
	var owners [][]byte
	t.mscan(mediaIDKey(prefixMediaOwner, id), func(k, _ []byte) { owners = append(owners, bytes.Clone(k)) })
	for _, k := range owners {
		t.charge(u64At(k, 1+MediaIDLen), -int64(m.Size))
		t.mdel(k)
	}
	t.deleteChunks(m.upload)
	if _, ok := t.mget(mediaIDKey(prefixMediaThumb, id)); ok {
		t.mdel(mediaIDKey(prefixMediaThumb, id))
	}
	t.mdel(mediaIDKey(prefixMediaObject, id))
}

// Queries. They read the committed state, concurrently with Apply.

// errMediaGone: a chunk of an object was not found (the object was
// collected while it was being read).
var errMediaGone = errors.New("engine: media chunk not found")

// Media returns a media object's description.
func (e *Engine) Media(id [MediaIDLen]byte) (MediaInfo, bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return MediaInfo{}, false
	}
	v, ok := e.getLocked(mediaIDKey(prefixMediaObject, id[:]))
	if !ok {
		return MediaInfo{}, false
	}
	m, ok := decodeMediaRecord(id[:], v)
	return m.MediaInfo, ok
}

// MediaAllowed reports whether user may download (or attach) the object:
// an owner, or a current member of a conversation where a message carries
// it.
func (e *Engine) MediaAllowed(user uint64, id [MediaIDLen]byte) bool {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return false
	}
	if _, ok := e.getLocked(mediaIDKey1(prefixMediaOwner, id[:], user)); ok {
		return true
	}
	p := mediaIDKey(prefixMediaConv, id[:])
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return false
	}
	defer it.Close()
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	for valid := it.First(); valid; valid = it.Next() {
		if c := e.idx.convs[u64At(it.Key(), 1+MediaIDLen)]; c != nil && c.isMember(user) {
			return true
		}
	}
	return false
}

// MediaChunk returns chunk index of the object m (a copy).
func (e *Engine) MediaChunk(m *MediaInfo, index int) ([]byte, error) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, errors.New("engine: closed")
	}
	v, ok := e.getLocked(chunkKey(m.upload, uint64(index)))
	if !ok {
		return nil, errMediaGone
	}
	return v, nil
}

// MediaThumb returns an object's thumbnail and its type, if it has one.
func (e *Engine) MediaThumb(id [MediaIDLen]byte) ([]byte, bool) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, false
	}
	return e.getLocked(mediaIDKey(prefixMediaThumb, id[:]))
}

// MediaUsage is the bytes user is charged: uploads in progress and the
// objects they own.
func (e *Engine) MediaUsage(user uint64) uint64 {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return 0
	}
	v, ok := e.getLocked(key1(prefixMediaUsage, user))
	if !ok || len(v) != 8 {
		return 0
	}
	return u64At(v, 0)
}

// getLocked reads a committed value (a copy); stateMu held.
func (e *Engine) getLocked(k []byte) ([]byte, bool) {
	v, closer, err := e.db.Get(k)
	if err != nil {
		return nil, false
	}
	defer closer.Close()
	return bytes.Clone(v), true
}

// The codec of MediaArgs: a msgpack map under the command's keyMedia,
// written only when a field is set.
const (
	keyMediaUpload    = "u"
	keyMediaIndex     = "i"
	keyMediaData      = "d"
	keyMediaQuota     = "q"
	keyMediaID        = "id"
	keyMediaSize      = "s"
	keyMediaMime      = "m"
	keyMediaWidth     = "w"
	keyMediaHeight    = "h"
	keyMediaThumb     = "t"
	keyMediaThumbMime = "tm"
	keyMediaName      = "n"
	keyMediaAtts      = "a" // [[id, name], ...]
)

func encodeMedia(enc *msgpack.Encoder, a *MediaArgs) error {
	n := 0
	for _, set := range [...]bool{a.Upload != 0, a.Index != 0, len(a.Data) != 0, a.Quota != 0, len(a.ID) != 0,
		a.Size != 0, a.Mime != "", a.Width != 0, a.Height != 0, len(a.Thumb) != 0, a.ThumbMime != "", a.Name != "",
		len(a.Attachments) != 0} {
		if set {
			n++
		}
	}
	if err := enc.EncodeMapLen(n); err != nil {
		return err
	}
	var err error
	put := func(key string, f func() error) {
		if err == nil {
			if err = enc.EncodeString(key); err == nil {
				err = f()
			}
		}
	}
	putUint := func(key string, v uint64) {
		if v != 0 {
			put(key, func() error { return enc.EncodeUint(v) })
		}
	}
	putBytes := func(key string, v []byte) {
		if len(v) != 0 {
			put(key, func() error { return enc.EncodeBytes(v) })
		}
	}
	putStr := func(key, v string) {
		if v != "" {
			put(key, func() error { return enc.EncodeString(v) })
		}
	}
	putUint(keyMediaUpload, a.Upload)
	putUint(keyMediaIndex, a.Index)
	putBytes(keyMediaData, a.Data)
	putUint(keyMediaQuota, a.Quota)
	putBytes(keyMediaID, a.ID)
	putUint(keyMediaSize, a.Size)
	putStr(keyMediaMime, a.Mime)
	putUint(keyMediaWidth, a.Width)
	putUint(keyMediaHeight, a.Height)
	putBytes(keyMediaThumb, a.Thumb)
	putStr(keyMediaThumbMime, a.ThumbMime)
	putStr(keyMediaName, a.Name)
	if len(a.Attachments) != 0 {
		put(keyMediaAtts, func() error {
			if err := enc.EncodeArrayLen(len(a.Attachments)); err != nil {
				return err
			}
			for _, r := range a.Attachments {
				if err := enc.EncodeArrayLen(2); err != nil {
					return err
				}
				if err := enc.EncodeBytes(r.ID); err != nil {
					return err
				}
				if err := enc.EncodeString(r.Name); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return err
}

// maxCommandAttachments bounds the attachments DecodeCommand accepts
// (Apply refuses more than MaxAttachments with a clear error).
const maxCommandAttachments = 64

func decodeMedia(dec *msgpack.Decoder, r *bytes.Reader, a *MediaArgs) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	if n < 0 {
		return nil
	}
	bytesField := func(dst *[]byte) error {
		b, err := dec.DecodeBytes()
		if len(b) == 0 {
			b = nil
		}
		*dst = b
		return err
	}
	for range n {
		key, err := dec.DecodeString()
		if err != nil {
			return err
		}
		switch key {
		case keyMediaUpload:
			a.Upload, err = dec.DecodeUint64()
		case keyMediaIndex:
			a.Index, err = dec.DecodeUint64()
		case keyMediaData:
			err = bytesField(&a.Data)
		case keyMediaQuota:
			a.Quota, err = dec.DecodeUint64()
		case keyMediaID:
			err = bytesField(&a.ID)
		case keyMediaSize:
			a.Size, err = dec.DecodeUint64()
		case keyMediaMime:
			a.Mime, err = dec.DecodeString()
		case keyMediaWidth:
			a.Width, err = dec.DecodeUint64()
		case keyMediaHeight:
			a.Height, err = dec.DecodeUint64()
		case keyMediaThumb:
			err = bytesField(&a.Thumb)
		case keyMediaThumbMime:
			a.ThumbMime, err = dec.DecodeString()
		case keyMediaName:
			a.Name, err = dec.DecodeString()
		case keyMediaAtts:
			a.Attachments, err = decodeAttachmentRefs(dec, r)
		default:
			err = dec.Skip()
		}
		if err != nil {
			return fmt.Errorf("media field %q: %w", key, err)
		}
	}
	return nil
}

func decodeAttachmentRefs(dec *msgpack.Decoder, r *bytes.Reader) ([]AttachmentRef, error) {
	n, err := dec.DecodeArrayLen()
	if err != nil || n <= 0 {
		return nil, err
	}
	if n > maxCommandAttachments {
		return nil, fmt.Errorf("%d attachments, at most %d", n, maxCommandAttachments)
	}
	if 3*n > r.Len() {
		return nil, fmt.Errorf("list of %d attachments in %d bytes", n, r.Len())
	}
	out := make([]AttachmentRef, n)
	for i := range out {
		m, err := dec.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		if m != 2 {
			return nil, fmt.Errorf("attachment of %d fields, want 2", m)
		}
		if out[i].ID, err = dec.DecodeBytes(); err != nil {
			return nil, err
		}
		if len(out[i].ID) == 0 {
			out[i].ID = nil
		}
		if out[i].Name, err = dec.DecodeString(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func appendAttachments(dst []byte, atts []Attachment) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(atts)))
	for i := range atts {
		a := &atts[i]
		dst = append(dst, a.ID[:]...)
		dst = binary.AppendUvarint(dst, a.Size)
		dst = binary.AppendUvarint(dst, a.Width)
		dst = binary.AppendUvarint(dst, a.Height)
		var thumb byte
		if a.Thumb {
			thumb = 1
		}
		dst = append(dst, thumb)
		dst = appendString(dst, a.Mime)
		dst = appendString(dst, a.Name)
	}
	return dst
}

func (d *eventDecoder) attachments(e *Event) error {
	n := d.uvarint()
	if n == 0 || n > uint64(len(d.b))/(MediaIDLen+6) {
		return errors.New("bad attachment count")
	}
	e.Attachments = make([]Attachment, n)
	for i := range e.Attachments {
		a := &e.Attachments[i]
		if len(d.b) < MediaIDLen {
			return errors.New("truncated attachment")
		}
		copy(a.ID[:], d.b[:MediaIDLen])
		d.b = d.b[MediaIDLen:]
		a.Size, a.Width, a.Height = d.uvarint(), d.uvarint(), d.uvarint()
		a.Thumb = d.byte() == 1
		a.Mime = d.string()
		a.Name = d.string()
	}
	return nil
}
