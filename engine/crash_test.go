package engine

import (
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/record"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/hashicorp/raft"

	"parley/raftlog"
)

// The crash tests put a node's two databases, the Raft log (raftlog's
// LogStore: every append fsynced) and the state database (written without
// fsync), on one crashable in-memory file system, run a scripted sequence
// of entries through them as a node does (append the entry to the log,
// then apply it; an entry is acknowledged once applied) and crash the
// machine: vfs.MemFS.CrashClone keeps what was synced and, if asked, a
// random part of what was not. A node restarting on the clone opens both
// databases and replays the log after the engine's applied index, as raft
// does on start. Its state must be the state of a reference engine that
// applied the same log without a crash: every acknowledged entry present,
// none applied twice.

const (
	crashLogDir   = "/node/raft"
	crashStateDir = "/node/state"
)

// crashScript is a deterministic run of n entries (n >= 8) over four users:
// a 1:1 and a group, sends (some retried), receipts, renames, membership
// changes, more devices, last_seen. Bodies are 2 KB, so that the state
// database's WAL fills some of its 32 KiB blocks: Pebble writes a NoSync
// batch to the file only then (or on a sync), so with small ones every
// unsynced batch would still be in the process, not on the "disk".
func crashScript(t testing.TB, n int) []entry {
	t.Helper()
	var script [][]*Command
	add := func(cmds ...*Command) { script = append(script, cmds) }
	var reg, devs []*Command
	for u := 1; u <= 4; u++ {
		reg = append(reg, &Command{Op: OpRegister, Username: fmt.Sprintf("crash%d", u), PasswordHash: []byte("h")})
		devs = append(devs, &Command{Op: OpAddDevice, User: uint64(u), DeviceName: "phone"})
	}
	add(reg...)
	add(devs...)
	add(&Command{Op: OpOpenDirect, User: 1, Peer: 2})                                // conv 1
	add(&Command{Op: OpCreateGroup, User: 1, Name: "team", Members: []uint64{2, 3}}) // conv 2
	// Message i: user 1 in the 1:1 and user 2 in the group take turns.
	send := func(i int) *Command {
		from := uint64(1 + i%2)
		return &Command{Op: OpSend, User: from, Device: from, Conv: from,
			ClientMsgID: fmt.Sprintf("m%d", i), Body: fmt.Sprintf("message %d from %d ", i, from) + strings.Repeat("x", 2000)}
	}
	for i := 0; len(script) < n; i++ {
		cmds := []*Command{send(i)}
		switch i % 9 {
		case 1: // a retry of the previous send, in the same entry as a new one
			cmds = append(cmds, send(i-1))
		case 2:
			cmds = append(cmds, &Command{Op: OpReceipts, User: 2, Device: 2,
				Items: []ReceiptItem{{Conv: 1, Delivered: uint64(i/2 + 1), Read: uint64(i / 2)}}})
		case 3:
			cmds = append(cmds, &Command{Op: OpRename, User: 2, Conv: 2, Name: fmt.Sprintf("team %d", i)})
		case 4:
			if i%2 == 0 {
				cmds = append(cmds, &Command{Op: OpAddMembers, User: 1, Conv: 2, Members: []uint64{4}})
			} else {
				cmds = append(cmds, &Command{Op: OpRemoveMember, User: 1, Conv: 2, Member: 4})
			}
		case 5:
			cmds = append(cmds, &Command{Op: OpAddDevice, User: 3, DeviceName: fmt.Sprintf("laptop %d", i)})
		case 6:
			cmds = append(cmds, &Command{Op: OpLastSeen, User: 3, Ts: int64(1000 + i)},
				&Command{Op: OpReceipts, User: 3, Device: 3,
					Items: []ReceiptItem{{Conv: 2, Delivered: uint64(i/2 + 1), Read: uint64(i/2 + 1)}}})
		case 7:
			cmds = append(cmds, &Command{Op: OpSetAdmin, User: 1, Conv: 2, Member: 2, Admin: i%2 == 1})
		case 8: // a retry across entries
			cmds = append(cmds, send(i-2))
		}
		add(cmds...)
	}
	entries := make([]entry, len(script))
	for i, cmds := range script {
		entries[i] = entry{index: uint64(i + 1), ts: int64(1000 * (i + 1)), cmds: mustEncode(t, cmds...)}
	}
	return entries
}

