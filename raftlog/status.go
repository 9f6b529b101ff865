package raftlog

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Status is a node's view of the cluster, for operators. Indexes are raft
// log indexes; AppliedIndex counts every entry handed to the state machine
// adapter, configuration and noop entries included, so that it reaches
// CommitIndex when the node is idle.
type Status struct {
	ID    string
	Addr  string
	State string // Leader, Follower, Candidate, Shutdown
	Term  uint64

	LeaderID   string // "" when no leader is known
	LeaderAddr string

	CommitIndex  uint64
	AppliedIndex uint64
	LastIndex    uint64

	LastSnapshotIndex uint64
	LastSnapshotTerm  uint64

	// Edge and Region are this node's (edge.go).
	Edge   bool
	Region string

	// Servers is the latest configuration this node knows, in configuration
	// order. Their progress is known only in the leader's Status.
	Servers []ServerStatus
}

// ServerStatus is one member of the configuration.
type ServerStatus struct {
	ID       string
	Addr     string
	Suffrage string // voter, nonvoter, staging
	Leader   bool
	// Edge and Region, as the member told the leader on its forwarding
	// link (edge.go): known on the leader's Status only, with HasMember,
	// and for the leader itself. A nonvoter that is not an edge is a
	// server waiting for promotion, or a read replica.
	HasMember bool
	Edge      bool
	Region    string

	// Progress as the leader sees it: its own indexes, and for the other
	// members the latest report they sent over the internal link.
	// HasProgress is false on a follower's Status, and for a member that
	// never reported to this leader (down, or unreachable).
	HasProgress  bool
	AppliedIndex uint64
	LastIndex    uint64
	// Lag is the leader's commit index minus AppliedIndex, taken when the
	// report arrived.
	Lag uint64
	// ReportAge is the age of the report: staleness beyond a few
	// ReportIntervals means the member is not talking to the leader.
	ReportAge time.Duration
}

// Status reports this node's view of the cluster. On the leader it includes
// every member's progress; LeaderStatus fetches that from any node. It
// blocks only briefly on raft's main loop (configuration).
func (n *Node) Status() Status {
	st := Status{
		ID:           n.cfg.ID,
		Addr:         n.addr,
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastIndex:    n.raft.LastIndex(),
		Edge:         n.edge,
		Region:       n.cfg.Region,
	}
	leaderAddr, leaderID := n.raft.LeaderWithID()
	st.LeaderAddr, st.LeaderID = string(leaderAddr), string(leaderID)
	stats := n.raft.Stats()
	st.LastSnapshotIndex, _ = strconv.ParseUint(stats["last_snapshot_index"], 10, 64)
	st.LastSnapshotTerm, _ = strconv.ParseUint(stats["last_snapshot_term"], 10, 64)

	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return st // shut down
	}
	leading := st.State == raft.Leader.String()
	now := time.Now()
	for _, s := range f.Configuration().Servers {
		ss := ServerStatus{
			ID:       string(s.ID),
			Addr:     string(s.Address),
			Suffrage: suffrageName(s.Suffrage),
			Leader:   s.ID == leaderID,
		}
		switch {
		case !leading:
		case string(s.ID) == n.cfg.ID:
			ss.HasProgress = true
			ss.AppliedIndex, ss.LastIndex = st.AppliedIndex, st.LastIndex
			ss.Lag = sub0(st.CommitIndex, st.AppliedIndex)
			ss.HasMember, ss.Edge, ss.Region = true, n.edge, n.cfg.Region
		default:
			if p, ok := n.progress.get(string(s.ID)); ok {
				ss.HasProgress = !p.at.IsZero()
				ss.AppliedIndex, ss.LastIndex, ss.Lag = p.applied, p.last, p.lag
				if ss.HasProgress {
					ss.ReportAge = now.Sub(p.at)
				}
				ss.HasMember, ss.Edge, ss.Region = p.hasMember, p.edge, p.region
			}
		}
		st.Servers = append(st.Servers, ss)
	}
	return st
}

// LeaderStatus is the leader's Status, asked over the internal link when
// this node is not the leader. It fails with an error wrapping ErrNotLeader
// when no leader answers before ctx ends.
func (n *Node) LeaderStatus(ctx context.Context) (Status, error) {
	reply, err := n.onLeader(ctx, "", adminRequest{Op: opStatus})
	if err != nil {
		return Status{}, err
	}
	if reply.Status == nil {
		return Status{}, errFromReply(reply)
	}
	return *reply.Status, nil
}

func suffrageName(s raft.ServerSuffrage) string {
	switch s {
	case raft.Voter:
		return "voter"
	case raft.Nonvoter:
		return "nonvoter"
	case raft.Staging:
		return "staging"
	}
	return s.String()
}

func sub0(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// progressTable holds the latest report of each member that talks to this
// node as its leader. Written by forward sessions, read by Status and
// Promote.
type progressTable struct {
	mu sync.Mutex // guards m
	m  map[string]peerProgress
}

type peerProgress struct {
	applied, last uint64
	lag           uint64    // leader's commit index at arrival - applied
	at            time.Time // of the latest report; zero: none yet

	// What the member said it is (memberFrame), once it did.
	hasMember bool
	edge      bool
	region    string
}

func (t *progressTable) record(id string, r reportFrame, commit uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]peerProgress)
	}
	p := t.m[id]
	p.applied, p.last, p.lag, p.at = r.applied, r.last, sub0(commit, r.applied), time.Now()
	t.m[id] = p
}

func (t *progressTable) recordMember(id string, m memberFrame) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]peerProgress)
	}
	p := t.m[id]
	p.hasMember, p.edge, p.region = true, m.edge(), m.region
	t.m[id] = p
}

func (t *progressTable) get(id string) (peerProgress, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.m[id]
	return p, ok
}

func (t *progressTable) forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, id)
}
