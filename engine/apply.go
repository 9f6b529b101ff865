package engine

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/cockroachdb/pebble/v2"
)

// Apply applies the commands of the committed entry at index, with ts the
// leader's clock (unix ms), and returns one *Result per command. ts is
// clamped to the ts of the last applied entry (stored with the state), so
// timestamps never go back, whatever the clock of a new leader: the clamped
// ts is the entry's time everywhere (events, results, created_at, the
// dedup records and their expiry). An entry at
// or below the applied index was applied before (Raft replays after a
// restart): Apply skips it and returns nil.
//
// Apply is deterministic: it reads no clock and no randomness, IDs come from
// counters in the state, and its only inputs are the state, index, ts and
// cmds. Everything the entry changes, and the new applied index, is written
// in one batch; then the indexes are updated, then the events are published.
// A command that fails (a bad field, missing rights) changes nothing and
// gets an error Result; the entry still advances the applied index.
//
// cmds are only read, and nothing retains them after Apply returns.
func (e *Engine) Apply(index uint64, ts int64, cmds [][]byte) []any {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	if e.db == nil {
		panic("engine: Apply on a closed engine")
	}
	if index <= e.applied.Load() {
		return nil
	}
	e.dedupRotate()
	t := &e.txn
	t.begin(e, index, ts)
	t.ncmds = len(cmds)
	results := make([]any, len(cmds))
	t.results = make([]Result, 0, len(cmds))
	for i, raw := range cmds {
		results[i] = t.applyOne(raw)
	}
	t.results = nil // Raft's callers hold them now
	t.finish()
	if err := e.applyBatch(t.b); err != nil {
		// The entry is committed in Raft; skipping it would fork this
		// replica. Stop, and let the restart replay it.
		panic(fmt.Sprintf("engine: commit entry %d: %v", index, err))
	}
	_ = t.b.Close()
	t.b = nil
	t.install()
	e.applied.Store(index)
	events := t.events
	t.events = nil
	if len(events) > 0 && e.pub != nil {
		e.pub.Publish(events)
	}
	t.reset()
	return results
}

// txn is the working state of the entry Apply is applying. Commands read
// the index through it and see the changes of the commands before them in
// the same entry; those changes reach the index only in install, after the
// batch is committed. It is reused from entry to entry (maps are cleared,
// not reallocated), under applyMu.
type txn struct {
	e     *Engine
	db    *pebble.DB
	ix    *index
	b     *pebble.Batch
	index uint64
	ts    int64

	lastUser, lastDevice, lastConv uint64

	users       map[uint64]*userEntry // registered in this entry
	names       map[string]uint64
	devices     map[uint64]Device      // added or revoked in this entry
	convs       map[uint64]*convWork   // conversations read or changed in this entry
	touched     []*convWork            // the same, in first-touch order
	spareWork   []*convWork            // zeroed convWorks of earlier entries, for conv
	directs     map[[2]uint64]uint64   // 1:1 conversations created in this entry
	sends       map[sendKey]sendRecord // dedup records written in this entry
	dedupIt     *pebble.Iterator       // over the committed dedup records; opened by the entry's first send
	memberships []membershipChange
	cursorIdx   map[cursorKey]int     // -> cursorWorks
	cursorWorks []cursorWork          // receipt cursors read or changed, in first-touch order
	seen        map[uint64]seenRecord // last_seen and privacy changed in this entry
	blocks      map[[2]uint64]bool    // {user, peer} -> whether user blocks peer, changed in this entry
	blockDelta  map[uint64]int        // user -> blocks added minus removed in this entry
	signingKey  []byte                // set by this entry (OpSetSigningKey); nil if not
	activeDevs  map[uint64][]uint64   // user -> active devices, for the users whose devices this entry changed
	mutes       map[[2]uint64]int64   // {user, conv} -> muted until, set by this entry
	deleted     map[uint64]string     // accounts deleted by this entry -> their former name
	progress    uint64                // the notifier's progress set by this entry; 0 if none
	audits      uint64                // audit records written by this entry
	events      []Event               // published after commit; a new slice per entry
	results     []Result              // the successes' results (ok): one allocation per entry
	ncmds       int                   // commands in the entry: sizes events
	media       mediaWork             // media keys this entry wrote (media.go)

	cmd  Command
	kbuf []byte // key scratch (Batch.Set and Get copy their arguments)
	vbuf []byte // value scratch
}

// convWork is a conversation as the entry sees it. An entry of sends
// touches a conversation a send: the convWorks of existing conversations
// are reused from entry to entry (spareWork), with their working copy in
// them, so touching one allocates nothing.
type convWork struct {
	c        *convEntry // working copy; becomes the live entry for a new conversation
	live     *convEntry // the index's entry; nil for a conversation created in this entry
	changed  bool
	firstSeq uint64    // the first seq this entry appended; 0 if none yet
	copy     convEntry // c of an existing conversation; install copies it to live
}

type membershipChange struct {
	user, conv uint64
	rec        memberRecord
}

type sendKey struct {
	user, device uint64
	cmid         string
}

