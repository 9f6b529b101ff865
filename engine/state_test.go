package engine

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// gen produces a random but reproducible stream of entries covering every
// operation. It applies what it generates to a scratch engine and reads the
// scratch state back, so most commands name real users, devices, members and
// admins; about one in ten is wrong on purpose (unknown IDs, missing rights),
// client_msg_ids repeat (duplicates and conflicts), and some commands do not
// decode. Entries hold one to eight commands.
type gen struct {
	t       testing.TB
	rng     *rand.Rand
	scratch *Engine
	index   uint64
	names   int
	devices map[uint64][]uint64 // user -> device IDs
}

func newGen(t testing.TB, seed uint64) *gen {
	return &gen{
		t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		scratch: openEngine(t, t.TempDir()), devices: map[uint64][]uint64{},
	}
}

func (g *gen) close() { g.scratch.Close() }

func (g *gen) chance(pct int) bool { return g.rng.IntN(100) < pct }

func (g *gen) pick(ids []uint64) uint64 {
	if len(ids) == 0 || g.chance(5) {
		return uint64(g.rng.IntN(1000) + 1) // most likely not there
	}
	return ids[g.rng.IntN(len(ids))]
}

func (g *gen) users() []uint64 {
	g.scratch.idx.mu.RLock()
	defer g.scratch.idx.mu.RUnlock()
	return slices.Sorted(maps.Keys(g.scratch.idx.users))
}

func (g *gen) convs() []uint64 {
	g.scratch.idx.mu.RLock()
	defer g.scratch.idx.mu.RUnlock()
	return slices.Sorted(maps.Keys(g.scratch.idx.convs))
}

// conv picks a conversation and, from it, an actor: an admin when admin is
// set, else a member; sometimes anyone.
func (g *gen) conv(admin bool) (conv, actor uint64, members []uint64) {
	conv = g.pick(g.convs())
	ci, _ := g.scratch.Conversation(conv)
	var admins []uint64
	for _, m := range ci.Members {
		members = append(members, m.User)
		if m.Admin {
			admins = append(admins, m.User)
		}
	}
	switch {
	case g.chance(10):
		actor = g.pick(g.users())
	case admin:
		actor = g.pick(admins)
	default:
		actor = g.pick(members)
	}
	return conv, actor, members
}

func (g *gen) userList(max int) []uint64 {
	out := make([]uint64, g.rng.IntN(max+1))
	users := g.users()
	for i := range out {
		out[i] = g.pick(users)
	}
	return out
}

