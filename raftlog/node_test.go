package raftlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"parley/internal/testwait"
)

// memSM is an in-memory StateMachine: the list of applied commands. Kept
// across Close and Open it stands for a persistent store; a new one stands
// for a node that lost its state. It records every Apply call so that tests
// can see replays.
type memSM struct {
	// gate, when set, makes Apply wait until it is closed; entered then
	// receives the index of each entry whose Apply is waiting.
	gate    chan struct{}
	entered chan uint64

	mu       sync.Mutex // guards the fields below
	applied  uint64
	cmds     []appliedCmd
	calls    map[uint64]int // Apply calls per index, including skipped ones
	restores int
}

type appliedCmd struct {
	Index uint64
	TS    int64
	Cmd   string
}

var _ StateMachine = (*memSM)(nil)

func newMemSM() *memSM { return &memSM{calls: make(map[uint64]int)} }

// Apply's result for a command is its 1-based position in the applied list.
func (m *memSM) Apply(index uint64, ts int64, cmds [][]byte) []any {
	if m.gate != nil {
		m.entered <- index
		<-m.gate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[index]++
	if index <= m.applied {
		return nil
	}
	results := make([]any, len(cmds))
	for i, c := range cmds {
		m.cmds = append(m.cmds, appliedCmd{Index: index, TS: ts, Cmd: string(c)})
		results[i] = len(m.cmds)
	}
	m.applied = index
	return results
}

func (m *memSM) AppliedIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.applied
}

type memSnapshot struct {
	Applied uint64
	Cmds    []appliedCmd
}

