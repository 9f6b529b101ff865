package node_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"parley/client"
	"parley/node"
	"parley/wire"
)

const (
	testMinFree = 64 << 20 // StorageMinFree of these tests
	plenty      = 1 << 40
)

// storageConfig is a node whose free space is what free says. The guard's
// own ticks are out of the picture: the tests measure with
// CheckStorageForTest.
func storageConfig(dir string, free *atomic.Uint64) node.Config {
	cfg := testConfig(dir)
	cfg.StorageMinFree = testMinFree
	cfg.StorageCheckEvery = time.Hour
	cfg.StorageProbe = func(string) (uint64, error) { return free.Load(), nil }
	return cfg
}

type readyz struct {
	Status      string `json:"status"`
	StorageFull bool   `json:"storage_full"`
	FreeBytes   uint64 `json:"storage_free_bytes"`
}

func getReady(t *testing.T, n *node.Node) (int, readyz) {
	t.Helper()
	resp, err := http.Get(n.HTTPURL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r readyz
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, r
}

// sendOnce sends without the client's retries, to see the server's answer.
func sendOnce(t *testing.T, c *client.Client, conv uint64, body string) error {
	t.Helper()
	_, err := c.Request(ctxT(t), &wire.Request{Type: wire.TypeSend, Conv: conv, ClientMsgID: client.NewClientMsgID(), Body: body})
	return err
}

// requireWritesRefused: sends and other writes get storage_full, reads and
// ephemeral signals work, the connection stays open.
func requireWritesRefused(t *testing.T, n *node.Node, c *client.Client, conv uint64, history int) {
	t.Helper()
	ctx := ctxT(t)
	syncs := c.State().Syncs // a reconnection would sync again
	if err := sendOnce(t, c, conv, "refused"); !isCode(err, wire.CodeStorageFull) {
		t.Fatalf("send while storage is full: %v, want storage_full", err)
	}
	if _, err := c.CreateGroup(ctx, "refused", nil); !isCode(err, wire.CodeStorageFull) {
		t.Fatalf("group.create while storage is full: %v, want storage_full", err)
	}
	evs, _, err := c.History(ctx, conv, wire.DirBefore, 0, 50)
	if err != nil {
		t.Fatalf("history while storage is full: %v", err)
	}
	// A page stops at the reply budget: small tests see every message.
	if got := len(messages(evs)); got != history && (history < 10 || got == 0) {
		t.Fatalf("history page holds %d messages, want %d", got, history)
	}
	if _, err := c.Request(ctx, &wire.Request{Type: wire.TypeSync, Limit: wire.MaxSyncConvs}); err != nil {
		t.Fatalf("sync while storage is full: %v", err)
	}
	if err := c.Typing(ctx, conv, true); err != nil {
		t.Fatalf("typing while storage is full: %v", err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping while storage is full: %v", err)
	}
	if st := c.State(); !st.Connected || st.Syncs != syncs {
		t.Fatalf("client state %+v while storage is full: the connection did not stay open (syncs were %d)", st, syncs)
	}
	code, r := getReady(t, n)
	if code != http.StatusServiceUnavailable || r.Status != "storage_full" || !r.StorageFull {
		t.Fatalf("/readyz while storage is full: %d %+v", code, r)
	}
	if v := metricValue(t, n, "parley_storage_full"); v != 1 {
		t.Fatalf("parley_storage_full = %v while full", v)
	}
}

// TestStorageFullRefusesWrites: below StorageMinFree a node refuses writes
// with storage_full and goes on serving reads on the same connection; it
// lifts by itself once free space is back above 1.5x the minimum.
func TestStorageFullRefusesWrites(t *testing.T) {
	var free atomic.Uint64
	free.Store(plenty)
	n := startNodeWith(t, storageConfig(t.TempDir(), &free))
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	ctx := ctxT(t)
	dm, err := ca.OpenDirect(ctx, bob.user)
	if err != nil {
		t.Fatal(err)
	}
	if err := sendOnce(t, ca, dm.ID, "before"); err != nil {
		t.Fatal(err)
	}
	if v := metricValue(t, n, "parley_storage_full"); v != 0 {
		t.Fatalf("parley_storage_full = %v with plenty of space", v)
	}

	free.Store(testMinFree - 1)
	n.CheckStorageForTest()
	requireWritesRefused(t, n, ca, dm.ID, 1)
	if v := metricValue(t, n, "parley_storage_free_bytes"); v != testMinFree-1 {
		t.Fatalf("parley_storage_free_bytes = %v, want %d", v, testMinFree-1)
	}
	if v := metricValue(t, n, "parley_storage_critical"); v != 0 {
		t.Fatalf("parley_storage_critical = %v above a quarter of the minimum", v)
	}
	// The accounts API too: 503 with a Retry-After.
	resp, err := http.Post(n.HTTPURL()+"/v1/register", "application/json",
		strings.NewReader(`{"username":"carol","password":"password-carol"}`))
	if err != nil {
		t.Fatal(err)
	}
	var herr struct{ Code wire.Code }
	_ = json.NewDecoder(resp.Body).Decode(&herr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || herr.Code != wire.CodeStorageFull || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("register while full: %d %q Retry-After %q", resp.StatusCode, herr.Code, resp.Header.Get("Retry-After"))
	}

	// Above the minimum but under 1.5x: still full (no flapping).
	free.Store(testMinFree + testMinFree/4)
	n.CheckStorageForTest()
	requireWritesRefused(t, n, ca, dm.ID, 1)

	// Back above 1.5x: writes again, on the same connection.
	free.Store(testMinFree + testMinFree/2)
	n.CheckStorageForTest()
	if err := sendOnce(t, ca, dm.ID, "after"); err != nil {
		t.Fatalf("send once space is back: %v", err)
	}
	if code, r := getReady(t, n); code != http.StatusOK || r.StorageFull {
		t.Fatalf("/readyz once space is back: %d %+v", code, r)
	}
	if v := metricValue(t, n, "parley_storage_full"); v != 0 {
		t.Fatalf("parley_storage_full = %v once space is back", v)
	}
	evs, _, err := ca.History(ctx, dm.ID, wire.DirBefore, 0, 50)
	if err != nil || len(messages(evs)) != 2 {
		t.Fatalf("history after: %d messages, %v; want 2", len(messages(evs)), err)
	}
}

// TestStorageFullAtStart: a node that starts with little free space starts
// refusing writes (reads served) instead of failing, and lifts by itself;
// with less than Pebble needs to replay its logs it refuses to open, with
// a clear error, rather than hang in Pebble.
func TestStorageFullAtStart(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(plenty)
	cfg := storageConfig(dir, &free)
	n, err := node.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	token := login(t, n, alice, "phone")
	ca := dial(t, []string{n.WSURL()}, token, 0)
	dm, err := ca.OpenDirect(ctxT(t), bob.user)
	if err != nil {
		t.Fatal(err)
	}
	if err := sendOnce(t, ca, dm.ID, "before"); err != nil {
		t.Fatal(err)
	}
	ca.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// Too little to open: a clear error, nothing opened.
	free.Store(1 << 20)
	if n, err := node.Open(cfg); err == nil {
		n.Close()
		t.Fatal("opened with 1 MiB free")
	} else if !strings.Contains(err.Error(), "free space on that disk") {
		t.Fatalf("open with 1 MiB free: %v", err)
	}

	// Below the minimum: opens, refuses writes, serves reads.
	free.Store(testMinFree / 2)
	n = startNodeWith(t, cfg)
	ca = dial(t, []string{n.WSURL()}, token, 0)
	requireWritesRefused(t, n, ca, dm.ID, 1)

	free.Store(plenty)
	n.CheckStorageForTest()
	if err := sendOnce(t, ca, dm.ID, "after"); err != nil {
		t.Fatalf("send once space is back: %v", err)
	}
}

// TestStorageFullOnSmallFilesystem: the guard on a real file system, a
// small tmpfs measured with statfs (needs root and mount(2); skipped
// otherwise, TestStorageFullRefusesWrites covers the behaviour with an
// injected probe). Sends fill it until the node answers storage_full,
// without crashing; once the file system grows, writes work again.
func TestStorageFullOnSmallFilesystem(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=48m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); TestStorageFullRefusesWrites covers the guard with an injected probe", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	cfg := testConfig(filepath.Join(mnt, "data"))
	cfg.StorageMinFree = 16 << 20
	cfg.StorageCheckEvery = 5 * time.Millisecond // the real clock: the test waits for conditions, never for time
	n := startNodeWith(t, cfg)
	alice, bob := register(t, n, "alice"), register(t, n, "bob")
	ca := dial(t, []string{n.WSURL()}, login(t, n, alice, "phone"), 0)
	dm, err := ca.OpenDirect(ctxT(t), bob.user)
	if err != nil {
		t.Fatal(err)
	}

	body := make([]byte, wire.MaxBodyBytes/2)
	acked := 0
	for ; ; acked++ {
		_, _ = rand.Read(body) // incompressible
		err := sendOnce(t, ca, dm.ID, hex.EncodeToString(body))
		if isCode(err, wire.CodeStorageFull) {
			break
		}
		if err != nil {
			t.Fatalf("send %d: %v, want success or storage_full", acked+1, err)
		}
		if acked > 10_000 {
			t.Fatal("160 MiB sent to a 48 MiB file system and no storage_full")
		}
	}
	t.Logf("storage_full after %d sends of %d bytes", acked, len(body)*2)
	requireWritesRefused(t, n, ca, dm.ID, acked)

	// The operator grows the file system: the guard sees it and lifts.
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_REMOUNT, "size=256m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := getReady(t, n); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/readyz still not ready 30s after the file system grew")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := sendOnce(t, ca, dm.ID, "after"); err != nil {
		t.Fatalf("send once space is back: %v", err)
	}
}