func (t *txn) begin(e *Engine, index uint64, ts int64) {
	if t.users == nil {
		t.users = make(map[uint64]*userEntry)
		t.names = make(map[string]uint64)
		t.devices = make(map[uint64]Device)
		t.convs = make(map[uint64]*convWork)
		t.directs = make(map[[2]uint64]uint64)
		t.sends = make(map[sendKey]sendRecord)
		t.cursorIdx = make(map[cursorKey]int)
		t.seen = make(map[uint64]seenRecord)
		t.activeDevs = make(map[uint64][]uint64)
		t.blocks = make(map[[2]uint64]bool)
		t.blockDelta = make(map[uint64]int)
		t.mutes = make(map[[2]uint64]int64)
		t.deleted = make(map[uint64]string)
	}
	t.e, t.db, t.ix = e, e.db, e.idx
	t.b = e.db.NewBatch()
	t.index, t.ts = index, max(ts, int64(t.ix.lastTs))
	t.lastUser, t.lastDevice, t.lastConv = t.ix.lastUser, t.ix.lastDevice, t.ix.lastConv
}

func (t *txn) reset() {
	clear(t.users)
	clear(t.names)
	clear(t.devices)
	clear(t.convs)
	for _, w := range t.touched {
		*w = convWork{} // drops the entry's references
		t.spareWork = append(t.spareWork, w)
	}
	clear(t.touched)
	t.touched = t.touched[:0]
	clear(t.directs)
	clear(t.sends)
	t.memberships = t.memberships[:0]
	clear(t.cursorIdx)
	t.cursorWorks = t.cursorWorks[:0]
	clear(t.seen)
	clear(t.activeDevs)
	clear(t.blocks)
	clear(t.blockDelta)
	clear(t.mutes)
	clear(t.deleted)
	t.progress = 0
	t.audits = 0
	t.signingKey = nil
	t.e, t.db, t.ix = nil, nil, nil
}

// finish writes what the entry changed beyond the commands' own writes: the
// conversations' last seq and index, receipt cursors, the ID counters, the
// applied index.
func (t *txn) finish() {
	if t.dedupIt != nil {
		if err := t.dedupIt.Close(); err != nil {
			panic(fmt.Sprintf("engine: dedup lookups at entry %d: %v", t.index, err))
		}
		t.dedupIt = nil
	}
	t.writeCursors()
	for _, w := range t.touched {
		if w.firstSeq != 0 {
			t.set(key1(prefixLast, w.c.id), appendU64s(t.vbuf[:0], w.c.lastSeq, w.c.lastIndex))
		}
	}
	for _, m := range []struct {
		name     byte
		old, new uint64
	}{
		{metaLastUser, t.ix.lastUser, t.lastUser},
		{metaLastDevice, t.ix.lastDevice, t.lastDevice},
		{metaLastConv, t.ix.lastConv, t.lastConv},
		{metaLastTs, t.ix.lastTs, uint64(max(t.ts, 0))},
	} {
		if m.new != m.old {
			t.set(metaKey(m.name), appendU64s(t.vbuf[:0], m.new))
		}
	}
	t.set(metaKey(metaApplied), appendU64s(t.vbuf[:0], t.index))
}

// install makes the committed entry visible to queries.
func (t *txn) install() {
	ix := t.ix
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.lastUser, ix.lastDevice, ix.lastConv = t.lastUser, t.lastDevice, t.lastConv
	ix.lastTs = uint64(max(t.ts, 0))
	for id, u := range t.users {
		ix.users[id] = u
		ix.names[u.name] = id
	}
	for _, w := range t.touched {
		switch {
		case w.live == nil:
			ix.convs[w.c.id] = w.c
		case w.changed:
			*w.live = *w.c
		}
	}
	for pair, id := range t.directs {
		ix.directs[pair] = id
	}
	for id, d := range t.devices {
		ix.devices[id] = deviceState{user: d.User, revoked: d.Revoked}
	}
	for id, list := range t.activeDevs {
		ix.users[id].devices = list
	}
	for _, m := range t.memberships {
		u := ix.users[m.user]
		ms := u.convs[m.conv]
		if ms == nil {
			ms = &membership{conv: ix.convs[m.conv]}
			u.convs[m.conv] = ms
		}
		ms.gone = !m.rec.active
		ms.goneSeq, ms.goneIndex = m.rec.goneSeq, m.rec.goneIndex
	}
	t.installCursors()
	for id, rec := range t.seen {
		ix.users[id].seen = rec
	}
	for pair, on := range t.blocks {
		u := ix.users[pair[0]]
		switch {
		case on && u.blocked == nil:
			u.blocked = map[uint64]struct{}{pair[1]: {}}
		case on:
			u.blocked[pair[1]] = struct{}{}
		default:
			delete(u.blocked, pair[1])
		}
	}
	if t.signingKey != nil {
		ix.signingKey = t.signingKey
	}
	t.installPush()
	for id, name := range t.deleted {
		if ix.names[name] == id {
			delete(ix.names, name)
		}
		ix.users[id].name = ""
	}
}

func (t *txn) set(k, v []byte) {
	if err := t.b.Set(k, v, nil); err != nil {
		panic(fmt.Sprintf("engine: batch set: %v", err)) // only fails on a closed batch
	}
}

// get reads a committed value into dst; ok is false if the key is absent.
// A read error stops the replica, as a commit error does: the outcome of the
// command would otherwise depend on this disk.
func (t *txn) get(dst, k []byte) ([]byte, bool) {
	v, closer, err := t.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return dst, false
	}
	if err != nil {
		panic(fmt.Sprintf("engine: read %x at entry %d: %v", k, t.index, err))
	}
	dst = append(dst, v...)
	_ = closer.Close()
	return dst, true
}

