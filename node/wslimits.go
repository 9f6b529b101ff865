package node

import (
	"context"
	"log/slog"
	"syscall"
	"time"
)

// The descriptor budget. Every open socket and file is a descriptor, and
// the process may hold RLIMIT_NOFILE of them; once they are used up no
// socket can be accepted and no file opened, and Pebble failing to open a
// file is fatal to a node. So the WebSocket port (the one the public can
// fill) gets what is left after a reserve for everything else, and refuses
// upgrades beyond its share (503) before it runs out. docs/OPERATIONS.md
// explains the figures.

const (
	// fdReserveMin is kept, beyond the HTTP API's connections, for the two
	// Pebble stores (up to 1,000 table files each by default, plus WALs,
	// manifests and locks), Raft and peer connections, log files and the
	// runtime. The reserve is 5% of the limit when that is more.
	fdReserveMin = 2048

	defaultWSMaxConnsPerUser = 20
	defaultWSMaxConnsPerIP   = 5000
)

// fdBudget is how the descriptor limit is shared out.
type fdBudget struct {
	NoFile  int // RLIMIT_NOFILE (soft; Go raises it to the hard limit at start)
	HTTP    int // HTTP API connections (HTTPMaxConns)
	Reserve int // Pebble, Raft, logs, the runtime
	WS      int // WebSocket sockets, upgraded or in their handshake
}

// planFDs shares nofile out: the WebSocket port gets what the HTTP API and
// the reserve leave, but at least a quarter (a limit that low is a
// misconfiguration, reported at start).
func planFDs(nofile, httpConns int) fdBudget {
	b := fdBudget{NoFile: nofile, HTTP: httpConns, Reserve: max(fdReserveMin, nofile/20)}
	b.WS = max(nofile-b.HTTP-b.Reserve, nofile/4)
	return b
}

// wsMaxConnsFor is the default cap on upgraded connections for a budget of
// ws sockets: netpoll keeps a sixteenth more for sockets in their handshake
// (Config.MaxPendingHandshakes).
func wsMaxConnsFor(ws int) int { return max(1, ws*15/16) }

// nofileLimit reads RLIMIT_NOFILE; 0 if it cannot.
func nofileLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	return int(min(r.Cur, 1<<30)) // RLIM_INFINITY reads as a huge number
}

// wsCaps are the caps handed to netpoll (0: none).
type wsCaps struct {
	conns, perUser, perIP int
}

// resolveWSCaps turns the configured caps into netpoll's, deriving the
// node-wide one from the descriptor limit when it is 0, and logs the
// budget (a warning when the caps do not fit in it).
func resolveWSCaps(cfg *Config, nofile int, log *slog.Logger) wsCaps {
	caps := wsCaps{conns: cfg.WSMaxConns, perUser: max(0, cfg.WSMaxConnsPerUser), perIP: max(0, cfg.WSMaxConnsPerIP)}
	if nofile <= 0 {
		if caps.conns == 0 {
			log.Warn("cannot read the descriptor limit (RLIMIT_NOFILE): no cap on WebSocket connections; set -ws-max-conns")
		}
		caps.conns = max(0, caps.conns)
		return caps
	}
	b := planFDs(nofile, cfg.HTTPMaxConns)
	if caps.conns == 0 {
		caps.conns = wsMaxConnsFor(b.WS)
	}
	caps.conns = max(0, caps.conns)
	log.Info("descriptor budget", "nofile", b.NoFile, "http_max_conns", b.HTTP, "reserve", b.Reserve,
		"ws_sockets", b.WS, "ws_max_conns", caps.conns, "ws_max_conns_per_user", caps.perUser, "ws_max_conns_per_ip", caps.perIP)
	switch {
	case cfg.WSMaxConns < 0 || caps.conns > wsMaxConnsFor(b.WS):
		log.Warn("WebSocket cap above the descriptor budget: a flood can use up the descriptors "+
			"(accepts are retried, but the state stores may fail to open files); raise the limit (ulimit -n) or lower -ws-max-conns",
			"nofile", nofile, "ws_max_conns", caps.conns, "budget", wsMaxConnsFor(b.WS))
	case nofile < 2*(b.HTTP+fdReserveMin):
		log.Warn("low descriptor limit: WebSocket connections are capped low and little is left for the state stores; raise it (ulimit -n, LimitNOFILE=)",
			"nofile", nofile, "ws_max_conns", caps.conns)
	}
	return caps
}

// wsReadyTimeout bounds how long /readyz waits for every event loop to run
// a probe task; a loop busier than that is reported not ready.
const wsReadyTimeout = 2 * time.Second

// wsReady is the WebSocket server's readiness: netpoll.Server.Ready, which
// fails while accepts fail (out of descriptors and the like), when an
// event loop does not answer, and when the listener is dead.
func (a *httpAPI) wsReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, wsReadyTimeout)
	defer cancel()
	return a.ws.Ready(ctx)
}