func (g *gen) command() []byte {
	var c *Command
	users := g.users()
	switch p := g.rng.IntN(100); {
	case p < 5 || len(users) < 4:
		g.names++
		n := g.names
		if g.chance(10) {
			n = g.rng.IntN(n) + 1 // taken
		}
		c = &Command{Op: OpRegister, Username: fmt.Sprintf("user%d", n), PasswordHash: []byte("h")}
	case p < 9 || len(g.devices) < 3:
		c = &Command{Op: OpAddDevice, User: g.pick(users), DeviceName: "d"}
	case p < 10:
		u := g.pick(users)
		c = &Command{Op: OpRevokeDevice, User: u, Device: g.pick(g.devices[u])}
	case p < 15:
		c = &Command{Op: OpOpenDirect, User: g.pick(users), Peer: g.pick(users)}
	case p < 17:
		op := OpBlock
		if g.chance(40) {
			op = OpUnblock
		}
		c = &Command{Op: op, User: g.pick(users), Peer: g.pick(users)}
	case p < 22:
		c = &Command{Op: OpCreateGroup, User: g.pick(users), Name: fmt.Sprintf("g%d", g.rng.IntN(5)), Members: g.userList(8)}
	case p < 27:
		conv, actor, _ := g.conv(true)
		c = &Command{Op: OpAddMembers, User: actor, Conv: conv, Members: g.userList(4)}
	case p < 31:
		conv, actor, members := g.conv(true)
		c = &Command{Op: OpRemoveMember, User: actor, Conv: conv, Member: g.pick(members)}
	case p < 34:
		conv, actor, _ := g.conv(false)
		c = &Command{Op: OpLeave, User: actor, Conv: conv}
	case p < 38:
		conv, actor, members := g.conv(true)
		c = &Command{Op: OpSetAdmin, User: actor, Conv: conv, Member: g.pick(members), Admin: g.chance(60)}
	case p < 40:
		conv, actor, _ := g.conv(false)
		c = &Command{Op: OpRename, User: actor, Conv: conv, Name: fmt.Sprintf("n%d", g.rng.IntN(3))}
	case p < 88:
		conv, actor, _ := g.conv(false)
		ci, _ := g.scratch.Conversation(conv)
		c = &Command{
			Op: OpSend, User: actor, Device: g.pick(g.devices[actor]), Conv: conv,
			ClientMsgID: fmt.Sprintf("c%d", g.rng.IntN(int(g.index)/8+3)), // repeats: duplicates and conflicts
			Body:        strings.Repeat("b", 1+g.rng.IntN(40)),
		}
		if g.chance(20) {
			c.ReplyTo = uint64(g.rng.IntN(int(ci.LastSeq) + 2))
		}
	case p < 95:
		c = g.receipts()
	case p < 97:
		c = &Command{Op: OpLastSeen, User: g.pick(users), Ts: int64(g.index)*7 + 1_700_000_000_000 - int64(g.rng.IntN(30))}
	case p < 98:
		c = &Command{Op: OpSetPrivacy, User: g.pick(users), HideLastSeen: g.chance(50),
			GroupAdd: GroupAddPolicy(g.rng.IntN(5))} // 4: invalid
	default:
		b := make([]byte, g.rng.IntN(12))
		for i := range b {
			b[i] = byte(g.rng.Uint32())
		}
		if len(b) > 0 && b[0] > commandVersion {
			// Malformed, not newer: a newer command stops Apply
			// (TestNewerCommandStopsApply).
			b[0] = commandVersion
		}
		return b
	}
	return mustEncode(g.t, c)[0]
}

// receipts reports cursors of a member's conversations, sometimes stale,
// beyond the last seq, for a conversation the user is not in, or repeated.
func (g *gen) receipts() *Command {
	_, actor, _ := g.conv(false)
	c := &Command{Op: OpReceipts, User: actor, Device: g.pick(g.devices[actor])}
	convs := g.scratch.Conversations(actor)
	for range 1 + g.rng.IntN(4) {
		var it ReceiptItem
		var last uint64
		if len(convs) > 0 && !g.chance(10) {
			ci := convs[g.rng.IntN(len(convs))]
			it.Conv, last = ci.ID, ci.LastSeq
		} else if g.chance(50) {
			it.Conv = g.pick(g.convs())
			ci, _ := g.scratch.Conversation(it.Conv)
			last = ci.LastSeq
		} else {
			it.Conv, last = 1<<40, 3 // no such conversation
		}
		it.Delivered = uint64(g.rng.IntN(int(last) + 2))
		if g.chance(70) {
			it.Read = uint64(g.rng.IntN(int(last) + 2))
		}
		c.Items = append(c.Items, it)
	}
	return c
}

func (g *gen) entry() entry {
	g.index += 1 + uint64(g.rng.IntN(2)) // Raft indexes have gaps (configuration entries)
	en := entry{index: g.index, ts: int64(g.index)*7 + 1_700_000_000_000}
	for range 1 + g.rng.IntN(8) {
		en.cmds = append(en.cmds, g.command())
	}
	for _, r := range applyEntry(g.t, g.scratch, en) {
		if r.Device != 0 && r.Err == ErrCodeNone {
			g.devices[r.User] = append(g.devices[r.User], r.Device)
		}
	}
	return en
}

