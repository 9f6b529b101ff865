package engine

// Deleting a message for everyone. The message keeps its seq, so that
// order and receipts stay as they were, but loses its body and
// attachments: its stored event is rewritten with Deleted set and Target
// the seq of a new deleted event, which tells every member (live, and in
// sync and history) which message went. The attachments' references are
// dropped: a file no other message carries is collected after the grace
// period.
//
// The sender may delete their own message; in a group an admin may delete
// anyone's. Deleting a deleted message succeeds and appends nothing.

func (t *txn) deleteMessage(c *Command) *Result {
	w := t.conv(c.Conv)
	switch {
	case w == nil:
		return failure(ErrCodeNotFound, "no such conversation")
	case !w.c.isMember(c.User):
		return failure(ErrCodeNotMember, "not a member")
	case c.Seq == 0 || c.Seq > w.c.lastSeq:
		return failure(ErrCodeNotFound, "no such message")
	}
	ev, ok := t.storedEvent(c.Conv, c.Seq)
	switch {
	case !ok:
		// Appended by this same entry: not yet readable. A client deletes
		// what it was shown, which was applied before.
		return failure(ErrCodeNotFound, "no such message")
	case ev.Kind != EventMessage:
		return failure(ErrCodeInvalid, "not a message")
	case ev.Deleted:
		return t.ok(c.Conv, ev.Target)
	case ev.From != c.User && !(w.c.kind == KindGroup && w.c.isAdmin(c.User)):
		return failure(ErrCodeForbidden, "only the sender, or a group admin, deletes a message")
	}
	t.DropMessageMedia(c.Conv, c.Seq)
	seq := t.appendEvent(w, Event{Kind: EventDeleted, From: c.User, Target: c.Seq}, w.c.members)
	ev.Body, ev.Attachments, ev.Deleted, ev.Target = "", nil, true, seq
	t.set(key2(prefixEvent, c.Conv, c.Seq), appendEvent(t.vbuf[:0], &ev))
	return t.ok(c.Conv, seq)
}
