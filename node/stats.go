package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"parley/raftlog"
)

// statsCollector exports the counters that netpoll and raftlog keep in their
// own atomics, read once per scrape.
type statsCollector struct {
	n     *Node
	descs map[string]*prometheus.Desc
}

type statDef struct {
	name, help string
	kind       prometheus.ValueType
}

var statDefs = []statDef{
	{"parley_connections", "Open WebSocket connections.", prometheus.GaugeValue},
	{"parley_http_connections", "Open HTTP API connections (at most -http-max-conns).", prometheus.GaugeValue},
	{"parley_http_refused_total", "HTTP API connections refused (429) because their address held -http-max-conns-per-ip.", prometheus.CounterValue},
	{"parley_handshakes_accepted_total", "WebSocket upgrades accepted.", prometheus.CounterValue},
	{"parley_handshakes_refused_total", "WebSocket upgrades refused (bad request or token).", prometheus.CounterValue},
	{"parley_idle_timeouts_total", "Connections closed for silence.", prometheus.CounterValue},
	{"parley_frames_in_total", "WebSocket frames received.", prometheus.CounterValue},
	{"parley_frames_out_total", "WebSocket frames sent.", prometheus.CounterValue},
	{"parley_frame_writes_total", "Socket write calls that carried WebSocket frames (frames_out / frame_writes is the batching).", prometheus.CounterValue},
	{"parley_bytes_in_total", "Bytes received on WebSocket connections.", prometheus.CounterValue},
	{"parley_bytes_out_total", "Bytes sent on WebSocket connections.", prometheus.CounterValue},
	{"parley_queue_overflows_total", "Connections closed as slow consumers.", prometheus.CounterValue},
	{"parley_protocol_errors_total", "Connections failed for breaking RFC 6455.", prometheus.CounterValue},
	{"parley_ws_accept_errors_total", "Failed accepts on the WebSocket port (EMFILE, ENFILE, ENOBUFS, ...); each is retried.", prometheus.CounterValue},
	{"parley_ws_pending_handshakes", "WebSocket sockets accepted and not yet upgraded or refused.", prometheus.GaugeValue},
	{"parley_raft_leader", "1 if this node is the Raft leader.", prometheus.GaugeValue},
	{"parley_raft_term", "Current Raft term.", prometheus.GaugeValue},
	{"parley_raft_commit_index", "Raft commit index.", prometheus.GaugeValue},
	{"parley_raft_applied_index", "Last index applied to the state machine.", prometheus.GaugeValue},
	{"parley_proposer_queue", "Commands waiting for the proposer.", prometheus.GaugeValue},
	{"parley_commits_total", "Raft entries committed and applied on this node.", prometheus.CounterValue},
	{"parley_commands_committed_total", "Commands committed through this node's proposer.", prometheus.CounterValue},
	{"parley_commands_rejected_total", "Commands refused with busy (proposer queue full).", prometheus.CounterValue},
	{"parley_commands_forwarded_total", "Commands this node sent to the leader over the forwarding link.", prometheus.CounterValue},
	{"parley_commands_timed_out_total", "Commands whose outcome was not known within the submit timeout.", prometheus.CounterValue},
	{"parley_internal_auth_failures_total", "Internal connections refused (or refusing us) for a failed cluster-key handshake.", prometheus.CounterValue},
	{"parley_peer_links", "Other cluster members this node keeps a peer link to.", prometheus.GaugeValue},
	{"parley_peer_links_up", "Peer links connected now.", prometheus.GaugeValue},
	{"parley_peer_messages_sent_total", "Presence and typing messages sent to peers.", prometheus.CounterValue},
	{"parley_peer_messages_dropped_total", "Peer messages dropped (link down or queue full; repaired by a full resend).", prometheus.CounterValue},
	{"parley_peer_messages_received_total", "Presence and typing messages received from peers.", prometheus.CounterValue},
	{"parley_state_write_stalls_total", "Times the state database stopped writes (compactions or flushes behind); Apply, and every ack, waits through them.", prometheus.CounterValue},
	{"parley_state_write_stall_seconds_total", "Time the state database's writes were stopped, stalls that have ended.", prometheus.CounterValue},
}