// crashNode is a node's storage: its Raft log and its engine.
type crashNode struct {
	log       *raftlog.LogStore
	e         *Engine
	recovered uint64 // the engine's applied index when it opened, before the replay
}

// openCrashNode opens both databases on fs and replays the log after the
// engine's applied index, as raftlog does on start.
func openCrashNode(t testing.TB, fs vfs.FS) *crashNode {
	t.Helper()
	log, err := raftlog.OpenLogStoreFS(crashLogDir, nil, nil, fs)
	if err != nil {
		t.Fatal(err)
	}
	e, err := openFS(crashStateDir, nil, fs)
	if err != nil {
		_ = log.Close()
		t.Fatal(err)
	}
	n := &crashNode{log: log, e: e, recovered: e.AppliedIndex()}
	last, err := log.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if applied := e.AppliedIndex(); applied > last {
		t.Fatalf("the state database applied %d, the log ends at %d", applied, last)
	}
	for i := e.AppliedIndex() + 1; i <= last; i++ {
		var l raft.Log
		if err := log.GetLog(i, &l); err != nil {
			t.Fatalf("log entry %d: %v", i, err)
		}
		en, err := raftlog.DecodeEntry(l.Data)
		if err != nil {
			t.Fatalf("log entry %d: %v", i, err)
		}
		if e.Apply(l.Index, en.TS, en.Cmds) == nil {
			t.Fatalf("replayed entry %d skipped", i)
		}
	}
	return n
}

// step appends en to the log (synced) and applies it: once step returns,
// the entry is acknowledged.
func (n *crashNode) step(t testing.TB, en entry) {
	t.Helper()
	n.append(t, en)
	n.apply(t, en)
}

// append stores en in the log, synced, as raft does before it commits it.
func (n *crashNode) append(t testing.TB, en entry) {
	t.Helper()
	tags := make([]raftlog.Tag, len(en.cmds))
	data := raftlog.AppendEntry(nil, en.ts, en.cmds, tags)
	if err := n.log.StoreLogs([]*raft.Log{{Index: en.index, Term: 1, Type: raft.LogCommand, Data: data}}); err != nil {
		t.Fatal(err)
	}
}

// apply applies en, which must succeed command by command.
func (n *crashNode) apply(t testing.TB, en entry) {
	t.Helper()
	for _, r := range applyEntry(t, n.e, en) {
		if r.Err != ErrCodeNone {
			t.Fatalf("entry %d: %s", en.index, fmtResult(r))
		}
	}
}

func (n *crashNode) close(t testing.TB) {
	t.Helper()
	if err := n.e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.log.Close(); err != nil {
		t.Fatal(err)
	}
}

