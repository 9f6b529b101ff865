package web

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"parley/internal/nodeproc"
)

// npmReady runs `npm ci` once when node_modules is missing (a fresh clone).
// Without npm the tests fail under CI and are skipped elsewhere, loudly.
var npmOnce sync.Once
var npmErr error

func needNPM(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("npm"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("npm is not installed: .ci/run installs nodejs and npm")
		}
		t.Skip("SKIPPED: npm is not installed (apt-get install nodejs npm); the web bundle and the TypeScript client are not checked")
	}
	npmOnce.Do(func() {
		if _, err := os.Stat("node_modules/esbuild"); err == nil {
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		if out, err := cmd.CombinedOutput(); err != nil {
			npmErr = err
			t.Logf("npm ci:\n%s", out)
		}
	})
	if npmErr != nil {
		t.Fatalf("npm ci: %v", npmErr)
	}
}

// TestBundleFresh builds the app into a temporary directory and compares it
// byte for byte with the committed dist/: a change to app/ or client/
// without `make web` fails here.
func TestBundleFresh(t *testing.T) {
	needNPM(t)
	out := t.TempDir()
	cmd := exec.Command("node", "app/build.mjs", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the app: %v\n%s", err, b)
	}
	built := files(t, os.DirFS(out))
	committed := files(t, Dist())
	for name, b := range built {
		c, ok := committed[name]
		switch {
		case !ok:
			t.Errorf("dist/%s is missing: run make web and commit web/dist", name)
		case !bytes.Equal(b, c):
			t.Errorf("dist/%s differs from what the sources build: run make web and commit web/dist", name)
		}
	}
	for name := range committed {
		if _, ok := built[name]; !ok {
			t.Errorf("dist/%s is not built from the sources any more: run make web and commit web/dist", name)
		}
	}
}

func files(t *testing.T, fsys fs.FS) map[string][]byte {
	t.Helper()
	m := make(map[string][]byte)
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		m[p] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestClientLibrary type-checks the client and the app and runs the
// client's unit tests and its integration test against a real node
// process built from this tree.
func TestClientLibrary(t *testing.T) {
	needNPM(t)
	bin := filepath.Join(t.TempDir(), "parley")
	if err := nodeproc.BuildTo(bin); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"run", "check"}, {"test"}} {
		// Bounded: a hung run fails with its output instead of the
		// package's timeout.
		ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", args...)
		cmd.WaitDelay = 5 * time.Second
		cmd.Env = append(os.Environ(), "PARLEY_BIN="+bin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("npm %v: %v\n%s", args, err, out)
		}
		t.Logf("npm %v:\n%s", args, out)
	}
}
