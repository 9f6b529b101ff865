package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Edge nodes. An edge is a raft nonvoter for life: the leader replicates
// the log to it like to any follower (one more replication stream, fed
// from the leader's log cache, or a snapshot when it is far behind), it
// applies every entry, serves its own clients from its replica and
// forwards their writes over the forwarding link. It never votes, so
// edges add neither to the commit path nor to the quorum: commitment
// counts voters only, a nonvoter never starts an election (hashicorp/raft
// raft.go, runFollower: "not part of stable configuration, aborting
// election"), and leadership transfer picks voters only.
//
// The role belongs to the node: Config.Edge, recorded in its log store on
// the first Open with it (keyEdge), so that it stays an edge across
// restarts whatever its flags say. The node tells every leader, on each
// forwarding link, that it is an edge and which region it is in (frame
// frameMember, after hello); the leader keeps that with the member's
// progress, and its Promote refuses an edge (ErrEdge) whichever call
// asks: a plain join of an edge, Promote, AddVoter. Leader changes do not
// matter: the configuration (replicated) keeps the edge a nonvoter, and
// the new leader hears the role on the edge's next link.
//
// An edge follows the leader only. hashicorp/raft replicates from the
// leader to every server of the configuration (one goroutine per server
// in leaderState.replState, raft.go startStopReplication); a follower
// never passes entries on, and there is no way to make a server take its
// AppendEntries from another follower without forking the library. The
// leader's cost per edge is therefore one more replication stream, which
// docs/BENCHMARKS.md measures.

var (
	// ErrEdge: the server is an edge, which never votes: Promote, AddVoter
	// and TransferLeadership refuse it. It stays a nonvoter.
	ErrEdge = errors.New("raftlog: the server is an edge node, which never votes")
	// ErrNotEdge: AddEdge added a server that was not started as an edge
	// (Config.Edge). It is a nonvoter; restart it as an edge, or promote it.
	ErrNotEdge = errors.New("raftlog: the server was not started as an edge node")
)

// maxRegionLen bounds Config.Region.
const maxRegionLen = 64

// keyEdge, in the log store's stable keys, is 1 on an edge.
var keyEdge = []byte("parley_edge")

// loadEdge records the role on a node opened as an edge, and reads it
// back on a node opened without it.
func loadEdge(s *LogStore, edge bool) (bool, error) {
	if edge {
		if err := s.SetUint64(keyEdge, 1); err != nil {
			return false, fmt.Errorf("raftlog: record the edge role: %w", err)
		}
		return true, nil
	}
	v, err := s.GetUint64(keyEdge)
	if err != nil {
		return false, fmt.Errorf("raftlog: read the edge role: %w", err)
	}
	return v == 1, nil
}

// IsEdge says whether this node is an edge (Config.Edge now, or recorded
// by an earlier Open).
func (n *Node) IsEdge() bool { return n.edge }

// Region is Config.Region.
func (n *Node) Region() string { return n.cfg.Region }

// AddEdge adds the server as an edge: a nonvoter, after which the leader
// waits (until ctx ends) for the server's first report over its
// forwarding link, which says whether it was started as an edge. It fails
// with ErrNotEdge if not (the server stays a nonvoter), with ErrNotCaughtUp
// if it never reported. Adding an edge again returns nil.
func (n *Node) AddEdge(ctx context.Context, id, addr string) error {
	return n.adminCall(ctx, adminRequest{Op: opAddEdge, ID: id, Addr: addr})
}

// addEdge is AddEdge on the leader.
func (n *Node) addEdge(ctx context.Context, id, addr string) error {
	if err := n.addNonvoter(id, addr); err != nil {
		return err
	}
	t := time.NewTicker(n.cfg.ReportInterval)
	defer t.Stop()
	for {
		conf, err := n.configuration()
		if err != nil {
			return err
		}
		s, ok := findServer(conf, id)
		switch {
		case !ok:
			return fmt.Errorf("%w: %q", ErrUnknownServer, id)
		case !n.IsLeader():
			return ErrNotLeader
		}
		if p, reported := n.progress.get(id); reported && time.Since(p.at) < 4*n.cfg.ReportInterval {
			switch {
			case p.edge:
				return nil
			case s.Suffrage == raft.Voter:
				return fmt.Errorf("%w: %q is a voter", ErrNotEdge, id)
			default:
				return fmt.Errorf("%w: %q was added as a nonvoter; start it with the edge role", ErrNotEdge, id)
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return fmt.Errorf("%w: %s never reported to the leader; it is a nonvoter, and stays one if it starts as an edge", ErrNotCaughtUp, id)
		}
	}
}

// memberFrame is what a node tells the leader about itself on each
// forwarding link, after hello (link.go):
//
//	flags uvarint (bit 0: edge), region (uvarint length + bytes)
//
// A leader of an older build ignores the frame: it takes the node for a
// plain nonvoter. Flags this build does not know are kept and ignored,
// so a newer node's frame still reads.
type memberFrame struct {
	flags  uint64
	region string
}

const memberFlagEdge = 1

func (m memberFrame) edge() bool { return m.flags&memberFlagEdge != 0 }

func appendMember(dst []byte, m memberFrame) []byte {
	dst, start := beginFrame(dst, frameMember)
	dst = binary.AppendUvarint(dst, m.flags)
	dst = binary.AppendUvarint(dst, uint64(len(m.region)))
	dst = append(dst, m.region...)
	return finishFrame(dst, start)
}

func decodeMember(p []byte) (memberFrame, error) {
	var m memberFrame
	flags, n := readUvarint(p)
	if n <= 0 {
		return m, fmt.Errorf("%w: member", errCorruptFrame)
	}
	p = p[n:]
	l, n := readUvarint(p)
	if n <= 0 || l != uint64(len(p)-n) || l > maxRegionLen {
		return m, fmt.Errorf("%w: member region", errCorruptFrame)
	}
	m.flags = flags
	m.region = string(p[n:])
	return m, nil
}

func (n *Node) member() memberFrame {
	m := memberFrame{region: n.cfg.Region}
	if n.edge {
		m.flags |= memberFlagEdge
	}
	return m
}
