package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPasswordHashVerify(t *testing.T) {
	h := newPasswordHasher(Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}, 2)
	ctx := context.Background()
	enc, err := h.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("encoding %q", enc)
	}
	if ok, err := h.Verify(ctx, enc, "correct horse"); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, _ := h.Verify(ctx, enc, "wrong horse"); ok {
		t.Fatal("wrong password accepted")
	}
	again, _ := h.Hash(ctx, "correct horse")
	if again == enc {
		t.Fatal("same salt twice")
	}
	// Verification uses the parameters stored in the hash, not the hasher's.
	h2 := newPasswordHasher(Argon2Params{Time: 3, MemoryKiB: 128, Threads: 1}, 1)
	if ok, _ := h2.Verify(ctx, enc, "correct horse"); !ok {
		t.Fatal("old parameters not honoured")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$a2V5", "$argon2id$v=19$m=x$c2FsdA$a2V5", "$argon2id$v=19$m=64,t=1,p=1$!!$a2V5"} {
		if _, err := h.Verify(ctx, bad, "x"); err == nil {
			t.Errorf("malformed hash %q accepted", bad)
		}
	}
	if ok, err := h.Verify(ctx, h.dummy, "anything"); ok || err != nil {
		t.Fatalf("dummy hash must parse and never match: %v %v", ok, err)
	}
}

// TestDummyHashUsesConfiguredCost: an unknown username is checked against a
// hash of the configured cost, so that it takes as long as a real account's
// (the parameters are compared, not the time).
func TestDummyHashUsesConfiguredCost(t *testing.T) {
	for _, want := range []Argon2Params{DefaultArgon2, {Time: 3, MemoryKiB: 64, Threads: 2}} {
		h := newPasswordHasher(want, 1)
		got, salt, key, err := parseHash(h.dummy)
		if err != nil {
			t.Fatal(err)
		}
		if got != want || len(salt) != argonSaltLen || len(key) != argonKeyLen {
			t.Fatalf("dummy hash %q: parameters %+v, salt %d, key %d bytes; want %+v, %d, %d",
				h.dummy, got, len(salt), len(key), want, argonSaltLen, argonKeyLen)
		}
		real, _ := h.Hash(context.Background(), "a real password")
		if strings.Split(real, "$")[3] != strings.Split(h.dummy, "$")[3] {
			t.Fatalf("dummy %q and account %q hashes differ in cost", h.dummy, real)
		}
	}
}

func TestHasherBoundsConcurrency(t *testing.T) {
	h := newPasswordHasher(Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}, 1)
	if err := h.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Hash(ctx, "pw"); err == nil {
		t.Fatal("hash ran while the only slot was taken")
	}
	h.release()
}

func TestTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := newTokenSigner(time.Hour, func() time.Time { return now })
	if _, _, err := s.Issue(7, 9); !errors.Is(err, errNoSigningKey) {
		t.Fatalf("issue without a key: %v", err)
	}
	if _, _, err := s.Verify("x.y.z"); !errors.Is(err, errNoSigningKey) {
		t.Fatalf("verify without a key: %v", err)
	}
	s.setKey([]byte(strings.Repeat("k", 32)))
	s.setKey([]byte(strings.Repeat("z", 32))) // the first key stays
	select {
	case <-s.ready:
	default:
		t.Fatal("ready not closed after setKey")
	}
	tok, exp, err := s.Issue(7, 9)
	if err != nil || !exp.Equal(now.Add(time.Hour)) {
		t.Fatal(err, exp)
	}
	u, d, err := s.Verify(tok)
	if err != nil || u != 7 || d != 9 {
		t.Fatalf("verify: %d %d %v", u, d, err)
	}
	other := newTokenSigner(time.Hour, s.now)
	other.setKey([]byte(strings.Repeat("o", 32)))
	if _, _, err := other.Verify(tok); err == nil {
		t.Fatal("token verified with another key")
	}
	now = now.Add(2 * time.Hour)
	if _, _, err := s.Verify(tok); err == nil {
		t.Fatal("expired token accepted")
	}
	if _, _, err := s.Verify(tok[:len(tok)-2]); err == nil {
		t.Fatal("truncated token accepted")
	}
}

func TestSigningKeyCandidate(t *testing.T) {
	dir := t.TempDir()
	// No jwt.key: a random key each time, and nothing written (the key
	// that counts lives in the replicated state).
	k1, err := signingKeyCandidate(dir)
	if err != nil || len(k1) != 32 {
		t.Fatalf("random candidate: %x %v", k1, err)
	}
	k2, _ := signingKeyCandidate(dir)
	if bytes.Equal(k1, k2) {
		t.Fatal("same random key twice")
	}
	if _, err := os.Stat(filepath.Join(dir, "jwt.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("candidate written to disk: %v", err)
	}
	// An old node's jwt.key is proposed, so its tokens stay valid.
	old := bytes.Repeat([]byte{7}, 32)
	os.WriteFile(filepath.Join(dir, "jwt.key"), []byte(base64.StdEncoding.EncodeToString(old)+"\n"), 0o600)
	if k, err := signingKeyCandidate(dir); err != nil || !bytes.Equal(k, old) {
		t.Fatalf("jwt.key candidate: %x %v", k, err)
	}
	os.WriteFile(filepath.Join(dir, "jwt.key"), []byte("short"), 0o600)
	if _, err := signingKeyCandidate(dir); err == nil {
		t.Fatal("malformed jwt.key accepted")
	}
}

func TestAdminTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "admin.token")
	t1, err := loadOrCreateSecret(path, "admin token", minAdminTokenLen)
	if err != nil || len(t1) < minAdminTokenLen {
		t.Fatalf("created token %q: %v", t1, err)
	}
	t2, err := loadOrCreateSecret(path, "admin token", minAdminTokenLen)
	if err != nil || t1 != t2 {
		t.Fatalf("token not kept: %q then %q, %v", t1, t2, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("token mode %v", fi.Mode())
	}
	os.WriteFile(path, []byte("short\n"), 0o600)
	if _, err := loadOrCreateSecret(path, "admin token", minAdminTokenLen); err == nil {
		t.Fatal("short admin token accepted")
	}

	a := newAdminAuth(t1)
	for hdr, want := range map[string]bool{
		"Bearer " + t1: true, "bearer " + t1: true, "Bearer  " + t1 + " ": true,
		"": false, "Bearer": false, "Bearer " + t1 + "x": false, "Basic " + t1: false, t1: false,
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		if hdr != "" {
			r.Header.Set("Authorization", hdr)
		}
		if got := a.check(r); got != want {
			t.Errorf("Authorization %q: %v, want %v", hdr, got, want)
		}
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.HTTPAddr = "nope"
	c.WSPath = "ws"
	c.JWTKey = []byte("short")
	c.IdleTimeout = c.PingInterval
	c.AdminToken = "short"
	c.RaftAdvertise = "127.0.0.1:0"
	c.ClusterKey = []byte("short")
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"http address", "ws path", "jwt key", "idle timeout", "admin token", "raft advertise", "cluster key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}
