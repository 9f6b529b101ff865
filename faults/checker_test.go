package faults

import (
	"strings"
	"testing"
)

// goodRecord is a history in which every guarantee holds: two replicas,
// conversation 7 with a creation event and three messages, all acked, seen by
// one client with a repeat after a reconnect and by a late joiner from seq 3.
func goodRecord() Record {
	conv := func() []Stored {
		return []Stored{
			{Seq: 1, Kind: "created", From: 1},
			{Seq: 2, Kind: "message", From: 1, CMID: "a", Body: "hi"},
			{Seq: 3, Kind: "message", From: 2, CMID: "b", Body: "yo"},
			{Seq: 4, Kind: "message", From: 1, CMID: "c", Body: "ok"},
		}
	}
	return Record{
		Acks: []Ack{{7, 2, "a", "hi"}, {7, 3, "b", "yo"}, {7, 4, "c", "ok"}},
		Replicas: map[string]map[uint64][]Stored{
			"n1": {7: conv()},
			"n2": {7: conv()},
		},
		Seen: map[string]map[uint64][]uint64{
			"alice": {7: {1, 2, 3, 2, 3, 4}},
			"carol": {7: {3, 4}},
		},
		From: map[string]map[uint64]uint64{"carol": {7: 3}},
	}
}

func TestCheckAcceptsAGoodHistory(t *testing.T) {
	if v := Check(goodRecord()); len(v) != 0 {
		t.Fatalf("violations in a good history: %v", v)
	}
}

func TestCheckFindsEachViolation(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(r *Record)
		rule   string
		detail string
	}{
		{"acked message lost on one replica", func(r *Record) {
			r.Replicas["n2"][7] = r.Replicas["n2"][7][:3]
		}, "durability", "acked seq 4"},
		{"acked at another seq", func(r *Record) {
			r.Acks[0].Seq = 3
		}, "durability", "acked cmid a"},
		{"message stored twice", func(r *Record) {
			for _, n := range []string{"n1", "n2"} {
				r.Replicas[n][7] = append(r.Replicas[n][7], Stored{Seq: 5, Kind: "message", From: 1, CMID: "a", Body: "hi"})
			}
		}, "durability", "cmid a stored twice"},
		{"gap in seqs", func(r *Record) {
			for _, n := range []string{"n1", "n2"} {
				r.Replicas[n][7][3].Seq = 5
			}
		}, "order", "has seq 5, want 4"},
		{"replicas diverge", func(r *Record) {
			r.Replicas["n2"][7][2].Body = "changed"
		}, "replicas", "seq 3"},
		{"replica misses a conversation", func(r *Record) {
			r.Replicas["n1"][8] = []Stored{{Seq: 1, Kind: "created"}}
		}, "replicas", "conv 8"},
		{"client skipped a seq", func(r *Record) {
			r.Seen["alice"][7] = []uint64{1, 3, 4}
		}, "delivery", "got seq 3 while expecting 2"},
		{"client saw seqs out of order", func(r *Record) {
			r.Seen["alice"][7] = []uint64{1, 3, 2, 4}
		}, "delivery", "client alice"},
		{"repeat from a client that dedups", func(r *Record) {
			r.Deduped = true
		}, "delivery", "seq 2 delivered again after 3"},
		{"client missed the tail", func(r *Record) {
			r.Seen["carol"][7] = []uint64{3}
		}, "delivery", "saw up to seq 3 of 4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := goodRecord()
			tc.break_(&r)
			found := false
			for _, v := range Check(r) {
				if v.Rule == tc.rule && strings.Contains(v.Detail, tc.detail) {
					found = true
				}
			}
			if !found {
				t.Fatalf("want a %s violation containing %q, got %v", tc.rule, tc.detail, Check(r))
			}
		})
	}
}