func (s *memSnapshot) WriteTo(w io.Writer) (int64, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

func (s *memSnapshot) Release() {}

func (m *memSM) Snapshot() (Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &memSnapshot{Applied: m.applied, Cmds: append([]appliedCmd(nil), m.cmds...)}, nil
}

func (m *memSM) Restore(r io.Reader) error {
	var s memSnapshot
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied, m.cmds = s.Applied, s.Cmds
	m.restores++
	return nil
}

// state returns a copy of what the state machine holds.
func (m *memSM) state() (cmds []appliedCmd, calls map[uint64]int, restores int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	calls = make(map[uint64]int, len(m.calls))
	for k, v := range m.calls {
		calls[k] = v
	}
	return append([]appliedCmd(nil), m.cmds...), calls, m.restores
}

// requireEachOnce checks that the state machine holds exactly want, each
// once, and returns the position of every command.
func requireEachOnce(t *testing.T, sm *memSM, want []string) map[string]int {
	t.Helper()
	cmds, _, _ := sm.state()
	pos := make(map[string]int, len(cmds))
	for i, c := range cmds {
		if _, dup := pos[c.Cmd]; dup {
			t.Fatalf("command %q applied twice", c.Cmd)
		}
		pos[c.Cmd] = i + 1
	}
	for _, w := range want {
		if _, ok := pos[w]; !ok {
			t.Fatalf("command %q missing from the state machine", w)
		}
	}
	if len(cmds) != len(want) {
		t.Fatalf("state machine holds %d commands, want %d", len(cmds), len(want))
	}
	return pos
}

// lockedWriter lets raft log through t until the test is over.
type lockedWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func testConfig(t *testing.T, dir string) Config {
	w := &lockedWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return Config{
		ID:        "n1",
		Dir:       dir,
		BindAddr:  "127.0.0.1:0",
		Bootstrap: true,
		LogOutput: w,
		// Tests that count outcomes hold Apply or load the machine: the
		// production admission would refuse some of their commands as
		// waiting too long. TestAdmission* set their own.
		AdmissionInterval: time.Hour,
	}
}

// openLoner opens a node that is not bootstrapped: it has no
// configuration and never leads. The test's cleanup closes it.
func openLoner(t *testing.T, id string) *Node {
	t.Helper()
	cfg := testConfig(t, t.TempDir())
	cfg.ID, cfg.Bootstrap = id, false
	n, err := Open(cfg, newMemSM())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func openLeader(t testing.TB, cfg Config, sm StateMachine) *Node {
	t.Helper()
	n, err := Open(cfg, sm)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		n.Close()
		t.Fatal(err)
	}
	if !n.IsLeader() {
		n.Close()
		t.Fatal("single voter is not the leader")
	}
	return n
}

func propose(t *testing.T, n *Node, cmd string) (any, uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, idx, err := n.Propose(ctx, []byte(cmd))
	if err != nil {
		t.Fatalf("Propose(%q): %v", cmd, err)
	}
	return res, idx
}

type outcome struct {
	result any
	index  uint64
	err    error
	calls  int
}

// TestProposeConcurrent: many goroutines submit at once; every callback
// runs exactly once with its own command's result, and each goroutine's
// commands are in the log in the order it submitted them.
func TestProposeConcurrent(t *testing.T) {
	sm := newMemSM()
	n := openLeader(t, testConfig(t, t.TempDir()), sm)
	defer n.Close()

	const submitters, perSubmitter = 16, 200
	var (
		mu       sync.Mutex
		outcomes = make(map[string]*outcome)
		pending  sync.WaitGroup
	)
	record := func(cmd string) DoneFunc {
		return func(result any, index uint64, err error) {
			mu.Lock()
			o := outcomes[cmd]
			if o == nil {
				o = &outcome{}
				outcomes[cmd] = o
			}
			o.result, o.index, o.err = result, index, err
			o.calls++
			mu.Unlock()
			pending.Done()
		}
	}
	var want []string
	var submitErrs atomic.Value
	var wg sync.WaitGroup
	for g := range submitters {
		for i := range perSubmitter {
			want = append(want, fmt.Sprintf("g%02d-%05d", g, i))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSubmitter {
				cmd := fmt.Sprintf("g%02d-%05d", g, i)
				if g%2 == 0 {
					// Fire and continue: many commands in flight.
					pending.Add(1)
					if err := n.Submit([]byte(cmd), record(cmd)); err != nil {
						pending.Done()
						submitErrs.Store(fmt.Errorf("Submit(%s): %w", cmd, err))
						return
					}
					continue
				}
				// One at a time, blocking.
				res, idx, err := n.Propose(context.Background(), []byte(cmd))
				mu.Lock()
				outcomes[cmd] = &outcome{result: res, index: idx, err: err, calls: 1}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err, _ := submitErrs.Load().(error); err != nil {
		t.Fatal(err)
	}
	allDone := make(chan struct{})
	go func() { pending.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(30 * time.Second):
		t.Fatal("callbacks did not all run")
	}

	pos := requireEachOnce(t, sm, want)
	cmds, calls, _ := sm.state()
	mu.Lock()
	defer mu.Unlock()
	for _, cmd := range want {
		o := outcomes[cmd]
		if o == nil || o.calls != 1 || o.err != nil {
			t.Fatalf("%s: outcome %+v, want exactly one success", cmd, o)
		}
		p := pos[cmd]
		if o.result != p || o.index != cmds[p-1].Index {
			t.Fatalf("%s: result %v at index %d, but it was applied at position %d, index %d",
				cmd, o.result, o.index, p, cmds[p-1].Index)
		}
	}
	// Per-submitter order.
	last := make(map[string]string)
	for _, c := range cmds {
		g := c.Cmd[:3]
		if prev, ok := last[g]; ok && prev >= c.Cmd {
			t.Fatalf("%s applied after %s", c.Cmd, prev)
		}
		last[g] = c.Cmd
	}
	// The bootstrap configuration (index 1) and the leader's noop never
	// reach the state machine; every entry it saw held test commands.
	if calls[1] != 0 || calls[2] != 0 {
		t.Fatalf("configuration or noop entry reached Apply: %v", calls)
	}
	for idx, c := range calls {
		if c != 1 {
			t.Fatalf("entry %d applied %d times", idx, c)
		}
	}
	// The leader stamps one timestamp per entry.
	tsOf := map[uint64]int64{}
	for _, c := range cmds {
		if ts, ok := tsOf[c.Index]; c.TS == 0 || (ok && ts != c.TS) {
			t.Fatalf("entry %d: timestamps %d and %d", c.Index, ts, c.TS)
		}
		tsOf[c.Index] = c.TS
	}

	st := n.Stats()
	total := uint64(submitters * perSubmitter)
	if st.CommandsProposed != total || st.CommandsCommitted != total || st.CommandsFailed != 0 {
		t.Fatalf("stats: %+v", st)
	}
	if st.EntriesCommitted != st.EntriesProposed || st.EntriesCommitted != uint64(len(calls)) {
		t.Fatalf("stats: %d entries proposed, %d committed, state machine saw %d",
			st.EntriesProposed, st.EntriesCommitted, len(calls))
	}
	if st.CommitLatency.Count != st.EntriesCommitted || st.ApplyLatency.Count != st.EntriesCommitted {
		t.Fatalf("latency counts %d, %d; want %d", st.CommitLatency.Count, st.ApplyLatency.Count, st.EntriesCommitted)
	}
	if !st.Leader || st.State != "Leader" || st.Term == 0 || st.AppliedIndex != cmds[len(cmds)-1].Index ||
		st.CommitIndex < st.AppliedIndex || st.LastIndex < st.CommitIndex || st.QueueCapacity != DefaultQueueLength {
		t.Fatalf("stats: %+v", st)
	}
	t.Logf("%d commands in %d entries", total, st.EntriesCommitted)
}

// TestRestartAppliesNothingTwice: after Close and Open on the same
// directory with the same (persistent) state machine, raft replays the log
// but the state machine skips what it has, no snapshot is restored over it,
// and nothing committed is missing.
func TestRestartAppliesNothingTwice(t *testing.T) {
	dir := t.TempDir()
	sm := newMemSM()
	n := openLeader(t, testConfig(t, dir), sm)
	var want []string
	for i := range 30 {
		want = append(want, fmt.Sprintf("before-%02d", i))
		propose(t, n, want[len(want)-1])
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	before, _, _ := sm.state()

	n = openLeader(t, testConfig(t, dir), sm)
	defer n.Close()
	for i := range 30 {
		want = append(want, fmt.Sprintf("after-%02d", i))
		res, _ := propose(t, n, want[len(want)-1])
		if res != 30+i+1 {
			t.Fatalf("result %v, want position %d", res, 30+i+1)
		}
	}
	requireEachOnce(t, sm, want)
	_, calls, restores := sm.state()
	if restores != 0 {
		t.Fatalf("raft restored %d snapshots over persistent state", restores)
	}
	// The first run's entries were replayed once more and skipped.
	for _, c := range before {
		if calls[c.Index] != 2 {
			t.Fatalf("entry %d seen %d times by Apply, want 2 (apply + skipped replay)", c.Index, calls[c.Index])
		}
	}
}

// TestRestartWithLostState: a node whose state machine lost its state
// (no snapshot yet) rebuilds it from the log.
func TestRestartWithLostState(t *testing.T) {
	dir := t.TempDir()
	n := openLeader(t, testConfig(t, dir), newMemSM())
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("c%02d", i))
		propose(t, n, want[i])
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	sm := newMemSM()
	n = openLeader(t, testConfig(t, dir), sm)
	defer n.Close()
	// Callbacks run in log order, so once this one has run the replay of
	// the earlier entries is done.
	want = append(want, "after")
	if res, _ := propose(t, n, "after"); res != len(want) {
		t.Fatalf("result %v, want %d", res, len(want))
	}
	requireEachOnce(t, sm, want)
}

// TestSnapshotThenRestart: Snapshot compacts the log; a restart keeps a
// persistent state machine as it is, and restores the snapshot into one
// that lost its state.
func TestSnapshotThenRestart(t *testing.T) {
	for _, keepState := range []bool{true, false} {
		t.Run(fmt.Sprintf("keepState=%v", keepState), func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			cfg.TrailingLogs = 5
			cfg.SnapshotThreshold = 1 << 30 // only the explicit snapshot
			sm := newMemSM()
			n := openLeader(t, cfg, sm)
			if err := n.Snapshot(); !errors.Is(err, ErrNothingToSnapshot) {
				t.Fatalf("Snapshot with nothing applied: %v", err)
			}
			var want []string
			for i := range 40 {
				want = append(want, fmt.Sprintf("s%02d", i))
				propose(t, n, want[i])
			}
			if err := n.Snapshot(); err != nil {
				t.Fatal(err)
			}
			for i := 40; i < 50; i++ {
				want = append(want, fmt.Sprintf("s%02d", i))
				propose(t, n, want[i])
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}

			// The log was compacted, so the early entries exist only in the
			// snapshot.
			logs, err := OpenLogStore(filepath.Join(dir, "log"), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			first, err := logs.FirstIndex()
			logs.Close()
			if err != nil || first <= 10 {
				t.Fatalf("first log index after snapshot = %d, %v; want compaction", first, err)
			}
			snaps, err := os.ReadDir(filepath.Join(dir, "snapshots"))
			if err != nil || len(snaps) != 1 {
				t.Fatalf("snapshots dir: %v, %v", snaps, err)
			}

			if !keepState {
				sm = newMemSM()
			}
			n = openLeader(t, cfg, sm)
			defer n.Close()
			want = append(want, "after")
			res, _ := propose(t, n, "after")
			if res != len(want) {
				t.Fatalf("result %v, want %d", res, len(want))
			}
			requireEachOnce(t, sm, want)
			_, _, restores := sm.state()
			if wantRestores := map[bool]int{true: 0, false: 1}[keepState]; restores != wantRestores {
				t.Fatalf("%d restores, want %d", restores, wantRestores)
			}
		})
	}
}

// TestSubmitBusy: with the proposer stalled and the queue full, Submit
// refuses at once with ErrBusy; the accepted commands still complete.
func TestSubmitBusy(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.QueueLength = 1
	cfg.MaxInflightEntries = 1
	sm := newMemSM()
	sm.gate = make(chan struct{})
	sm.entered = make(chan uint64, 8)
	n := openLeader(t, cfg, sm)
	defer n.Close()

	results := make(chan error, 3)
	done := func(_ any, _ uint64, err error) { results <- err }
	if err := n.Submit([]byte("a"), done); err != nil {
		t.Fatal(err)
	}
	// "a" is in Apply, holding the only in-flight slot, so the proposer
	// cannot take "b" out of the queue.
	select {
	case <-sm.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("first command never reached Apply")
	}
	if err := n.Submit([]byte("b"), done); err != nil {
		t.Fatal(err)
	}
	if err := n.Submit([]byte("c"), done); !errors.Is(err, ErrBusy) {
		t.Fatalf("Submit on a full queue: %v, want ErrBusy", err)
	}
	if st := n.Stats(); st.CommandsRejected != 1 || st.QueueLength != 1 || st.Inflight != 1 {
		t.Fatalf("stats: rejected %d, queue %d, inflight %d", st.CommandsRejected, st.QueueLength, st.Inflight)
	}
	close(sm.gate)
	for range 2 {
		select {
		case err := <-results:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("callbacks did not run")
		}
	}
	requireEachOnce(t, sm, []string{"a", "b"})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-results:
		t.Fatalf("callback of the refused command ran: %v", err)
	default:
	}
}

// TestCloseFailsQueued: Close fails queued commands with ErrClosed, lets
// the entry in flight finish, and Submit fails afterwards.
func TestCloseFailsQueued(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxInflightEntries = 1
	sm := newMemSM()
	sm.gate = make(chan struct{})
	sm.entered = make(chan uint64, 8)
	n := openLeader(t, cfg, sm)

	type res struct {
		cmd string
		err error
	}
	results := make(chan res, 2)
	submit := func(cmd string) {
		t.Helper()
		if err := n.Submit([]byte(cmd), func(_ any, _ uint64, err error) { results <- res{cmd, err} }); err != nil {
			t.Fatal(err)
		}
	}
	submit("inflight")
	<-sm.entered
	submit("queued")
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	// The proposer empties the queue once it sees Close.
	testwait.Eventually(t, "the queue to drain", func() bool { return len(n.queue) == 0 })
	close(sm.gate)
	got := map[string]error{}
	for range 2 {
		r := <-results
		got[r.cmd] = r.err
	}
	if got["inflight"] != nil || !errors.Is(got["queued"], ErrClosed) {
		t.Fatalf("outcomes: %v", got)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := n.Submit([]byte("late"), func(any, uint64, error) { t.Error("callback after Close") }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
	if _, _, err := n.Propose(context.Background(), []byte("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Propose after Close: %v", err)
	}
	if err := n.WaitLeader(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitLeader after Close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	requireEachOnce(t, sm, []string{"inflight"})
}

func TestSubmitRefusals(t *testing.T) {
	// A node that is not bootstrapped has no configuration: it never leads.
	n := openLoner(t, "loner")
	if err := n.Submit([]byte("x"), func(any, uint64, error) {}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Submit on a follower: %v", err)
	}
	if n.IsLeader() || n.LeaderAddr() != "" {
		t.Fatal("unbootstrapped node claims a leader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := n.WaitLeader(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitLeader without a cluster: %v", err)
	}

	cfg := testConfig(t, t.TempDir())
	cfg.MaxBatchBytes = 8
	l := openLeader(t, cfg, newMemSM())
	defer l.Close()
	if err := l.Submit(make([]byte, 9), func(any, uint64, error) {}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Submit of 9 bytes with MaxBatchBytes 8: %v", err)
	}
	if l.LeaderAddr() != l.Addr() || !strings.HasPrefix(l.Addr(), "127.0.0.1:") {
		t.Fatalf("leader %q, self %q", l.LeaderAddr(), l.Addr())
	}
}

// TestBatchLimits: the proposer never puts more than MaxBatchCommands or
// MaxBatchBytes into one entry, even with a long queue.
func TestBatchLimits(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxBatchCommands = 3
	cfg.MaxBatchBytes = 10
	cfg.MaxInflightEntries = 1
	sm := newMemSM()
	sm.gate = make(chan struct{})
	sm.entered = make(chan uint64, 64)
	n := openLeader(t, cfg, sm)
	defer n.Close()

	var pending sync.WaitGroup
	var failed atomic.Int32
	done := func(_ any, _ uint64, err error) {
		if err != nil {
			failed.Add(1)
		}
		pending.Done()
	}
	submit := func(cmd string) {
		pending.Add(1)
		if err := n.Submit([]byte(cmd), done); err != nil {
			t.Fatal(err)
		}
	}
	submit("first")
	<-sm.entered // the proposer is stalled; queue the rest behind it
	cmds := []string{"a", "b", "c", "d", "eeeeeeee", "ff", "g", "hhhhhhhhhh", "i"}
	for _, c := range cmds {
		submit(c)
	}
	close(sm.gate) // entered has room for every remaining entry
	pending.Wait()
	if failed.Load() != 0 {
		t.Fatal("commands failed")
	}
	applied, _, _ := sm.state()
	perEntry := map[uint64][]string{}
	for _, c := range applied {
		perEntry[c.Index] = append(perEntry[c.Index], c.Cmd)
	}
	for idx, group := range perEntry {
		size := 0
		for _, c := range group {
			size += len(c)
		}
		if len(group) > 3 || (len(group) > 1 && size > 10) {
			t.Fatalf("entry %d holds %q", idx, group)
		}
	}
	// With everything queued up front the batches are deterministic.
	var groups []string
	var lastIndex uint64
	for _, c := range applied {
		if c.Index != lastIndex {
			groups = append(groups, strings.Join(perEntry[c.Index], ","))
			lastIndex = c.Index
		}
	}
	if got, want := strings.Join(groups, " | "), "first | a,b,c | d,eeeeeeee | ff,g | hhhhhhhhhh | i"; got != want {
		t.Fatalf("batches %s, want %s", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{ID: "a", Dir: "/tmp/x", BindAddr: "127.0.0.1:0"}).Validate(); err != nil {
		t.Fatalf("minimal config: %v", err)
	}
	bad := Config{
		BindAddr:           "0.0.0.0:7000",
		MaxBatchCommands:   -1,
		MaxAppendEntries:   2000,
		HeartbeatTimeout:   time.Second,
		LeaderLeaseTimeout: 2 * time.Second,
		LogLevel:           "loud",
		ClusterKey:         []byte("short"),
	}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"ID", "Dir", "AdvertiseAddr", "MaxBatchCommands", "MaxAppendEntries", "LeaderLeaseTimeout", "LogLevel", "ClusterKey"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
	if _, err := Open(bad, newMemSM()); err == nil {
		t.Fatal("Open accepted a bad config")
	}
}

// TestOpenRefusesStateWithoutLog: a state machine with applied entries
// over an empty raft directory would silently skip new entries.
func TestOpenRefusesStateWithoutLog(t *testing.T) {
	sm := newMemSM()
	sm.Apply(5, 0, [][]byte{[]byte("x")})
	if n, err := Open(testConfig(t, t.TempDir()), sm); err == nil {
		n.Close()
		t.Fatal("Open accepted a state machine ahead of an empty log")
	}
}

// BenchmarkPropose measures committed commands per second with many
// concurrent blocking submitters, fsync on (one synced Pebble batch per
// raft write). Each submitter has one command in flight, so group commit
// comes only from concurrency.
func BenchmarkPropose(b *testing.B) {
	for _, perProc := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("submitters=%dxGOMAXPROCS", perProc), func(b *testing.B) {
			cfg := Config{ID: "bench", Dir: b.TempDir(), BindAddr: "127.0.0.1:0", Bootstrap: true, LogOutput: io.Discard}
			n := openLeader(b, cfg, &countingSM{})
			defer n.Close()
			cmd := make([]byte, 200)
			b.SetParallelism(perProc)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := n.Propose(context.Background(), cmd); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			st := n.Stats()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmds/s")
			if st.EntriesCommitted > 0 {
				b.ReportMetric(float64(st.CommandsCommitted)/float64(st.EntriesCommitted), "cmds/entry")
			}
		})
	}
}

// countingSM is a minimal StateMachine for benchmarks: it counts.
type countingSM struct {
	applied atomic.Uint64
	count   uint64
}

func (c *countingSM) Apply(index uint64, _ int64, cmds [][]byte) []any {
	if index <= c.applied.Load() {
		return nil
	}
	c.count += uint64(len(cmds))
	c.applied.Store(index)
	return make([]any, len(cmds))
}
func (c *countingSM) AppliedIndex() uint64 { return c.applied.Load() }
func (c *countingSM) Snapshot() (Snapshot, error) {
	return &memSnapshot{Applied: c.applied.Load()}, nil
}
func (c *countingSM) Restore(r io.Reader) error {
	var s memSnapshot
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return err
	}
	c.applied.Store(s.Applied)
	return nil
}
