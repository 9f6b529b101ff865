package faults

import (
	"bytes"
	"crypto/rand"
	"io"
	"io/fs"
	"path/filepath"
	"testing"

	"parley/client"
)

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
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkMediaThreeNodes: uploads and downloads of a 16 MiB file
// through a follower of a three-process cluster (the follower forwards
// every chunk to the leader; a download is served from the follower's
// own replica), and the disk the Raft log and the state take per MiB
// stored, on the leader.
//
//	go test ./faults -run XXX -bench MediaThreeNodes -benchtime 10x
func BenchmarkMediaThreeNodes(b *testing.B) {
	const size = 16 << 20
	c := startCluster(b, "-media-max-bytes", "1073741824", "-media-quota-bytes", "-1")
	lead := c.leader(b, c.nodes...)
	var follower *daemon
	home := 0
	for i, d := range c.nodes {
		if d != lead {
			follower, home = d, i
			break
		}
	}
	u := c.newUser(b, "alice", home)
	defer u.cl.Close()
	file := make([]byte, size)
	_, _ = rand.Read(file)

	var last *client.Media
	b.Run("upload", func(b *testing.B) {
		b.SetBytes(size)
		raft0, state0 := dirBytes(b, filepath.Join(lead.Dir(), "raft")), dirBytes(b, filepath.Join(lead.Dir(), "state"))
		for i := 0; b.Loop(); i++ {
			file[0], file[1], file[2] = byte(i), byte(i>>8), byte(i>>16)
			m, err := client.Upload(b.Context(), follower.HTTP, u.token, bytes.NewReader(file), "f")
			if err != nil {
				b.Fatal(err)
			}
			last = m
		}
		stored := float64(b.N) * size
		b.ReportMetric(float64(dirBytes(b, filepath.Join(lead.Dir(), "raft"))-raft0)/stored, "raft-MiB/MiB")
		b.ReportMetric(float64(dirBytes(b, filepath.Join(lead.Dir(), "state"))-state0)/stored, "state-MiB/MiB")
	})
	b.Run("upload-via-leader", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			file[0], file[1], file[2] = byte(i), byte(i>>8), byte(i>>16)
			file[3] = 0xff // not the follower's files
			if _, err := client.Upload(b.Context(), lead.HTTP, u.token, bytes.NewReader(file), "f"); err != nil {
				b.Fatal(err)
			}
		}
	})
	if last == nil {
		return
	}
	b.Run("download", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			resp, err := client.Download(b.Context(), follower.HTTP, u.token, last.ID, client.DownloadOptions{MinIndex: last.Index})
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
