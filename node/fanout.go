package node

import (
	"sync"
	"sync/atomic"

	"parley/engine"
	"parley/netpoll"
)

// fanout is the stage between Apply and the sockets. The engine publishes
// each applied entry's events on Raft's FSM goroutine with its apply lock
// held; delivering them there would hold every later apply, and so every
// ack, for the whole fan-out of the entry: one message to a group of
// 10,000 online members costs milliseconds of socket queueing. Publish
// only hands the entry's events to this stage, which delivers them on its
// own goroutine, in the order they were applied.
//
// One goroutine, not one per hub shard: it keeps every connection's frames
// in log order (events, receipts and revocations alike) with no
// coordination, and the work it does is queueing frames for netpoll's
// loops, which write the sockets on their own goroutines. The queue is
// bounded: when it is full (the stage is behind by fanoutQueue entries)
// Publish waits, so a flood slows Apply instead of growing memory.
type fanout struct {
	ch     chan fanoutEntry
	queued atomic.Int64 // entries published and not yet delivered
	done   sync.WaitGroup
}

// fanoutEntry is one applied entry's events; held, if not nil, is the
// WebSocket server to Release once they are queued (writehold.go).
type fanoutEntry struct {
	events []engine.Event
	held   *netpoll.Server
}

// fanoutQueue is how many applied entries may wait for delivery.
const fanoutQueue = 4096

func startFanout(deliver func([]engine.Event)) *fanout {
	f := &fanout{ch: make(chan fanoutEntry, fanoutQueue)}
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		for e := range f.ch {
			deliver(e.events)
			// Idle before the release: once the frames leave, the next
			// entry (a reply to them, say) finds the stage idle.
			f.queued.Add(-1)
			if e.held != nil {
				e.held.Release()
			}
		}
	}()
	return f
}

// publish queues an entry's events for delivery.
func (f *fanout) publish(events []engine.Event, held *netpoll.Server) {
	f.queued.Add(1)
	f.ch <- fanoutEntry{events, held}
}

// idle reports whether every published entry has been delivered.
func (f *fanout) idle() bool { return f.queued.Load() == 0 }

// stop delivers what is queued and ends the stage. Nothing may publish
// after it (Raft is closed first).
func (f *fanout) stop() {
	close(f.ch)
	f.done.Wait()
}
