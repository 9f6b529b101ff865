package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/argon2"
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
}

func newPasswordHasher(p Argon2Params, concurrency int) *passwordHasher {
	if concurrency < 1 {
		concurrency = 1
	}
	return &passwordHasher{params: p, slots: make(chan struct{}, concurrency)}
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
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	p := h.params
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var errBadHash = errors.New("malformed password hash")

// Verify reports whether password matches the encoded hash, using the
// parameters stored in the hash (so a change of defaults keeps old accounts).
func (h *passwordHasher) Verify(ctx context.Context, encoded, password string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errBadHash
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return false, errBadHash
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return false, errBadHash
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false, errBadHash
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

// tokenSigner issues and checks HS256 device tokens.
type tokenSigner struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// Issue returns a token for (user, device) valid for the signer's TTL.
func (s *tokenSigner) Issue(user, device uint64) (string, time.Time, error) {
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
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(s.key)
	return tok, exp, err
}

// Verify parses a token and returns its user and device.
func (s *tokenSigner) Verify(token string) (user, device uint64, err error) {
	var c Claims
	_, err = jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(tokenIssuer),
		jwt.WithExpirationRequired(),
		jwt.WithTimeFunc(s.now),
	)
	if err != nil {
		return 0, 0, err
	}
	user, err = strconv.ParseUint(c.Subject, 10, 64)
	if err != nil || user == 0 || c.Device == 0 {
		return 0, 0, errors.New("token without user or device")
	}
	return user, c.Device, nil
}

// loadOrCreateKey returns the JWT signing key kept in path, creating a random
// 32-byte key on first start. The file is the node's secret: mode 0600.
func loadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		key, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if derr != nil || len(key) < 32 {
			return nil, fmt.Errorf("%s: not a base64 key of at least 32 bytes", path)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return key, os.Rename(tmp, path)
}
