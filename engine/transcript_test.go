package engine

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Transcript tests: each testdata/*.txt file is a script of directives, each
// followed by "----" and the output it must produce, up to a blank line.
// `go test ./engine -run TestTranscripts -update` rewrites the expected
// output from the actual one (review the diff before committing it).
//
// Every write directive is one Raft entry (index 1, 2, 3 ..., ts = index *
// 1000); "batch" puts the command lines that follow it in one entry. The
// output of a write is one line per command result, then the events the
// entry published ("to" lists the recipients). The directives are listed in
// runner.run.
var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actual output")

func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in testdata (%v)", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runTranscript(t, f) })
	}
}

type block struct {
	line     int      // of the "----"
	pre      []string // comments, blank lines and the directive lines, as written
	input    []string // the directive lines
	expected []string
}

func parseTranscript(t *testing.T, path string) (blocks []block, trailer []string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var cur block
	inExpected := false
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case inExpected && line == "":
			blocks = append(blocks, cur)
			cur, inExpected = block{}, false
		case inExpected:
			cur.expected = append(cur.expected, line)
		case line == "----":
			if len(cur.input) == 0 {
				t.Fatalf("%s:%d: ---- without a directive", path, n)
			}
			cur.line, inExpected = n, true
		default:
			cur.pre = append(cur.pre, line)
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				cur.input = append(cur.input, s)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if inExpected {
		blocks = append(blocks, cur)
	} else {
		trailer = cur.pre
	}
	return blocks, trailer
}

func runTranscript(t *testing.T, path string) {
	blocks, trailer := parseTranscript(t, path)
	r := newRunner(t)
	defer r.close()
	var out strings.Builder
	for _, b := range blocks {
		got := r.run(b.input)
		if len(got) == 0 {
			got = []string{"(no output)"}
		}
		if !*update && strings.Join(got, "\n") != strings.Join(b.expected, "\n") {
			t.Errorf("%s:%d: %s\n--- got:\n%s\n--- want:\n%s", path, b.line, b.input[0],
				strings.Join(got, "\n"), strings.Join(b.expected, "\n"))
		}
		for _, l := range b.pre {
			out.WriteString(l + "\n")
		}
		out.WriteString("----\n")
		for _, l := range got {
			out.WriteString(l + "\n")
		}
		out.WriteString("\n")
	}
	for _, l := range trailer {
		out.WriteString(l + "\n")
	}
	if *update {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type runner struct {
	t       *testing.T
	dir     string
	e       *Engine
	rec     *recorder
	index   uint64
	entries []entry
	cmids   int  // for generated client_msg_ids
	cursors bool // show-cursors: conversation lines show receipt cursors
}

func newRunner(t *testing.T) *runner {
	r := &runner{t: t, dir: filepath.Join(t.TempDir(), "state"), rec: &recorder{}}
	r.e = openEngine(t, r.dir)
	r.e.SetPublisher(r.rec)
	return r
}

func (r *runner) close() {
	if err := r.e.Close(); err != nil {
		r.t.Error(err)
	}
}

// args are the key=value tokens of a directive line.
type args struct {
	t    *testing.T
	line string
	kv   map[string]string
}

func parseLine(t *testing.T, line string) (string, args) {
	var toks []string
	for rest := strings.TrimSpace(line); rest != ""; rest = strings.TrimSpace(rest) {
		i := 0
		for i < len(rest) && rest[i] != ' ' {
			if rest[i] == '"' { // a quoted value runs to its closing quote
				j := i + 1
				for j < len(rest) && rest[j] != '"' {
					if rest[j] == '\\' {
						j++
					}
					j++
				}
				i = j
			}
			i++
		}
		i = min(i, len(rest))
		toks = append(toks, rest[:i])
		rest = rest[i:]
	}
	a := args{t: t, line: line, kv: map[string]string{}}
	for _, tok := range toks[1:] {
		k, v, ok := strings.Cut(tok, "=")
		if !ok {
			t.Fatalf("%q: %q is not key=value", line, tok)
		}
		if strings.HasPrefix(v, `"`) {
			uq, err := strconv.Unquote(v)
			if err != nil {
				t.Fatalf("%q: %s: %v", line, tok, err)
			}
			v = uq
		}
		a.kv[k] = v
	}
	return toks[0], a
}

func (a args) has(k string) bool { return a.kv[k] != "" }

func (a args) str(k string) string { return a.kv[k] }

func (a args) u64(k string) uint64 {
	v, ok := a.kv[k]
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		a.t.Fatalf("%q: %s: %v", a.line, k, err)
	}
	return n
}

func (a args) int(k string, def int) int {
	if _, ok := a.kv[k]; !ok {
		return def
	}
	return int(a.u64(k))
}

func (a args) list(k string) []uint64 {
	var out []uint64
	for _, s := range strings.Split(a.kv[k], ",") {
		if s == "" {
			continue
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			a.t.Fatalf("%q: %s: %v", a.line, k, err)
		}
		out = append(out, n)
	}
	return out
}

// span parses "a..b".
func (a args) span(k string) (uint64, uint64) {
	lo, hi, ok := strings.Cut(a.kv[k], "..")
	if !ok {
		a.t.Fatalf("%q: %s is not a..b", a.line, k)
	}
	l, err1 := strconv.ParseUint(lo, 10, 64)
	h, err2 := strconv.ParseUint(hi, 10, 64)
	if err1 != nil || err2 != nil || l > h {
		a.t.Fatalf("%q: bad span %s", a.line, a.kv[k])
	}
	return l, h
}

// command builds the Command of a write directive; ok is false if name is
// not one.
func (r *runner) command(name string, a args) (*Command, bool) {
	switch name {
	case "register":
		hash := a.str("hash")
		if _, ok := a.kv["hash"]; !ok {
			hash = "h-" + a.str("name")
		}
		return &Command{Op: OpRegister, Username: a.str("name"), PasswordHash: []byte(hash)}, true
	case "device":
		return &Command{Op: OpAddDevice, User: a.u64("user"), DeviceName: a.str("name")}, true
	case "revoke":
		return &Command{Op: OpRevokeDevice, User: a.u64("user"), Device: a.u64("device")}, true
	case "dm":
		return &Command{Op: OpOpenDirect, User: a.u64("user"), Peer: a.u64("peer")}, true
	case "group":
		return &Command{Op: OpCreateGroup, User: a.u64("user"), Name: a.str("name"), Members: a.list("members")}, true
	case "add":
		return &Command{Op: OpAddMembers, User: a.u64("user"), Conv: a.u64("conv"), Members: a.list("members")}, true
	case "remove":
		return &Command{Op: OpRemoveMember, User: a.u64("user"), Conv: a.u64("conv"), Member: a.u64("member")}, true
	case "leave":
		return &Command{Op: OpLeave, User: a.u64("user"), Conv: a.u64("conv")}, true
	case "admin":
		return &Command{Op: OpSetAdmin, User: a.u64("user"), Conv: a.u64("conv"), Member: a.u64("member"), Admin: a.str("admin") == "true"}, true
	case "rename":
		return &Command{Op: OpRename, User: a.u64("user"), Conv: a.u64("conv"), Name: a.str("name")}, true
	case "send":
		body := a.str("body")
		if n := a.int("body-bytes", 0); n > 0 {
			body = strings.Repeat("x", n)
		}
		return &Command{
			Op: OpSend, User: a.u64("user"), Device: a.u64("dev"), Conv: a.u64("conv"),
			ClientMsgID: a.str("cmid"), Body: body, ReplyTo: a.u64("reply"),
		}, true
	case "receipts": // items=conv:delivered:read,...
		return &Command{Op: OpReceipts, User: a.u64("user"), Device: a.u64("dev"), Items: a.items("items")}, true
	case "seen":
		return &Command{Op: OpLastSeen, User: a.u64("user"), Ts: int64(a.u64("ts"))}, true
	case "privacy":
		return &Command{Op: OpSetPrivacy, User: a.u64("user"), HideLastSeen: a.str("hide") == "true",
			GroupAdd: groupAddPolicies[a.str("group-add")]}, true
	case "block":
		return &Command{Op: OpBlock, User: a.u64("user"), Peer: a.u64("peer")}, true
	case "unblock":
		return &Command{Op: OpUnblock, User: a.u64("user"), Peer: a.u64("peer")}, true
	}
	return nil, false
}

// groupAddPolicies are the values of privacy group-add=...
var groupAddPolicies = map[string]GroupAddPolicy{
	"": GroupAddUnchanged, "everyone": GroupAddEveryone, "contacts": GroupAddContacts, "nobody": GroupAddNobody, "bad": 9,
}

// items parses conv:delivered:read,...
func (a args) items(k string) []ReceiptItem {
	var out []ReceiptItem
	for _, s := range strings.Split(a.kv[k], ",") {
		if s == "" {
			continue
		}
		var it ReceiptItem
		if _, err := fmt.Sscanf(s, "%d:%d:%d", &it.Conv, &it.Delivered, &it.Read); err != nil {
			a.t.Fatalf("%q: %s: %q: %v", a.line, k, s, err)
		}
		out = append(out, it)
	}
	return out
}

// apply applies raw commands as the next entry and renders the outcome.
func (r *runner) apply(raw [][]byte) []string {
	r.index++
	en := entry{index: r.index, ts: int64(r.index) * 1000, cmds: raw}
	r.entries = append(r.entries, en)
	var out []string
	for _, res := range applyEntry(r.t, r.e, en) {
		out = append(out, fmtResult(res))
	}
	for _, ev := range r.rec.take() {
		out = append(out, fmtEvent(&ev))
	}
	return out
}

func (r *runner) run(input []string) []string {
	name, a := parseLine(r.t, input[0])
	if name == "batch" {
		var cmds []*Command
		for _, line := range input[1:] {
			n, ca := parseLine(r.t, line)
			c, ok := r.command(n, ca)
			if !ok {
				r.t.Fatalf("batch: %q is not a command", line)
			}
			cmds = append(cmds, c)
		}
		return r.apply(mustEncode(r.t, cmds...))
	}
	if len(input) > 1 {
		r.t.Fatalf("%q takes one line", input[0])
	}
	if c, ok := r.command(name, a); ok {
		return r.apply(mustEncode(r.t, c))
	}
	switch name {
	case "raw": // a command that is not one: hex bytes
		var b []byte
		if _, err := fmt.Sscanf(a.str("hex"), "%x", &b); err != nil {
			r.t.Fatal(err)
		}
		return r.apply([][]byte{b})
	case "applied":
		return []string{fmt.Sprint(r.e.AppliedIndex())}
	case "user":
		var u User
		var ok bool
		if a.has("name") {
			u, ok = r.e.UserByName(a.str("name"))
		} else {
			u, ok = r.e.User(a.u64("id"))
		}
		if !ok {
			return []string{"not found"}
		}
		line := fmt.Sprintf("user %d %q hash=%q created=%d", u.ID, u.Username, u.PasswordHash, u.CreatedAt)
		if u.LastSeen != 0 || u.HideLastSeen {
			line += fmt.Sprintf(" last_seen=%d hidden=%v", u.LastSeen, u.HideLastSeen)
		}
		if u.GroupAdd != GroupAddEveryone {
			for name, p := range groupAddPolicies {
				if p == u.GroupAdd && name != "" {
					line += " group_add=" + name
				}
			}
		}
		return []string{line}
	case "blocked":
		users, more, code := r.e.Blocked(a.u64("user"), a.u64("after"), a.int("limit", 0))
		if code != ErrCodeNone {
			return []string{"error " + string(code)}
		}
		return []string{fmt.Sprintf("blocked=%v more=%v", users, more)}
	case "blocking":
		return []string{fmt.Sprint(r.e.IsBlocking(a.u64("user"), a.u64("peer")))}
	case "bulk-block":
		lo, hi := a.span("peers")
		var cmds []*Command
		for p := lo; p <= hi; p++ {
			cmds = append(cmds, &Command{Op: OpBlock, User: a.u64("user"), Peer: p})
		}
		failed := 0
		r.index++
		en := entry{index: r.index, ts: int64(r.index) * 1000, cmds: mustEncode(r.t, cmds...)}
		r.entries = append(r.entries, en)
		var last *Result
		for _, res := range applyEntry(r.t, r.e, en) {
			if res.Err != ErrCodeNone {
				failed++
				last = res
			}
		}
		out := fmt.Sprintf("blocked %d in one entry, %d failed", len(cmds)-failed, failed)
		if last != nil {
			out += ": " + fmtResult(last)
		}
		return []string{out}
	case "bulk-register":
		n := a.int("n", 1)
		var cmds []*Command
		for i := range n {
			cmds = append(cmds, &Command{Op: OpRegister, Username: fmt.Sprintf("%s%d", a.str("prefix"), i), PasswordHash: []byte("h")})
		}
		r.index++
		en := entry{index: r.index, ts: int64(r.index) * 1000, cmds: mustEncode(r.t, cmds...)}
		r.entries = append(r.entries, en)
		res := applyEntry(r.t, r.e, en)
		return []string{fmt.Sprintf("registered %d: user=%d..%d", n, res[0].User, res[len(res)-1].User)}
	case "devinfo":
		d, ok := r.e.Device(a.u64("user"), a.u64("id"))
		if !ok {
			return []string{"not found"}
		}
		return []string{fmt.Sprintf("device %d user=%d %q created=%d revoked=%v active=%v",
			d.ID, d.User, d.Name, d.CreatedAt, d.Revoked, r.e.DeviceActive(d.User, d.ID))}
	case "conv":
		ci, ok := r.e.Conversation(a.u64("id"))
		if !ok {
			return []string{"not found"}
		}
		return []string{fmtInfo(&ci)}
	case "convs":
		var out []string
		for _, ci := range r.e.Conversations(a.u64("user")) {
			out = append(out, r.fmtInfo(&ci))
		}
		return out
	case "show-cursors":
		r.cursors = true
		return []string{"ok"}
	case "conv-for":
		ci, code := r.e.ConversationFor(a.u64("user"), a.u64("conv"))
		if code != ErrCodeNone {
			return []string{"error " + string(code)}
		}
		return []string{fmtInfo(&ci) + fmtCursors(&ci)}
	case "readcount":
		read, delivered, members, ok := r.e.ReadCount(a.u64("conv"), a.u64("seq"))
		if !ok {
			return []string{"not found"}
		}
		return []string{fmt.Sprintf("read=%d delivered=%d members=%d", read, delivered, members)}
	case "readers":
		page, ok := r.e.Readers(a.u64("conv"), a.u64("seq"), a.u64("after"), a.int("limit", 0))
		if !ok {
			return []string{"not found"}
		}
		return []string{fmt.Sprintf("users=%v more=%v next=%d", page.Users, page.More, page.Next)}
	case "lastseen":
		ts, hidden, ok := r.e.LastSeen(a.u64("user"))
		if !ok {
			return []string{"not found"}
		}
		return []string{fmt.Sprintf("last_seen=%d hidden=%v", ts, hidden)}
	case "devices":
		devs, more, code := r.e.Devices(a.u64("user"), a.u64("after"), a.int("limit", 0))
		if code != ErrCodeNone {
			return []string{"error " + string(code)}
		}
		var out []string
		for _, d := range devs {
			out = append(out, fmt.Sprintf("device %d user=%d %q created=%d revoked=%v", d.ID, d.User, d.Name, d.CreatedAt, d.Revoked))
		}
		return append(out, fmt.Sprintf("more=%v", more))
	case "member":
		return []string{fmt.Sprint(r.e.IsMember(a.u64("conv"), a.u64("user")))}
	case "history":
		dir := Before
		if a.str("dir") == "after" {
			dir = After
		}
		evs, more, code := r.e.History(a.u64("user"), a.u64("conv"), a.u64("anchor"), dir, a.int("limit", 0), a.budget())
		if code != ErrCodeNone {
			return []string{"error " + string(code)}
		}
		var out []string
		size := 0
		for _, ev := range evs {
			out = append(out, fmtEvent(&ev))
			size += testSizer{}.EventSize(&ev)
		}
		if a.has("bytes") {
			return append(out, fmt.Sprintf("more=%v bytes=%d", more, size))
		}
		return append(out, fmt.Sprintf("more=%v", more))
	case "convs-page":
		convs, more := r.e.ConversationList(a.u64("user"), a.u64("after"), a.u64("after-conv"), a.int("limit", 0), a.budget())
		var out []string
		size := 0
		for _, ci := range convs {
			out = append(out, r.fmtInfo(&ci))
			size += testSizer{}.ConvSize(&ci)
		}
		return append(out, fmt.Sprintf("more=%v bytes=%d", more, size))
	case "conv-page":
		ci, more, code := r.e.ConversationPageFor(a.u64("user"), a.u64("conv"), a.u64("after"), a.int("limit", 0))
		if code != ErrCodeNone {
			return []string{"error " + string(code)}
		}
		return []string{fmtInfo(&ci) + fmt.Sprintf(" more=%v", more)}
	case "sync":
		return r.sync(a)
	case "sync-all":
		return r.syncAll(a)
	case "limit-members":
		r.e.maxGroupMembers = a.int("n", MaxGroupMembers)
		return []string{"ok"}
	case "reopen":
		return r.reopen()
	case "replay":
		return r.replay()
	case "bulk-groups":
		return r.bulkGroups(a)
	case "bulk-send":
		return r.bulkSend(a)
	}
	r.t.Fatalf("unknown directive %q", input[0])
	return nil
}

func (r *runner) sync(a args) []string {
	page, code := r.e.Sync(a.u64("user"), SyncQuery{
		Since: a.u64("since"), After: a.u64("after"), AfterConv: a.u64("after-conv"),
		Convs: a.int("convs", 0), Events: a.int("events", 0), Budget: a.budget(),
	})
	if code != ErrCodeNone {
		return []string{"error " + string(code)}
	}
	var out []string
	size := 0
	for _, cs := range page.Convs {
		size += testSizer{}.ConvSize(&cs.Info)
		for _, ev := range cs.Events {
			size += testSizer{}.EventSize(&ev)
		}
		line := r.fmtInfo(&cs.Info) + fmt.Sprintf(" events=%d more=%v gone=%v", len(cs.Events), cs.More, cs.Gone)
		if r.cursors {
			line += fmt.Sprintf(" change=%d", cs.ChangeIndex)
		}
		out = append(out, line)
		for _, ev := range cs.Events {
			out = append(out, "  "+fmtEvent(&ev))
		}
	}
	last := fmt.Sprintf("more=%v next=%d", page.More, page.Next)
	if page.NextConv != 0 {
		last += fmt.Sprintf(" next_conv=%d", page.NextConv)
	}
	if a.has("bytes") {
		last += fmt.Sprintf(" bytes=%d", size)
	}
	return append(out, last)
}

// testSizer measures events and conversations roughly as the wire does,
// for transcripts with a byte budget (bytes=N).
type testSizer struct{}

func (testSizer) EventSize(e *Event) int {
	return 64 + len(e.ClientMsgID) + len(e.Body) + len(e.Name) + 9*len(e.Users)
}

func (testSizer) ConvSize(c *ConvInfo) int { return 100 + len(c.Name) + 9*len(c.Members) }

// budget is the Budget of bytes=N (none without it).
func (a args) budget() Budget {
	if !a.has("bytes") {
		return Budget{}
	}
	return Budget{Bytes: a.int("bytes", 0), Size: testSizer{}}
}

// syncAll pages through Sync as a client does (paging each conversation's
// More with History) and summarizes each page. It checks that every
// conversation it gets starts at its first event after since and is
// complete and gap-free to its last; "problems" counts what is not.
func (r *runner) syncAll(a args) []string {
	user, since := a.u64("user"), a.u64("since")
	var out []string
	seen := map[uint64]int{}
	total, paged, problems, overBudget := 0, 0, 0, 0
	budget := a.budget()
	// overs counts a page over the budget holding more than one item.
	overs := func(size, items int) {
		if budget.Bytes > 0 && size > budget.Bytes && items > 1 {
			overBudget++
		}
	}
	var after, afterConv uint64
	for pageNo := 1; ; pageNo++ {
		if pageNo > 1000 {
			r.t.Fatal("sync-all: no end after 1000 pages")
		}
		page, code := r.e.Sync(user, SyncQuery{
			Since: since, After: after, AfterConv: afterConv,
			Convs: a.int("convs", 0), Events: a.int("events", 0), Budget: budget,
		})
		if code != ErrCodeNone {
			return append(out, "error "+string(code))
		}
		events, convMore, gone := 0, 0, 0
		size, items := 0, 0
		var lo, hi uint64
		for i, cs := range page.Convs {
			seen[cs.Info.ID]++
			events += len(cs.Events)
			size += testSizer{}.ConvSize(&cs.Info)
			items += max(1, len(cs.Events))
			for _, ev := range cs.Events {
				size += testSizer{}.EventSize(&ev)
			}
			if cs.Gone {
				gone++
			}
			if i == 0 {
				lo = cs.ChangeIndex
			}
			if cs.ChangeIndex < hi || cs.ChangeIndex < cs.Info.LastIndex {
				problems++ // out of order
			}
			hi = cs.ChangeIndex
			evs := cs.Events
			if cs.Info.LastIndex <= since { // only receipt cursors changed
				if len(evs) != 0 || cs.More {
					problems++
				}
				continue
			}
			if cs.More {
				convMore++
				for more := true; more; {
					var next []Event
					var c ErrCode
					next, more, c = r.e.History(user, cs.Info.ID, evs[len(evs)-1].Seq, After, MaxHistoryLimit, budget)
					if c != ErrCodeNone {
						return append(out, fmt.Sprintf("history conv=%d: %s", cs.Info.ID, c))
					}
					hsize := 0
					for _, ev := range next {
						hsize += testSizer{}.EventSize(&ev)
					}
					overs(hsize, len(next))
					if len(next) == 0 {
						return append(out, fmt.Sprintf("history conv=%d: empty page with more", cs.Info.ID))
					}
					paged += len(next)
					evs = append(evs, next...)
				}
			}
			if len(evs) == 0 || evs[len(evs)-1].Seq != cs.Info.LastSeq {
				problems++ // did not reach the end
				continue
			}
			for j := range evs {
				if evs[j].Index <= since || (j > 0 && evs[j].Seq != evs[j-1].Seq+1) {
					problems++
				}
			}
			// The event before the first one returned is one the device had.
			if prev, _, _ := r.e.History(user, cs.Info.ID, evs[0].Seq, Before, 1, Budget{}); len(prev) == 1 && prev[0].Index > since {
				problems++
			}
		}
		overs(size, items)
		total += len(page.Convs)
		line := fmt.Sprintf("page %d: convs=%d last_idx=%d..%d events=%d conv_more=%d gone=%d more=%v next=%d",
			pageNo, len(page.Convs), lo, hi, events, convMore, gone, page.More, page.Next)
		if page.NextConv != 0 {
			line += fmt.Sprintf(" next_conv=%d", page.NextConv)
		}
		if budget.Bytes > 0 {
			line += fmt.Sprintf(" bytes=%d", size)
		}
		out = append(out, line)
		if page.More && (page.Next < after || (page.Next == after && page.NextConv <= afterConv)) {
			return append(out, "no progress")
		}
		after, afterConv = page.Next, page.NextConv
		if !page.More {
			break
		}
	}
	twice := 0
	for _, n := range seen {
		if n > 1 {
			twice++
		}
	}
	last := fmt.Sprintf("total convs=%d distinct=%d twice=%d paged_events=%d problems=%d",
		total, len(seen), twice, paged, problems)
	if budget.Bytes > 0 {
		last += fmt.Sprintf(" over_budget=%d", overBudget)
	}
	return append(out, last)
}

// reopen closes and reopens the engine and checks the state and rebuilt
// indexes are the same.
func (r *runner) reopen() []string {
	before := dumpState(r.t, r.e)
	if err := r.e.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.e = openEngine(r.t, r.dir)
	r.e.SetPublisher(r.rec)
	if after := dumpState(r.t, r.e); after != before {
		return []string{"state differs after reopen:", before, "---", after}
	}
	return []string{fmt.Sprintf("reopened at %d, same state", r.e.AppliedIndex())}
}

// replay applies every entry again and checks nothing changed.
func (r *runner) replay() []string {
	before := dumpState(r.t, r.e)
	skipped := 0
	for _, en := range r.entries {
		if r.e.Apply(en.index, en.ts, en.cmds) == nil {
			skipped++
		}
	}
	out := []string{fmt.Sprintf("replayed %d entries, skipped %d, published %d events", len(r.entries), skipped, len(r.rec.take()))}
	if after := dumpState(r.t, r.e); after != before {
		out = append(out, "state changed by replay")
	}
	return out
}

func (r *runner) bulkGroups(a args) []string {
	n := a.int("n", 1)
	var first, last *Result
	for i := range n {
		c := &Command{Op: OpCreateGroup, User: a.u64("user"), Name: fmt.Sprintf("g%d", i), Members: a.list("members")}
		r.index++
		en := entry{index: r.index, ts: int64(r.index) * 1000, cmds: mustEncode(r.t, c)}
		r.entries = append(r.entries, en)
		res := applyEntry(r.t, r.e, en)[0]
		if res.Err != ErrCodeNone {
			return []string{fmtResult(res)}
		}
		if first == nil {
			first = res
		}
		last = res
	}
	r.rec.take()
	return []string{fmt.Sprintf("created %d groups: conv=%d..%d idx=%d..%d", n, first.Conv, last.Conv, first.Index, last.Index)}
}

// bulkSend sends n messages to each conversation of a span, round-robin,
// per-entry commands to an entry.
func (r *runner) bulkSend(a args) []string {
	lo, hi := a.span("convs")
	n, perEntry := a.int("n", 1), a.int("per-entry", 1)
	var pending []*Command
	sent, entries := 0, 0
	firstIdx := r.index + 1
	flush := func() {
		if len(pending) == 0 {
			return
		}
		r.index++
		en := entry{index: r.index, ts: int64(r.index) * 1000, cmds: mustEncode(r.t, pending...)}
		r.entries = append(r.entries, en)
		for _, res := range applyEntry(r.t, r.e, en) {
			if res.Err != ErrCodeNone {
				r.t.Fatalf("bulk-send: %s", fmtResult(res))
			}
		}
		entries++
		pending = pending[:0]
	}
	for round := range n {
		for conv := lo; conv <= hi; conv++ {
			r.cmids++
			pending = append(pending, &Command{
				Op: OpSend, User: a.u64("user"), Device: a.u64("dev"), Conv: conv,
				ClientMsgID: fmt.Sprintf("bulk-%d", r.cmids), Body: fmt.Sprintf("m%d", round),
			})
			if n := a.int("body-bytes", 0); n > 0 {
				pending[len(pending)-1].Body = fmt.Sprintf("m%d-", round) + strings.Repeat("x", n-len(fmt.Sprintf("m%d-", round)))
			}
			sent++
			if len(pending) == perEntry {
				flush()
			}
		}
	}
	flush()
	r.rec.take()
	return []string{fmt.Sprintf("sent %d in %d entries: idx=%d..%d", sent, entries, firstIdx, r.index)}
}

// fmtInfo is fmtInfo, with the receipt cursors after show-cursors.
func (r *runner) fmtInfo(c *ConvInfo) string {
	if r.cursors {
		return fmtInfo(c) + fmtCursors(c)
	}
	return fmtInfo(c)
}

func fmtCursors(c *ConvInfo) string {
	s := fmt.Sprintf(" cur=%d/%d unread=%d", c.Delivered, c.Read, c.Unread)
	if c.Kind == KindDirect {
		s += fmt.Sprintf(" peer=%d/%d", c.PeerDelivered, c.PeerRead)
	}
	return s
}

func fmtResult(r *Result) string {
	if r.Err != ErrCodeNone {
		return fmt.Sprintf("error %s: %s", r.Err, r.Message)
	}
	var b strings.Builder
	b.WriteString("ok")
	for _, f := range []struct {
		k string
		v uint64
	}{{"user", r.User}, {"device", r.Device}, {"conv", r.Conv}, {"seq", r.Seq}, {"idx", r.Index}} {
		if f.v != 0 {
			fmt.Fprintf(&b, " %s=%d", f.k, f.v)
		}
	}
	if r.Ts != int64(r.Index)*1000 {
		fmt.Fprintf(&b, " ts=%d", r.Ts)
	}
	if r.Duplicate {
		b.WriteString(" dup")
	}
	if r.ItemErrors != nil {
		b.WriteString(" items=[")
		for i, code := range r.ItemErrors {
			if i > 0 {
				b.WriteByte(' ')
			}
			if code == ErrCodeNone {
				code = "-"
			}
			b.WriteString(string(code))
		}
		b.WriteByte(']')
	}
	return b.String()
}

func fmtEvent(e *Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ev conv=%d seq=%d idx=%d %s from=%d", e.Conv, e.Seq, e.Index, e.Kind, e.From)
	if e.Ts != int64(e.Index)*1000 {
		fmt.Fprintf(&b, " ts=%d", e.Ts)
	}
	switch e.Kind {
	case EventMessage:
		fmt.Fprintf(&b, " dev=%d cmid=%s body=%q", e.Device, e.ClientMsgID, e.Body)
	case EventReceipt:
		fmt.Fprintf(&b, " dev=%d delivered=%d read=%d", e.Device, e.Delivered, e.Read)
	case EventDeviceRevoked:
		fmt.Fprintf(&b, " dev=%d", e.Device)
	}
	if e.ReplyTo != 0 {
		fmt.Fprintf(&b, " reply=%d", e.ReplyTo)
	}
	if len(e.Users) > 0 {
		fmt.Fprintf(&b, " users=%v", e.Users)
	}
	if e.Name != "" {
		fmt.Fprintf(&b, " name=%q", e.Name)
	}
	if e.Kind == EventAdminChanged {
		fmt.Fprintf(&b, " admin=%v", e.Admin)
	}
	if e.Recipients != nil {
		fmt.Fprintf(&b, " to=%v", e.Recipients)
	}
	return b.String()
}

func fmtInfo(c *ConvInfo) string {
	var b strings.Builder
	fmt.Fprintf(&b, "conv %d %s", c.ID, c.Kind)
	if c.Name != "" {
		fmt.Fprintf(&b, " %q", c.Name)
	}
	b.WriteString(" members=[")
	for i, m := range c.Members {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, m.User)
		if m.Admin {
			b.WriteByte('*')
		}
	}
	fmt.Fprintf(&b, "] count=%d last=%d/%d created=%d", c.MemberCount, c.LastSeq, c.LastIndex, c.CreatedAt)
	return b.String()
}
