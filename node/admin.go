package node

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"parley/raftlog"
	"parley/wire"
)

// The operator API (wire/admin.go): cluster status and membership, leader
// transfer and snapshots, under /v1/admin/ on the HTTP listener, for
// parleyctl. Every call needs "Authorization: Bearer <admin token>".
//
// Membership calls may be sent to any member: raftlog carries them to the
// leader over the internal link. Init goes to one of the founding nodes.

// minAdminTokenLen keeps guessable tokens out: the admin API can remove
// every member of the cluster.
const minAdminTokenLen = 16

// Bounds on how long an admin call may run on the node. Join waits for the
// new server to catch up before promoting it, which takes as long as
// copying the state; the rest take about an election timeout at most.
const (
	adminJoinTimeout   = 5 * time.Minute
	adminCallTimeout   = 30 * time.Second
	adminStatusTimeout = 2 * time.Second // asking the leader for members' progress
)

// adminAuth checks admin tokens. It keeps only a digest: comparing digests
// of equal length in constant time reveals neither the token nor its length.
type adminAuth struct{ digest [sha256.Size]byte }

func newAdminAuth(token string) adminAuth {
	return adminAuth{digest: sha256.Sum256([]byte(token))}
}

func (a adminAuth) check(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	d := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(d[:], a.digest[:]) == 1
}

func (a *httpAPI) adminRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/admin/status", a.adminOnly(a.handleAdminStatus))
	mux.HandleFunc("POST /v1/admin/init", a.adminOnly(a.handleAdminInit))
	mux.HandleFunc("POST /v1/admin/join", a.adminOnly(a.handleAdminJoin))
	mux.HandleFunc("POST /v1/admin/remove", a.adminOnly(a.handleAdminRemove))
	mux.HandleFunc("POST /v1/admin/transfer-leader", a.adminOnly(a.handleAdminTransfer))
	mux.HandleFunc("POST /v1/admin/snapshot", a.adminOnly(a.handleAdminSnapshot))
	mux.HandleFunc("GET /v1/admin/backup", a.adminOnly(a.handleAdminBackup))
	// Anything else under /v1/admin/ is refused the same way before it is
	// found missing, so that probing does not map the API without a token.
	mux.HandleFunc("/v1/admin/", a.adminOnly(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such admin endpoint")
	}))
}

func (a *httpAPI) adminOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.admin.check(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley-admin"`)
			writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "missing or wrong admin token")
			return
		}
		h(w, r)
	}
}

func (a *httpAPI) handleAdminStatus(w http.ResponseWriter, r *http.Request) {
	local := a.raft.Status()
	st := wire.ClusterStatus{
		Node:          local.ID,
		State:         local.State,
		Leader:        local.LeaderID,
		LeaderAddr:    local.LeaderAddr,
		Term:          local.Term,
		CommitIndex:   local.CommitIndex,
		AppliedIndex:  local.AppliedIndex,
		LastIndex:     local.LastIndex,
		SnapshotIndex: local.LastSnapshotIndex,
		SnapshotTerm:  local.LastSnapshotTerm,
		Edge:          local.Edge,
		Region:        local.Region,
	}
	// Members' progress is known only to the leader: ask it (locally when
	// this node leads). Without an answer, list this node's configuration
	// with progress unknown (-1) and say why.
	servers := local.Servers
	ctx, cancel := context.WithTimeout(r.Context(), adminStatusTimeout)
	defer cancel()
	if ls, err := a.raft.LeaderStatus(ctx); err == nil {
		servers = ls.Servers
	} else {
		st.Warning = "members' applied index and lag unknown: no answer from the leader (" + err.Error() + ")"
	}
	st.Members = make([]wire.ClusterMember, 0, len(servers))
	for _, s := range servers {
		m := wire.ClusterMember{ID: s.ID, Addr: s.Addr, Suffrage: suffrageName(s.Suffrage), Applied: -1, Lag: -1}
		if s.HasProgress {
			m.Applied, m.Lag = int64(s.AppliedIndex), int64(s.Lag)
		}
		m.Edge, m.Region = s.Edge, s.Region
		st.Members = append(st.Members, m)
	}
	writeJSON(w, http.StatusOK, st)
}

// suffrageName spells raftlog's roles as the admin API documents them.
func suffrageName(s string) string {
	switch s {
	case "voter":
		return "Voter"
	case "nonvoter":
		return "Nonvoter"
	case "staging":
		return "Staging"
	}
	return s
}

func (a *httpAPI) handleAdminInit(w http.ResponseWriter, r *http.Request) {
	var req wire.ClusterInit
	if !decodeBody(w, r, &req) {
		return
	}
	if len(req.Servers) == 0 {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, "no servers")
		return
	}
	servers := make([]raftlog.Server, 0, len(req.Servers))
	self := false
	for _, s := range req.Servers {
		if msg := checkServer(s); msg != "" {
			writeError(w, http.StatusBadRequest, wire.CodeInvalid, msg)
			return
		}
		if s.ID == a.cfg.NodeID {
			if s.Addr != a.raft.Addr() {
				writeError(w, http.StatusBadRequest, wire.CodeInvalid,
					fmt.Sprintf("this node %q has Raft address %s, not %s", s.ID, a.raft.Addr(), s.Addr))
				return
			}
			self = true
		}
		servers = append(servers, raftlog.Server{ID: s.ID, Addr: s.Addr})
	}
	if !self {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid,
			fmt.Sprintf("this node %q is not among the servers: send init to one of them", a.cfg.NodeID))
		return
	}
	if err := a.raft.Bootstrap(servers); err != nil {
		writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	who := auditOf(r)
	go func() { // once there is a leader to write it
		waitCtx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
		defer cancel()
		if a.raft.WaitLeader(waitCtx) == nil {
			a.auditCluster(who, fmt.Sprintf("cluster init %v", req.Servers))
		}
	}()
}

