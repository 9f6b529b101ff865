package wire

import "math"

// SyncAdvanced reports whether a sync page's position (next, nextConv)
// lies past the position it was asked from (after, afterConv). A position
// is a change index and, within it, the last conversation ID returned;
// conv 0 means the whole index is done, which is past any conversation of
// that index (docs/PROTOCOL.md, sync).
func SyncAdvanced(after, afterConv, next, nextConv uint64) bool {
	whole := func(c uint64) uint64 {
		if c == 0 {
			return math.MaxUint64
		}
		return c
	}
	if next != after {
		return next > after
	}
	return whole(nextConv) > whole(afterConv)
}
