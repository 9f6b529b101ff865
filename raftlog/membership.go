package raftlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/raft"
	"github.com/vmihailenco/msgpack/v5"
)

// Membership changes run on the leader. Called on another node, they are
// sent to the leader as admin calls over the internal link (one connection
// per call, kind connAdmin, one msgpack request and reply frame), so an
// operator can talk to any node. Join uses the same call from a node that
// knows no leader yet, through any member's address.
//
// A new member is added the safe way: as a nonvoter first, which receives
// the log (or a snapshot) without counting for the quorum, and is promoted
// to voter only once the leader sees it caught up, from the reports it
// sends over its forwarding link.

// Server is a member of a configuration to bootstrap.
type Server struct {
	ID   string
	Addr string // internal address (Config.BindAddr or AdvertiseAddr)
}

// Bootstrap seeds a fresh cluster whose voters are servers, this node
// included with its own Addr ("cluster init"). Only this node needs it:
// it campaigns at once and replicates the configuration to the others,
// which must be running with empty state (Config.Bootstrap false). Running
// it again, on this node or another listed one, with the same servers is
// harmless; on a node that already belongs to another configuration it
// fails with ErrAlreadyBootstrapped.
func (n *Node) Bootstrap(servers []Server) error {
	conf := raft.Configuration{}
	seenID, seenAddr := map[string]bool{}, map[string]bool{}
	self := false
	for _, s := range servers {
		switch {
		case s.ID == "" || s.Addr == "":
			return fmt.Errorf("raftlog: bootstrap: server %q at %q: empty ID or address", s.ID, s.Addr)
		case seenID[s.ID] || seenAddr[s.Addr]:
			return fmt.Errorf("raftlog: bootstrap: server %q at %q listed twice", s.ID, s.Addr)
		case s.ID == n.cfg.ID && s.Addr != n.addr:
			return fmt.Errorf("raftlog: bootstrap: this node %q listens on %s, not %s", s.ID, n.addr, s.Addr)
		}
		seenID[s.ID], seenAddr[s.Addr] = true, true
		self = self || s.ID == n.cfg.ID
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Addr),
		})
	}
	if !self {
		return fmt.Errorf("raftlog: bootstrap: this node %q is not among the servers", n.cfg.ID)
	}
	if n.edge {
		return fmt.Errorf("raftlog: bootstrap: this node %q is an edge, which never votes: found the cluster on a voter and join the edge to it", n.cfg.ID)
	}
	err := n.raft.BootstrapCluster(conf).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		f := n.raft.GetConfiguration()
		if f.Error() == nil && sameServers(f.Configuration(), conf) {
			return nil
		}
		return ErrAlreadyBootstrapped
	}
	if err != nil {
		return mapRaftError(err)
	}
	n.hurryElection()
	return nil
}

func sameServers(a, b raft.Configuration) bool {
	key := func(c raft.Configuration) []string {
		var k []string
		for _, s := range c.Servers {
			k = append(k, fmt.Sprintf("%s\x00%s\x00%d", s.ID, s.Address, s.Suffrage))
		}
		slices.Sort(k)
		return k
	}
	return slices.Equal(key(a), key(b))
}

// AddNonvoter adds a server that receives the log but does not vote. On a
// server already in the configuration it only updates the address.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	return n.adminCall(ctx, adminRequest{Op: opAddNonvoter, ID: id, Addr: addr})
}

// Promote makes a nonvoter a voter once the leader sees its applied index
// within CatchUpMaxLag of the commit index. It fails with ErrNotCaughtUp if
// ctx ends first (the server stays a nonvoter), with ErrEdge if the server
// said it is an edge (edge.go), and with ErrUnknownServer if id is not in
// the configuration. A voter is left as it is.
func (n *Node) Promote(ctx context.Context, id string) error {
	return n.adminCall(ctx, adminRequest{Op: opPromote, ID: id})
}

// AddVoter adds a server the safe way: AddNonvoter, then Promote.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	return n.adminCall(ctx, adminRequest{Op: opAddVoter, ID: id, Addr: addr})
}

// RemoveServer removes a server from the configuration. A removed node's
// raft shuts down; its owner should Close it.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.adminCall(ctx, adminRequest{Op: opRemove, ID: id})
}