func newStatsCollector(n *Node) *statsCollector {
	c := &statsCollector{n: n, descs: map[string]*prometheus.Desc{}}
	for _, d := range statDefs {
		c.descs[d.name] = prometheus.NewDesc(d.name, d.help, nil, nil)
	}
	c.descs["commit"] = prometheus.NewDesc("parley_commit_seconds",
		"From proposing a Raft entry to its local apply (commit latency).", nil, nil)
	c.descs["apply"] = prometheus.NewDesc("parley_apply_seconds",
		"Time to apply one committed Raft entry to the state machine.", nil, nil)
	c.descs["ws_refused"] = prometheus.NewDesc("parley_ws_refused_total",
		"WebSocket connections refused for a cap before the upgrade, by reason: node_limit (503), user_limit and ip_limit (429), "+
			"pending_handshakes and out_of_descriptors (503 at accept, unread).", []string{"reason"}, nil)
	return c
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	ws := c.n.ws.Stats()
	rs := c.n.raft.Stats()
	ps := c.n.raft.PeerStats()
	stalls, stalled := c.n.engine.WriteStalls()
	leader := 0.0
	if rs.Leader {
		leader = 1
	}
	values := map[string]float64{
		"parley_connections":               float64(ws.OpenConnections),
		"parley_http_connections":          float64(c.n.httpAPI.conns.Load()),
		"parley_http_refused_total":        float64(c.n.httpAPI.refused.Load()),
		"parley_handshakes_accepted_total": float64(ws.HandshakesAccepted),
		"parley_handshakes_refused_total":  float64(ws.HandshakesRefused),
		"parley_idle_timeouts_total":       float64(ws.IdleTimeouts),
		"parley_frames_in_total":           float64(ws.FramesIn),
		"parley_frames_out_total":          float64(ws.FramesOut),
		"parley_frame_writes_total":        float64(ws.FrameWrites),
		"parley_bytes_in_total":            float64(ws.BytesIn),
		"parley_bytes_out_total":           float64(ws.BytesOut),
		"parley_queue_overflows_total":     float64(ws.QueueOverflows),
		"parley_protocol_errors_total":     float64(ws.ProtocolErrors),
		"parley_ws_accept_errors_total":    float64(ws.AcceptErrors),
		"parley_ws_pending_handshakes":     float64(ws.PendingHandshakes),
		"parley_raft_leader":               leader,
		"parley_raft_term":                 float64(rs.Term),
		"parley_raft_commit_index":         float64(rs.CommitIndex),
		"parley_raft_applied_index":        float64(rs.AppliedIndex),
		"parley_proposer_queue":            float64(rs.QueueLength),
		"parley_commits_total":             float64(rs.EntriesCommitted),
		"parley_commands_committed_total":  float64(rs.CommandsCommitted),
		"parley_commands_rejected_total":   float64(rs.CommandsRejected),

		"parley_commands_forwarded_total":     float64(rs.CommandsForwarded),
		"parley_commands_timed_out_total":     float64(rs.CommandsTimedOut),
		"parley_internal_auth_failures_total": float64(rs.HandshakeFailures),
		"parley_peer_links":                   float64(ps.Links),
		"parley_peer_links_up":                float64(ps.LinksUp),
		"parley_peer_messages_sent_total":     float64(ps.Sent),
		"parley_peer_messages_dropped_total":  float64(ps.Dropped),
		"parley_peer_messages_received_total": float64(ps.Received),

		"parley_state_write_stalls_total":        float64(stalls),
		"parley_state_write_stall_seconds_total": stalled.Seconds(),
	}
	for _, d := range statDefs {
		ch <- prometheus.MustNewConstMetric(c.descs[d.name], d.kind, values[d.name])
	}
	for _, r := range []struct {
		reason string
		n      int64
	}{
		{"node_limit", ws.RefusedConnLimit}, {"user_limit", ws.RefusedKeyLimit}, {"ip_limit", ws.RefusedIPLimit},
		{"pending_handshakes", ws.RefusedPending}, {"out_of_descriptors", ws.RefusedNoFD},
	} {
		ch <- prometheus.MustNewConstMetric(c.descs["ws_refused"], prometheus.CounterValue, float64(r.n), r.reason)
	}
	ch <- constHistogram(c.descs["commit"], rs.CommitLatency)
	ch <- constHistogram(c.descs["apply"], rs.ApplyLatency)
}

func constHistogram(d *prometheus.Desc, h raftlog.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b] = h.Counts[i]
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets)
}
