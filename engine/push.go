package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Push notifications: the replicated part. A device registers where its
// notifications go (OpPushSet), a user sets whether they show the text
// (Preview) and do-not-disturb (DND), and mutes conversations (OpMute);
// the node's notifier, on the leader only, sends a notification for every
// message to the recipients that are offline, and records how far it got
// (OpPushProgress), so that a new leader resumes there instead of losing
// or repeating everything. Which messages came after an index is read
// from the state (MessagesAfter), never from a node's memory, so a node
// that restarted notifies as well as one that did not.

// Push providers a target may name. The engine only checks the name; the
// node's push package speaks each one.
const (
	PushFCM     = "fcm"
	PushAPNs    = "apns"
	PushWebPush = "webpush"
	PushWebhook = "webhook"
)

// Limits of a push target: an FCM token is ~160 bytes, an APNs token 64
// hex digits, a Web Push endpoint a URL of a few hundred bytes, its keys
// 87 and 22 base64url characters; the bounds leave room and keep a bad
// command from bloating the state.
const (
	MaxPushTokenBytes    = 4096
	MaxPushEndpointBytes = 2048
	MaxPushKeyBytes      = 256

	// MuteForever as OpMute's Until mutes a conversation until unmuted.
	MuteForever int64 = -1
)

// PushTarget is where one device's notifications go.
type PushTarget struct {
	Provider string
	Token    string // FCM registration token, APNs device token (hex), webhook URL
	Endpoint string // webpush: the subscription's endpoint URL
	P256dh   string // webpush: the subscription's public key (base64url)
	Auth     string // webpush: the subscription's auth secret (base64url)
}

// DevicePush is a device's push target.
type DevicePush struct {
	Device uint64
	PushTarget
}

func (c *Command) pushTarget() PushTarget {
	return PushTarget{Provider: c.PushProvider, Token: c.PushToken, Endpoint: c.PushEndpoint, P256dh: c.PushP256dh, Auth: c.PushAuth}
}

// check validates a target as OpPushSet gets it.
func (p *PushTarget) check() *Result {
	for _, f := range []struct {
		what string
		v    string
		max  int
	}{
		{"push token", p.Token, MaxPushTokenBytes}, {"push endpoint", p.Endpoint, MaxPushEndpointBytes},
		{"push key p256dh", p.P256dh, MaxPushKeyBytes}, {"push key auth", p.Auth, MaxPushKeyBytes},
	} {
		if len(f.v) > f.max {
			return failure(ErrCodeTooLarge, fmt.Sprintf("%s is over %d bytes", f.what, f.max))
		}
	}
	switch p.Provider {
	case PushFCM, PushAPNs, PushWebhook:
		if p.Token == "" || p.Endpoint != "" || p.P256dh != "" || p.Auth != "" {
			return failure(ErrCodeInvalid, p.Provider+" takes a token and nothing else")
		}
	case PushWebPush:
		if p.Token != "" || p.Endpoint == "" || p.P256dh == "" || p.Auth == "" {
			return failure(ErrCodeInvalid, "webpush takes endpoint, p256dh and auth")
		}
	default:
		return failure(ErrCodeInvalid, "unknown push provider")
	}
	return nil
}