// getDedup is get for a dedup key ('k') of hash h (dedupHash). A key the
// dedup filter does not hold is absent (dedupfilter.go); the rest, about 1%
// of new keys and every retry, are looked up in Pebble. An entry carries up
// to hundreds of sends, each looking up a key that is almost never there:
// one iterator per entry, positioned with SeekPrefixGE (the bloom filters answer most
// levels), costs less than a Get per send, which sets up its level
// iterators every time (BenchmarkApplySend: 3.6 -> 2.5 µs a lookup with
// 256 sends an entry). With a few commands an entry, opening the iterator
// costs more than it saves: those use Get. The iterator sees the state
// committed before the entry; the entry's own dedup records are in t.sends.
func (t *txn) getDedup(dst, k []byte, h uint64) ([]byte, bool) {
	if !t.e.dedupMayExist(h) {
		return dst, false
	}
	if t.ncmds < dedupIterMinCmds {
		return t.get(dst, k)
	}
	if t.dedupIt == nil {
		lower, upper := prefixBounds(prefixDedup)
		it, err := t.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			panic(fmt.Sprintf("engine: dedup lookups at entry %d: %v", t.index, err))
		}
		t.dedupIt = it
	}
	it := t.dedupIt
	if !it.SeekPrefixGE(k) || !bytes.Equal(it.Key(), k) {
		if err := it.Error(); err != nil {
			panic(fmt.Sprintf("engine: read %x at entry %d: %v", k, t.index, err))
		}
		return dst, false
	}
	v, err := it.ValueAndErr()
	if err != nil {
		panic(fmt.Sprintf("engine: read %x at entry %d: %v", k, t.index, err))
	}
	return append(dst, v...), true
}

// dedupIterMinCmds: see getDedup.
const dedupIterMinCmds = 4

func (t *txn) userExists(id uint64) bool {
	return t.users[id] != nil || t.ix.users[id] != nil
}

// device reports whether the device exists and belongs to user, and
// whether it is revoked.
func (t *txn) device(user, id uint64) (exists, revoked bool) {
	if d, ok := t.devices[id]; ok {
		return d.User == user, d.Revoked
	}
	d, ok := t.ix.devices[id]
	return ok && d.user == user, d.revoked
}

func (t *txn) putDevice(d Device) {
	t.devices[d.ID] = d
	t.set(key2(prefixDevice, d.User, d.ID), appendDeviceRecord(t.vbuf[:0], &d))
}

// conv returns the entry's view of a conversation, nil if there is none.
func (t *txn) conv(id uint64) *convWork {
	if w, ok := t.convs[id]; ok {
		return w
	}
	live := t.ix.convs[id]
	if live == nil {
		return nil
	}
	var w *convWork
	if n := len(t.spareWork); n > 0 {
		w, t.spareWork = t.spareWork[n-1], t.spareWork[:n-1]
	} else {
		w = new(convWork)
	}
	w.copy, w.live = *live, live
	w.c = &w.copy
	t.convs[id] = w
	t.touched = append(t.touched, w)
	return w
}

func (t *txn) newConv(c *convEntry) *convWork {
	if c.kind == KindGroup {
		c.cursors = &cursorSet{}
	}
	w := &convWork{c: c, changed: true}
	t.convs[c.id] = w
	t.touched = append(t.touched, w)
	t.set(key1(prefixConv, c.id), appendConvRecord(t.vbuf[:0], c))
	return w
}

// putMember writes a membership record and queues its index update.
func (t *txn) putMember(conv, user uint64, rec memberRecord) {
	t.set(key2(prefixMember, conv, user), appendMemberRecord(t.vbuf[:0], rec))
	t.memberships = append(t.memberships, membershipChange{user: user, conv: conv, rec: rec})
}

// appendEvent gives ev the conversation's next seq, stores it and queues it
// for publishing to recipients. It returns the seq.
func (t *txn) appendEvent(w *convWork, ev Event, recipients []uint64) uint64 {
	c := w.c
	c.lastSeq++
	c.lastIndex = t.index
	w.changed = true
	if w.firstSeq == 0 {
		w.firstSeq = c.lastSeq
		t.set(key2(prefixEntry, c.id, t.index), appendU64s(t.vbuf[:0], c.lastSeq))
	}
	ev.Conv, ev.Seq, ev.Index, ev.Ts = c.id, c.lastSeq, t.index, t.ts
	t.kbuf = appendKey2(t.kbuf[:0], prefixEvent, c.id, c.lastSeq)
	t.vbuf = appendEvent(t.vbuf[:0], &ev)
	t.set(t.kbuf, t.vbuf)
	if ev.Kind != EventMessage {
		c.systemSeqs = append(c.systemSeqs, c.lastSeq) // in place: see convEntry
		t.kbuf = appendKey2(t.kbuf[:0], prefixSystem, c.id, c.lastSeq)
		t.set(t.kbuf, nil)
	}
	ev.Recipients = recipients
	t.publish(ev)
	return c.lastSeq
}

// publish queues ev for the publisher, after commit.
func (t *txn) publish(ev Event) {
	if t.events == nil {
		// Most commands publish one event: one allocation for the entry.
		t.events = make([]Event, 0, max(4, t.ncmds))
	}
	t.events = append(t.events, ev)
}

// ok is the Result of a command that succeeded in conversation conv (0:
// none) and appended the event at seq (0: none).
func (t *txn) ok(conv, seq uint64) *Result {
	t.results = append(t.results, Result{Conv: conv, Seq: seq, Index: t.index, Ts: t.ts})
	return &t.results[len(t.results)-1]
}

