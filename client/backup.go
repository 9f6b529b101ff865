package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"parley/wire"
)

// BackupInfo describes a state copy a node streamed.
type BackupInfo struct {
	AppliedIndex uint64 // the state is as of this log index
	Node         string // the node that sent it
	SHA256       string // of the bytes, hex, as the node computed it
	Bytes        int64
}

// Backup streams a consistent copy of the node's state (a tar) to w and
// checks it arrived whole: the node's SHA-256 of what it sent, in a
// trailer, must match what w got.
func (a *Admin) Backup(ctx context.Context, w io.Writer) (BackupInfo, error) {
	var info BackupInfo
	base := strings.TrimRight(a.Base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/admin/backup", nil)
	if err != nil {
		return info, err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	hc := a.HTTP
	if hc == nil {
		hc = &http.Client{} // the context bounds it: a backup may be large
	}
	resp, err := hc.Do(req)
	if err != nil {
		return info, fmt.Errorf("node %s unreachable: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := &AdminError{Status: resp.StatusCode, Code: wire.CodeInternal, Message: http.StatusText(resp.StatusCode)}
		return info, e
	}
	if info.AppliedIndex, err = strconv.ParseUint(resp.Header.Get("Parley-Applied-Index"), 10, 64); err != nil || info.AppliedIndex == 0 {
		return info, errors.New("backup: the node sent no applied index")
	}
	info.Node = resp.Header.Get("Parley-Node")
	sum := sha256.New()
	if info.Bytes, err = io.Copy(io.MultiWriter(w, sum), resp.Body); err != nil {
		return info, fmt.Errorf("backup: %w", err)
	}
	info.SHA256 = hex.EncodeToString(sum.Sum(nil))
	if sent := resp.Trailer.Get("Parley-Backup-Sha256"); sent != info.SHA256 {
		return info, fmt.Errorf("backup: cut short or corrupted: the node's checksum is %q, %d bytes received hash to %s", sent, info.Bytes, info.SHA256)
	}
	return info, nil
}