// appendPushRecord encodes a target: each field as a uvarint length and
// its bytes, in the order of PushTarget.
func appendPushRecord(dst []byte, p *PushTarget) []byte {
	for _, s := range [...]string{p.Provider, p.Token, p.Endpoint, p.P256dh, p.Auth} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

func decodePushRecord(v []byte, p *PushTarget) bool {
	for _, f := range [...]*string{&p.Provider, &p.Token, &p.Endpoint, &p.P256dh, &p.Auth} {
		n, w := binary.Uvarint(v)
		if w <= 0 || n > uint64(len(v)-w) {
			return false
		}
		*f = string(v[w : w+int(n)])
		v = v[w+int(n):]
	}
	return len(v) == 0
}

// activeDevice checks that the command's device is one of its user's
// active devices.
func (t *txn) activeDevice(c *Command) *Result {
	exists, revoked := t.device(c.User, c.Device)
	switch {
	case !exists:
		return failure(ErrCodeNotFound, "no such device")
	case revoked:
		return failure(ErrCodeForbidden, "device revoked")
	}
	return nil
}

// pushSet stores the device's push target, replacing any other.
func (t *txn) pushSet(c *Command) *Result {
	if r := t.activeDevice(c); r != nil {
		return r
	}
	p := c.pushTarget()
	if r := p.check(); r != nil {
		return r
	}
	t.set(key2(prefixPush, c.User, c.Device), appendPushRecord(t.vbuf[:0], &p))
	r := t.ok(0, 0)
	r.User, r.Device = c.User, c.Device
	return r
}

// pushClear removes the device's push target. With a token (or, for
// webpush, an endpoint) it removes the target only if it is still that
// one: the notifier clears a target the provider rejected, and must not
// clear the fresh one the device registered meanwhile.
func (t *txn) pushClear(c *Command) *Result {
	exists, _ := t.device(c.User, c.Device)
	if !exists {
		return failure(ErrCodeNotFound, "no such device")
	}
	k := key2(prefixPush, c.User, c.Device)
	if c.PushToken != "" || c.PushEndpoint != "" {
		v, found := t.get(t.vbuf[:0], k)
		t.vbuf = v
		var p PushTarget
		if !found {
			return t.ok(0, 0)
		}
		if !decodePushRecord(v, &p) {
			panic(corrupt("push target", k).Error())
		}
		if p.Token != c.PushToken || p.Endpoint != c.PushEndpoint {
			return t.ok(0, 0)
		}
	}
	if err := t.b.Delete(k, nil); err != nil {
		panic(fmt.Sprintf("engine: batch delete: %v", err))
	}
	r := t.ok(0, 0)
	r.User, r.Device = c.User, c.Device
	return r
}

// notifySet stores the user's notification settings (with last_seen and
// privacy, in the user's settings record).
func (t *txn) notifySet(c *Command) *Result {
	if !t.userExists(c.User) {
		return failure(ErrCodeNotFound, "no such user")
	}
	rec := t.seenOf(c.User)
	if rec.preview != c.Preview || rec.dnd != c.DND {
		rec.preview, rec.dnd = c.Preview, c.DND
		t.putSeen(c.User, rec)
	}
	r := t.ok(0, 0)
	r.User = c.User
	return r
}

// mute mutes (or unmutes) a conversation for the user, until Until.
func (t *txn) mute(c *Command) *Result {
	switch {
	case c.Until < MuteForever:
		return failure(ErrCodeInvalid, "mute until a negative time")
	case !t.isMember(c.Conv, c.User):
		if t.conv(c.Conv) == nil {
			return failure(ErrCodeNotFound, "no such conversation")
		}
		return failure(ErrCodeNotMember, "not a member")
	}
	k := key2(prefixMute, c.Conv, c.User)
	if c.Until == 0 {
		if err := t.b.Delete(k, nil); err != nil {
			panic(fmt.Sprintf("engine: batch delete: %v", err))
		}
	} else {
		t.set(k, binary.BigEndian.AppendUint64(t.vbuf[:0], uint64(c.Until)))
	}
	t.mutes[[2]uint64{c.User, c.Conv}] = c.Until
	r := t.ok(c.Conv, 0)
	r.User = c.User
	return r
}

// isMember reports whether user is a current member of conv, as of this
// entry.
func (t *txn) isMember(conv, user uint64) bool {
	w := t.conv(conv)
	if w == nil {
		return false
	}
	_, ok := slices.BinarySearch(w.c.members, user)
	return ok
}

// pushProgress moves the notifier's progress forward (never back: a
// deposed leader's late report is a no-op).
func (t *txn) pushProgress(c *Command) *Result {
	if c.Progress > t.index {
		return failure(ErrCodeInvalid, "push progress beyond the log")
	}
	if c.Progress > t.progressOf() {
		t.progress = c.Progress
		t.set(metaKey(metaPushProgress), appendU64s(t.vbuf[:0], c.Progress))
	}
	return t.ok(0, 0)
}

func (t *txn) progressOf() uint64 { return max(t.progress, t.ix.pushProgress) }

// dropPushTarget removes a revoked device's target.
func (t *txn) dropPushTarget(user, device uint64) {
	if err := t.b.Delete(key2(prefixPush, user, device), nil); err != nil {
		panic(fmt.Sprintf("engine: batch delete: %v", err))
	}
}

// installPush makes the entry's mutes and progress visible.
func (t *txn) installPush() {
	ix := t.ix
	for k, until := range t.mutes {
		if ms := ix.users[k[0]].convs[k[1]]; ms != nil {
			ms.mutedUntil = until
		}
	}
	if t.progress > ix.pushProgress {
		ix.pushProgress = t.progress
	}
}

// loadPush reads the mutes and the notifier's progress into the index.
func loadPush(db *pebble.DB, ix *index) error {
	v, err := getU64(db, metaKey(metaPushProgress))
	if err != nil {
		return err
	}
	ix.pushProgress = v
	return scan(db, prefixMute, func(k, v []byte) error {
		if len(k) != 17 || len(v) != 8 {
			return corrupt("mute", k)
		}
		u := ix.users[u64At(k, 9)]
		if u == nil || u.convs[u64At(k, 1)] == nil {
			return corrupt("mute", k)
		}
		u.convs[u64At(k, 1)].mutedUntil = int64(u64At(v, 0))
		return nil
	})
}

// PushTargets returns the push targets of user's devices, by device.
func (e *Engine) PushTargets(user uint64) ([]DevicePush, error) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, ErrClosed
	}
	lower, upper := key2(prefixPush, user, 0), key2(prefixPush, user+1, 0)
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []DevicePush
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		d := DevicePush{Device: u64At(it.Key(), 9)}
		if len(it.Key()) != 17 || !decodePushRecord(v, &d.PushTarget) {
			return nil, corrupt("push target", it.Key())
		}
		out = append(out, d)
	}
	return out, it.Error()
}