func (t *txn) applyOne(raw []byte) *Result {
	c := &t.cmd
	if err := DecodeCommand(raw, c); err != nil {
		if errors.Is(err, ErrNewerCommand) {
			t.e.newerCommand(t.index, err)
		}
		return failure(ErrCodeInvalid, err.Error())
	}
	switch c.Op {
	case OpRegister:
		return t.register(c)
	case OpAddDevice:
		return t.addDevice(c)
	case OpRevokeDevice:
		return t.audited(c, t.revokeDevice(c))
	case OpOpenDirect:
		return t.openDirect(c)
	case OpCreateGroup:
		return t.createGroup(c)
	case OpAddMembers:
		return t.addMembers(c)
	case OpRemoveMember:
		return t.removeMember(c)
	case OpLeave:
		return t.leave(c)
	case OpSetAdmin:
		return t.setAdmin(c)
	case OpRename:
		return t.rename(c)
	case OpSend:
		return t.send(c)
	case OpReceipts:
		return t.receipts(c)
	case OpLastSeen:
		return t.lastSeen(c)
	case OpSetPrivacy:
		return t.setPrivacy(c)
	case OpSetSigningKey:
		return t.setSigningKey(c)
	case OpExpireSends:
		return t.expireSends(c)
	case OpBlock, OpUnblock:
		return t.block(c, c.Op == OpBlock)
	case OpMediaChunk:
		return t.mediaChunk(c)
	case OpMediaCommit:
		return t.mediaCommit(c)
	case OpMediaExpire:
		return t.expireMedia(c)
	case OpPushSet:
		return t.pushSet(c)
	case OpPushClear:
		return t.pushClear(c)
	case OpNotifySet:
		return t.notifySet(c)
	case OpMute:
		return t.mute(c)
	case OpPushProgress:
		return t.pushProgress(c)
	case OpDeleteMessage:
		return t.deleteMessage(c)
	case OpSuspend:
		return t.audited(c, t.suspend(c))
	case OpResetPassword:
		return t.audited(c, t.resetPassword(c))
	case OpDeleteUser:
		return t.audited(c, t.deleteUser(c))
	case OpExpireMessages:
		return t.expireMessages(c)
	case OpAudit:
		if c.Audit == "" || c.Name == "" || len(c.Name) > MaxAuditBytes {
			return failure(ErrCodeInvalid, "audit needs who (Audit) and what (Name)")
		}
		return t.audited(c, t.ok(0, 0))
	}
	return failure(ErrCodeInvalid, "unknown operation "+c.Op.String())
}

// validUsername: 3 to 32 characters of [a-z0-9_.-] (the caller case-folds).
func validUsername(s string) bool {
	if len(s) < MinUsernameLen || len(s) > MaxUsernameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || '0' <= b && b <= '9' || b == '_' || b == '.' || b == '-') {
			return false
		}
	}
	return true
}

// checkText checks a name or body: 1 to max bytes of UTF-8.
func checkText(what, s string, max int) *Result {
	switch {
	case s == "":
		return failure(ErrCodeInvalid, what+" is empty")
	case len(s) > max:
		return failure(ErrCodeTooLarge, fmt.Sprintf("%s is over %d bytes", what, max))
	case !utf8.ValidString(s):
		return failure(ErrCodeInvalid, what+" is not valid UTF-8")
	}
	return nil
}

func (t *txn) register(c *Command) *Result {
	switch {
	case !validUsername(c.Username):
		return failure(ErrCodeInvalid, "username must be 3 to 32 characters of a-z 0-9 _ . -")
	case len(c.PasswordHash) == 0:
		return failure(ErrCodeInvalid, "password hash is empty")
	case len(c.PasswordHash) > MaxPasswordHashBytes:
		return failure(ErrCodeTooLarge, "password hash is too long")
	case t.lastUser >= maxID:
		return failure(ErrCodeTooLarge, "user IDs exhausted")
	}
	if _, taken := t.names[c.Username]; taken {
		return failure(ErrCodeUsernameTaken, "username taken")
	}
	if _, taken := t.ix.names[c.Username]; taken {
		return failure(ErrCodeUsernameTaken, "username taken")
	}
	t.lastUser++
	u := User{ID: t.lastUser, Username: c.Username, PasswordHash: c.PasswordHash, CreatedAt: t.ts}
	t.set(key1(prefixUser, u.ID), appendUserRecord(t.vbuf[:0], &u))
	t.users[u.ID] = &userEntry{id: u.ID, name: u.Username, convs: make(map[uint64]*membership)}
	t.names[u.Username] = u.ID
	r := t.ok(0, 0)
	r.User = u.ID
	return r
}

