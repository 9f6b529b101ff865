package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"

	"parley/engine"
	"parley/netpoll"
	"parley/wire"
)

// Argon2Params are the argon2id cost parameters. The defaults follow the
// OWASP minimum for argon2id (19 MiB, 2 passes, 1 lane); tests and load
// harnesses that create thousands of accounts lower them through Config.
type Argon2Params struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultArgon2 is the production cost.
var DefaultArgon2 = Argon2Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}

const (
	argonSaltLen = 16
	argonKeyLen  = 32
)

// passwordHasher hashes and verifies passwords with argon2id. Hashing is
// deliberately expensive in CPU and memory, so at most `slots` run at once:
// a burst of logins queues instead of exhausting memory or starving the event
// loops.
type passwordHasher struct {
	params Argon2Params
	slots  chan struct{}
	// dummy is verified against when a login names an unknown user, so
	// that the answer takes as long as for a real user and does not reveal
	// which usernames exist. It is made once, with the configured
	// parameters (those of every account created since), from a random
	// password no one knows.
	dummy string
}

func newPasswordHasher(p Argon2Params, concurrency int) *passwordHasher {
	if concurrency < 1 {
		concurrency = 1
	}
	h := &passwordHasher{params: p, slots: make(chan struct{}, concurrency)}
	h.dummy = h.hash(rand.Text())
	return h
}

func (h *passwordHasher) acquire(ctx context.Context) error {
	select {
	case h.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *passwordHasher) release() { <-h.slots }

// Hash returns a PHC-format string: $argon2id$v=19$m=..,t=..,p=..$salt$key.
func (h *passwordHasher) Hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	return h.hash(password), nil
}

// hash computes the encoded hash of password, with a fresh salt, without
// taking a slot.
func (h *passwordHasher) hash(password string) string {
	salt := make([]byte, argonSaltLen)
	_, _ = rand.Read(salt) // never fails
	p := h.params
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

var errBadHash = errors.New("malformed password hash")

// parseHash splits an encoded hash into its parameters, salt and key.
func parseHash(encoded string) (p Argon2Params, salt, key []byte, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return p, nil, nil, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return p, nil, nil, errBadHash
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, errBadHash
	}
	b64 := base64.RawStdEncoding
	if salt, err = b64.DecodeString(parts[4]); err != nil {
		return p, nil, nil, errBadHash
	}
	if key, err = b64.DecodeString(parts[5]); err != nil || len(key) == 0 {
		return p, nil, nil, errBadHash
	}
	return p, salt, key, nil
}

// Verify reports whether password matches the encoded hash, using the
// parameters stored in the hash (so a change of defaults keeps old accounts).
func (h *passwordHasher) Verify(ctx context.Context, encoded, password string) (bool, error) {
	p, salt, want, err := parseHash(encoded)
	if err != nil {
		return false, err
	}
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// Claims are the JWT claims of a device token.
type Claims struct {
	Device uint64 `json:"dev"`
	jwt.RegisteredClaims
}

const tokenIssuer = "parley"

// tokenSigner issues and checks HS256 device tokens. Its key is the
// cluster's (replicated through the engine, see signingKeyLoop) or the one
// configured; until it is known every Issue and Verify fails with
// errNoSigningKey. The key is set once and read on every WebSocket
// handshake, hence the atomic pointer rather than a lock.
type tokenSigner struct {
	key   atomic.Pointer[[]byte]
	ready chan struct{} // closed once the key is set
	once  sync.Once
	ttl   time.Duration
	now   func() time.Time
}

// errNoSigningKey: the cluster's signing key is not applied on this node yet
// (no leader since the cluster formed, or this node is still catching up).
var errNoSigningKey = errors.New("the cluster's token signing key is not known yet; retry shortly")

func newTokenSigner(ttl time.Duration, now func() time.Time) *tokenSigner {
	return &tokenSigner{ready: make(chan struct{}), ttl: ttl, now: now}
}

// setKey installs the signing key. Only the first call counts: the key of a
// cluster never changes, and a token must verify on every node.
func (s *tokenSigner) setKey(key []byte) {
	s.once.Do(func() {
		k := slices.Clone(key)
		s.key.Store(&k)
		close(s.ready)
	})
}

// hasKey reports whether tokens can be issued and checked.
func (s *tokenSigner) hasKey() bool { return s.key.Load() != nil }

func (s *tokenSigner) loadKey() ([]byte, error) {
	k := s.key.Load()
	if k == nil {
		return nil, errNoSigningKey
	}
	return *k, nil
}

// Issue returns a token for (user, device) valid for the signer's TTL.
func (s *tokenSigner) Issue(user, device uint64) (string, time.Time, error) {
	key, err := s.loadKey()
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	exp := now.Add(s.ttl)
	c := Claims{
		Device: device,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    tokenIssuer,
			Subject:   strconv.FormatUint(user, 10),
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(key)
	return tok, exp, err
}

// Verify parses a token and returns its user and device. It fails with
// errNoSigningKey while the key is not known.
func (s *tokenSigner) Verify(token string) (user, device uint64, err error) {
	user, device, _, err = s.verify(token)
	return user, device, err
}

// verify is Verify that also returns when the token expires.
func (s *tokenSigner) verify(token string) (user, device uint64, expires time.Time, err error) {
	key, err := s.loadKey()
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	var c Claims
	_, err = jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		return 0, 0, time.Time{}, err
	}
	user, err = strconv.ParseUint(c.Subject, 10, 64)
	if err != nil || user == 0 || c.Device == 0 {
		return 0, 0, time.Time{}, errors.New("token without user or device")
	}
	return user, c.Device, c.ExpiresAt.Time, nil
}

// readKeyFile returns the base64 key kept in path (a jwt.key written by
// builds from before the key was replicated), or nil when there is none.
func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < engine.MinSigningKeyLen || len(key) > engine.MaxSigningKeyLen {
		return nil, fmt.Errorf("%s: not a base64 key of %d to %d bytes", path, engine.MinSigningKeyLen, engine.MaxSigningKeyLen)
	}
	return key, nil
}

