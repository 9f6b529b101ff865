package netpoll

import (
	"syscall"
	"testing"
)

// TestSocketSendBufferIsFixed: accepted sockets carry the configured
// SO_SNDBUF (Linux reports twice the value set), not the kernel's
// autotuned default, so a client that stops reading cannot park megabytes
// in the kernel.
func TestSocketSendBufferIsFixed(t *testing.T) {
	for _, tc := range []struct {
		set  int
		want func(got int) bool
	}{
		{64 << 10, func(got int) bool { return got == 128<<10 }},
		{0, func(got int) bool { return got == 2*DefaultSocketSendBuffer }},
	} {
		h := newTestHandler()
		cfg := testConfig()
		cfg.SocketSendBuffer = tc.set
		s := startServer(t, cfg, h)
		dialGWS(t, s.Addr(), "?token=good")
		c := h.waitOpened(t)
		got, err := syscall.GetsockoptInt(c.gc.Fd(), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		if err != nil {
			t.Fatal(err)
		}
		if !tc.want(got) {
			t.Fatalf("SocketSendBuffer %d: SO_SNDBUF is %d", tc.set, got)
		}
	}
}
