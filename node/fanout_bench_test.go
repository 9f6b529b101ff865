package node

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"parley/engine"
)

// inlinePublisher delivers on the apply goroutine, as Publish did before
// the fan-out stage: the baseline of BenchmarkAckBehindBroadcast.
type inlinePublisher struct{ n *Node }

func (p inlinePublisher) Publish(events []engine.Event) { p.n.deliver(events) }

// BenchmarkAckBehindBroadcast: one entry with a message to a group of
// 10,000 members, all connected here (sockets read by a child process),
// then one entry with a 1:1 message between two other users. Reported:
// how long after the broadcast's Apply began the 1:1's Apply returned,
// which is when Raft's callback acks that send. "inline" delivers inside
// Apply (before the fan-out stage); "stage" hands the events to it.
func BenchmarkAckBehindBroadcast(b *testing.B) {
	const members = 10_000
	cache := pebble.NewCache(256 << 20)
	defer cache.Unref()
	e, err := engine.Open(b.TempDir(), cache)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	apply := (&applier{tb: b, e: e, idx: 1}).apply
	// Users 1..members+2, device u for user u; the group of users
	// 1..members is conversation 1, the 1:1 of the last two conversation 2.
	var cmds []*engine.Command
	for u := 1; u <= members+2; u++ {
		cmds = append(cmds, &engine.Command{Op: engine.OpRegister, Username: fmt.Sprintf("user%d", u), PasswordHash: []byte("x")})
		if len(cmds) == 1000 {
			apply(cmds...)
			cmds = cmds[:0]
		}
	}
	apply(cmds...)
	cmds = cmds[:0]
	for u := uint64(1); u <= members+2; u++ {
		cmds = append(cmds, &engine.Command{Op: engine.OpAddDevice, User: u, DeviceName: "d"})
		if len(cmds) == 1000 {
			apply(cmds...)
			cmds = cmds[:0]
		}
	}
	apply(cmds...)
	all := make([]uint64, members)
	for i := range all {
		all[i] = uint64(i + 1)
	}
	group := apply(&engine.Command{Op: engine.OpCreateGroup, User: 1, Name: "all", Members: all[1:1000]})[0].(*engine.Result).Conv
	for i := 1000; i < members; i += 1000 {
		apply(&engine.Command{Op: engine.OpAddMembers, User: 1, Conv: group, Members: all[i:min(i+1000, members)]})
	}
	dm := apply(&engine.Command{Op: engine.OpOpenDirect, User: members + 1, Peer: members + 2})[0].(*engine.Result).Conv

	env := startHotpath(b, members, e)
	sent := 0 // cmids are unique across runs: a repeated one is a duplicate, with no event
	for _, mode := range []string{"inline", "stage"} {
		b.Run(mode, func(b *testing.B) {
			if mode == "inline" {
				e.SetPublisher(inlinePublisher{env.n})
			} else {
				e.SetPublisher(env.n)
			}
			defer e.SetPublisher(nil)
			var lat []time.Duration
			base := env.reader.frames()
			b.ResetTimer()
			for i := range b.N {
				sent++
				start := time.Now()
				apply(&engine.Command{Op: engine.OpSend, User: 1, Device: 1, Conv: group, ClientMsgID: fmt.Sprintf("g%d", sent), Body: "to all"})
				apply(&engine.Command{Op: engine.OpSend, User: members + 1, Device: members + 1, Conv: dm, ClientMsgID: fmt.Sprintf("d%d", sent), Body: "to one"})
				lat = append(lat, time.Since(start))
				// The next broadcast once the reader has this one, so
				// that each is measured against drained queues.
				env.reader.waitFrames(base + uint64(members*(i+1)))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "ack-p50-us")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "ack-p99-us")
		})
	}
}