func (a *httpAPI) handleAdminJoin(w http.ResponseWriter, r *http.Request) {
	var req wire.ClusterJoin
	if !decodeBody(w, r, &req) {
		return
	}
	if msg := checkServer(req.ClusterServer); msg != "" {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, msg)
		return
	}
	// Join outlasts the server's write timeout: give this response time.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(adminJoinTimeout + time.Minute))
	ctx, cancel := context.WithTimeout(r.Context(), adminJoinTimeout)
	defer cancel()
	var err error
	switch {
	case req.Edge && req.Nonvoter:
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, "edge and nonvoter: an edge is a non-voter already")
		return
	case req.Edge:
		err = a.raft.AddEdge(ctx, req.ID, req.Addr)
	case req.Nonvoter:
		err = a.raft.AddNonvoter(ctx, req.ID, req.Addr)
	default:
		err = a.raft.AddVoter(ctx, req.ID, req.Addr)
	}
	if err != nil {
		writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	go a.auditCluster(auditOf(r), fmt.Sprintf("cluster join %s %s nonvoter=%v edge=%v", req.ID, req.Addr, req.Nonvoter, req.Edge))
}

func (a *httpAPI) handleAdminRemove(w http.ResponseWriter, r *http.Request) {
	var req wire.ClusterRemove
	if !decodeBody(w, r, &req) {
		return
	}
	if req.ID == "" {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, "id is required")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminCallTimeout)
	defer cancel()
	if err := a.raft.RemoveServer(ctx, req.ID); err != nil {
		writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	go a.auditCluster(auditOf(r), "cluster remove "+req.ID)
}

func (a *httpAPI) handleAdminTransfer(w http.ResponseWriter, r *http.Request) {
	var req wire.ClusterTransfer
	if !decodeBody(w, r, &req) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), adminCallTimeout)
	defer cancel()
	if err := a.raft.TransferLeadership(ctx, req.ID); err != nil {
		writeAdminError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	go a.auditCluster(auditOf(r), "cluster transfer-leader "+req.ID)
}

// handleAdminSnapshot snapshots this node (every node snapshots on its own;
// there is nothing cluster-wide about it) and answers the snapshot's index.
func (a *httpAPI) handleAdminSnapshot(w http.ResponseWriter, r *http.Request) {
	if err := a.raft.Snapshot(); err != nil {
		writeAdminError(w, err)
		return
	}
	go a.auditCluster(auditOf(r), "cluster snapshot on "+a.cfg.NodeID)
	// Raft records the snapshot before Snapshot returns. An automatic one
	// taken since can only be newer.
	st := a.raft.Status()
	writeJSON(w, http.StatusOK, wire.SnapshotResult{Index: st.LastSnapshotIndex, Term: st.LastSnapshotTerm})
}

// checkServer validates an id and internal address from a request, so that
// a typo is reported as such rather than as a failure inside Raft.
func checkServer(s wire.ClusterServer) string {
	if s.ID == "" || strings.ContainsAny(s.ID, " \t\r\n") || len(s.ID) > 64 {
		return fmt.Sprintf("server id %q: want 1 to 64 characters without spaces", s.ID)
	}
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || host == "" || port == "" || port == "0" {
		return fmt.Sprintf("server %q: address %q is not a dialable host:port", s.ID, s.Addr)
	}
	return ""
}

// writeAdminError maps raftlog's errors to the admin API's codes.
func writeAdminError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, wire.CodeInternal
	switch {
	case errors.Is(err, raftlog.ErrNotLeader), errors.Is(err, raftlog.ErrClosed):
		status, code = http.StatusServiceUnavailable, wire.CodeUnavailable
	case errors.Is(err, raftlog.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		status, code = http.StatusServiceUnavailable, wire.CodeTimeout
	case errors.Is(err, raftlog.ErrUnknownServer):
		status, code = http.StatusNotFound, wire.CodeUnknownServer
	case errors.Is(err, raftlog.ErrNotCaughtUp):
		status, code = http.StatusServiceUnavailable, wire.CodeNotCaughtUp
	case errors.Is(err, raftlog.ErrAlreadyBootstrapped):
		status, code = http.StatusConflict, wire.CodeAlreadyBootstrapped
	case errors.Is(err, raftlog.ErrNothingToSnapshot):
		status, code = http.StatusConflict, wire.CodeNothingToSnapshot
	case errors.Is(err, raftlog.ErrEdge):
		status, code = http.StatusConflict, wire.CodeEdgeNode
	case errors.Is(err, raftlog.ErrNotEdge):
		status, code = http.StatusConflict, wire.CodeNotEdge
	}
	writeError(w, status, code, err.Error())
}
