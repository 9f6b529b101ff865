package engine

import "encoding/binary"

// Key layout of the state database. Every key is a one-byte prefix followed
// by fixed-width big-endian integers (so keys sort numerically and a range is
// bounded by the next integer), except the client_msg_id at the end of a
// dedup key. Values are described in records.go.
//
//	'm' + name byte                      -> meta: 'v' storage format, 'a' applied index,
//	                                        'u' / 'd' / 'c' last user / device / conversation ID,
//	                                        'k' the cluster's token signing key (absent until set),
//	                                        'e' the dedup key where the last OpExpireSends stopped,
//	                                        't' the ts of the last applied entry (clamped, see Apply)
//	'u' + user                           -> user record
//	'd' + user + device                  -> device record
//	'c' + conv                           -> conversation record (kind, name, created, peers)
//	'l' + conv                           -> last seq, last index of the conversation
//	'p' + conv + user                    -> membership (member, admin, or gone at seq/index)
//	'e' + conv + seq                     -> event: stored once, whatever the number of members
//	'x' + conv + log index               -> first seq the entry at that index appended to conv
//	'k' + user + device + client_msg_id  -> conv, seq, ts, index of the original send
//	'r' + conv + user                    -> receipt cursors of a member or former member
//	's' + conv + seq                     -> (empty) the event at seq is not a message
//	'w' + user                           -> last_seen and privacy of the user
//	'b' + user + blocked user            -> (empty) user blocks that user
//	'f' + upload + index                 -> a chunk of a media upload (media.go; the bytes)
//	'g' + upload                         -> media upload in progress: user, created, bytes, chunks
//	'h' + media id (32)                  -> media object: its upload, size, type, dimensions, refs
//	'i' + user                           -> media bytes charged to the user (uploads and objects owned)
//	'j' + media id + user                -> (empty) user owns the media object
//	'o' + media id                       -> the object's thumbnail
//	't' + media id + conv + seq          -> (empty) the message conv/seq carries the object
//	'y' + media id + conv                -> how many messages of conv carry the object
//	('m' 'f': the media key where the last OpMediaExpire stopped)
//	'n' + user + device                  -> the device's push target (push.go)
//	'z' + conv + user                    -> until when user muted conv (unix ms, or -1: for good)
//	'v' + log index + n                  -> an administrative action (useradmin.go): ts, op, user, device, flag, who
//	'q' + conv                           -> the first seq retention kept (retention.go); absent: 1
//	'm' 'q'                              -> the conversation where the last OpExpireMessages stopped
//	'm' 'n'                              -> the notifier's progress: the log index handled up to
//
// Everything in an entry, including the applied index, is written in one
// batch, so the database always holds the state as of some whole entry.
const (
	prefixMeta   byte = 'm'
	prefixUser   byte = 'u'
	prefixDevice byte = 'd'
	prefixConv   byte = 'c'
	prefixLast   byte = 'l'
	prefixMember byte = 'p'
	prefixEvent  byte = 'e'
	prefixEntry  byte = 'x'
	prefixDedup  byte = 'k'
	prefixCursor byte = 'r'
	prefixSystem byte = 's'
	prefixSeen   byte = 'w'
	prefixBlock  byte = 'b'
	prefixPush   byte = 'n'
	prefixMute   byte = 'z'
	prefixAudit  byte = 'v'
	prefixFirst  byte = 'q'

	metaFormat     byte = 'v'
	metaApplied    byte = 'a'
	metaLastUser   byte = 'u'
	metaLastDevice byte = 'd'
	metaLastConv   byte = 'c'
	metaSigningKey byte = 'k'
	metaExpiry     byte = 'e'
	metaLastTs     byte = 't'
	// metaPushProgress came after format 2 without a new format, as did
	// push targets and mutes: their absence is a valid state.
	metaPushProgress byte = 'n'
	metaRetention    byte = 'q'

	// storageFormat is the version of this layout and of the records.
	// 2 added the 'r', 's' and 'w' keys; a format 1 database lacks the
	// cursors and system seqs that unread counts derive from. The signing
	// key ('m' 'k') came later without a new format: its absence is a
	// valid state (no key yet), so older databases read correctly; so did
	// the blocks ('b': none) and the group-add setting in the seen record's
	// flags (0: everyone).
	storageFormat byte = 2
)

func metaKey(name byte) []byte { return []byte{prefixMeta, name} }

// key1 is prefix + a; key2 is prefix + a + b.
func key1(prefix byte, a uint64) []byte {
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, 9), prefix), a)
}

func key2(prefix byte, a, b uint64) []byte {
	return appendKey2(make([]byte, 0, 17), prefix, a, b)
}

func appendKey2(dst []byte, prefix byte, a, b uint64) []byte {
	dst = append(dst, prefix)
	dst = binary.BigEndian.AppendUint64(dst, a)
	return binary.BigEndian.AppendUint64(dst, b)
}

func appendDedupKey(dst []byte, user, device uint64, cmid string) []byte {
	return append(appendKey2(dst, prefixDedup, user, device), cmid...)
}

// prefixBounds are the bounds of every key starting with prefix.
func prefixBounds(prefix byte) (lower, upper []byte) {
	return []byte{prefix}, []byte{prefix + 1}
}

// u64At reads the big-endian integer at byte offset off of a key or value.
func u64At(b []byte, off int) uint64 { return binary.BigEndian.Uint64(b[off:]) }
