//go:build !unix

package bench

import "syscall"

// receiveBufferControl is nil where the harness does not set socket
// buffers: a slow receiver keeps the system's default receive buffer.
func receiveBufferControl(int) func(network, address string, c syscall.RawConn) error { return nil }
