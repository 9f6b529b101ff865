package faults

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"parley/wire"
)

// BenchmarkLeaderFailover measures, on three node processes with fsync on,
// the time from kill -9 of the leader to the first write committed under the
// new leader: a client connected to a surviving node sends a probe every
// 10 ms (each attempt bounded to 250 ms, never retried) from the moment of
// the kill, and the first acknowledged probe ends the measurement. Each
// iteration kills the current leader, measures, and restarts it.
//
//	go test -run '^$' -bench LeaderFailover -benchtime 5x ./faults
func BenchmarkLeaderFailover(b *testing.B) {
	c := startCluster(b)
	u := c.newUser(b, "prober", 0)
	// A conversation to probe: a 1:1 with a second user.
	peer := c.newUser(b, "peer01", 1)
	dm, err := u.cl.OpenDirect(ctxFor(b, 30*time.Second), peer.id)
	if err != nil {
		b.Fatal(err)
	}
	var samples []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		lead := c.leader(b, c.nodes...)
		var survivor *daemon
		for _, d := range c.nodes {
			if d != lead {
				survivor = d
				break
			}
		}
		c.converged(b, 60*time.Second)
		cl := pinned(b, survivor, u.token)
		b.StartTimer()

		t0 := time.Now()
		lead.Kill9()
		for attempt := 0; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
			cmid := fmt.Sprintf("failover-%d-%d", i, attempt)
			_, err := cl.Request(ctx, &wire.Request{Type: wire.TypeSend, Conv: dm.ID, ClientMsgID: cmid, Body: cmid})
			cancel()
			if err == nil {
				break
			}
			if time.Since(t0) > time.Minute {
				b.Fatalf("no commit within a minute of killing %s: %v", lead.name, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		samples = append(samples, time.Since(t0))

		b.StopTimer()
		cl.Close()
		lead.restart(b)
		c.converged(b, 60*time.Second)
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	b.ReportMetric(float64(samples[len(samples)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(samples[len(samples)-1].Milliseconds()), "max-ms")
	b.Logf("failover times: %v", samples)
}
