package engine

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// ExpireSendsBudget is how many dedup records one OpExpireSends examines.
// It bounds the command's apply time (a sequential scan: a few ms), so the
// leader submits it often rather than a large one that would stall every
// replica's apply.
const ExpireSendsBudget = 10_000

// expireBudget is ExpireSendsBudget; tests lower it to exercise the
// resume-and-wrap path on a few records.
var expireBudget = ExpireSendsBudget

// expireSends deletes the dedup records ('k' keys) of sends older than
// c.Ts. A dedup record lets a client retry a send with its client_msg_id
// and get the original outcome; after the retention the node chose
// (c.Ts = now - retention), a retry would be stored as a new message, which
// clients are told (PROTOCOL.md). Without expiry the records grow with
// every message for ever.
//
// The scan resumes after the key where the previous command stopped
// (metaExpiry) and wraps around at the end, so successive commands sweep
// the whole prefix in budgeted steps. It reads the committed state only,
// which is the same on every replica at this entry, so every replica
// deletes the same records: Apply stays deterministic. A dedup record
// written earlier in the same entry is never older than the entry itself,
// so it cannot be due.
func (t *txn) expireSends(c *Command) *Result {
	cutoff := min(c.Ts, t.ts) // never ahead of the leader's clock at this entry
	if cutoff <= 0 {
		return failure(ErrCodeInvalid, "expire_sends needs a cutoff time")
	}
	lower, upper := prefixBounds(prefixDedup)
	if cur, ok := t.get(nil, metaKey(metaExpiry)); ok {
		lower = append(cur, 0) // the smallest key after cur
	}
	it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		panic(fmt.Sprintf("engine: iterate dedup records at entry %d: %v", t.index, err))
	}
	examined, expired := 0, 0
	var last []byte
	valid := it.First()
	for ; valid && examined < expireBudget; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			break
		}
		rec, ok := decodeSendRecord(v)
		if !ok {
			panic(corrupt("send record", it.Key()).Error())
		}
		examined++
		if rec.ts < cutoff {
			if err := t.b.Delete(it.Key(), nil); err != nil {
				panic(fmt.Sprintf("engine: batch delete: %v", err))
			}
			expired++
		}
		last = append(last[:0], it.Key()...)
	}
	if err := it.Close(); err != nil {
		panic(fmt.Sprintf("engine: iterate dedup records at entry %d: %v", t.index, err))
	}
	if valid {
		t.set(metaKey(metaExpiry), last) // budget spent: resume after last
	} else if err := t.b.Delete(metaKey(metaExpiry), nil); err != nil { // reached the end: wrap
		panic(fmt.Sprintf("engine: batch delete: %v", err))
	}
	r := t.ok(0, 0)
	r.Expired = expired
	return r
}
