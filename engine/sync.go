package engine

import (
	"cmp"
	"math"
	"slices"
)

// Sync returns, in pages, the conversations of user that changed after the
// log index since (the cursor the device has fully seen), each with its new
// events and the user's current receipt cursors and unread count. A
// conversation changes with a new event and with a change of the user's
// cursors (in a 1:1, of either member's): one whose cursors alone changed
// comes with no events, so that a device offline while another read, or
// while the peer read, learns it. Conversations are ordered by that change
// index (ConvSync.ChangeIndex); "last index" below means it.
//
// A catch-up is a sequence of calls with the same since: the first with
// after = 0, each next one with after = the previous page's Next, until a
// page has More false; its Next is the device's new cursor. Two numbers are
// needed because a page's position is not a cursor: a conversation on a
// later page still has events between since and the earlier pages' last
// index, and those must be sent too.
//
// Conversations come in ascending order of their last event index (those
// with a last index > max(since, after)), at most maxConvs a page (clamped
// to [1, MaxSyncConvs], 0 meaning the default), each with at most
// perConvEvents events (clamped to [1, MaxSyncEvents]) with index > since,
// ascending; ConvSync.More says more follow (page them with History After
// the last seq). Page.More says more conversations changed. When More is
// false, Next is the applied index as of the start of the call: every change
// up to it was returned by this sequence of calls.
//
// A page never splits conversations that share a last index (one entry can
// touch many), so Next is always a last index; a page that would otherwise
// hold none grows past maxConvs to hold that whole group. A former member
// gets the event that removed them (Gone), once, and nothing after it.
//
// Finding a conversation's first event after since is one seek on the entry
// keys, not a scan of its history. The cost of a call is one pass over the
// user's conversations in memory plus the reads of the page.
func (e *Engine) Sync(user, since, after uint64, maxConvs, perConvEvents int) (SyncPage, ErrCode) {
	maxConvs = clamp(maxConvs, DefaultSyncConvs, MaxSyncConvs)
	after = max(after, since)
	perConvEvents = clamp(perConvEvents, DefaultSyncEvents, MaxSyncEvents)
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
			if si := m.syncIndex(); si > after {
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
	n := len(cands)
	if n > maxConvs {
		page.More = true
		n = maxConvs
		if boundary := cands[n].syncIndex; cands[n-1].syncIndex == boundary {
			// Back off to the start of the group sharing the last index,
			// or, if the group fills the page, take all of it.
			start := n - 1
			for start > 0 && cands[start-1].syncIndex == boundary {
				start--
			}
			if start > 0 {
				n = start
			} else {
				for n < len(cands) && cands[n].syncIndex == boundary {
					n++
				}
			}
			page.More = n < len(cands)
		}
	}
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

	if page.More {
		page.Next = cands[n-1].syncIndex
	} else {
		page.Next = applied
	}
	if n == 0 {
		return page, ErrCodeNone
	}

	r, err := newEventReader(e.db)
	if err != nil {
		return SyncPage{}, ErrCodeInternal
	}
	defer r.close()
	for i := range page.Convs {
		cs := &page.Convs[i]
		first, ok, err := r.firstSeqAfter(cs.Info.ID, since)
		if err != nil {
			return SyncPage{}, ErrCodeInternal
		}
		if !ok || first > maxSeq[i] {
			continue
		}
		cs.Events, cs.More, err = r.read(cs.Info.ID, first, maxSeq[i], perConvEvents, false, nil)
		if err != nil {
			return SyncPage{}, ErrCodeInternal
		}
	}
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