// NotifySettings returns the user's notification settings: whether
// notifications show the sender and text, and do-not-disturb.
func (e *Engine) NotifySettings(user uint64) (preview, dnd bool) {
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	if u := e.idx.users[user]; u != nil {
		return u.seen.preview, u.seen.dnd
	}
	return false, false
}

// MutedUntil returns until when user muted conv: 0 if not muted,
// MuteForever, or unix ms (which may have passed).
func (e *Engine) MutedUntil(user, conv uint64) int64 {
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	if u := e.idx.users[user]; u != nil {
		if ms := u.convs[conv]; ms != nil {
			return ms.mutedUntil
		}
	}
	return 0
}

// Muted reports whether a mute until until is in force at now (unix ms).
func Muted(until, now int64) bool { return until == MuteForever || until > now }

// PushProgress is the log index up to which the notifier has handled
// every message.
func (e *Engine) PushProgress() uint64 {
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	return e.idx.pushProgress
}

// Unread is the number of unread messages of user over all their
// conversations: a notification's badge.
func (e *Engine) Unread(user uint64) uint64 {
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	u := e.idx.users[user]
	if u == nil {
		return 0
	}
	var n uint64
	for _, ms := range u.convs {
		n += ms.unread()
	}
	return n
}

// ConvsChangedAfter appends to dst the conversations with an event after
// log index after.
func (e *Engine) ConvsChangedAfter(after uint64, dst []uint64) []uint64 {
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	for id, c := range e.idx.convs {
		if c.lastIndex > after {
			dst = append(dst, id)
		}
	}
	return dst
}

// UserConvsChangedAfter appends to dst the conversations user is a member
// of with an event after log index after.
func (e *Engine) UserConvsChangedAfter(user, after uint64, dst []uint64) []uint64 {
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	u := e.idx.users[user]
	if u == nil {
		return dst
	}
	for _, m := range u.convs {
		if !m.gone && m.conv.lastIndex > after {
			dst = append(dst, m.conv.id)
		}
	}
	return dst
}

// MessagesAfter returns up to limit messages of conv appended by entries
// after log index after and with a seq above afterSeq, oldest first, with
// more set if others follow: page on with afterSeq = the last one's Seq
// (an entry may append many). Events that are not messages are left out.
func (e *Engine) MessagesAfter(conv, after, afterSeq uint64, limit int) (msgs []Event, more bool, err error) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, false, ErrClosed
	}
	r, err := newEventReader(e.db)
	if err != nil {
		return nil, false, err
	}
	defer r.close()
	first, ok, err := r.firstSeqAfter(conv, after)
	if err != nil || !ok {
		return nil, false, err
	}
	f := Budget{}.start()
	lo := max(first, afterSeq+1)
	for len(msgs) < limit {
		var evs []Event
		evs, more, err = r.read(conv, lo, math.MaxUint64, limit-len(msgs), false, nil, f, 0)
		if err != nil || len(evs) == 0 {
			return msgs, false, err
		}
		for _, ev := range evs {
			if ev.Kind == EventMessage {
				msgs = append(msgs, ev)
			}
		}
		if !more {
			return msgs, false, nil
		}
		lo = evs[len(evs)-1].Seq + 1
	}
	return msgs, more, nil
}

// ErrClosed is returned by queries on a closed engine.
var ErrClosed = errors.New("engine: closed")

// Members returns the current members of conv, ascending, and the
// conversation's name (groups) and kind. The slice is shared: membership
// changes build new slices, so it never changes, but it must not be
// modified.
func (e *Engine) Members(conv uint64) (members []uint64, kind ConvKind, name string, ok bool) {
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	c := e.idx.convs[conv]
	if c == nil {
		return nil, "", "", false
	}
	return c.members, c.kind, c.name, true
}
