package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Account is a registered user with one logged-in device: what a worker
// needs to connect as that user.
type Account struct {
	Name   string `json:"name"`
	User   uint64 `json:"user"`
	Device uint64 `json:"device"`
	Token  string `json:"token"`
}

// accountMaker registers fresh users over the HTTP API, several at once.
// Names are a random run prefix plus a counter, so runs against the same
// data directory never collide and accounts are never reused.
type accountMaker struct {
	base     string // HTTP API base URL
	client   *http.Client
	prefix   string
	parallel int
}

// benchPassword is the password of every benchmark account.
const benchPassword = "parleybench-password"

// Account creation retries a request refused with 503 (no leader yet, or
// the node's hashing queue is full) this many times before giving up.
const (
	accountAttempts     = 8
	accountRetryInitial = 50 * time.Millisecond
)

func newAccountMaker(base string, parallel int) *accountMaker {
	var b [3]byte
	_, _ = rand.Read(b[:]) // never fails
	return &accountMaker{
		base: strings.TrimRight(base, "/"),
		client: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				MaxIdleConnsPerHost: parallel,
				MaxConnsPerHost:     parallel,
				IdleConnTimeout:     30 * time.Second,
			},
		},
		// Usernames are 3-32 of a-z 0-9 _ . -: "pb" + 6 hex + "_" + 7 digits.
		prefix:   "pb" + hex.EncodeToString(b[:]) + "_",
		parallel: parallel,
	}
}

// create registers and logs in n users, at most parallel at a time, and
// calls done after each. The first failure cancels the rest.
func (m *accountMaker) create(ctx context.Context, n int, done func()) ([]Account, error) {
	accounts := make([]Account, n)
	g, gctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range min(m.parallel, n) {
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || gctx.Err() != nil {
					return gctx.Err()
				}
				a, err := m.one(gctx, fmt.Sprintf("%s%07d", m.prefix, i))
				if err != nil {
					return err
				}
				accounts[i] = a // each index is written by one goroutine only
				done()
			}
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return accounts, nil
}

func (m *accountMaker) one(ctx context.Context, name string) (Account, error) {
	var reg struct {
		UserID uint64 `json:"user_id"`
	}
	body := map[string]string{"username": name, "password": benchPassword}
	if err := m.post(ctx, "/v1/register", body, http.StatusCreated, &reg); err != nil {
		return Account{}, err
	}
	var login struct {
		Token    string `json:"token"`
		UserID   uint64 `json:"user_id"`
		DeviceID uint64 `json:"device_id"`
	}
	body["device"] = "parleybench"
	if err := m.post(ctx, "/v1/login", body, http.StatusOK, &login); err != nil {
		return Account{}, err
	}
	if login.Token == "" || login.UserID == 0 {
		return Account{}, fmt.Errorf("bench: login %s: reply without token or user id", name)
	}
	return Account{Name: name, User: login.UserID, Device: login.DeviceID, Token: login.Token}, nil
}

// post sends body as JSON and decodes a reply with status want into out,
// retrying 503s with backoff.
func (m *accountMaker) post(ctx context.Context, path string, body any, want int, out any) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return err
	}
	delay := accountRetryInitial
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.base+path, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := m.client.Do(req)
		if err != nil {
			return fmt.Errorf("bench: POST %s: %w", path, err)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case err != nil:
			return fmt.Errorf("bench: POST %s: %w", path, err)
		case resp.StatusCode == want:
			if err := json.Unmarshal(b, out); err != nil {
				return fmt.Errorf("bench: POST %s: bad reply %q: %w", path, b, err)
			}
			return nil
		case resp.StatusCode == http.StatusServiceUnavailable && attempt < accountAttempts:
			if !sleepCtx(ctx, delay) {
				return ctx.Err()
			}
			delay *= 2
		default:
			return fmt.Errorf("bench: POST %s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(b))
		}
	}
}

// sleepCtx waits for d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