func (g *gen) entries(n int) []entry {
	out := make([]entry, n)
	for i := range out {
		out[i] = g.entry()
	}
	return out
}

// stream is n entries from a generator seeded with seed.
func stream(t testing.TB, seed uint64, n int) []entry {
	g := newGen(t, seed)
	defer g.close()
	return g.entries(n)
}

func fmtResults(rs []*Result) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "%+v\n", *r)
	}
	return b.String()
}

func fmtEvents(evs []Event) string {
	var b strings.Builder
	for i := range evs {
		b.WriteString(fmtEvent(&evs[i]) + "\n")
	}
	return b.String()
}

// TestDeterminism applies one random stream to two engines, one of them
// closed and reopened, and fed old entries again, at random points: results,
// published events and the full state must be identical.
func TestDeterminism(t *testing.T) {
	entries := stream(t, 1, 600)
	a := openEngine(t, t.TempDir())
	defer a.Close()
	bDir := t.TempDir()
	b := openEngine(t, bDir)
	defer func() { b.Close() }()
	recA, recB := &recorder{}, &recorder{}
	a.SetPublisher(recA)
	b.SetPublisher(recB)
	rng := rand.New(rand.NewPCG(2, 2))
	kinds := map[string]int{} // what the stream exercised

	for i, en := range entries {
		ra := applyEntry(t, a, en)
		rb := applyEntry(t, b, en)
		if ra == nil || rb == nil {
			t.Fatalf("entry %d skipped", en.index)
		}
		if fa, fb := fmtResults(ra), fmtResults(rb); fa != fb {
			t.Fatalf("entry %d: results differ:\n%s\n%s", en.index, fa, fb)
		}
		for _, r := range ra {
			for _, code := range r.ItemErrors {
				kinds["item "+string(code)]++
			}
		}
		evA := recA.take()
		for _, ev := range evA {
			kinds[string(ev.Kind)]++
		}
		if ea, eb := fmtEvents(evA), fmtEvents(recB.take()); ea != eb {
			t.Fatalf("entry %d: events differ:\n%s\n%s", en.index, ea, eb)
		}
		switch rng.IntN(40) {
		case 0: // restart
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			b = openEngine(t, bDir)
			b.SetPublisher(recB)
		case 1: // Raft replays entries already applied
			for _, old := range entries[rng.IntN(i+1) : i+1] {
				if res := b.Apply(old.index, old.ts, old.cmds); res != nil {
					t.Fatalf("entry %d applied twice", old.index)
				}
			}
			if evs := recB.take(); len(evs) != 0 {
				t.Fatalf("replay published %d events", len(evs))
			}
		}
	}
	if da, db := dumpState(t, a), dumpState(t, b); da != db {
		t.Fatalf("states differ:\n%s", diff(da, db))
	}
	checkInvariants(t, a)
	for _, k := range []string{"receipt", "device_revoked", "item ", "item not_member", "item invalid", "item not_found"} {
		if kinds[k] == 0 {
			t.Errorf("the stream made no %q (%v)", k, kinds)
		}
	}
}

// TestReopenRebuildsIndexes: the indexes rebuilt by Open equal the ones
// Apply maintained.
func TestReopenRebuildsIndexes(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir)
	for _, en := range stream(t, 3, 400) {
		applyEntry(t, e, en)
	}
	before := dumpState(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	defer e.Close()
	if after := dumpState(t, e); after != before {
		t.Fatalf("reopened state differs:\n%s", diff(before, after))
	}
}