// signingKeyCandidate is the key this node proposes when the cluster has
// none: the node's old jwt.key if it has one, so that the tokens it issued
// before it joined a cluster stay valid (when its proposal commits first),
// else a random one. Nothing is written: the key that counts is the one in
// the replicated state.
func signingKeyCandidate(dataDir string) ([]byte, error) {
	key, err := readKeyFile(filepath.Join(dataDir, "jwt.key"))
	if err != nil || key != nil {
		return key, err
	}
	key = make([]byte, 32)
	_, err = rand.Read(key)
	return key, err
}

// signingKeyLoop makes the cluster's signing key this node's. A node whose
// state already holds it installs it at once. Otherwise, whenever a leader
// is known, it proposes its candidate; the engine keeps the first key
// applied in the cluster (OpSetSigningKey), so after its proposal applies
// here, whoever won, the engine holds the key every node uses. A node still
// catching up may time out and propose again: the extra entries are no-ops.
// It runs on its own goroutine until the key is set or the node closes.
func (n *Node) signingKeyLoop(candidate []byte) {
	defer n.workers.Done()
	// The engine is checked often (a read of memory), so that a key that
	// arrives through the log, e.g. on a node that just joined, is used at
	// once; proposals back off while they fail.
	const poll, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff, next := poll, time.Time{}
	for {
		if key := n.engine.SigningKey(); key != nil {
			n.tokens.setKey(key)
			return
		}
		if n.raft.LeaderID() != "" && !time.Now().Before(next) {
			// Close ends a pending proposal itself (raftlog.ErrClosed).
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, werr := n.propose(ctx, &engine.Command{Op: engine.OpSetSigningKey, SigningKey: candidate})
			cancel()
			if werr == nil {
				continue // applied here: the engine has a key now
			}
			n.log.Debug("proposing the token signing key", "err", werr)
			next = time.Now().Add(backoff)
			backoff = min(2*backoff, maxBackoff)
		}
		select {
		case <-n.stop:
			return
		case <-time.After(poll):
		}
	}
}

// wsHandler is the node as the WebSocket server's handler, with one check
// in front of Authorize: while the signing key is unknown no token can be
// checked, and the client is told to retry (503) rather than that its
// token is bad (401).
type wsHandler struct{ *Node }

func (h wsHandler) Authorize(r *netpoll.Request) (any, int, string) {
	if !h.tokens.hasKey() {
		return nil, http.StatusServiceUnavailable, string(wire.CodeUnavailable) + ": " + errNoSigningKey.Error()
	}
	return h.Node.Authorize(r)
}

// loadOrCreateSecret returns the secret kept in path (what: "admin token",
// "cluster key"), the file's text without surrounding white space, creating
// a random one on first start. The file is a secret: mode 0600.
func loadOrCreateSecret(path, what string, minLen int) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if len(tok) < minLen {
			return "", fmt.Errorf("%s: %s under %d characters", path, what, minLen)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	return tok, writeSecretFile(path, tok+"\n")
}

// writeSecretFile writes a 0600 file whole or not at all (temporary file,
// fsync, rename), so a crash never leaves a truncated secret behind.
func writeSecretFile(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