// addDevice adds a device (a login). First, when the proposer says before
// when tokens have expired (Ts), the user's devices created before then
// are revoked: none of their tokens is valid any more, and only a new
// login makes a token. Then, with MaxDevices set, the oldest devices are
// revoked until the user has at most that many active, the new one
// included. Both follow from the state and the command alone.
func (t *txn) addDevice(c *Command) *Result {
	if !t.userExists(c.User) {
		return failure(ErrCodeNotFound, "no such user")
	}
	if r := checkText("device name", c.DeviceName, MaxDeviceNameBytes); r != nil {
		return r
	}
	if t.lastDevice >= maxID {
		return failure(ErrCodeTooLarge, "device IDs exhausted")
	}
	if c.Ts > 0 {
		expired := min(c.Ts, t.ts) // a proposer's clock ahead of the leader's revokes no newer device
		for {
			active := t.devicesOf(c.User)
			if len(active) == 0 || t.deviceRecord(c.User, active[0]).CreatedAt >= expired {
				break
			}
			t.revoke(c.User, active[0])
		}
	}
	t.lastDevice++
	t.putDevice(Device{ID: t.lastDevice, User: c.User, Name: c.DeviceName, CreatedAt: t.ts})
	t.activeDevs[c.User] = append(slices.Clip(t.devicesOf(c.User)), t.lastDevice)
	for c.MaxDevices > 0 && uint64(len(t.activeDevs[c.User])) > c.MaxDevices {
		t.revoke(c.User, t.activeDevs[c.User][0])
	}
	r := t.ok(0, 0)
	r.User, r.Device = c.User, t.lastDevice
	return r
}

func (t *txn) revokeDevice(c *Command) *Result {
	exists, revoked := t.device(c.User, c.Device)
	if !exists {
		return failure(ErrCodeNotFound, "no such device")
	}
	if !revoked {
		t.revoke(c.User, c.Device)
	}
	r := t.ok(0, 0)
	r.User, r.Device = c.User, c.Device
	return r
}

// devicesOf is the user's active devices as the entry sees them, oldest
// first. The slice may be the index's: never modify it in place.
func (t *txn) devicesOf(user uint64) []uint64 {
	if list, ok := t.activeDevs[user]; ok {
		return list
	}
	if u := t.ix.users[user]; u != nil {
		return u.devices
	}
	return nil // registered in this entry
}

// deviceRecord reads a device of user as the entry sees it.
func (t *txn) deviceRecord(user, id uint64) Device {
	if d, ok := t.devices[id]; ok {
		return d
	}
	var d Device
	t.kbuf = appendKey2(t.kbuf[:0], prefixDevice, user, id)
	v, found := t.get(t.vbuf[:0], t.kbuf)
	t.vbuf = v
	if !found || !decodeDeviceRecord(user, id, v, &d) {
		panic(corrupt("device record", t.kbuf).Error())
	}
	return d
}

// revoke revokes an active device of user, and tells the nodes: each
// closes the device's connections.
func (t *txn) revoke(user, id uint64) {
	d := t.deviceRecord(user, id) // for the name and creation time it keeps
	d.Revoked = true
	t.putDevice(d)
	t.dropPushTarget(user, id)
	t.activeDevs[user] = slices.DeleteFunc(slices.Clone(t.devicesOf(user)), func(x uint64) bool { return x == id })
	t.publish(Event{
		Index: t.index, Ts: t.ts, Kind: EventDeviceRevoked, From: user, Device: id,
		Recipients: []uint64{user},
	})
}

func (t *txn) openDirect(c *Command) *Result {
	switch {
	case !t.userExists(c.User) || !t.userExists(c.Peer):
		return failure(ErrCodeNotFound, "no such user")
	case c.User == c.Peer:
		return failure(ErrCodeConflict, "a 1:1 conversation needs two users")
	case t.isBlocking(c.Peer, c.User):
		return failure(ErrCodeForbidden, errNotAllowed)
	}
	pair := [2]uint64{min(c.User, c.Peer), max(c.User, c.Peer)}
	if id, ok := t.directs[pair]; ok {
		return t.ok(id, 0)
	}
	if id, ok := t.ix.directs[pair]; ok {
		return t.ok(id, 0)
	}
	if t.lastConv >= maxID {
		return failure(ErrCodeTooLarge, "conversation IDs exhausted")
	}
	t.lastConv++
	w := t.newConv(&convEntry{
		id: t.lastConv, kind: KindDirect, createdAt: t.ts, peers: pair, members: pair[:],
	})
	t.directs[pair] = w.c.id
	for _, u := range pair {
		t.putMember(w.c.id, u, memberRecord{active: true})
	}
	seq := t.appendEvent(w, Event{Kind: EventCreated, From: c.User, Users: []uint64{c.Peer}}, w.c.members)
	for _, u := range pair {
		t.joined(w.c.id, u, seq)
	}
	return t.ok(w.c.id, seq)
}

// checkUsers validates a list of users to add: its length, and that every
// user exists. It returns the distinct users, ascending.
func (t *txn) checkUsers(users []uint64) ([]uint64, *Result) {
	if len(users) > MaxMembersPerCommand {
		return nil, failure(ErrCodeTooLarge, fmt.Sprintf("over %d users in one request", MaxMembersPerCommand))
	}
	for _, u := range users {
		if !t.userExists(u) {
			return nil, failure(ErrCodeNotFound, fmt.Sprintf("no such user %d", u))
		}
	}
	return sortedUnique(users), nil
}