// TestSnapshotRestore: a snapshot written while Apply goes on restores, into
// an engine holding other state, exactly the state it was taken at; the
// restored engine then follows the stream to the same end state.
func TestSnapshotRestore(t *testing.T) {
	entries := stream(t, 4, 500)
	first, rest := entries[:250], entries[250:]
	parent := t.TempDir()
	a := openEngine(t, filepath.Join(parent, "a"))
	defer a.Close()
	for _, en := range first {
		applyEntry(t, a, en)
	}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	atSnapshot := dumpState(t, a)

	var buf bytes.Buffer
	var n int64
	var werr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // as raft does: written out while Apply continues
		defer wg.Done()
		n, werr = snap.WriteTo(&buf)
	}()
	for _, en := range rest {
		applyEntry(t, a, en)
	}
	wg.Wait()
	snap.Release()
	snap.Release() // a second Release does nothing
	if werr != nil || n != int64(buf.Len()) || n == 0 {
		t.Fatalf("WriteTo: %d bytes, %v (buffer %d)", n, werr, buf.Len())
	}
	if left, _ := filepath.Glob(filepath.Join(parent, "a"+snapshotSuffix+"*")); len(left) != 0 {
		t.Fatalf("Release left %v", left)
	}

	bDir := filepath.Join(parent, "b")
	b := openEngine(t, bDir)
	defer func() { b.Close() }()
	for _, en := range stream(t, 99, 50) { // state to be replaced
		applyEntry(t, b, en)
	}
	if err := b.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if got := dumpState(t, b); got != atSnapshot {
		t.Fatalf("restored state differs:\n%s", diff(atSnapshot, got))
	}
	for _, p := range []string{bDir + restoreSuffix, bDir + oldSuffix} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("Restore left %s", p)
		}
	}
	for _, en := range rest {
		applyEntry(t, b, en)
	}
	if da, db := dumpState(t, a), dumpState(t, b); da != db {
		t.Fatalf("states differ after following the stream:\n%s", diff(da, db))
	}
	// The restored database is the engine's own from now on.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openEngine(t, bDir)
	if da, db := dumpState(t, a), dumpState(t, b); da != db {
		t.Fatalf("states differ after reopening:\n%s", diff(da, db))
	}
}

// TestRestoreRejectsGarbage: a snapshot that is not one fails and leaves the
// current state in place.
func TestRestoreRejectsGarbage(t *testing.T) {
	dir := t.TempDir()
	e := openEngine(t, dir)
	defer e.Close()
	for _, en := range stream(t, 5, 50) {
		applyEntry(t, e, en)
	}
	before := dumpState(t, e)
	for _, input := range []string{"", "not a tar stream at all", strings.Repeat("\x00", 2048)} {
		if err := e.Restore(strings.NewReader(input)); err == nil {
			t.Fatalf("Restore(%q...) succeeded", input[:min(len(input), 10)])
		}
	}
	if after := dumpState(t, e); after != before {
		t.Fatal("a failed Restore changed the state")
	}
}

// TestOpenRecoversInterruptedRestore: a crash between Restore's two renames
// leaves only the old directory; Open puts it back.
func TestOpenRecoversInterruptedRestore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	e := openEngine(t, dir)
	for _, en := range stream(t, 6, 30) {
		applyEntry(t, e, en)
	}
	before := dumpState(t, e)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir, dir+oldSuffix); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir+restoreSuffix, 0o755); err != nil {
		t.Fatal(err)
	}
	e = openEngine(t, dir)
	defer e.Close()
	if after := dumpState(t, e); after != before {
		t.Fatal("state differs after recovering")
	}
	if _, err := os.Stat(dir + restoreSuffix); !os.IsNotExist(err) {
		t.Fatal("Open left the half-unpacked snapshot")
	}
}

