package engine

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
)

// openBenchEngine opens an engine with a block cache of the node's default
// size (256 MiB): with Pebble's private 8 MiB default, bloom filter blocks do
// not stay cached and every lookup reads from the file.
func openBenchEngine(b *testing.B) *Engine {
	cache := pebble.NewCache(256 << 20)
	defer cache.Unref()
	e, err := Open(b.TempDir(), cache)
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkApplySend measures Apply on entries of sends (the proposer's
// group commit puts up to hundreds of commands in one entry): 1,000 users
// in 1,000 direct conversations, each send with a fresh client_msg_id, so
// every send does its dedup and device lookups, appends its event, its dedup
// record and the conversation's entry key. Commands are encoded before the
// timer starts (encoding is the proposer's cost).
func BenchmarkApplySend(b *testing.B) {
	for _, perEntry := range []int{1, 256} {
		b.Run(fmt.Sprintf("sends=%d", perEntry), func(b *testing.B) {
			e := openBenchEngine(b)
			defer e.Close()
			const users = 1000
			idx := setup(b, e, users)
			var opens []*Command
			for u := uint64(1); u <= users; u++ {
				opens = append(opens, &Command{Op: OpOpenDirect, User: u, Peer: u%users + 1})
			}
			applyEntry(b, e, entry{index: idx, cmds: mustEncode(b, opens...)})
			idx++

			cmds := make([][]byte, b.N)
			for i := range cmds {
				u := uint64(i%users) + 1
				cmds[i] = mustEncode(b, &Command{
					Op: OpSend, User: u, Device: u, Conv: u, // conv u is u's with u+1
					ClientMsgID: fmt.Sprintf("m%d", i), Body: "a message of a typical length, some sixty bytes",
				})[0]
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < len(cmds); i += perEntry {
				batch := cmds[i:min(i+perEntry, len(cmds))]
				if res := e.Apply(idx, int64(idx), batch); res[0].(*Result).Err != ErrCodeNone {
					b.Fatal(fmtResult(res[0].(*Result)))
				}
				idx++
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
		})
	}
}

// BenchmarkSync measures a device catching up: a user in 500 group
// conversations of 20 messages each. "catchup" pages from cursor 0 through
// all of them (50 conversations and 50 events a page); "incremental" syncs a
// cursor 20 entries behind (100 changed conversations, one event each).
func BenchmarkSync(b *testing.B) {
	e := openBenchEngine(b)
	defer e.Close()
	idx := setup(b, e, 2)
	const convs = 500
	for range convs {
		applyEntry(b, e, entry{index: idx, cmds: mustEncode(b, &Command{Op: OpCreateGroup, User: 1, Name: "g", Members: []uint64{2}})})
		idx++
	}
	n := 0
	for round := range 20 {
		var cmds []*Command
		for c := uint64(1); c <= convs; c++ {
			n++
			cmds = append(cmds, &Command{Op: OpSend, User: 1, Device: 1, Conv: c, ClientMsgID: fmt.Sprint(n), Body: fmt.Sprintf("message %d", round)})
			if len(cmds) == 5 {
				applyEntry(b, e, entry{index: idx, cmds: mustEncode(b, cmds...)})
				idx++
				cmds = nil
			}
		}
	}
	applied := e.AppliedIndex()

	b.Run("catchup", func(b *testing.B) {
		b.ReportAllocs()
		events := 0
		for range b.N {
			var after, afterConv uint64
			for {
				page, code := e.Sync(2, SyncQuery{After: after, AfterConv: afterConv, Convs: 50, Events: 50})
				if code != ErrCodeNone {
					b.Fatal(code)
				}
				for i := range page.Convs {
					events += len(page.Convs[i].Events)
				}
				if !page.More {
					break
				}
				after, afterConv = page.Next, page.NextConv
			}
		}
		if events != b.N*convs*21 {
			b.Fatalf("%d events, want %d", events, b.N*convs*21)
		}
	})
	b.Run("incremental", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			page, code := e.Sync(2, SyncQuery{Since: applied - 20, Convs: 100, Events: 50})
			if code != ErrCodeNone || page.More || len(page.Convs) != 100 {
				b.Fatalf("%s: %d convs, more=%v", code, len(page.Convs), page.More)
			}
		}
	})
}

// BenchmarkApplyReceipts measures Apply on entries of OpReceipts (64
// commands an entry, as the proposer batches them): 1,000 users, all
// members of 50 groups of 100 messages each. Every item moves its user's
// read cursor forward by one (so each one writes its record, moves the
// group's sorted cursor sets past the members at the old value, and
// publishes an event to the reader); "items=1" is one conversation a
// command, "items=50" a device's coalesced report over all 50.
func BenchmarkApplyReceipts(b *testing.B) {
	const (
		users    = 1000
		groups   = 50
		messages = 100
		perEntry = 64
	)
	for _, items := range []int{1, groups} {
		b.Run(fmt.Sprintf("items=%d", items), func(b *testing.B) {
			e := openBenchEngine(b)
			defer e.Close()
			idx := setup(b, e, users)
			others := make([]uint64, 0, users-1)
			for u := uint64(2); u <= users; u++ {
				others = append(others, u)
			}
			for range groups {
				applyEntry(b, e, entry{index: idx, cmds: mustEncode(b, &Command{Op: OpCreateGroup, User: 1, Name: "g", Members: others})})
				idx++
			}
			var sends []*Command
			for i := range groups * messages {
				sends = append(sends, &Command{Op: OpSend, User: 1, Device: 1, Conv: uint64(i%groups + 1), ClientMsgID: fmt.Sprint(i), Body: "m"})
				if len(sends) == 250 {
					applyEntry(b, e, entry{index: idx, cmds: mustEncode(b, sends...)})
					idx++
					sends = sends[:0]
				}
			}

			// Command i: user i%users reads one seq further in its groups.
			// There are users*groups*messages moves to make.
			cmds := make([][]byte, b.N)
			for i := range cmds {
				u := uint64(i%users) + 1
				c := &Command{Op: OpReceipts, User: u, Device: u}
				round := i / users
				if items == 1 {
					conv := uint64(round%groups) + 1
					c.Items = []ReceiptItem{{Conv: conv, Read: uint64(round/groups)%messages + 2}}
				} else {
					for conv := uint64(1); conv <= groups; conv++ {
						c.Items = append(c.Items, ReceiptItem{Conv: conv, Read: uint64(round)%messages + 2})
					}
				}
				cmds[i] = mustEncode(b, c)[0]
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < len(cmds); i += perEntry {
				res := e.Apply(idx, int64(idx), cmds[i:min(i+perEntry, len(cmds))])
				if r := res[0].(*Result); r.Err != ErrCodeNone || r.ItemErrors != nil {
					b.Fatal(fmtResult(r))
				}
				idx++
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*items)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
