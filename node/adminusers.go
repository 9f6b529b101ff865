package node

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"parley/engine"
	"parley/wire"
)

// User administration over the admin API: look a user up, list and
// revoke their devices, suspend and unsuspend them, set a new password,
// read the audit log. Every change goes through Raft with an Audit of who
// asked (the Parley-Admin-Actor header, e.g. parleyctl --actor, and the
// caller's address), which the engine writes to the replicated audit log
// with the change itself.

func (a *httpAPI) adminUserRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/admin/users/{user}", a.adminOnly(a.handleAdminUser))
	mux.HandleFunc("POST /v1/admin/users/{user}/suspend", a.adminOnly(a.handleAdminSuspend(true)))
	mux.HandleFunc("POST /v1/admin/users/{user}/unsuspend", a.adminOnly(a.handleAdminSuspend(false)))
	mux.HandleFunc("POST /v1/admin/users/{user}/password", a.adminOnly(a.handleAdminPassword))
	mux.HandleFunc("POST /v1/admin/users/{user}/delete", a.adminOnly(func(w http.ResponseWriter, r *http.Request) {
		if u, ok := a.adminUser(w, r); ok {
			a.adminPropose(w, r, &engine.Command{Op: engine.OpDeleteUser, User: u.ID})
		}
	}))
	mux.HandleFunc("POST /v1/admin/users/{user}/devices/{device}/revoke", a.adminOnly(a.handleAdminRevoke))
	mux.HandleFunc("GET /v1/admin/audit", a.adminOnly(a.handleAdminAudit))
}

// adminUser finds the user a path names: a user id, or a username.
func (a *httpAPI) adminUser(w http.ResponseWriter, r *http.Request) (engine.User, bool) {
	who := r.PathValue("user")
	var u engine.User
	var ok bool
	if id, err := strconv.ParseUint(who, 10, 64); err == nil {
		u, ok = a.engine.User(id)
	} else {
		u, ok = a.engine.UserByName(foldUsername(who))
	}
	if !ok {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, "no such user")
	}
	return u, ok
}

// auditOf says who asks: the operator the client names, and its address.
func auditOf(r *http.Request) string {
	actor := strings.Map(func(c rune) rune {
		if unicode.IsPrint(c) && c != '@' {
			return c
		}
		return -1
	}, r.Header.Get("Parley-Admin-Actor"))
	if len(actor) > 64 {
		actor = actor[:64]
	}
	if actor == "" {
		actor = "admin"
	}
	return actor + "@" + r.RemoteAddr
}

func (a *httpAPI) handleAdminUser(w http.ResponseWriter, r *http.Request) {
	u, ok := a.adminUser(w, r)
	if !ok {
		return
	}
	out := wire.AdminUser{ID: u.ID, Username: u.Username, CreatedAt: u.CreatedAt, LastSeen: u.LastSeen,
		Suspended: a.engine.Suspended(u.ID), Deleted: u.Deleted}
	var after uint64
	for {
		devs, more, code := a.engine.Devices(u.ID, after, engine.MaxDevicesLimit)
		if code != engine.ErrCodeNone {
			writeWireError(w, engineError(code, "devices"))
			return
		}
		for _, d := range devs {
			out.Devices = append(out.Devices, wire.AdminDevice{ID: d.ID, Name: d.Name, CreatedAt: d.CreatedAt, Revoked: d.Revoked})
			after = d.ID
		}
		if !more || len(devs) == 0 || len(out.Devices) >= 10*engine.MaxDevicesLimit {
			break
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *httpAPI) adminPropose(w http.ResponseWriter, r *http.Request, cmd *engine.Command) {
	cmd.Audit = auditOf(r)
	res, werr := a.propose(r.Context(), cmd)
	if werr != nil {
		writeWireError(w, werr)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "idx": res.Index})
}

// auditCluster writes a cluster action (init, join, remove, transfer,
// snapshot, backup) to the audit log once it succeeded and was answered
// (callers run it on a goroutine of its own: the action's answer does not
// wait for it). It is not a command of its own in the state, so it is
// written next to it; a failure to write it (no leader just now) is
// logged.
func (a *httpAPI) auditCluster(who, what string) {
	ctx, cancel := context.WithTimeout(context.Background(), adminCallTimeout)
	defer cancel()
	if _, werr := a.propose(ctx, &engine.Command{Op: engine.OpAudit, Audit: who, Name: what}); werr != nil {
		a.log.Warn("audit log: could not record an admin action", "action", what, "err", werr.Message)
	}
}

func (a *httpAPI) handleAdminSuspend(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if u, ok := a.adminUser(w, r); ok {
			a.adminPropose(w, r, &engine.Command{Op: engine.OpSuspend, User: u.ID, Admin: on})
		}
	}
}

func (a *httpAPI) handleAdminPassword(w http.ResponseWriter, r *http.Request) {
	u, ok := a.adminUser(w, r)
	if !ok {
		return
	}
	var body struct {
		Password string `json:"password"`
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if len(body.Password) < minPasswordBytes || len(body.Password) > maxPasswordBytes {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, fmt.Sprintf("password must be %d to %d bytes", minPasswordBytes, maxPasswordBytes))
		return
	}
	hash, err := a.hasher.Hash(r.Context(), body.Password)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "busy hashing, retry later")
		return
	}
	a.adminPropose(w, r, &engine.Command{Op: engine.OpResetPassword, User: u.ID, PasswordHash: []byte(hash)})
}

func (a *httpAPI) handleAdminRevoke(w http.ResponseWriter, r *http.Request) {
	u, ok := a.adminUser(w, r)
	if !ok {
		return
	}
	dev, err := strconv.ParseUint(r.PathValue("device"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, "device must be a device id")
		return
	}
	a.adminPropose(w, r, &engine.Command{Op: engine.OpRevokeDevice, User: u.ID, Device: dev})
}

// handleAdminAudit pages the audit log: ?after=<index>.<n> (the previous
// page's next) and ?limit (default 100, at most 1000).
func (a *httpAPI) handleAdminAudit(w http.ResponseWriter, r *http.Request) {
	var index, pos uint64
	if a := r.URL.Query().Get("after"); a != "" {
		i, p, ok := strings.Cut(a, ".")
		var err1, err2 error
		index, err1 = strconv.ParseUint(i, 10, 64)
		pos, err2 = strconv.ParseUint(p, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			writeError(w, http.StatusBadRequest, wire.CodeInvalid, "after must be <index>.<n>")
			return
		}
	}
	limit := 100
	if l := r.URL.Query().Get("limit"); l != "" {
		v, err := strconv.Atoi(l)
		if err != nil || v < 1 {
			writeError(w, http.StatusBadRequest, wire.CodeInvalid, "limit must be a positive number")
			return
		}
		limit = min(v, 1000)
	}
	entries, more, err := a.engine.AuditLog(index, pos, limit)
	if err != nil {
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, err.Error())
		return
	}
	out := wire.AuditPage{Entries: make([]wire.AuditEntry, 0, len(entries)), More: more}
	for _, e := range entries {
		out.Entries = append(out.Entries, wire.AuditEntry{Index: e.Index, N: e.N, Ts: e.Ts, Action: e.Op.String(),
			User: e.User, Device: e.Device, Suspended: e.Op == engine.OpSuspend && e.Admin, Who: e.Who, What: e.What})
	}
	if len(entries) > 0 {
		last := entries[len(entries)-1]
		out.Next = strconv.FormatUint(last.Index, 10) + "." + strconv.FormatUint(last.N, 10)
	}
	writeJSON(w, http.StatusOK, out)
}
