//go:build unix

package bench

import "syscall"

// receiveBufferControl returns a net.Dialer Control that sets the socket's
// SO_RCVBUF to n before it connects. Shrinking the buffer after the
// handshake would not do: the peer may already send into the window it was
// offered, Linux then drops those segments, and the connection crawls on
// retransmission timeouts once it reads again.
func receiveBufferControl(n int) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
		}); err != nil {
			return err
		}
		return serr
	}
}
