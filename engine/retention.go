package engine

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// Retention: a deployment may keep messages for a limited time. The leader
// submits OpExpireMessages with a cutoff (now less the retention); every
// replica deletes, conversation by conversation, the events older than
// the cutoff, oldest first. Within a conversation ts never decreases with
// seq (Apply clamps it), so what goes is always a prefix: the conversation
// keeps its events from FirstSeq on, and history, sync and ConvInfo say
// so. Seqs are not reused, receipts and cursors stay as they were, and the
// messages deleted are no longer counted unread. A message's attachments
// lose their reference (the file goes after the media grace period when no
// other message carries it).
//
// One command examines at most expireMessagesBudget events, resuming at
// the conversation where the previous one stopped (metaRetention) and
// wrapping around at the end, as OpExpireSends does; it reads the
// committed state only, so every replica deletes the same events.

// ExpireMessagesBudget is how many events one OpExpireMessages examines.
const ExpireMessagesBudget = 10_000

// expireMessagesBudget is ExpireMessagesBudget; tests lower it.
var expireMessagesBudget = ExpireMessagesBudget

func (t *txn) expireMessages(c *Command) *Result {
	cutoff := min(c.Ts, t.ts)
	if cutoff <= 0 {
		return failure(ErrCodeInvalid, "expire_messages needs a cutoff time")
	}
	var from uint64 = 1
	if v, ok := t.get(nil, metaKey(metaRetention)); ok && len(v) == 8 {
		from = u64At(v, 0)
	}
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: key1(prefixConv, from), UpperBound: key1(prefixConv, math.MaxUint64)})
	if err != nil {
		panic(fmt.Sprintf("engine: iterate conversations at entry %d: %v", t.index, err))
	}
	budget, expired := expireMessagesBudget, 0
	var stopAt uint64 // the conversation to resume at; 0: wrapped
	for valid := it.First(); valid; valid = it.Next() {
		conv := u64At(it.Key(), 1)
		n, done := t.expireConv(conv, cutoff, budget)
		budget -= n.examined
		expired += n.deleted
		if !done || budget <= 0 {
			stopAt = conv
			if done {
				stopAt = conv + 1
			}
			break
		}
	}
	if err := it.Close(); err != nil {
		panic(fmt.Sprintf("engine: iterate conversations at entry %d: %v", t.index, err))
	}
	if stopAt != 0 {
		t.set(metaKey(metaRetention), binary.BigEndian.AppendUint64(nil, stopAt))
	} else if err := t.b.Delete(metaKey(metaRetention), nil); err != nil {
		panic(fmt.Sprintf("engine: batch delete: %v", err))
	}
	r := t.ok(0, 0)
	r.Expired = expired
	return r
}

type expireCount struct{ examined, deleted int }

// expireConv deletes conv's events older than cutoff from its first kept
// seq, examining at most budget; done reports that it reached an event to
// keep (or the end).
func (t *txn) expireConv(conv uint64, cutoff int64, budget int) (n expireCount, done bool) {
	w := t.conv(conv)
	if w == nil {
		return n, true
	}
	first := max(w.c.firstSeq, 1)
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: key2(prefixEvent, conv, first), UpperBound: key2(prefixEvent, conv+1, 0)})
	if err != nil {
		panic(fmt.Sprintf("engine: iterate events at entry %d: %v", t.index, err))
	}
	next := first
	done = true
	var lastIndex uint64
	for valid := it.First(); valid; valid = it.Next() {
		if n.examined == budget {
			done = false
			break
		}
		n.examined++
		seq := u64At(it.Key(), 9)
		var ev Event
		if err := decodeEvent(conv, seq, it.Value(), &ev); err != nil {
			panic(corrupt("event", it.Key()).Error())
		}
		if ev.Ts >= cutoff {
			break
		}
		if len(ev.Attachments) != 0 {
			t.DropMessageMedia(conv, seq)
		}
		if err := t.b.Delete(it.Key(), nil); err != nil {
			panic(fmt.Sprintf("engine: batch delete: %v", err))
		}
		n.deleted++
		next, lastIndex = seq+1, ev.Index
	}
	if err := it.Close(); err != nil {
		panic(fmt.Sprintf("engine: iterate events at entry %d: %v", t.index, err))
	}
	if n.deleted == 0 {
		return n, done
	}
	// The entry keys of the deleted events go too: they only point into
	// what was deleted (sync seeks the first kept event through them).
	// When the budget stopped inside an entry's events (all of an entry's
	// share its ts, so the cutoff never does), that entry's key stays: it
	// still leads to its kept events.
	upto := lastIndex + 1
	if !done {
		upto = lastIndex
	}
	if err := t.b.DeleteRange(key2(prefixEntry, conv, 0), key2(prefixEntry, conv, upto), nil); err != nil {
		panic(fmt.Sprintf("engine: batch delete range: %v", err))
	}
	w.c.firstSeq = next
	w.changed = true
	t.set(key1(prefixFirst, conv), binary.BigEndian.AppendUint64(t.vbuf[:0], next))
	return n, done
}
