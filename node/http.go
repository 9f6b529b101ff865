package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"parley/engine"
	"parley/netpoll"
	"parley/raftlog"
	"parley/wire"
)

const (
	maxHTTPBody      = 4 << 10
	minPasswordBytes = 8
	maxPasswordBytes = 256
	maxDeviceName    = 64
)

var usernameRE = regexp.MustCompile(`^[a-z0-9_.-]{3,32}$`)

// httpAPI is what the node serves on its HTTP listener: the accounts API
// (register, login), /healthz and /readyz, the operator API under
// /v1/admin/, media, the web app and /metrics. The node composes it and
// keeps the WebSocket path. The API calls into the node only to write
// (propose, the path WebSocket requests take) and to wait for an index to
// be applied here (waitApplied); the password hasher, the auth throttle
// and the admin token are its alone, and it shares the engine, Raft, the
// token signer, the WebSocket server, the disk guard and the metrics with
// the node.
type httpAPI struct {
	cfg     *Config
	log     *slog.Logger
	metrics *metrics
	hasher  *passwordHasher
	limits  *authThrottle
	tokens  *tokenSigner
	admin   adminAuth
	engine  *engine.Engine
	raft    *raftlog.Node
	ws      *netpoll.Server // its health, and its address for the web app
	storage *storageGuard

	propose     proposeFunc                                 // Node.propose (requests.go)
	waitApplied func(idx uint64, done <-chan struct{}) bool // Node.waitApplied (consistency.go)

	uploads mediaUploads // what all uploads share (media.go)

	conns atomic.Int64 // HTTP connections accepted and not closed
	// refused counts HTTP connections refused for their address's cap.
	refused atomic.Int64
	// accountsPropose, set by tests only, stands in for propose on the
	// accounts API (it is given the real one).
	accountsPropose atomic.Pointer[func(context.Context, *engine.Command, proposeFunc) (*engine.Result, *wire.Error)]
}

// handler is the HTTP server's handler: every route, behind the body limit.
func (a *httpAPI) handler() http.Handler {
	mux := http.NewServeMux()
	a.routes(mux)
	// Every request body is bounded, whatever the handler does with it:
	// the ones that decode JSON get 413 beyond it, the others never read
	// it (and the server then reads at most this much of it before it
	// closes the connection instead of draining it).
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := int64(maxHTTPBody)
		if isMediaUpload(r) { // a file: bounded by its own limit (media.go)
			limit = a.cfg.MediaMaxBytes
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		mux.ServeHTTP(w, r)
	})
}

// trackConn counts the HTTP connections open (http.Server.ConnState).
func (a *httpAPI) trackConn(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		a.conns.Add(1)
	case http.StateClosed, http.StateHijacked:
		a.conns.Add(-1)
	}
}

// workContext bounds a handler's work to three quarters of the write
// timeout, so that its answer is written before the server gives up on the
// connection.
func (a *httpAPI) workContext(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), a.cfg.HTTPWriteTimeout*3/4)
}

