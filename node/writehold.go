package node

import (
	"sync/atomic"

	"parley/engine"
	"parley/netpoll"
)

// writeHold makes the reply to a command and the events of its entry leave
// in one write per connection. The reply is written by Raft's callback on
// the apply goroutine, the events by the fan-out stage on its own; each
// Send wakes the connection's event loop, so the sender of a 1:1 message
// got its ack and the echo of its own message in two writes (measured at
// 20k msg/s, 1,000 pairs: 2.5 socket writes per message, 2.3 with the
// hold, whose floor is 2 plus the loops' wake-ups; node CPU per message
// 45.4 -> 43.8 µs).
//
// When an entry's events are published, the hold takes two holds on the
// WebSocket server (netpoll.Server.Hold): one that the apply goroutine
// releases once the entry's callbacks have run (EntryDone), one that the
// fan-out stage releases once it has queued the entry's events. The loops
// are woken at the later of the two, and write each connection's frames
// together.
//
// A hold defers every connection's writes, so it is taken only when the
// fan-out stage is idle (the hold never waits behind other entries'
// deliveries) and the entry has at most maxHeldRecipients recipients (a
// message to a large group is delivered, and its ack sent, as before).
type writeHold struct {
	ws atomic.Pointer[netpoll.Server] // nil until the listener exists

	// applyHeld is the server the current entry's apply-side hold was
	// taken on; the apply goroutine alone reads and writes it.
	applyHeld *netpoll.Server
}

// maxHeldRecipients bounds the deliveries an entry's hold waits for, and
// so how long it defers every other connection's writes. It is above the
// largest 1:1 entries measured under overload (at 100k msg/s offered,
// about 750 sends: 1,500 recipients).
const maxHeldRecipients = 4096

// published is called by Publish on the apply goroutine. It returns the
// server the fan-out stage must Release after delivering events, or nil.
func (h *writeHold) published(events []engine.Event, fanoutIdle bool) *netpoll.Server {
	ws := h.ws.Load()
	if ws == nil || !fanoutIdle {
		return nil
	}
	n := 0
	for i := range events {
		if n += len(events[i].Recipients); n > maxHeldRecipients {
			return nil
		}
	}
	ws.Hold() // the apply goroutine's: entryDone
	ws.Hold() // the fan-out stage's
	h.applyHeld = ws
	return ws
}

// entryDone is called on the apply goroutine once an entry's callbacks
// have run.
func (h *writeHold) entryDone() {
	if ws := h.applyHeld; ws != nil {
		h.applyHeld = nil
		ws.Release()
	}
}