// TransferLeadership hands leadership to the voter id, or to the most
// up-to-date voter when id is "", and waits for the transfer (about an
// election timeout). Use it before a planned stop of the leader.
func (n *Node) TransferLeadership(ctx context.Context, id string) error {
	return n.adminCall(ctx, adminRequest{Op: opTransfer, ID: id})
}

// Join asks the cluster that peerAddr (the internal address of any member)
// belongs to to add this node as a voter, the safe way, and waits until it
// is one; an edge joins as an edge (AddEdge). The node must have been
// opened with empty state and Bootstrap false. Joining again when already
// a member returns nil.
func (n *Node) Join(ctx context.Context, peerAddr string) error {
	op := opAddVoter
	if n.edge {
		op = opAddEdge
	}
	reply, err := n.onLeader(ctx, peerAddr, adminRequest{Op: op, ID: n.cfg.ID, Addr: n.addr})
	if err != nil {
		return err
	}
	return errFromReply(reply)
}

func (n *Node) adminCall(ctx context.Context, req adminRequest) error {
	reply, err := n.onLeader(ctx, "", req)
	if err != nil {
		return err
	}
	return errFromReply(reply)
}

// Admin operations.
const (
	opAddNonvoter = "add_nonvoter"
	opPromote     = "promote"
	opAddVoter    = "add_voter"
	opAddEdge     = "add_edge"
	opRemove      = "remove"
	opTransfer    = "transfer"
	opStatus      = "status"
	opReadIndex   = "read_index"
)

// Codes of the errors an admin reply carries, for the sentinel errors a
// caller tests with errors.Is.
const (
	codeNotLeader     = "not_leader"
	codeUnknownServer = "unknown_server"
	codeNotCaughtUp   = "not_caught_up"
	codeTimeout       = "timeout"
	codeClosed        = "closed"
	codeEdge          = "edge"
	codeNotEdge       = "not_edge"
)

type adminRequest struct {
	Op   string `msgpack:"op"`
	ID   string `msgpack:"id,omitempty"`
	Addr string `msgpack:"addr,omitempty"`
	// Timeout is how long the caller still waits; the callee gives up then.
	Timeout time.Duration `msgpack:"timeout,omitempty"`
}

type adminReply struct {
	Code       string  `msgpack:"code,omitempty"`
	Err        string  `msgpack:"err,omitempty"`
	LeaderAddr string  `msgpack:"leader_addr,omitempty"` // with codeNotLeader: where to ask instead
	Status     *Status `msgpack:"status,omitempty"`
	Index      uint64  `msgpack:"index,omitempty"` // read_index: the leader's answer
}

func errFromReply(r adminReply) error {
	if r.Err == "" && r.Code == "" {
		return nil
	}
	var base error
	switch r.Code {
	case codeNotLeader:
		base = ErrNotLeader
	case codeUnknownServer:
		base = ErrUnknownServer
	case codeNotCaughtUp:
		base = ErrNotCaughtUp
	case codeTimeout:
		base = ErrTimeout
	case codeClosed:
		base = ErrClosed
	case codeEdge:
		base = ErrEdge
	case codeNotEdge:
		base = ErrNotEdge
	default:
		return errors.New(r.Err)
	}
	if r.Err == "" || r.Err == base.Error() {
		return base
	}
	return fmt.Errorf("%w: %s", base, r.Err)
}

func replyFromErr(err error) adminReply {
	if err == nil {
		return adminReply{}
	}
	r := adminReply{Err: err.Error()}
	switch {
	case errors.Is(err, ErrNotLeader):
		r.Code = codeNotLeader
	case errors.Is(err, ErrUnknownServer):
		r.Code = codeUnknownServer
	case errors.Is(err, ErrNotCaughtUp):
		r.Code = codeNotCaughtUp
	case errors.Is(err, ErrTimeout):
		r.Code = codeTimeout
	case errors.Is(err, ErrClosed):
		r.Code = codeClosed
	case errors.Is(err, ErrEdge):
		r.Code = codeEdge
	case errors.Is(err, ErrNotEdge):
		r.Code = codeNotEdge
	}
	return r
}

