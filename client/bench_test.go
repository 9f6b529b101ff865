package client

import (
	"context"
	"sync"
	"testing"
)

// Round trips over loopback against the in-process test server: they measure
// the client's own cost per request (encode, correlate, decode) plus the
// test server's, not a real node's.

func BenchmarkPing(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPingParallel(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.Ping(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSend includes the pushed event: every send is also delivered on
// Events(), which a goroutine drains.
func BenchmarkSend(b *testing.B) {
	cl := newCluster(b, 1)
	alice, tok := cl.addUser("alice")
	g := cl.group(alice, "bench")
	c := dial(b, testConfig(tok, cl.nodes[0].url))
	var wg sync.WaitGroup
	wg.Go(func() {
		for range c.Events() {
		}
	})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Send(ctx, g, "benchmark message body"); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = c.Close()
	wg.Wait()
}

func benchClient(b *testing.B) *Client {
	cl := newCluster(b, 1)
	_, tok := cl.addUser("alice")
	return dial(b, testConfig(tok, cl.nodes[0].url))
}