func (t *txn) createGroup(c *Command) *Result {
	if !t.userExists(c.User) {
		return failure(ErrCodeNotFound, "no such user")
	}
	if r := checkText("name", c.Name, MaxNameBytes); r != nil {
		return r
	}
	others, r := t.checkUsers(c.Members)
	if r != nil {
		return r
	}
	if i, found := slices.BinarySearch(others, c.User); found {
		others = append(others[:i], others[i+1:]...)
	}
	if r := t.mayAdd(c.User, others); r != nil {
		return r
	}
	if len(others)+1 > t.e.maxGroupMembers {
		return failure(ErrCodeTooLarge, fmt.Sprintf("a group has at most %d members", t.e.maxGroupMembers))
	}
	if t.lastConv >= maxID {
		return failure(ErrCodeTooLarge, "conversation IDs exhausted")
	}
	t.lastConv++
	w := t.newConv(&convEntry{
		id: t.lastConv, kind: KindGroup, name: c.Name, createdAt: t.ts,
		members: merged(others, []uint64{c.User}), admins: []uint64{c.User},
	})
	for _, u := range w.c.members {
		t.putMember(w.c.id, u, memberRecord{active: true, admin: u == c.User})
	}
	var users []uint64
	if len(others) > 0 {
		users = others
	}
	seq := t.appendEvent(w, Event{Kind: EventCreated, From: c.User, Name: c.Name, Users: users}, w.c.members)
	for _, u := range w.c.members {
		t.joined(w.c.id, u, seq)
	}
	return t.ok(w.c.id, seq)
}

// group returns the group conv in which user may act, checking that it
// exists, is a group, that user is a member and, if admin, an admin.
func (t *txn) group(conv, user uint64, admin bool) (*convWork, *Result) {
	w := t.conv(conv)
	switch {
	case w == nil:
		return nil, failure(ErrCodeNotFound, "no such conversation")
	case w.c.kind != KindGroup:
		return nil, failure(ErrCodeForbidden, "not a group")
	case !w.c.isMember(user):
		return nil, failure(ErrCodeNotMember, "not a member")
	case admin && !w.c.isAdmin(user):
		return nil, failure(ErrCodeForbidden, "admins only")
	}
	return w, nil
}

func (t *txn) addMembers(c *Command) *Result {
	w, r := t.group(c.Conv, c.User, true)
	if r != nil {
		return r
	}
	if len(c.Members) == 0 {
		return failure(ErrCodeInvalid, "no users to add")
	}
	users, r := t.checkUsers(c.Members)
	if r != nil {
		return r
	}
	added := users[:0]
	for _, u := range users {
		if !w.c.isMember(u) {
			added = append(added, u)
		}
	}
	if len(added) == 0 {
		return t.ok(w.c.id, 0) // all are members already: nothing to do
	}
	if r := t.mayAdd(c.User, added); r != nil {
		return r
	}
	if len(w.c.members)+len(added) > t.e.maxGroupMembers {
		return failure(ErrCodeTooLarge, fmt.Sprintf("a group has at most %d members", t.e.maxGroupMembers))
	}
	w.c.members = merged(w.c.members, added)
	for _, u := range added {
		t.putMember(w.c.id, u, memberRecord{active: true})
	}
	seq := t.appendEvent(w, Event{Kind: EventMemberAdded, From: c.User, Users: added}, w.c.members)
	for _, u := range added {
		t.joined(w.c.id, u, seq)
	}
	return t.ok(w.c.id, seq)
}

// dropMember removes user from the conversation by an event of kind
// (removed or left) and returns the seq of that event. The user receives the
// event along with the remaining members.
func (t *txn) dropMember(w *convWork, actor, user uint64, kind EventKind) uint64 {
	c := w.c
	c.members = without(c.members, user)
	if c.isAdmin(user) {
		c.admins = without(c.admins, user)
	}
	recipients := merged(c.members, []uint64{user})
	seq := t.appendEvent(w, Event{Kind: kind, From: actor, Users: []uint64{user}}, recipients)
	t.putMember(c.id, user, memberRecord{goneSeq: seq, goneIndex: t.index})
	t.cursor(c.id, user) // install takes their cursors out of the group's set
	return seq
}

func (t *txn) removeMember(c *Command) *Result {
	w, r := t.group(c.Conv, c.User, true)
	switch {
	case r != nil:
		return r
	case c.Member == c.User:
		return failure(ErrCodeInvalid, "use leave to remove yourself")
	case !w.c.isMember(c.Member):
		return failure(ErrCodeNotMember, "the user is not a member")
	}
	return t.ok(w.c.id, t.dropMember(w, c.User, c.Member, EventMemberRemoved))
}

// leave takes the user out of a group. When the last admin leaves, the
// remaining member with the lowest ID becomes admin (an admin_changed event
// follows), so a group with members always has an admin.
func (t *txn) leave(c *Command) *Result {
	w, r := t.group(c.Conv, c.User, false)
	if r != nil {
		return r
	}
	return t.ok(w.c.id, t.leaveGroup(w, c.User))
}

// leaveGroup takes user out of the group w (user leaves; the lowest
// remaining member becomes admin if none is left) and returns the seq of
// the member_left event.
func (t *txn) leaveGroup(w *convWork, user uint64) uint64 {
	seq := t.dropMember(w, user, user, EventMemberLeft)
	if cv := w.c; len(cv.admins) == 0 && len(cv.members) > 0 {
		heir := cv.members[0]
		cv.admins = []uint64{heir}
		t.putMember(cv.id, heir, memberRecord{active: true, admin: true})
		t.appendEvent(w, Event{Kind: EventAdminChanged, From: user, Users: []uint64{heir}, Admin: true}, cv.members)
	}
	return seq
}

func (t *txn) setAdmin(c *Command) *Result {
	w, r := t.group(c.Conv, c.User, true)
	if r != nil {
		return r
	}
	cv := w.c
	switch {
	case !cv.isMember(c.Member):
		return failure(ErrCodeNotMember, "the user is not a member")
	case cv.isAdmin(c.Member) == c.Admin:
		return t.ok(cv.id, 0) // already so
	case !c.Admin && len(cv.admins) == 1:
		return failure(ErrCodeConflict, "a group needs an admin")
	}
	if c.Admin {
		cv.admins = merged(cv.admins, []uint64{c.Member})
	} else {
		cv.admins = without(cv.admins, c.Member)
	}
	t.putMember(cv.id, c.Member, memberRecord{active: true, admin: c.Admin})
	seq := t.appendEvent(w, Event{Kind: EventAdminChanged, From: c.User, Users: []uint64{c.Member}, Admin: c.Admin}, cv.members)
	return t.ok(cv.id, seq)
}

