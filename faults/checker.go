// Package faults holds Parley's cluster fault tests and the invariant
// checker they use. The tests (cluster_test.go) run three node processes,
// drive traffic from clients spread over them, inject faults (kill -9,
// restart, a cut network link, a wiped data directory) and record what the
// clients saw. The checker then verifies DESIGN's guarantees on that record:
//
//   - durability: every acknowledged message is stored, exactly once, at the
//     seq its ack named, on every replica;
//   - order: each conversation's seqs are 1..n without gaps on every replica,
//     and all replicas hold the same event at each seq;
//   - delivery: every client saw each of its conversations in seq order with
//     nothing missing, once duplicates (at least once delivery) are dropped.
//
// The checker is pure: it takes the record and returns every violation it
// finds, so it is tested on histories built by hand to prove it can fail.
package faults

import (
	"fmt"
	"sort"
)

// Ack is a send the server acknowledged: the client was told its message is
// durable at (Conv, Seq).
type Ack struct {
	Conv uint64
	Seq  uint64
	CMID string // client message id
	Body string
}

// Stored is one event of a conversation as a replica stores it.
type Stored struct {
	Seq  uint64
	Kind string
	From uint64
	CMID string // empty for events that are not messages
	Body string
}

// Record is everything a fault test observed.
type Record struct {
	Acks []Ack
	// Replicas maps a node name to the full history of every conversation
	// (conv -> events in seq order) read from that node.
	Replicas map[string]map[uint64][]Stored
	// Seen maps a client name to the seqs it received per conversation, in
	// arrival order, duplicates included.
	Seen map[string]map[uint64][]uint64
	// From maps a client name to the first seq of each conversation it can
	// see (1 for a member since the conversation was created). A client's
	// conversations absent here start at 1.
	From map[string]map[uint64]uint64
	// Deduped says the clients drop repeats themselves (the Go SDK does), so
	// a repeat in Seen is a violation too: each client then saw every seq
	// exactly once.
	Deduped bool
}

// Violation is one broken guarantee.
type Violation struct {
	Rule   string // durability, order, replicas, delivery
	Detail string
}

func (v Violation) String() string { return v.Rule + ": " + v.Detail }

// Check verifies the record and returns every violation, sorted for stable
// output; none means the guarantees held.
func Check(r Record) []Violation {
	var out []Violation
	add := func(rule, format string, args ...any) {
		out = append(out, Violation{Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}

	nodes := make([]string, 0, len(r.Replicas))
	for n := range r.Replicas {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)

	// Order: gap-free seqs from 1 on each replica, and one cmid at most once.
	for _, n := range nodes {
		for conv, evs := range r.Replicas[n] {
			cmids := make(map[string]uint64)
			for i, ev := range evs {
				if want := uint64(i + 1); ev.Seq != want {
					add("order", "%s conv %d: event %d has seq %d, want %d", n, conv, i, ev.Seq, want)
					break
				}
				if ev.CMID == "" {
					continue
				}
				if first, dup := cmids[ev.CMID]; dup {
					add("durability", "%s conv %d: cmid %s stored twice (seq %d and %d)", n, conv, ev.CMID, first, ev.Seq)
				}
				cmids[ev.CMID] = ev.Seq
			}
		}
	}

	// Replicas: every node holds the same events for every conversation.
	if len(nodes) > 1 {
		ref := r.Replicas[nodes[0]]
		for _, n := range nodes[1:] {
			other := r.Replicas[n]
			for conv := range union(ref, other) {
				a, b := ref[conv], other[conv]
				if len(a) != len(b) {
					add("replicas", "conv %d: %s has %d events, %s has %d", conv, nodes[0], len(a), n, len(b))
				}
				for i := range min(len(a), len(b)) {
					if a[i] != b[i] {
						add("replicas", "conv %d seq %d: %s has %+v, %s has %+v", conv, a[i].Seq, nodes[0], a[i], n, b[i])
						break
					}
				}
			}
		}
	}

	// Durability: each ack names a stored event with its cmid and body on
	// every replica.
	for _, a := range r.Acks {
		for _, n := range nodes {
			evs := r.Replicas[n][a.Conv]
			switch {
			case a.Seq == 0 || a.Seq > uint64(len(evs)):
				add("durability", "%s conv %d: acked seq %d (cmid %s) missing; the conversation has %d events", n, a.Conv, a.Seq, a.CMID, len(evs))
			case evs[a.Seq-1].CMID != a.CMID || evs[a.Seq-1].Body != a.Body:
				add("durability", "%s conv %d seq %d: acked cmid %s body %q, stored cmid %s body %q", n, a.Conv, a.Seq, a.CMID, a.Body, evs[a.Seq-1].CMID, evs[a.Seq-1].Body)
			}
		}
	}

	// Delivery: after dropping repeats, each client saw from..last in order.
	var last map[uint64][]Stored
	if len(nodes) > 0 {
		last = r.Replicas[nodes[0]]
	}
	clients := make([]string, 0, len(r.Seen))
	for c := range r.Seen {
		clients = append(clients, c)
	}
	sort.Strings(clients)
	for _, c := range clients {
		for conv, seqs := range r.Seen[c] {
			next := uint64(1)
			if f, ok := r.From[c][conv]; ok {
				next = f
			}
			for _, s := range seqs {
				switch {
				case s < next:
					// A repeat (at least once delivery): dropped, unless the
					// client claims to drop repeats itself.
					if r.Deduped {
						add("delivery", "client %s conv %d: seq %d delivered again after %d", c, conv, s, next-1)
					}
				case s == next:
					next++
				default:
					add("delivery", "client %s conv %d: got seq %d while expecting %d", c, conv, s, next)
					next = s + 1
				}
			}
			if n := uint64(len(last[conv])); next-1 < n {
				add("delivery", "client %s conv %d: saw up to seq %d of %d", c, conv, next-1, n)
			}
		}
	}

	sort.Slice(out, func(i, j int) bool {
		if out[i].Rule != out[j].Rule {
			return out[i].Rule < out[j].Rule
		}
		return out[i].Detail < out[j].Detail
	})
	return out
}

func union(a, b map[uint64][]Stored) map[uint64]struct{} {
	u := make(map[uint64]struct{}, len(a))
	for k := range a {
		u[k] = struct{}{}
	}
	for k := range b {
		u[k] = struct{}{}
	}
	return u
}
