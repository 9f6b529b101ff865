package faults

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net/http"
	"testing"
	"time"

	"parley/client"
	"parley/internal/testwait"
	"parley/media"
)

// TestMediaSurvivesKill9OfTheUploadNode uploads a file of many chunks
// through the cluster's leader (then, on a new cluster, through a
// follower), kills that process with SIGKILL as soon
// as the upload is answered, and downloads the whole file from each
// survivor: the reply means every chunk and the commit are on a majority,
// so a survivor serves it byte for byte (once a new leader is elected, or
// at once with the upload's idx as Parley-Min-Index).
func TestMediaSurvivesKill9OfTheUploadNode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three node processes")
	}
	for _, via := range []string{"leader", "follower"} {
		t.Run("through the "+via, func(t *testing.T) { mediaKill9(t, via == "leader") })
	}
}

func mediaKill9(t *testing.T, viaLeader bool) {
	c := startCluster(t)
	lead := c.leader(t, c.nodes...)
	var up1 *daemon
	home := 0
	for i, d := range c.nodes {
		if (d == lead) == viaLeader {
			up1, home = d, i
			break
		}
	}
	u := c.newUser(t, "alice", home)
	defer u.cl.Close()

	file := make([]byte, 5*media.DefaultChunkSize+12345)
	_, _ = rand.Read(file)
	up, err := client.Upload(ctxFor(t, 60*time.Second), up1.HTTP, u.token, bytes.NewReader(file), "big.bin")
	if err != nil {
		t.Fatalf("upload through %s: %v", up1.name, err)
	}
	up1.Kill9()
	sum := sha256.Sum256(file)
	if up.ID != media.ID(sum).String() || up.Size != uint64(len(file)) {
		t.Fatalf("upload reply %+v", up)
	}

	survivor := 0
	for _, d := range c.nodes {
		if d == up1 {
			continue
		}
		opt := client.DownloadOptions{}
		if survivor++; survivor == 1 {
			opt.MinIndex = up.Index // the other asks the (new) leader's read index
		}
		var got []byte
		testwait.Eventually(t, d.name+" to serve the file", func() bool {
			resp, err := client.Download(ctxFor(t, 30*time.Second), d.HTTP, u.token, up.ID, opt)
			if err != nil {
				if client.Retryable(err) { // no leader yet, or not applied yet
					return false
				}
				t.Fatalf("%s: %v", d.name, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: HTTP %d", d.name, resp.StatusCode)
			}
			got, err = io.ReadAll(resp.Body)
			return err == nil
		}, testwait.Limit(60*time.Second))
		if h := sha256.Sum256(got); h != sum {
			t.Fatalf("%s served another file (sha256 %x)", d.name, h[:8])
		}
		if !bytes.Equal(got, file) {
			t.Fatalf("%s served %d bytes, want %d", d.name, len(got), len(file))
		}
	}
}
