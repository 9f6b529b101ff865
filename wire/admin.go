package wire

// The operator API: JSON over HTTP on each node's HTTP address, under
// /v1/admin/, authenticated with "Authorization: Bearer <admin token>".
// parleyctl is its client. Errors are {"code", "message"} like the accounts
// API.

// ClusterStatus is one node's view of the cluster (GET /v1/admin/status).
type ClusterStatus struct {
	Node          string          `json:"node"`        // the answering node's id
	State         string          `json:"state"`       // Leader, Follower, Candidate, Shutdown
	Leader        string          `json:"leader"`      // leader id, "" if none known
	LeaderAddr    string          `json:"leader_addr"` // its internal address
	Term          uint64          `json:"term"`
	CommitIndex   uint64          `json:"commit_index"`
	AppliedIndex  uint64          `json:"applied_index"`
	LastIndex     uint64          `json:"last_index"`
	SnapshotIndex uint64          `json:"snapshot_index"` // latest snapshot, 0 if none
	SnapshotTerm  uint64          `json:"snapshot_term"`
	Edge          bool            `json:"edge,omitempty"`   // the answering node is an edge
	Region        string          `json:"region,omitempty"` // the answering node's region
	Members       []ClusterMember `json:"members"`
	// Warning, when set, says what the answer lacks: members' progress when
	// the leader did not answer (their Applied and Lag are then -1).
	Warning string `json:"warning,omitempty"`
}

// ClusterMember is one server of the Raft configuration. Applied and Lag are
// as last reported to the leader (only the leader fills them; -1 unknown).
type ClusterMember struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"` // Voter, Nonvoter, Staging
	Applied  int64  `json:"applied"`
	Lag      int64  `json:"lag"` // leader's commit index minus the member's applied index
	// Edge: the member is an edge node (a Nonvoter for life, which never
	// votes). Edge and Region are as the member told the leader; only the
	// leader knows them.
	Edge   bool   `json:"edge,omitempty"`
	Region string `json:"region,omitempty"`
}

// ClusterServer names a server in init and join requests.
type ClusterServer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"` // internal (Raft) address
}

// ClusterInit (POST /v1/admin/init) founds a cluster from empty nodes.
type ClusterInit struct {
	Servers []ClusterServer `json:"servers"`
}

// ClusterJoin (POST /v1/admin/join, sent to any member) adds a server: as a
// non-voter first, promoted to voter once it has caught up. With Edge, the
// server must have been started as an edge (parley -edge): it is added as
// a non-voter for good, and the answer comes once it told the leader so.
type ClusterJoin struct {
	ClusterServer
	Nonvoter bool `json:"nonvoter,omitempty"` // stay a non-voter
	Edge     bool `json:"edge,omitempty"`     // an edge node
}

// ClusterRemove (POST /v1/admin/remove) removes a server.
type ClusterRemove struct {
	ID string `json:"id"`
}

// ClusterTransfer (POST /v1/admin/transfer-leader) moves leadership, to ID
// or to any up-to-date voter when ID is empty.
type ClusterTransfer struct {
	ID string `json:"id,omitempty"`
}

// SnapshotResult answers POST /v1/admin/snapshot.
type SnapshotResult struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
}
