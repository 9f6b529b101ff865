package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"parley/wire"
)

// Admin is a client of one node's operator API (wire/admin.go).
type Admin struct {
	// Base is the node's HTTP base URL, e.g. "http://127.0.0.1:7070".
	Base string
	// Token is the node's admin token.
	Token string
	// HTTP defaults to a client with a 10s timeout.
	HTTP *http.Client
	// Actor names the operator in the audit log of the changes they make
	// (with their address); "" is "admin".
	Actor string
}

// AdminError is a refusal from the node (an HTTP status with a code).
type AdminError struct {
	Status  int
	Code    wire.Code `json:"code"`
	Message string    `json:"message"`
}

func (e *AdminError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

func (a *Admin) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	base := strings.TrimRight(a.Base, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, method, base+"/v1/admin/"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	req.Header.Set("Content-Type", "application/json")
	if a.Actor != "" {
		req.Header.Set("Parley-Admin-Actor", a.Actor)
	}
	hc := a.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("node %s unreachable: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		e := &AdminError{Status: resp.StatusCode}
		if json.NewDecoder(resp.Body).Decode(e) != nil || e.Code == "" {
			e.Code, e.Message = wire.CodeInternal, http.StatusText(resp.StatusCode)
		}
		return e
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Status returns the node's view of the cluster.
func (a *Admin) Status(ctx context.Context) (*wire.ClusterStatus, error) {
	var st wire.ClusterStatus
	return &st, a.do(ctx, http.MethodGet, "status", nil, &st)
}

// Init founds a cluster of the given servers; send it to one of them.
func (a *Admin) Init(ctx context.Context, servers []wire.ClusterServer) error {
	return a.do(ctx, http.MethodPost, "init", wire.ClusterInit{Servers: servers}, nil)
}

// Join adds a server to the cluster this node belongs to.
func (a *Admin) Join(ctx context.Context, j wire.ClusterJoin) error {
	return a.do(ctx, http.MethodPost, "join", j, nil)
}

// Remove removes a server from the cluster.
func (a *Admin) Remove(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodPost, "remove", wire.ClusterRemove{ID: id}, nil)
}

// TransferLeader moves leadership to id, or to any voter when id is "".
func (a *Admin) TransferLeader(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodPost, "transfer-leader", wire.ClusterTransfer{ID: id}, nil)
}

// Snapshot makes the node snapshot its state now.
func (a *Admin) Snapshot(ctx context.Context) (*wire.SnapshotResult, error) {
	var r wire.SnapshotResult
	return &r, a.do(ctx, http.MethodPost, "snapshot", nil, &r)
}
