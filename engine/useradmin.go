package engine

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// User administration: what an operator does through the admin API. Each
// command carries Audit (who asked); a successful one is written to the
// audit log ('v' + log index + position in the entry), in the same batch
// as its effect, so the log and the state never disagree, on any replica.

// MaxAuditBytes bounds a command's Audit text.
const MaxAuditBytes = 512

// suspend suspends (Admin) or unsuspends a user. A suspended user cannot
// log in or connect (the node checks Suspended), and their connections are
// closed; their data stays, and unsuspending gives the account back.
func (t *txn) suspend(c *Command) *Result {
	if !t.userExists(c.User) {
		return failure(ErrCodeNotFound, "no such user")
	}
	rec := t.seenOf(c.User)
	if rec.suspended != c.Admin {
		rec.suspended = c.Admin
		t.putSeen(c.User, rec)
		if c.Admin {
			t.publish(Event{Index: t.index, Ts: t.ts, Kind: EventUserSuspended, From: c.User, Recipients: []uint64{c.User}})
		}
	}
	r := t.ok(0, 0)
	r.User = c.User
	return r
}

// resetPassword sets a new password hash and revokes every device of the
// user: each token stops working, and their connections close.
func (t *txn) resetPassword(c *Command) *Result {
	switch {
	case !t.userExists(c.User):
		return failure(ErrCodeNotFound, "no such user")
	case len(c.PasswordHash) == 0:
		return failure(ErrCodeInvalid, "password hash is empty")
	case len(c.PasswordHash) > MaxPasswordHashBytes:
		return failure(ErrCodeTooLarge, "password hash is too long")
	}
	var u User
	k := key1(prefixUser, c.User)
	v, ok := t.get(nil, k)
	if !ok || !decodeUserRecord(c.User, v, &u) {
		return failure(ErrCodeNotFound, "no such user") // registered in this entry
	}
	u.PasswordHash = c.PasswordHash
	t.set(k, appendUserRecord(t.vbuf[:0], &u))
	for _, d := range t.devicesOf(c.User) {
		t.revoke(c.User, d)
	}
	r := t.ok(0, 0)
	r.User = c.User
	return r
}

// audited writes the audit record of c if it carries one and succeeded.
func (t *txn) audited(c *Command, r *Result) *Result {
	if c.Audit == "" || r.Err != ErrCodeNone {
		return r
	}
	if len(c.Audit) > MaxAuditBytes {
		c.Audit = c.Audit[:MaxAuditBytes]
	}
	t.audits++
	v := binary.BigEndian.AppendUint64(t.vbuf[:0], uint64(t.ts))
	v = append(v, byte(c.Op))
	v = binary.BigEndian.AppendUint64(v, c.User)
	v = binary.BigEndian.AppendUint64(v, c.Device)
	var flag byte
	if c.Admin {
		flag = 1
	}
	v = append(v, flag)
	v = append(v, c.Audit...)
	if c.Op == OpAudit { // what was done, after who did it
		v = append(v, 0)
		v = append(v, c.Name...)
	}
	t.set(key2(prefixAudit, t.index, t.audits), v)
	return r
}

// AuditEntry is one administrative action.
type AuditEntry struct {
	Index  uint64 // the log index of the entry that applied it
	N      uint64 // its position among the entry's audited commands
	Ts     int64  // unix ms
	Op     Op
	User   uint64
	Device uint64
	Admin  bool   // OpSuspend: suspended (true) or unsuspended
	Who    string // the command's Audit
	What   string // OpAudit: what was done
}

// AuditLog returns up to limit audit entries after (index, n), oldest
// first, and whether more follow.
func (e *Engine) AuditLog(index, n uint64, limit int) ([]AuditEntry, bool, error) {
	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return nil, false, ErrClosed
	}
	lower := key2(prefixAudit, index, n+1)
	if n == ^uint64(0) {
		lower = key2(prefixAudit, index+1, 0)
	}
	it, err := e.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: []byte{prefixAudit + 1}})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	var out []AuditEntry
	for valid := it.First(); valid; valid = it.Next() {
		if len(out) == limit {
			return out, true, nil
		}
		k, v := it.Key(), it.Value()
		if len(k) != 17 || len(v) < 26 {
			return nil, false, corrupt("audit record", k)
		}
		a := AuditEntry{
			Index: u64At(k, 1), N: u64At(k, 9), Ts: int64(u64At(v, 0)), Op: Op(v[8]),
			User: u64At(v, 9), Device: u64At(v, 17), Admin: v[25] == 1, Who: string(v[26:]),
		}
		if a.Op == OpAudit {
			a.Who, a.What, _ = strings.Cut(a.Who, "\x00")
		}
		out = append(out, a)
	}
	return out, false, it.Error()
}

// Suspended reports whether an administrator suspended user.
func (e *Engine) Suspended(user uint64) bool {
	e.idx.mu.RLock()
	defer e.idx.mu.RUnlock()
	u := e.idx.users[user]
	return u != nil && u.seen.suspended
}

// deleteUser deletes an account. What goes: the username (free for anyone
// to register again), the password, every device (tokens refused,
// connections closed, push targets removed), the user's groups (they
// leave each, as group.leave does), their block list, last_seen and
// settings. What stays: the user id, and the messages they sent, in 1:1s
// and groups alike, with their text, shown as from a deleted account (a
// message that must go is deleted with msg.delete); their 1:1s (the other
// member keeps the conversation). Files they uploaded that no message
// carries are collected after the grace period.
func (t *txn) deleteUser(c *Command) *Result {
	if !t.userExists(c.User) {
		return failure(ErrCodeNotFound, "no such user")
	}
	rec := t.seenOf(c.User)
	if rec.deleted {
		r := t.ok(0, 0)
		r.User = c.User
		return r
	}
	var u User
	k := key1(prefixUser, c.User)
	v, ok := t.get(nil, k)
	if !ok || !decodeUserRecord(c.User, v, &u) {
		return failure(ErrCodeNotFound, "no such user") // registered in this entry
	}
	t.deleted[c.User] = u.Username
	u.Username, u.PasswordHash = "", nil
	t.set(k, appendUserRecord(t.vbuf[:0], &u))
	for _, d := range t.devicesOf(c.User) {
		t.revoke(c.User, d)
	}
	if ue := t.ix.users[c.User]; ue != nil {
		for conv, ms := range ue.convs {
			if ms.gone || ms.conv.kind != KindGroup {
				continue
			}
			if w := t.conv(conv); w != nil && w.c.isMember(c.User) {
				t.leaveGroup(w, c.User)
			}
		}
		for peer := range ue.blocked {
			t.blocks[[2]uint64{c.User, peer}] = false
			t.blockDelta[c.User]--
			if err := t.b.Delete(key2(prefixBlock, c.User, peer), nil); err != nil {
				panic(fmt.Sprintf("engine: batch delete: %v", err))
			}
		}
	}
	t.putSeen(c.User, seenRecord{hide: true, deleted: true})
	r := t.ok(0, 0)
	r.User = c.User
	return r
}
