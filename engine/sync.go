package engine

import (
	"cmp"
	"math"
	"slices"
)

// Sync returns, in pages, the conversations of user that changed after the
// log index q.Since (the cursor the device has fully seen), each with its
// new events and the user's current receipt cursors and unread count. A
// conversation changes with a new event and with a change of the user's
// cursors (in a 1:1, of either member's): one whose cursors alone changed
// comes with no events, so that a device offline while another read, or
// while the peer read, learns it. Conversations are ordered by that change
// index (ConvSync.ChangeIndex), then by ID; "last index" below means it.
//
// A catch-up is a sequence of calls with the same since: the first with
// after = 0, each next one with after, afterConv = the previous page's
// Next, NextConv, until a page has More false; its Next is the device's
// new cursor. Two numbers are needed because a page's position is not a
// cursor: a conversation on a later page still has events between since
// and the earlier pages' last index, and those must be sent too.
//
// Conversations come in ascending order of (last index, ID) from the
// position (after, afterConv) on (afterConv 0: those with a last index >
// max(since, after)), at most q.Convs a page (clamped to [1,
// MaxSyncConvs], 0 meaning the default), each with at most q.Events events
// (clamped to [1, MaxSyncEvents]) with index > since, ascending;
// ConvSync.More says more follow (page them with History After the last
// seq). Page.More says more conversations changed. When More is false,
// Next is the applied index as of the start of the call: every change up
// to it was returned by this sequence of calls.
//
// A page also stops before its encoding would cross q.Budget: it holds at
// least one conversation, with its first event if it has any; a
// conversation whose events do not all fit ends the page with its More
// set, and one whose first event does not fit waits for the next page (its
// events always start at its first one after since).
//
// A page avoids splitting conversations that share a last index (one entry
// can touch many): it backs off to the start of that group, so that Next
// is a last index and NextConv 0. Only when the group starts the page is it
// split, and then NextConv is the ID of the page's last conversation. A
// former member gets the event that removed them (Gone), once, and nothing
// after it.
//
// Finding a conversation's first event after since is one seek on the entry
// keys, not a scan of its history. The cost of a call is one pass over the
// user's conversations in memory plus the reads of the page.
func (e *Engine) Sync(user uint64, q SyncQuery) (SyncPage, ErrCode) {
	maxConvs := clamp(q.Convs, DefaultSyncConvs, MaxSyncConvs)
	perConvEvents := clamp(q.Events, DefaultSyncEvents, MaxSyncEvents)
	since, after, afterConv := q.Since, q.After, q.AfterConv
	if after <= since {
		after, afterConv = since, 0
	}
	// Read before the index: the index then holds every change up to it.
	applied := e.applied.Load()

	e.stateMu.RLock()
	defer e.stateMu.RUnlock()
	if e.db == nil {
		return SyncPage{}, ErrCodeInternal
	}

	type candidate struct {
		m         *membership
		syncIndex uint64
	}
	var (
		page  SyncPage
		cands []candidate
		// maxSeq is the last seq each conversation of the page may show.
		maxSeq []uint64
	)
	ix := e.idx
	ix.mu.RLock()
	if u := ix.users[user]; u != nil {
		for _, m := range u.convs {
			si := m.syncIndex()
			if si > after || (afterConv != 0 && si == after && m.conv.id > afterConv) {
				cands = append(cands, candidate{m, si})
			}
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if c := cmp.Compare(a.syncIndex, b.syncIndex); c != 0 {
			return c
		}
		return cmp.Compare(a.m.conv.id, b.m.conv.id)
	})
	// The conversations that may be on the page; the budget may cut it
	// shorter once their events are read.
	n := min(len(cands), maxConvs)
	page.Convs = make([]ConvSync, n)
	maxSeq = make([]uint64, n)
	for i, cd := range cands[:n] {
		cs := &page.Convs[i]
		m := cd.m
		cs.Info = m.conv.info(SyncInfoMembers)
		cs.ChangeIndex = cd.syncIndex
		ix.fillCursors(&cs.Info, user, m)
		maxSeq[i] = math.MaxUint64
		if m.gone {
			cs.Gone = true
			cs.Info.Members, cs.Info.MemberCount = nil, 0 // nothing after the removal, membership included
			cs.Info.LastSeq, cs.Info.LastIndex = m.goneSeq, m.goneIndex
			maxSeq[i] = m.goneSeq
		}
	}
	ix.mu.RUnlock()

	if n > 0 {
		r, err := newEventReader(e.db)
		if err != nil {
			return SyncPage{}, ErrCodeInternal
		}
		defer r.close()
		f := q.Budget.start()
		taken := 0
		for i := range page.Convs {
			cs := &page.Convs[i]
			infoSize := f.convSize(&cs.Info)
			first, ok, err := r.firstSeqAfter(cs.Info.ID, since)
			if err != nil {
				return SyncPage{}, ErrCodeInternal
			}
			if !ok || first > maxSeq[i] {
				if !f.take(infoSize) {
					break
				}
				taken++
				continue
			}
			cs.Events, cs.More, err = r.read(cs.Info.ID, first, maxSeq[i], perConvEvents, false, nil, f, infoSize)
			if err != nil {
				return SyncPage{}, ErrCodeInternal
			}
			if len(cs.Events) == 0 { // not even its first event fits
				cs.More = false
				break
			}
			taken++
			if cs.More && len(cs.Events) < perConvEvents { // the budget cut it: the page is full
				break
			}
		}
		n = taken
	}

	if n < len(cands) {
		page.More = true
		if boundary := cands[n-1].syncIndex; cands[n].syncIndex == boundary {
			// The page ends inside a group sharing the last index: back
			// off to the group's start, or split it if it starts the page.
			start := n - 1
			for start > 0 && cands[start-1].syncIndex == boundary {
				start--
			}
			if start > 0 {
				n = start
			} else {
				page.NextConv = cands[n-1].m.conv.id
			}
		}
		page.Next = cands[n-1].syncIndex
	} else {
		page.Next = applied
	}
	page.Convs = page.Convs[:n]
	return page, ErrCodeNone
}

func clamp(v, def, max int) int {
	switch {
	case v <= 0:
		return def
	case v > max:
		return max
	}
	return v
}