func (t *txn) rename(c *Command) *Result {
	w, r := t.group(c.Conv, c.User, false)
	if r != nil {
		return r
	}
	if r := checkText("name", c.Name, MaxNameBytes); r != nil {
		return r
	}
	cv := w.c
	if cv.name == c.Name {
		return t.ok(cv.id, 0)
	}
	cv.name = c.Name
	t.set(key1(prefixConv, cv.id), appendConvRecord(t.vbuf[:0], cv))
	seq := t.appendEvent(w, Event{Kind: EventRenamed, From: c.User, Name: c.Name}, cv.members)
	return t.ok(cv.id, seq)
}

func (t *txn) send(c *Command) *Result {
	if c.ClientMsgID == "" {
		return failure(ErrCodeInvalid, "client_msg_id is empty")
	}
	if len(c.ClientMsgID) > MaxClientMsgIDBytes {
		return failure(ErrCodeTooLarge, "client_msg_id is too long")
	}
	// A retry returns the original outcome, whatever changed since (the
	// sender may have left the conversation in between).
	sk := sendKey{c.User, c.Device, c.ClientMsgID}
	orig, dup := t.sends[sk]
	t.kbuf = appendDedupKey(t.kbuf[:0], c.User, c.Device, c.ClientMsgID)
	h := dedupHash(t.e.dedupSeed, t.kbuf) // for the filter's lookup and add
	if !dup {
		var v []byte
		v, dup = t.getDedup(t.vbuf[:0], t.kbuf, h)
		t.vbuf = v
		if dup {
			var ok bool
			if orig, ok = decodeSendRecord(v); !ok {
				panic(corrupt("send record", t.kbuf).Error())
			}
		}
	}
	if dup && !faultSkipSendDedup {
		if orig.conv != c.Conv {
			return failure(ErrCodeConflict, "client_msg_id already used in another conversation")
		}
		return &Result{Conv: orig.conv, Seq: orig.seq, Ts: orig.ts, Index: orig.index, Duplicate: true}
	}

	// A message with attachments may have no text.
	if c.Body != "" || c.Media == nil || len(c.Media.Attachments) == 0 {
		if r := checkText("body", c.Body, MaxBodyBytes); r != nil {
			return r
		}
	}
	switch exists, revoked := t.device(c.User, c.Device); {
	case !exists:
		return failure(ErrCodeNotFound, "no such device")
	case revoked:
		return failure(ErrCodeForbidden, "device revoked")
	}
	w := t.conv(c.Conv)
	switch {
	case w == nil:
		return failure(ErrCodeNotFound, "no such conversation")
	case !w.c.isMember(c.User):
		return failure(ErrCodeNotMember, "not a member")
	case c.ReplyTo > w.c.lastSeq:
		return failure(ErrCodeNotFound, "reply_to names no event of this conversation")
	case w.c.kind == KindDirect && t.isBlocking(w.c.peerOf(c.User), c.User):
		return failure(ErrCodeForbidden, errNotAllowed)
	}
	var atts []Attachment
	if c.Media != nil && len(c.Media.Attachments) != 0 {
		var r *Result
		if atts, r = t.attachments(c.User, c.Media.Attachments); r != nil {
			return r
		}
	}
	seq := t.appendEvent(w, Event{
		Kind: EventMessage, From: c.User, Device: c.Device,
		ClientMsgID: c.ClientMsgID, Body: c.Body, ReplyTo: c.ReplyTo, Attachments: atts,
	}, w.c.members)
	if atts != nil {
		t.refAttachments(w.c.id, seq, atts)
	}
	// Sending reads the conversation: the sender's cursors move to their
	// message (see receipts.go). Their devices learn it from the message.
	t.advance(t.cursor(w.c.id, c.User), seq, seq)
	rec := sendRecord{conv: w.c.id, seq: seq, ts: t.ts, index: t.index}
	t.sends[sk] = rec
	t.kbuf = appendDedupKey(t.kbuf[:0], c.User, c.Device, c.ClientMsgID)
	t.set(t.kbuf, appendSendRecord(t.vbuf[:0], rec))
	t.e.dedupAdded(h)
	return t.ok(w.c.id, seq)
}

// seenOf is the entry's view of a user's last_seen and privacy.
func (t *txn) seenOf(user uint64) seenRecord {
	if rec, ok := t.seen[user]; ok {
		return rec
	}
	if u := t.ix.users[user]; u != nil {
		return u.seen
	}
	return seenRecord{} // registered in this entry
}

func (t *txn) putSeen(user uint64, rec seenRecord) {
	t.seen[user] = rec
	t.set(key1(prefixSeen, user), appendSeenRecord(t.vbuf[:0], rec))
}