// TestQueriesDuringApply runs queries concurrently with Apply and a Restore
// (run it with -race). A query must never see the index ahead of Pebble: a
// conversation's LastSeq is always readable by History.
func TestQueriesDuringApply(t *testing.T) {
	entries := stream(t, 7, 400)
	e := openEngine(t, filepath.Join(t.TempDir(), "state"))
	defer e.Close()
	for _, en := range entries[:100] {
		applyEntry(t, e, en)
	}
	buf := snapshotBytes(t, e)

	// restores counts Restore calls started and finished: a query that saw
	// it change may have seen the state move back to the snapshot between
	// two calls, so its cross-call checks do not hold.
	var restores atomic.Int64
	done := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 0))
			for {
				select {
				case <-done:
					return
				default:
				}
				if err := queryOnce(e, rng, &restores); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i, en := range entries[100:] {
		if i == 150 {
			// Back to the snapshot, then forward again: Raft installing a
			// snapshot from the leader while clients read.
			restores.Add(1)
			if err := e.Restore(bytes.NewReader(buf.Bytes())); err != nil {
				t.Fatal(err)
			}
			restores.Add(1)
			for _, old := range entries[:250] {
				e.Apply(old.index, old.ts, old.cmds)
			}
			continue
		}
		e.Apply(en.index, en.ts, en.cmds)
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func queryOnce(e *Engine, rng *rand.Rand, restores *atomic.Int64) error {
	user, conv := uint64(rng.IntN(30)+1), uint64(rng.IntN(40)+1)
	epoch := restores.Load()
	if ci, ok := e.Conversation(conv); ok && len(ci.Members) > 0 {
		m := ci.Members[0].User
		evs, _, code := e.History(m, conv, 0, Before, 1, Budget{})
		switch {
		case epoch%2 == 1 || restores.Load() != epoch:
			// a Restore ran between the two calls
		case code == ErrCodeNotMember:
			// m left between the two calls
		case code != ErrCodeNone:
			return fmt.Errorf("history of conv %d: %s", conv, code)
		case len(evs) != 1 || evs[0].Seq < ci.LastSeq:
			return fmt.Errorf("conv %d: index at seq %d, history has %v", conv, ci.LastSeq, evs)
		}
	}
	evs, _, code := e.History(user, conv, 0, After, 50, Budget{})
	if code == ErrCodeInternal {
		return fmt.Errorf("history: %s", code)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			return fmt.Errorf("history of conv %d has a gap: %d then %d", conv, evs[i-1].Seq, evs[i].Seq)
		}
	}
	var after, afterConv uint64
	for range 20 {
		page, code := e.Sync(user, SyncQuery{After: after, AfterConv: afterConv, Convs: 5, Events: 3})
		if code != ErrCodeNone {
			return fmt.Errorf("sync: %s", code)
		}
		if !page.More {
			break
		}
		after, afterConv = page.Next, page.NextConv
	}
	for _, ci := range e.Conversations(user) {
		if ci.Read > ci.Delivered || ci.Delivered > ci.LastSeq || ci.Unread > ci.LastSeq-ci.Read {
			return fmt.Errorf("user %d conv %d: cursors %d/%d unread %d, last seq %d", user, ci.ID, ci.Delivered, ci.Read, ci.Unread, ci.LastSeq)
		}
	}
	if read, delivered, members, ok := e.ReadCount(conv, 1); ok && (read > delivered || delivered > members) {
		return fmt.Errorf("conv %d: read %d delivered %d of %d", conv, read, delivered, members)
	}
	if page, ok := e.Readers(conv, 1, 0, 3); ok && (len(page.Users) > 3 || !slices.IsSorted(page.Users)) {
		return fmt.Errorf("conv %d: readers %+v", conv, page)
	}
	e.ConversationFor(user, conv)
	e.LastSeen(user)
	if _, _, code := e.Devices(user, 0, 2); code != ErrCodeNone {
		return fmt.Errorf("devices: %s", code)
	}
	e.User(user)
	e.UserByName(fmt.Sprintf("user%d", user))
	e.DeviceActive(user, uint64(rng.IntN(20)+1))
	return nil
}

// checkInvariants verifies the stored events of every conversation against
// the guarantees: seqs 1..lastSeq without gaps, indexes non-decreasing with
// seq, and one entry key for each (conversation, index), naming the first
// seq of that index.
func checkInvariants(t *testing.T, e *Engine) {
	t.Helper()
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	type convCheck struct {
		seq, index uint64
		firsts     map[uint64]uint64 // index -> first seq
		system     []uint64          // seqs of the events that are not messages
		senders    []uint64          // by seq - 1: the sender of each message, 0 for the others
	}
	convs := map[uint64]*convCheck{}
	err := scan(e.db, prefixEvent, func(k, v []byte) error {
		conv, seq := u64At(k, 1), u64At(k, 9)
		var ev Event
		if err := decodeEvent(conv, seq, v, &ev); err != nil {
			return err
		}
		c := convs[conv]
		if c == nil {
			c = &convCheck{firsts: map[uint64]uint64{}}
			convs[conv] = c
		}
		if seq != c.seq+1 || ev.Index < c.index {
			return fmt.Errorf("conv %d: seq %d index %d after seq %d index %d", conv, seq, ev.Index, c.seq, c.index)
		}
		if ev.Index != c.index {
			c.firsts[ev.Index] = seq
		}
		var sender uint64
		if ev.Kind == EventMessage {
			sender = ev.From
		} else {
			c.system = append(c.system, seq)
		}
		c.senders = append(c.senders, sender)
		c.seq, c.index = seq, ev.Index
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	entries := 0
	err = scan(e.db, prefixEntry, func(k, v []byte) error {
		conv, index := u64At(k, 1), u64At(k, 9)
		entries++
		if c := convs[conv]; c == nil || c.firsts[index] != u64At(v, 0) {
			return fmt.Errorf("entry key conv %d index %d -> seq %d does not match the events", conv, index, u64At(v, 0))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for id, c := range convs {
		want += len(c.firsts)
		if ce := e.idx.convs[id]; ce == nil || ce.lastSeq != c.seq || ce.lastIndex != c.index {
			t.Fatalf("conv %d: index says %+v, events end at seq %d index %d", id, ce, c.seq, c.index)
		}
	}
	if entries != want {
		t.Fatalf("%d entry keys for %d (conversation, index) pairs", entries, want)
	}

	// Receipts: the derived state equals what the events and the cursor
	// records say, and unread (a binary search) equals a count over the
	// history of the messages from other users above the read cursor.
	cursorsChecked := 0
	for id, c := range e.idx.convs {
		cc := convs[id]
		if !slices.Equal(c.systemSeqs, cc.system) {
			t.Fatalf("conv %d: system seqs %v, events say %v", id, c.systemSeqs, cc.system)
		}
		var delivered, read []uint64
		for _, u := range c.members {
			m := e.idx.users[u].convs[id]
			cur := m.cursors
			if cur.read > cur.delivered || cur.delivered > c.lastSeq {
				t.Fatalf("conv %d user %d: cursors %+v, last seq %d", id, u, cur, c.lastSeq)
			}
			delivered, read = append(delivered, cur.delivered), append(read, cur.read)
			var unread uint64
			for seq := cur.read + 1; seq <= c.lastSeq; seq++ {
				if from := cc.senders[seq-1]; from != 0 && from != u {
					unread++
				}
			}
			if got := m.unread(); got != unread {
				t.Fatalf("conv %d user %d: unread %d, history says %d", id, u, got, unread)
			}
			cursorsChecked++
		}
		if c.kind == KindGroup {
			slices.Sort(delivered)
			slices.Sort(read)
			if !slices.Equal(c.cursors.delivered, delivered) || !slices.Equal(c.cursors.read, read) {
				t.Fatalf("conv %d: cursor set %+v, members have %v / %v", id, *c.cursors, delivered, read)
			}
		}
	}
	if cursorsChecked < 50 {
		t.Fatalf("only %d members' cursors checked", cursorsChecked)
	}
	if len(convs) < 10 {
		t.Fatalf("the stream made only %d conversations with events", len(convs))
	}
}

// diff shows the first differing lines of two dumps.
func diff(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, x, y)
		}
	}
	return "(equal)"
}
