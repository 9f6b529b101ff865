package node

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"parley/wire"
)

// handleAdminBackup streams a consistent copy of this node's state, as of
// its applied index, while writes go on: the engine's snapshot (a Pebble
// checkpoint: hard links, taken under the apply lock, then streamed as a
// tar). The applied index comes as a header and the stream's SHA-256 as a
// trailer, so the receiver can tell a whole backup from a cut one.
// parleyctl backup save wraps it in a backup file (package backup).
func (a *httpAPI) handleAdminBackup(w http.ResponseWriter, r *http.Request) {
	snap, err := a.engine.Snapshot()
	if err != nil {
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, err.Error())
		return
	}
	defer snap.Release()
	// The server's write timeout is for API calls, not for gigabytes.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "application/x-tar")
	h.Set(HeaderAppliedIndex, strconv.FormatUint(snap.Index(), 10))
	h.Set(HeaderNode, a.cfg.NodeID)
	h.Set("Trailer", HeaderBackupSHA256)
	sum := sha256.New()
	if _, err := snap.WriteTo(io.MultiWriter(w, sum)); err != nil {
		a.log.Error("backup: stream the snapshot", "err", err)
		return // no trailer: the receiver refuses the backup
	}
	h.Set(HeaderBackupSHA256, hex.EncodeToString(sum.Sum(nil)))
	go a.auditCluster(auditOf(r), fmt.Sprintf("backup of %s at index %d", a.cfg.NodeID, snap.Index()))
}

// Headers of GET /v1/admin/backup.
const (
	HeaderAppliedIndex = "Parley-Applied-Index"
	HeaderNode         = "Parley-Node"
	HeaderBackupSHA256 = "Parley-Backup-Sha256"
)