// lastLogIndex is the last index in the node's log.
func (n *crashNode) lastLogIndex(t testing.TB) uint64 {
	t.Helper()
	last, err := n.log.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// dumpObservable renders what clients can read: every user's devices and
// full sync from 0, every conversation's info and whole history as its
// members read it, receipt counts per event. It also checks that every
// history's seqs run 1, 2, ... without a gap or a repeat.
func dumpObservable(t testing.TB, e *Engine) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "applied %d\n", e.AppliedIndex())
	for u := uint64(1); ; u++ {
		usr, ok := e.User(u)
		if !ok {
			break
		}
		fmt.Fprintf(&b, "user %+v\n", usr)
		devs, _, _ := e.Devices(u, 0, 0)
		fmt.Fprintf(&b, "  devices %+v\n", devs)
		seen, hidden, _ := e.LastSeen(u)
		fmt.Fprintf(&b, "  last seen %d hidden=%v\n", seen, hidden)
		q := SyncQuery{}
		for {
			page, code := e.Sync(u, q)
			if code != ErrCodeNone {
				t.Fatalf("sync of user %d: %v", u, code)
			}
			fmt.Fprintf(&b, "  sync %+v\n", page)
			if !page.More {
				break
			}
			q.After, q.AfterConv = page.Next, page.NextConv
		}
	}
	for c := uint64(1); ; c++ {
		ci, ok := e.Conversation(c)
		if !ok {
			break
		}
		fmt.Fprintf(&b, "conv %+v\n", ci)
		var events []Event
		for anchor := uint64(0); ; {
			page, more, code := e.History(ci.Members[0].User, c, anchor, After, 0, Budget{})
			if code != ErrCodeNone {
				t.Fatalf("history of conv %d: %v", c, code)
			}
			events = append(events, page...)
			if !more {
				break
			}
			anchor = page[len(page)-1].Seq
		}
		for i, ev := range events {
			if ev.Seq != uint64(i+1) {
				t.Fatalf("conv %d: event %d has seq %d (seqs must run 1, 2, ... without gaps or repeats)", c, i, ev.Seq)
			}
			read, delivered, members, _ := e.ReadCount(c, ev.Seq)
			fmt.Fprintf(&b, "  %+v read=%d delivered=%d of %d\n", ev, read, delivered, members)
		}
	}
	return b.String()
}

// crashDump is everything the comparison looks at: what clients read and
// the whole state (every key in Pebble, the indexes).
func crashDump(t testing.TB, e *Engine) string {
	t.Helper()
	return dumpObservable(t, e) + dumpState(t, e)
}

// referenceDumps applies the script to an engine that never crashes and
// returns its dump after each entry: ref[k] is the state after 1..k.
func referenceDumps(t testing.TB, script []entry) []string {
	t.Helper()
	fs := vfs.NewMem()
	n := openCrashNode(t, fs)
	defer n.close(t)
	ref := []string{crashDump(t, n.e)}
	for _, en := range script {
		n.step(t, en)
		ref = append(ref, crashDump(t, n.e))
	}
	return ref
}

// checkRecovery restarts a node on fs and compares its state with the
// reference: at least the acked entries 1..acked, exactly the entries in
// the recovered log. It returns the applied index the state database
// recovered before the replay.
func checkRecovery(t testing.TB, what string, fs vfs.FS, acked uint64, ref []string) (recovered uint64) {
	t.Helper()
	n := openCrashNode(t, fs)
	defer n.close(t)
	last := n.lastLogIndex(t)
	if last < acked {
		t.Fatalf("%s: the log ends at %d, entries up to %d were acknowledged", what, last, acked)
	}
	if got := crashDump(t, n.e); got != ref[last] {
		t.Fatalf("%s: recovered state (the database had applied %d, the log replayed %d..%d) differs from the reference after entries 1..%d\n%s",
			what, n.recovered, n.recovered+1, last, last, firstDiff(got, ref[last]))
	}
	return n.recovered
}

// firstDiff shows where two dumps part.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range max(len(g), len(w)) {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i+1, gl, wl)
		}
	}
	return "(equal)"
}

