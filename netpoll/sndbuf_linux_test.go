package netpoll

import (
	"syscall"
	"testing"
	"time"
)

// sndbufHandler reads each new connection's SO_SNDBUF in OnOpen, on the
// event loop that owns the connection's gnet.Conn.
type sndbufHandler struct {
	*testHandler
	sndbuf chan int
}

func (h *sndbufHandler) OnOpen(c *Conn) {
	v, err := syscall.GetsockoptInt(c.gc.Fd(), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	if err != nil {
		v = -1
	}
	h.sndbuf <- v
	h.testHandler.OnOpen(c)
}

// TestSocketSendBufferIsFixed: accepted sockets carry the configured
// SO_SNDBUF (Linux reports twice the value set), not the kernel's
// autotuned default, so a client that stops reading cannot park megabytes
// in the kernel.
func TestSocketSendBufferIsFixed(t *testing.T) {
	for _, tc := range []struct {
		set, want int
	}{
		{64 << 10, 128 << 10},
		{0, 2 * DefaultSocketSendBuffer},
	} {
		h := &sndbufHandler{testHandler: newTestHandler(), sndbuf: make(chan int, 1)}
		cfg := testConfig()
		cfg.SocketSendBuffer = tc.set
		s := startServer(t, cfg, h)
		dialGWS(t, s.Addr(), "?token=good")
		select {
		case got := <-h.sndbuf:
			if got != tc.want {
				t.Fatalf("SocketSendBuffer %d: SO_SNDBUF is %d, want %d", tc.set, got, tc.want)
			}
		case <-time.After(ioGuard):
			t.Fatal("the connection never opened")
		}
	}
}
