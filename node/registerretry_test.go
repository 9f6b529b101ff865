package node_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"

	"parley/engine"
	"parley/wire"
)

// phcHash encodes an argon2id hash of password as the node stores one.
func phcHash(password string) []byte {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte(password), salt, cheapArgon2.Time, cheapArgon2.MemoryKiB, cheapArgon2.Threads, 32)
	b64 := base64.RawStdEncoding
	return fmt.Appendf(nil, "$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		cheapArgon2.MemoryKiB, cheapArgon2.Time, cheapArgon2.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

type proposeFn = func(context.Context, *engine.Command) (*engine.Result, *wire.Error)

// TestRegisterOutcomeUnknown: a registration whose commit is not confirmed
// in time answers 503 timeout with Retry-After, and its retry with the same
// password gets the account, whether the first attempt committed or not; a
// different password gets 409.
func TestRegisterOutcomeUnknown(t *testing.T) {
	cfg := testConfig(t.TempDir())
	cfg.HTTPWriteTimeout = 2 * time.Second // a handler's work gets 1.5 s
	n := startNodeWith(t, cfg)

	wantTimeout := func(what string, a authAnswer) {
		t.Helper()
		if a.status != http.StatusServiceUnavailable || a.code != wire.CodeTimeout || a.retryAfter == "" {
			t.Fatalf("%s: %+v; want 503 timeout with Retry-After", what, a)
		}
	}
	wantCreated := func(what string, a authAnswer, user uint64) {
		t.Helper()
		if a.status != http.StatusCreated || a.userID == 0 || (user != 0 && a.userID != user) {
			t.Fatalf("%s: %+v; want 201 with user %d", what, a, user)
		}
	}

	t.Run("committed, answer lost", func(t *testing.T) {
		// The command commits, then the request's time runs out before
		// the answer: what propose returns when its context ends.
		var created atomic.Uint64
		n.SetAccountsProposeForTest(func(ctx context.Context, cmd *engine.Command, propose proposeFn) (*engine.Result, *wire.Error) {
			res, werr := propose(context.Background(), cmd)
			if werr != nil {
				t.Errorf("the real proposal failed: %v", werr)
				return nil, werr
			}
			created.Store(res.User)
			<-ctx.Done()
			return nil, wire.Errorf(wire.CodeInternal, ctx.Err().Error())
		})
		wantTimeout("first attempt", postAuth(t, n, "/v1/register", "alice", "alice-password"))
		n.SetAccountsProposeForTest(nil)
		if created.Load() == 0 {
			t.Fatal("the first attempt did not commit")
		}
		wantCreated("retry with the same password", postAuth(t, n, "/v1/register", "alice", "alice-password"), created.Load())
		wantCreated("and again", postAuth(t, n, "/v1/register", "alice", "alice-password"), created.Load())
		if a := postAuth(t, n, "/v1/register", "alice", "another-password"); a.status != http.StatusConflict || a.code != wire.CodeUsernameTaken {
			t.Fatalf("same name, another password: %+v; want 409 username_taken", a)
		}
		if a := postAuth(t, n, "/v1/login", "alice", "alice-password"); a.status != http.StatusOK || a.userID != created.Load() {
			t.Fatalf("login: %+v", a)
		}
	})

	t.Run("not committed", func(t *testing.T) {
		n.SetAccountsProposeForTest(func(ctx context.Context, cmd *engine.Command, propose proposeFn) (*engine.Result, *wire.Error) {
			<-ctx.Done()
			return nil, wire.Errorf(wire.CodeInternal, ctx.Err().Error())
		})
		wantTimeout("first attempt", postAuth(t, n, "/v1/register", "bob", "bob-password"))
		n.SetAccountsProposeForTest(nil)
		wantCreated("retry", postAuth(t, n, "/v1/register", "bob", "bob-password"), 0)
	})

	t.Run("raft submit timed out", func(t *testing.T) {
		n.SetAccountsProposeForTest(func(ctx context.Context, cmd *engine.Command, propose proposeFn) (*engine.Result, *wire.Error) {
			if _, werr := propose(ctx, cmd); werr != nil {
				return nil, werr
			}
			return nil, wire.Errorf(wire.CodeTimeout, "not confirmed in time; retry with the same cmid")
		})
		wantTimeout("first attempt", postAuth(t, n, "/v1/register", "carol", "carol-password"))
		n.SetAccountsProposeForTest(nil)
		wantCreated("retry", postAuth(t, n, "/v1/register", "carol", "carol-password"), 0)
	})

	// The name is unknown to this node when the request arrives and taken
	// when its command applies (by another client, or by this client's own
	// earlier attempt that reached the leader first).
	for _, tc := range []struct {
		name, earlier string
		want          int
	}{
		{"taken meanwhile by someone else", "someone-elses-password", http.StatusConflict},
		{"taken meanwhile by the same client", "dave-password", http.StatusCreated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := "dave"
			if tc.want == http.StatusConflict {
				user = "erin"
			}
			n.SetAccountsProposeForTest(func(ctx context.Context, cmd *engine.Command, propose proposeFn) (*engine.Result, *wire.Error) {
				earlier := &engine.Command{Op: engine.OpRegister, Username: user, PasswordHash: phcHash(tc.earlier)}
				if _, werr := propose(ctx, earlier); werr != nil {
					t.Errorf("the earlier registration: %v", werr)
				}
				return propose(ctx, cmd)
			})
			a := postAuth(t, n, "/v1/register", user, "dave-password")
			n.SetAccountsProposeForTest(nil)
			if a.status != tc.want {
				t.Fatalf("%+v; want HTTP %d", a, tc.want)
			}
		})
	}
}