// TestCrashEveryEntry crashes the machine at every point of the script:
// after each entry is appended to the log and before it is applied, and
// after it is applied (acknowledged). Each crash keeps exactly what was
// synced, and, at every point again, a seeded random part of what was not
// (torn WAL blocks of the state database included). A restart on each
// clone must come back with the reference state.
func TestCrashEveryEntry(t *testing.T) {
	script := crashScript(t, 48)
	ref := referenceDumps(t, script)

	type crash struct {
		what  string
		fs    *vfs.MemFS
		acked uint64
	}
	var crashes []crash
	fs := vfs.NewCrashableMem()
	n := openCrashNode(t, fs)
	for _, en := range script {
		acked := en.index - 1
		n.append(t, en)
		crashes = append(crashes, crash{fmt.Sprintf("entry %d logged, not applied", en.index), fs.CrashClone(vfs.CrashCloneCfg{}), acked})
		n.apply(t, en)
		acked = en.index
		crashes = append(crashes, crash{fmt.Sprintf("entry %d applied", en.index), fs.CrashClone(vfs.CrashCloneCfg{}), acked})
		for _, pct := range []int{30, 70} {
			rng := rand.New(rand.NewPCG(en.index, uint64(pct)))
			crashes = append(crashes, crash{fmt.Sprintf("entry %d applied, %d%% of unsynced data kept", en.index, pct),
				fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rng}), acked})
		}
	}
	n.close(t)
	partial := 0 // crashes where the state database kept some unsynced batches
	for _, c := range crashes {
		if checkRecovery(t, c.what, c.fs, c.acked, ref) > 0 {
			partial++
		}
	}
	t.Logf("%d crash points over %d entries; in %d of them the state database kept some of its unsynced batches", len(crashes), len(script), partial)
	if partial == 0 {
		t.Fatal("no crash kept any unsynced batch of the state database: the random clones test nothing")
	}
}

// TestCrashTornStateWAL crashes the machine with the Raft log durable up
// to the end of the script and the state database's WAL cut at every
// record boundary, and one byte after it (a torn record): every prefix of
// the state's batches that a crash could leave. A crash clone keeps or
// drops whole 4 KiB blocks; this reaches the points between two batches,
// where an applied index written apart from its state would show.
func TestCrashTornStateWAL(t *testing.T) {
	script := crashScript(t, 48)
	ref := referenceDumps(t, script)

	fs := vfs.NewCrashableMem()
	n := openCrashNode(t, fs)
	for _, en := range script {
		n.step(t, en)
	}
	// Closing syncs the WAL without flushing the memtable: the WAL holds
	// every batch.
	n.close(t)

	names, err := fs.List(crashStateDir)
	if err != nil {
		t.Fatal(err)
	}
	var wals []string
	for _, name := range names {
		if strings.HasSuffix(name, ".log") {
			wals = append(wals, name)
		}
	}
	slices.Sort(wals)
	if len(wals) == 0 {
		t.Fatalf("no WAL in %v", names)
	}
	// The newest WAL holds the batches (the others, if any, are older and
	// empty or already flushed).
	walName := wals[len(wals)-1]
	walPath := filepath.Join(crashStateDir, walName)
	wal := readFSFile(t, fs, walPath)
	var num uint64
	if _, err := fmt.Sscanf(walName, "%d.log", &num); err != nil {
		t.Fatal(err)
	}
	offsets := recordOffsets(t, wal, num)
	if len(offsets) < len(script) {
		t.Fatalf("%d records in the WAL for %d entries", len(offsets), len(script))
	}
	recovered := make(map[uint64]bool)
	var cuts []int64
	for _, off := range offsets {
		cuts = append(cuts, off, off+1)
	}
	cuts = append(cuts, int64(len(wal)))
	for _, cut := range cuts {
		if cut > int64(len(wal)) {
			continue
		}
		clone := fs.CrashClone(vfs.CrashCloneCfg{})
		writeFSFile(t, clone, walPath, slices.Clone(wal[:cut])) // Write may scribble on its argument (pebble invariants)
		recovered[checkRecovery(t, fmt.Sprintf("state WAL cut at %d of %d bytes", cut, len(wal)), clone, uint64(len(script)), ref)] = true
	}
	t.Logf("%d cuts over %d WAL records (%d bytes)", len(cuts), len(offsets), len(wal))
	// The cuts must have left the state as of every entry, none included
	// and all included: otherwise they missed crash points.
	for i := range uint64(len(script)) + 1 {
		if !recovered[i] {
			t.Fatalf("no cut recovered the state as of entry %d", i)
		}
	}
}