// onLeader runs req on the leader: here when this node leads, else over
// the admin link, following the callee's redirects, until an answer
// arrives or ctx ends. first, when not empty, is the address to ask while
// this node knows no leader (Join).
func (n *Node) onLeader(ctx context.Context, first string, req adminRequest) (adminReply, error) {
	backoff := fwdMinBackoff
	var lastErr error = ErrNotLeader
	for {
		target, hops := first, 0
		if n.IsLeader() {
			target = ""
		} else if a := n.LeaderAddr(); a != "" {
			target = a
		}
		for hops < 3 {
			var reply adminReply
			if target == "" {
				if !n.IsLeader() {
					break
				}
				reply = n.serveAdminRequest(ctx, req)
			} else {
				var err error
				if reply, err = n.callAdmin(ctx, target, req); err != nil {
					lastErr = err
					break
				}
			}
			if reply.Code != codeNotLeader {
				return reply, nil
			}
			lastErr = errFromReply(reply)
			if reply.LeaderAddr == "" || reply.LeaderAddr == target {
				break
			}
			target = reply.LeaderAddr // redirect
			if target == n.addr {
				target = ""
			}
			hops++
		}
		// No leader known or reachable yet: elections take a while.
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(lastErr, ErrNotLeader) {
				return adminReply{}, fmt.Errorf("%w (%v)", lastErr, ctx.Err())
			}
			return adminReply{}, fmt.Errorf("%w: %v (%v)", ErrNotLeader, lastErr, ctx.Err())
		case <-n.stop:
			t.Stop()
			return adminReply{}, ErrClosed
		case <-t.C:
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// callAdmin makes one admin call to the node at addr.
func (n *Node) callAdmin(ctx context.Context, addr string, req adminRequest) (adminReply, error) {
	if deadline, ok := ctx.Deadline(); ok {
		// The callee gives up a little earlier, so that its answer (say,
		// ErrNotCaughtUp) still arrives.
		left := time.Until(deadline)
		if left <= 0 {
			return adminReply{}, ctx.Err()
		}
		req.Timeout = left - min(left/4, 250*time.Millisecond)
	}
	body, err := msgpack.Marshal(&req)
	if err != nil {
		return adminReply{}, fmt.Errorf("raftlog: admin request: %w", err)
	}
	conn, err := n.mux.dial(addr, connAdmin, n.cfg.TransportTimeout)
	if err != nil {
		return adminReply{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf, start := beginFrame(nil, frameAdminRequest)
	buf = finishFrame(append(buf, body...), start)
	_ = conn.SetWriteDeadline(time.Now().Add(n.cfg.TransportTimeout))
	if _, err := conn.Write(buf); err != nil {
		return adminReply{}, ctxOr(ctx, err)
	}
	typ, p, err := readFrame(bufio.NewReader(conn))
	if err != nil {
		return adminReply{}, ctxOr(ctx, err)
	}
	var reply adminReply
	if typ != frameAdminReply {
		return reply, fmt.Errorf("raftlog: admin call to %s: unexpected frame type %d", addr, typ)
	}
	if err := msgpack.Unmarshal(p, &reply); err != nil {
		return reply, fmt.Errorf("raftlog: admin reply from %s: %w", addr, err)
	}
	return reply, nil
}

func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// serveAdmin serves one admin call on conn.
func (n *Node) serveAdmin(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	typ, p, err := readFrame(bufio.NewReader(conn))
	if err != nil {
		return
	}
	var reply adminReply
	var req adminRequest
	if typ != frameAdminRequest {
		reply = adminReply{Err: fmt.Sprintf("raftlog: unexpected frame type %d", typ)}
	} else if err := msgpack.Unmarshal(p, &req); err != nil {
		reply = adminReply{Err: fmt.Sprintf("raftlog: bad admin request: %v", err)}
	} else {
		ctx, cancel := n.life, context.CancelFunc(func() {})
		if req.Timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		}
		reply = n.serveAdminRequest(ctx, req)
		cancel()
	}
	body, err := msgpack.Marshal(&reply)
	if err != nil {
		n.logger.Error("encode admin reply", "error", err)
		return
	}
	buf, start := beginFrame(nil, frameAdminReply)
	buf = finishFrame(append(buf, body...), start)
	_ = conn.SetWriteDeadline(time.Now().Add(n.cfg.TransportTimeout))
	_, _ = conn.Write(buf)
}

// serveAdminRequest runs req here if this node leads, and otherwise
// answers where the leader is.
func (n *Node) serveAdminRequest(ctx context.Context, req adminRequest) adminReply {
	if !n.IsLeader() {
		return adminReply{Code: codeNotLeader, Err: ErrNotLeader.Error(), LeaderAddr: n.LeaderAddr()}
	}
	var err error
	switch req.Op {
	case opStatus:
		st := n.Status()
		return adminReply{Status: &st}
	case opReadIndex:
		idx, err := n.readIndex(ctx)
		r := replyFromErr(err)
		if r.Code == codeNotLeader {
			r.LeaderAddr = n.LeaderAddr()
		}
		r.Index = idx
		return r
	case opAddNonvoter:
		err = n.addNonvoter(req.ID, req.Addr)
	case opPromote:
		err = n.promote(ctx, req.ID)
	case opAddVoter:
		if err = n.addNonvoter(req.ID, req.Addr); err == nil {
			err = n.promote(ctx, req.ID)
		}
	case opAddEdge:
		err = n.addEdge(ctx, req.ID, req.Addr)
	case opRemove:
		err = n.removeServer(req.ID)
	case opTransfer:
		err = n.transferLeadership(req.ID)
	default:
		err = fmt.Errorf("raftlog: unknown admin operation %q", req.Op)
	}
	r := replyFromErr(err)
	if r.Code == codeNotLeader {
		r.LeaderAddr = n.LeaderAddr()
	}
	return r
}

// configuration returns the latest configuration.
func (n *Node) configuration() (raft.Configuration, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, mapRaftError(err)
	}
	return f.Configuration(), nil
}

func findServer(c raft.Configuration, id string) (raft.Server, bool) {
	for _, s := range c.Servers {
		if string(s.ID) == id {
			return s, true
		}
	}
	return raft.Server{}, false
}

// The methods below run on the leader; raft refuses them elsewhere
// (ErrNotLeader).

func (n *Node) addNonvoter(id, addr string) error {
	if id == "" {
		return errors.New("raftlog: empty server ID")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("raftlog: server address %q: %w", addr, err)
	}
	conf, err := n.configuration()
	if err != nil {
		return err
	}
	if s, ok := findServer(conf, id); ok && string(s.Address) == addr {
		return nil
	}
	return mapRaftError(n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.EnqueueTimeout).Error())
}

// promote waits for id to catch up, then makes it a voter.
func (n *Node) promote(ctx context.Context, id string) error {
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
		case s.Suffrage == raft.Voter:
			return nil
		case !n.IsLeader():
			return ErrNotLeader
		}
		p, reported := n.progress.get(id)
		if reported && p.edge {
			return fmt.Errorf("%w: %q", ErrEdge, id)
		}
		reported = reported && !p.at.IsZero()
		fresh := reported && time.Since(p.at) < 4*n.cfg.ReportInterval
		if fresh && p.lag <= n.cfg.CatchUpMaxLag {
			return mapRaftError(n.raft.AddVoter(s.ID, s.Address, 0, n.cfg.EnqueueTimeout).Error())
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			if !reported {
				return fmt.Errorf("%w: %s never reported to the leader", ErrNotCaughtUp, id)
			}
			return fmt.Errorf("%w: %s is %d entries behind (report %v old)", ErrNotCaughtUp, id, p.lag, time.Since(p.at).Round(time.Millisecond))
		}
	}
}

func (n *Node) removeServer(id string) error {
	conf, err := n.configuration()
	if err != nil {
		return err
	}
	if _, ok := findServer(conf, id); !ok {
		return fmt.Errorf("%w: %q", ErrUnknownServer, id)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.EnqueueTimeout).Error(); err != nil {
		return mapRaftError(err)
	}
	n.progress.forget(id)
	return nil
}

func (n *Node) transferLeadership(id string) error {
	if id == "" {
		return mapRaftError(n.raft.LeadershipTransfer().Error())
	}
	if id == n.cfg.ID {
		return nil
	}
	conf, err := n.configuration()
	if err != nil {
		return err
	}
	s, ok := findServer(conf, id)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownServer, id)
	}
	if s.Suffrage != raft.Voter {
		// raft would send it TimeoutNow, and a nonvoter that gets one
		// campaigns (raft.go timeoutNow) although no voter may elect it.
		if p, _ := n.progress.get(id); p.edge {
			return fmt.Errorf("%w: %q", ErrEdge, id)
		}
		return fmt.Errorf("raftlog: %q is not a voter", id)
	}
	return mapRaftError(n.raft.LeadershipTransferToServer(s.ID, s.Address).Error())
}
