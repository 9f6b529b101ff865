package node_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"parley/client"
	"parley/engine"
	"parley/node"
	"parley/push"
	"parley/push/pushtest"
)

// countingSender counts sends and signals when a target count is reached.
type countingSender struct {
	n    atomic.Int64
	want atomic.Int64
	done chan struct{}
	once *sync.Once
}

func (c *countingSender) Send(context.Context, push.Target, push.Notification) (push.Result, error) {
	if c.n.Add(1) == c.want.Load() {
		c.once.Do(func() { close(c.done) })
	}
	return push.Result{}, nil
}

// groupOfOffline builds a group of members users (besides its creator),
// each with one device whose push target is a webhook to url, all
// offline, through Raft directly (no connection per user). It returns the
// creator's client and the group.
func groupOfOffline(b *testing.B, n *node.Node, members int, url string) (*client.Client, uint64) {
	ctx := context.Background()
	propose := func(cmd *engine.Command) *engine.Result {
		res, werr := n.ProposeForTest(ctx, cmd)
		if werr != nil || res.Err != engine.ErrCodeNone {
			b.Fatalf("%s: %v %+v", cmd.Op, werr, res)
		}
		return res
	}
	owner := propose(&engine.Command{Op: engine.OpRegister, Username: "owner", PasswordHash: []byte("x")}).User
	dev := propose(&engine.Command{Op: engine.OpAddDevice, User: owner, DeviceName: "phone"}).Device
	c, err := client.Dial(ctx, client.Config{URLs: []string{n.WSURL()}, Token: n.IssueTokenForTest(owner, dev)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	var ids []uint64
	for i := range members {
		u := propose(&engine.Command{Op: engine.OpRegister, Username: "m" + itoa(i), PasswordHash: []byte("x")}).User
		d := propose(&engine.Command{Op: engine.OpAddDevice, User: u, DeviceName: "phone"}).Device
		propose(&engine.Command{Op: engine.OpPushSet, User: u, Device: d, PushProvider: engine.PushWebhook, PushToken: url + "/m" + itoa(i)})
		ids = append(ids, u)
	}
	g := propose(&engine.Command{Op: engine.OpCreateGroup, User: owner, Name: "big", Members: ids[:min(len(ids), engine.MaxMembersPerCommand)]}).Conv
	for i := engine.MaxMembersPerCommand; i < len(ids); i += engine.MaxMembersPerCommand {
		propose(&engine.Command{Op: engine.OpAddMembers, User: owner, Conv: g, Members: ids[i:min(i+engine.MaxMembersPerCommand, len(ids))]})
	}
	return c, g
}

func itoa(i int) string {
	return string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676%26)) + string(rune('a'+i/17576%26))
}

// BenchmarkNotifyGroup10k: one message to a group of 10,000 offline
// members, each with one device: the time until the provider has the last
// of the 10,000 notifications, and the rate. "webhook" posts each, signed,
// to a local receiver that verifies the signature (a fake provider);
// "memory" hands them to a sender that only counts (the notifier's own
// ceiling).
func BenchmarkNotifyGroup10k(b *testing.B) {
	const members = 10_000
	for _, mode := range []string{"memory", "webhook"} {
		b.Run(mode, func(b *testing.B) {
			cfg := testConfig(b.TempDir())
			counter := &countingSender{}
			var url string
			if mode == "webhook" {
				hook := pushtest.NewWebhookReceiver(b)
				cfg.Push = push.Config{Webhook: &push.WebhookConfig{SecretFile: hook.SecretFile, HTTPClient: hook.Client()}}
				url = hook.URL
				defer func() { b.ReportMetric(float64(len(hook.Delivered())), "delivered") }()
			} else {
				cfg.PushSender = counter
				url = "https://relay.example"
			}
			n := startNodeWith(b, cfg)
			c, g := groupOfOffline(b, n, members, url)
			b.ResetTimer()
			var total time.Duration
			for i := range b.N {
				counter.n.Store(0)
				counter.want.Store(members)
				counter.done, counter.once = make(chan struct{}), &sync.Once{}
				start := time.Now()
				rep, err := c.Send(context.Background(), g, "to everyone "+itoa(i))
				if err != nil {
					b.Fatal(err)
				}
				testwaitFor(b, func() bool {
					if mode == "memory" {
						select {
						case <-counter.done:
							return true
						default:
							return false
						}
					}
					return n.EngineForTest().PushProgress() >= rep.Index && n.PushPendingForTest() == 0
				})
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-last")
			b.ReportMetric(float64(members)*float64(b.N)/total.Seconds(), "notifications/s")
		})
	}
}

func testwaitFor(b *testing.B, cond func() bool) {
	deadline := time.Now().Add(5 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