func (a *httpAPI) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/register", a.handleRegister)
	mux.HandleFunc("POST /v1/login", a.handleLogin)
	mux.HandleFunc("GET /healthz", a.handleHealth)
	mux.HandleFunc("GET /readyz", a.handleReady)
	a.adminRoutes(mux)
	a.adminUserRoutes(mux)
	a.mediaRoutes(mux)
	a.webRoutes(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	if a.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

type httpError struct {
	Code    wire.Code `json:"code"`
	Message string    `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code wire.Code, msg string) {
	writeJSON(w, status, httpError{Code: code, Message: msg})
}

// writeRetry answers an error the client should retry after the given
// delay (429, 503), saying so in a Retry-After header (whole seconds, at
// least one).
func writeRetry(w http.ResponseWriter, status int, code wire.Code, msg string, after time.Duration) {
	w.Header().Set("Retry-After", strconv.FormatInt(int64(max(1, (after+time.Second-1)/time.Second)), 10))
	writeError(w, status, code, msg)
}

// decodeBody reads a small JSON body; unknown fields are refused so that a
// typo in a client is reported rather than ignored.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxHTTPBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("body over %d bytes", maxHTTPBody))
			return false
		}
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, "malformed JSON body: "+err.Error())
		return false
	}
	return true
}

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Device   string `json:"device"`
}

// foldUsername is how a username is compared everywhere (register, login,
// user.get by name): surrounding blanks dropped, case folded.
func foldUsername(name string) string {
	return strings.ToLower(strings.TrimSpace(name))
}

// normalize folds the username and checks the fields. A login does not
// check the password's length: a password that could never have been
// registered is just a wrong one (401, counted by the throttle).
func (c *credentials) normalize(login bool) string {
	c.Username = foldUsername(c.Username)
	if !usernameRE.MatchString(c.Username) {
		return "username must be 3-32 characters of a-z 0-9 _ . -"
	}
	if !login && (len(c.Password) < minPasswordBytes || len(c.Password) > maxPasswordBytes) {
		return "password must be 8-256 bytes"
	}
	if c.Device == "" {
		c.Device = "default"
	}
	if len(c.Device) > maxDeviceName {
		return "device name over 64 bytes"
	}
	return ""
}

// signingKeyWait bounds how long a login or registration waits for the
// signing key. A node learns it moments after it first sees a leader, so a
// client arriving in those moments (just after start) is served rather than
// told to retry; a cluster without a leader answers 503 after this long.
const signingKeyWait = 3 * time.Second

// needSigningKey answers 503 when the cluster's token signing key is not
// known here (after waiting a little for it): the client retries, instead
// of getting an account it cannot log in with yet or a token no node could
// check.
func (a *httpAPI) needSigningKey(ctx context.Context, w http.ResponseWriter) bool {
	if a.tokens.hasKey() {
		return true
	}
	t := time.NewTimer(signingKeyWait)
	defer t.Stop()
	select {
	case <-a.tokens.ready:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	writeRetry(w, http.StatusServiceUnavailable, wire.CodeUnavailable, errNoSigningKey.Error(), time.Second)
	return false
}

func (a *httpAPI) handleRegister(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := a.workContext(r)
	defer cancel()
	if !a.needSigningKey(ctx, w) {
		return
	}
	var c credentials
	if !decodeBody(w, r, &c) {
		return
	}
	if msg := c.normalize(false); msg != "" {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, msg)
		return
	}
	if !a.httpMinIndex(ctx, w, r) {
		return
	}
	regCharge := charge{a.limits.ipRegisters, a.limits.clientKey(r)}
	if ok, wait := a.limits.take(regCharge); !ok {
		a.metrics.authThrottled.WithLabelValues("register").Inc()
		writeRetry(w, http.StatusTooManyRequests, wire.CodeRateLimited, "too many registrations from this address", wait)
		return
	}
	if _, taken := a.engine.UserByName(c.Username); taken {
		a.limits.refund(regCharge) // no account is made: the password check is charged instead
		a.registerAgain(ctx, w, r, &c)
		return
	}
	hash, err := a.hasher.Hash(ctx, c.Password)
	if err != nil {
		a.limits.refund(regCharge)
		writeRetry(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "busy hashing, retry later", time.Second)
		return
	}
	res, werr := a.proposeAccounts(ctx, &engine.Command{Op: engine.OpRegister, Username: c.Username, PasswordHash: []byte(hash)})
	switch {
	case werr == nil:
		writeJSON(w, http.StatusCreated, map[string]any{"user_id": res.User, "username": c.Username, "idx": res.Index})
	case werr.Code == wire.CodeUsernameTaken:
		// Taken since the check above, or known to the leader before
		// this node: perhaps by this very client's earlier attempt.
		a.limits.refund(regCharge)
		a.registerAgain(ctx, w, r, &c)
	case werr.Code == wire.CodeTimeout || werr.Code == wire.CodeUnavailable || werr.Code == wire.CodeBusy ||
		werr.Code == wire.CodeStorageFull:
		a.limits.refund(regCharge) // the client retries; that attempt counts
		writeWireError(w, werr)
	default:
		writeWireError(w, werr)
	}
}

// registerAgain answers a registration of a name that is taken. With the
// account's own password it is the retry of a registration whose answer
// was lost (a 503 timeout, a dropped connection): it gets the account's
// user_id with 201, exactly as the first attempt would have. With another
// password it is 409 username_taken. Since that tells a right password
// from a wrong one, the check is charged to the login throttle like a
// login.
func (a *httpAPI) registerAgain(ctx context.Context, w http.ResponseWriter, r *http.Request, c *credentials) {
	user, ok := a.authenticate(ctx, w, r, c, func() {
		writeError(w, http.StatusConflict, wire.CodeUsernameTaken, "username taken")
	})
	if ok {
		// idx: this node's applied index, at or past the registration.
		writeJSON(w, http.StatusCreated, map[string]any{"user_id": user.ID, "username": c.Username, "idx": a.engine.AppliedIndex()})
	}
}

// proposeAccounts is propose for the accounts API. A write whose outcome
// is unknown because the request's time ran out is reported as timeout
// (503, retryable) rather than internal: it may still commit, and the
// client's retry must find out (a register retried with the same password
// gets the account; see registerAgain).
func (a *httpAPI) proposeAccounts(ctx context.Context, cmd *engine.Command) (*engine.Result, *wire.Error) {
	propose := a.propose
	if hook := a.accountsPropose.Load(); hook != nil {
		propose = func(ctx context.Context, cmd *engine.Command) (*engine.Result, *wire.Error) {
			return (*hook)(ctx, cmd, a.propose)
		}
	}
	res, werr := propose(ctx, cmd)
	if werr != nil && werr.Code == wire.CodeInternal && ctx.Err() != nil {
		werr = wire.Errorf(wire.CodeTimeout, "the outcome is not known yet; retry the same request")
	} else if werr != nil && werr.Code == wire.CodeTimeout {
		werr = wire.Errorf(wire.CodeTimeout, "the outcome is not known yet; retry the same request")
	}
	return res, werr
}

// proposeFunc is the signature of propose, for the test hook on
// proposeAccounts (export_test.go).
type proposeFunc = func(context.Context, *engine.Command) (*engine.Result, *wire.Error)

func (a *httpAPI) handleLogin(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := a.workContext(r)
	defer cancel()
	if !a.needSigningKey(ctx, w) {
		return
	}
	var c credentials
	if !decodeBody(w, r, &c) {
		return
	}
	if msg := c.normalize(true); msg != "" {
		writeError(w, http.StatusBadRequest, wire.CodeInvalid, msg)
		return
	}
	if !a.httpMinIndex(ctx, w, r) {
		return
	}
	user, ok := a.authenticate(ctx, w, r, &c, func() {
		writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "unknown user or wrong password")
	})
	if !ok {
		return
	}
	if a.engine.Suspended(user.ID) { // told only to whoever knows the password
		writeError(w, http.StatusForbidden, wire.CodeForbidden, "account suspended")
		return
	}
	// The new device may push out the user's oldest (MaxDevices), and
	// devices whose token has expired go (their only token was made at
	// their login; an hour of margin covers clock skew between nodes).
	res, werr := a.proposeAccounts(ctx, &engine.Command{
		Op: engine.OpAddDevice, User: user.ID, DeviceName: c.Device, MaxDevices: uint64(a.cfg.MaxDevices),
		Ts: a.tokens.now().Add(-a.cfg.TokenTTL - deviceExpiryMargin).UnixMilli(),
	})
	if werr != nil {
		writeWireError(w, werr)
		return
	}
	token, exp, err := a.tokens.Issue(user.ID, res.Device)
	if err != nil {
		writeError(w, http.StatusInternalServerError, wire.CodeInternal, "cannot sign token")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token": token, "user_id": user.ID, "device_id": res.Device, "expires_at": exp.Unix(), "idx": res.Index,
	})
}

// deviceExpiryMargin: a login revokes the user's devices created more than
// TokenTTL plus this long ago.
const deviceExpiryMargin = time.Hour

// authenticate checks a username and password, charging the attempt to
// the auth throttle: a failure spends from the username's budget and the
// client address's, a success gives back what it took. When the budget is
// spent it answers 429 without checking the password (a throttled guess
// learns nothing). It answers the client itself (429, 503, or wrong for
// an unknown user or a wrong password) and returns false unless the
// password is right.
func (a *httpAPI) authenticate(ctx context.Context, w http.ResponseWriter, r *http.Request, c *credentials, wrong func()) (engine.User, bool) {
	charges := a.limits.loginCharges(c.Username, a.limits.clientKey(r))
	if ok, wait := a.limits.take(charges...); !ok {
		a.metrics.authThrottled.WithLabelValues("login").Inc()
		writeRetry(w, http.StatusTooManyRequests, wire.CodeRateLimited,
			"too many failed logins for this username or from this address", wait)
		return engine.User{}, false
	}
	// A user this replica does not know yet may have registered through
	// another node a moment ago: the leader's read index settles it, so
	// that a 401 is final (consistency.go).
	user, found, sure := a.userByNameLinearizable(ctx, c.Username)
	if !sure {
		a.limits.refund(charges...) // not an attempt: nothing was checked
		writeRetry(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "cannot reach the leader to look the user up; retry", time.Second)
		return engine.User{}, false
	}
	hash := a.hasher.dummy // an unknown user costs a real user's verification
	if found {
		hash = string(user.PasswordHash)
	}
	ok, err := a.hasher.Verify(ctx, hash, c.Password)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		a.limits.refund(charges...) // not an attempt: the password was not checked
		writeRetry(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "busy hashing, retry later", time.Second)
		return engine.User{}, false
	}
	if !found || !ok || err != nil {
		wrong()
		return engine.User{}, false
	}
	a.limits.refund(charges...)
	return user, true
}

// handleHealth is liveness: 200 while the process serves HTTP, whatever the
// cluster's state (a node waiting for init is healthy, just not ready).
// A dead WebSocket listener fails it too, with 503: only a
// restart brings that back.
func (a *httpAPI) handleHealth(w http.ResponseWriter, _ *http.Request) {
	status, code := "ok", http.StatusOK
	if err := a.ws.Alive(); err != nil {
		status, code = "websocket listener dead: "+err.Error(), http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{
		"status": status, "node": a.cfg.NodeID, "leader": a.raft.IsLeader(),
		"applied_index": a.engine.AppliedIndex(),
	})
}

// handleReady is readiness: 200 only when this node can serve clients,
// that is its WebSocket listener takes connections (wsReady), it knows a
// leader (writes can commit), the token signing key (logins and
// WebSocket auth work), and its disk has room (storage_full: writes are
// refused, reads still served); else 503 saying what is missing. A full
// disk fails readiness so that a load balancer moves new clients to nodes
// that take writes; the node keeps serving the clients it has.
func (a *httpAPI) handleReady(w http.ResponseWriter, r *http.Request) {
	leader := a.raft.LeaderID()
	wsErr := a.wsReady(r.Context())
	status, code := "ready", http.StatusOK
	switch {
	case wsErr != nil:
		status, code = "websocket: "+wsErr.Error(), http.StatusServiceUnavailable
	case leader == "":
		status, code = "no leader", http.StatusServiceUnavailable
	case !a.tokens.hasKey():
		status, code = "no signing key yet", http.StatusServiceUnavailable
	case a.storage.isFull():
		status, code = string(wire.CodeStorageFull), http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{
		"status": status, "node": a.cfg.NodeID, "leader_id": leader, "leader": a.raft.IsLeader(),
		"signing_key": a.tokens.hasKey(), "applied_index": a.engine.AppliedIndex(),
		"storage_full": a.storage.isFull(), "storage_free_bytes": a.storage.free.Load(),
	})
}

// storageRetryAfter is the Retry-After of a 503 storage_full.
const storageRetryAfter = 30 * time.Second

// writeWireError maps a protocol error to its HTTP status.
func writeWireError(w http.ResponseWriter, e *wire.Error) {
	status := http.StatusInternalServerError
	switch e.Code {
	case wire.CodeInvalid, wire.CodeTooLarge, wire.CodeBadFrame:
		status = http.StatusBadRequest
	case wire.CodeUnauthorized:
		status = http.StatusUnauthorized
	case wire.CodeForbidden, wire.CodeNotMember:
		status = http.StatusForbidden
	case wire.CodeNotFound:
		status = http.StatusNotFound
	case wire.CodeConflict, wire.CodeUsernameTaken:
		status = http.StatusConflict
	case wire.CodeRateLimited:
		status = http.StatusTooManyRequests
	case wire.CodeBusy, wire.CodeUnavailable, wire.CodeTimeout:
		writeRetry(w, http.StatusServiceUnavailable, e.Code, e.Message, time.Second)
		return
	case wire.CodeStorageFull: // lasts until an operator frees space
		writeRetry(w, http.StatusServiceUnavailable, e.Code, e.Message, storageRetryAfter)
		return
	}
	writeError(w, status, e.Code, e.Message)
}