// lastSeen stores max(last_seen, Ts). Ts is capped at the entry's time, so a
// node with a clock ahead cannot set a last_seen in the future; an older Ts
// (a late or replayed report) is a no-op.
func (t *txn) lastSeen(c *Command) *Result {
	switch {
	case !t.userExists(c.User):
		return failure(ErrCodeNotFound, "no such user")
	case c.Ts <= 0:
		return failure(ErrCodeInvalid, "last_seen time is missing")
	}
	rec := t.seenOf(c.User)
	if ts := min(c.Ts, t.ts); ts > rec.lastSeen {
		rec.lastSeen = ts
		t.putSeen(c.User, rec)
	}
	r := t.ok(0, 0)
	r.User = c.User
	return r
}

// setPrivacy sets whether the user's last_seen is hidden and, unless
// GroupAdd is GroupAddUnchanged, who may add them to groups.
func (t *txn) setPrivacy(c *Command) *Result {
	switch {
	case !t.userExists(c.User):
		return failure(ErrCodeNotFound, "no such user")
	case c.GroupAdd > GroupAddNobody:
		return failure(ErrCodeInvalid, "unknown group add setting")
	}
	rec := t.seenOf(c.User)
	old := rec
	rec.hide = c.HideLastSeen
	switch c.GroupAdd {
	case GroupAddUnchanged:
	case GroupAddEveryone:
		rec.groupAdd = GroupAddUnchanged // stored as the default
	default:
		rec.groupAdd = c.GroupAdd
	}
	if rec != old {
		t.putSeen(c.User, rec)
	}
	r := t.ok(0, 0)
	r.User = c.User
	return r
}

// errNotAllowed is the message of every refusal that a block or a user's
// group-add setting causes: it says no more than the code, so that a user
// cannot tell a block from a setting, nor who of several users refused.
const errNotAllowed = "not allowed"

// isBlocking reports whether user blocks peer, as of this entry.
func (t *txn) isBlocking(user, peer uint64) bool {
	if on, ok := t.blocks[[2]uint64{user, peer}]; ok {
		return on
	}
	u := t.ix.users[user]
	if u == nil {
		return false
	}
	_, on := u.blocked[peer]
	return on
}

// block makes user block (or unblock) Peer. Blocking twice, or unblocking
// a user who is not blocked, succeeds and changes nothing.
func (t *txn) block(c *Command, on bool) *Result {
	switch {
	case !t.userExists(c.User) || !t.userExists(c.Peer):
		return failure(ErrCodeNotFound, "no such user")
	case c.User == c.Peer:
		return failure(ErrCodeInvalid, "cannot block yourself")
	}
	if t.isBlocking(c.User, c.Peer) != on {
		n := t.blockDelta[c.User]
		if u := t.ix.users[c.User]; u != nil {
			n += len(u.blocked)
		}
		if on && n >= MaxBlocksPerUser {
			return failure(ErrCodeTooLarge, fmt.Sprintf("at most %d blocked users", MaxBlocksPerUser))
		}
		t.blocks[[2]uint64{c.User, c.Peer}] = on
		k := key2(prefixBlock, c.User, c.Peer)
		if on {
			t.blockDelta[c.User]++
			t.set(k, nil)
		} else {
			t.blockDelta[c.User]--
			if err := t.b.Delete(k, nil); err != nil {
				panic(fmt.Sprintf("engine: batch delete: %v", err))
			}
		}
	}
	r := t.ok(0, 0)
	r.User = c.User
	return r
}

// mayAdd checks that actor may add every one of users to a group: none of
// them blocks actor, and each one's group-add setting allows actor. The
// refusal names nobody (errNotAllowed).
func (t *txn) mayAdd(actor uint64, users []uint64) *Result {
	for _, u := range users {
		if u == actor {
			continue
		}
		allowed := !t.isBlocking(u, actor)
		if allowed {
			switch t.seenOf(u).groupAddPolicy() {
			case GroupAddNobody:
				allowed = false
			case GroupAddContacts:
				allowed = t.shareConv(actor, u)
			}
		}
		if !allowed {
			return failure(ErrCodeForbidden, errNotAllowed)
		}
	}
	return nil
}

// shareConv reports whether a and b are both current members of some
// conversation, as of this entry: it looks through the conversations of
// whichever has fewer, then through the memberships this entry added.
func (t *txn) shareConv(a, b uint64) bool {
	both := func(id uint64) bool {
		c := t.peekConv(id)
		return c != nil && c.isMember(a) && c.isMember(b)
	}
	ua, ub := t.ix.users[a], t.ix.users[b]
	if ua != nil && ub != nil {
		small := ua.convs
		if len(ub.convs) < len(small) {
			small = ub.convs
		}
		for id := range small {
			if both(id) {
				return true
			}
		}
	}
	for _, m := range t.memberships {
		if m.rec.active && (m.user == a || m.user == b) && both(m.conv) {
			return true
		}
	}
	return false
}

// setSigningKey stores the cluster's token signing key if it has none:
// first write wins, so every node that proposes a key at start ends up
// with the one that committed first, and tokens signed with it stay valid
// for the life of the cluster.
func (t *txn) setSigningKey(c *Command) *Result {
	if n := len(c.SigningKey); n < MinSigningKeyLen || n > MaxSigningKeyLen {
		return failure(ErrCodeInvalid, fmt.Sprintf("signing key of %d bytes, want %d to %d", n, MinSigningKeyLen, MaxSigningKeyLen))
	}
	if t.signingKey == nil && t.ix.signingKey == nil {
		// DecodeCommand allocated it: nothing else holds the slice.
		t.signingKey = c.SigningKey
		t.set(metaKey(metaSigningKey), t.signingKey)
	}
	return t.ok(0, 0)
}
