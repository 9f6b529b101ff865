package node

import (
	"context"
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
	if ok, err := h.Verify(ctx, dummyHash, "anything"); ok || err != nil {
		t.Fatalf("dummy hash must parse and never match: %v %v", ok, err)
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
	s := &tokenSigner{key: []byte(strings.Repeat("k", 32)), ttl: time.Hour, now: func() time.Time { return now }}
	tok, exp, err := s.Issue(7, 9)
	if err != nil || !exp.Equal(now.Add(time.Hour)) {
		t.Fatal(err, exp)
	}
	u, d, err := s.Verify(tok)
	if err != nil || u != 7 || d != 9 {
		t.Fatalf("verify: %d %d %v", u, d, err)
	}
	other := &tokenSigner{key: []byte(strings.Repeat("o", 32)), ttl: time.Hour, now: s.now}
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

func TestSigningKeyPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwt.key")
	k1, err := loadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := loadOrCreateKey(path)
	if err != nil || string(k1) != string(k2) || len(k1) != 32 {
		t.Fatalf("key not persisted: %v", err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode())
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := loadOrCreateKey(path); err == nil {
		t.Fatal("malformed key accepted")
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.HTTPAddr = "nope"
	c.WSPath = "ws"
	c.JWTKey = []byte("short")
	c.IdleTimeout = c.PingInterval
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"http address", "ws path", "jwt key", "idle timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}
