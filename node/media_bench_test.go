package node_test

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"parley/client"
	"parley/node"
)

// benchAccount registers name and logs in: its token.
func benchAccount(b *testing.B, base, name string) string {
	var out struct {
		Token string `json:"token"`
	}
	for _, step := range []struct {
		path string
		want int
		out  any
	}{{"/v1/register", http.StatusCreated, nil}, {"/v1/login", http.StatusOK, &out}} {
		body, _ := json.Marshal(map[string]string{"username": name, "password": "password-" + name})
		resp, err := http.Post(base+step.path, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		if step.out != nil {
			_ = json.NewDecoder(resp.Body).Decode(step.out)
		}
		resp.Body.Close()
		if resp.StatusCode != step.want {
			b.Fatalf("%s: HTTP %d", step.path, resp.StatusCode)
		}
	}
	return out.Token
}

// dirBytes is the size of the files under dir.
func dirBytes(tb testing.TB, dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkMediaOneNode: uploads and downloads of a 16 MiB file (random
// bytes, so every upload is a new object) through one in-process node,
// and the disk the Raft log and the state take per MiB stored.
//
//	go test ./node -run XXX -bench MediaOneNode -benchtime 20x
func BenchmarkMediaOneNode(b *testing.B) {
	const size = 16 << 20
	dir := b.TempDir()
	cfg := testConfig(dir)
	cfg.MediaMaxBytes = size
	cfg.MediaQuotaBytes = -1
	n, err := node.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	if err := n.WaitLeader(b.Context()); err != nil {
		b.Fatal(err)
	}
	tok := benchAccount(b, n.HTTPURL(), "alice")
	file := noiseFile(1, size)

	var last *client.Media
	b.Run("upload", func(b *testing.B) {
		b.SetBytes(size)
		raft0, state0 := dirBytes(b, filepath.Join(dir, "raft")), dirBytes(b, filepath.Join(dir, "state"))
		for i := 0; b.Loop(); i++ {
			file[8], file[9], file[10] = byte(i), byte(i>>8), byte(i>>16) // a new object each time
			m, err := client.Upload(b.Context(), n.HTTPURL(), tok, bytes.NewReader(file), "f")
			if err != nil {
				b.Fatal(err)
			}
			last = m
		}
		stored := float64(b.N) * size / (1 << 20)
		b.ReportMetric(float64(dirBytes(b, filepath.Join(dir, "raft"))-raft0)/stored/(1<<20), "raft-MiB/MiB")
		b.ReportMetric(float64(dirBytes(b, filepath.Join(dir, "state"))-state0)/stored/(1<<20), "state-MiB/MiB")
	})
	if last == nil {
		return
	}
	b.Run("download", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			resp, err := client.Download(b.Context(), n.HTTPURL(), tok, last.ID, client.DownloadOptions{})
			if err != nil {
				b.Fatal(err)
			}
			k, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || k != size {
				b.Fatalf("%d bytes, %v", k, err)
			}
		}
	})
}