// recordOffsets returns the offsets where the WAL's records start (the
// first one 0), and where the last one ends.
func recordOffsets(t testing.TB, wal []byte, num uint64) []int64 {
	t.Helper()
	r := newRecordReader(record.NewReader, &byteReader{b: wal}, num)
	var offs []int64
	for {
		off := r.Offset()
		rec, err := r.Next()
		if err != nil {
			break // io.EOF, or the zeroed tail of a preallocated file
		}
		if _, err := io.Copy(io.Discard, rec); err != nil {
			break
		}
		offs = append(offs, off)
	}
	return append(offs, r.Offset())
}

// newRecordReader calls record.NewReader with the WAL's file number, whose
// type lives in a Pebble internal package.
func newRecordReader[N ~uint64](newReader func(io.Reader, N) *record.Reader, r io.Reader, num uint64) *record.Reader {
	return newReader(r, N(num))
}

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

func readFSFile(t testing.TB, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFSFile replaces path on fs with b, synced.
func writeFSFile(t testing.TB, fs vfs.FS, path string, b []byte) {
	t.Helper()
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCrashStateWriteError fails the state database's WAL writes from the
// middle of a run on (errorfs; the Raft log's disk stays healthy). Pebble
// writes NoSync batches to the WAL file from a background goroutine; the
// error reaches the next commit that starts a WAL block, and Pebble v2.1.7
// then panics with it (db.go:997, commitWrite, not through Logger.Fatalf).
// A system error there ends the process with exit 74 (applyBatch); the
// injected error is not one, so the panic goes on and the test recovers it,
// which stands for the process's death; the machine then crashes and the
// node restarts on healthy storage: every entry applied before the failure
// (acknowledged) and the one whose commit failed (logged, not
// acknowledged) must be there, once.
func TestCrashStateWriteError(t *testing.T) {
	script := crashScript(t, 160)
	ref := referenceDumps(t, script)

	mem := vfs.NewCrashableMem()
	var armed atomic.Bool
	stateFS := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if armed.Load() && op.Kind == errorfs.OpFileWrite && strings.HasSuffix(op.Path, ".log") {
			return errorfs.ErrInjected
		}
		return nil
	}))
	log, err := raftlog.OpenLogStoreFS(crashLogDir, nil, nil, mem)
	if err != nil {
		t.Fatal(err)
	}
	e, err := openFS(crashStateDir, nil, stateFS)
	if err != nil {
		t.Fatal(err)
	}
	n := &crashNode{log: log, e: e}
	var acked uint64
	failed := func(en entry) (msg any) {
		defer func() { msg = recover() }()
		n.step(t, en)
		return nil
	}
	for _, en := range script {
		if en.index == 20 {
			armed.Store(true)
		}
		if msg := failed(en); msg != nil {
			t.Logf("entry %d: the state database failed: panic: %v", en.index, msg)
			break
		}
		acked = en.index
	}
	if acked == uint64(len(script)) {
		t.Fatal("the injected write errors never reached Apply")
	}
	// Two crashes: one that keeps only synced data, one that keeps all
	// that reached the file system (the WAL up to the failed write).
	synced := mem.CrashClone(vfs.CrashCloneCfg{})
	written := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 1))})
	_ = log.Close()
	// The state database is left as it is: the process would be gone, and
	// Pebble's Close would wait forever for its stopped commit pipeline.
	checkRecovery(t, fmt.Sprintf("state WAL write failed after entry %d, synced data kept", acked), synced, acked, ref)
	got := checkRecovery(t, fmt.Sprintf("state WAL write failed after entry %d, written data kept", acked), written, acked, ref)
	t.Logf("with the written data, the state database recovered up to entry %d of %d acknowledged", got, acked)
}
