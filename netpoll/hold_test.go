package netpoll

import (
	"sync"
	"testing"

	"parley/internal/testwait"
)

// TestHoldCoalescesWrites: frames queued for one connection by two
// goroutines while the server is held leave in one write at the last
// Release, and nothing is written before it.
func TestHoldCoalescesWrites(t *testing.T) {
	h := newTestHandler()
	s := startServer(t, testConfig(), h)
	rc := upgradeRaw(t, s.Addr())
	c := h.waitOpened(t)
	before := s.Stats()

	s.Hold()
	s.Hold() // nested: a second holder, as the node's apply and fan-out stages are
	var senders sync.WaitGroup
	for _, p := range []string{"ack", "event"} {
		senders.Go(func() {
			if err := c.Send(PrepareBinary([]byte(p))); err != nil {
				t.Error(err)
			}
		})
	}
	senders.Wait()
	s.Release()
	// Still held: the wake waits, the frames are queued, nothing written.
	if !c.loop.wakeHeld.Load() {
		t.Fatal("a Send under a hold woke its loop")
	}
	c.mu.Lock()
	queued := len(c.pending.frames)
	c.mu.Unlock()
	if queued != 2 {
		t.Fatalf("%d frames queued under the hold, want 2", queued)
	}
	if st := s.Stats(); st.FrameWrites != before.FrameWrites {
		t.Fatalf("%d writes under the hold", st.FrameWrites-before.FrameWrites)
	}

	s.Release()
	got := map[string]bool{}
	for range 2 {
		op, payload, err := rc.readFrame()
		if err != nil || op != opBinary {
			t.Fatalf("frame op %d, err %v", op, err)
		}
		got[string(payload)] = true
	}
	if !got["ack"] || !got["event"] {
		t.Fatalf("got %v", got)
	}
	// The loop counts after the write returns, which may be after the read.
	testwait.Eventually(t, "frames counted", func() bool { return s.Stats().FramesOut-before.FramesOut == 2 })
	st := s.Stats()
	if w, f := st.FrameWrites-before.FrameWrites, st.FramesOut-before.FramesOut; w != 1 || f != 2 {
		t.Fatalf("%d frames in %d writes, want 2 in 1", f, w)
	}

	// Unheld again: a Send wakes its loop at once.
	if err := c.Send(PrepareBinary([]byte("later"))); err != nil {
		t.Fatal(err)
	}
	if _, payload, err := rc.readFrame(); err != nil || string(payload) != "later" {
		t.Fatalf("after the hold: %q, %v", payload, err)
	}
}

func TestReleaseWithoutHoldPanics(t *testing.T) {
	s := startServer(t, testConfig(), newTestHandler())
	defer func() {
		if recover() == nil {
			t.Fatal("Release without Hold did not panic")
		}
		s.holds.Store(0)
	}()
	s.Release()
}
