//go:build linux

package bench

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// BenchmarkLoopbackFloor measures what the kernel alone charges for one
// hop of a chat message over loopback TCP: a small write on one socket and
// the read of it on the other, made with raw system calls over many
// connections, with no event loop, no wake-up and no user-space work in
// between. A 1:1 message takes at least three such hops (the send, the
// ack with the sender's echo, the recipient's event), so three times
// cpu-µs/hop is a floor on the CPU of node and harness together per
// message on the machine that runs it (docs/BENCHMARKS.md, "The budget").
// On loopback the write also runs the receiving side of TCP, which is why
// it costs more than the read.
func BenchmarkLoopbackFloor(b *testing.B) {
	const conns, size = 1000, 100 // about a sent message's frame
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	writers := make([]int, conns)
	readers := make([]int, conns)
	for i := range conns {
		w, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		r, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		writers[i], readers[i] = rawFD(b, w), rawFD(b, r)
	}
	msg := make([]byte, size)
	buf := make([]byte, 4096)
	hop := func(i int) {
		if n, err := syscall.Write(writers[i], msg); err != nil || n != size {
			b.Fatalf("write: %d, %v", n, err)
		}
		for {
			// The write has queued the bytes on the reader's socket by the
			// time it returns on loopback; EAGAIN here would be a surprise,
			// but is not an error.
			n, err := syscall.Read(readers[i], buf)
			if errors.Is(err, syscall.EAGAIN) {
				continue
			}
			if err != nil || n != size {
				b.Fatalf("read: %d, %v", n, err)
			}
			return
		}
	}
	for i := range conns { // warm up every socket once
		hop(i)
	}
	cpu0, sys0 := processCPU()
	for i := 0; b.Loop(); i++ {
		hop(i % conns)
	}
	b.StopTimer()
	cpu1, sys1 := processCPU()
	n := float64(b.N)
	b.ReportMetric(float64((cpu1-cpu0)-(sys1-sys0))/n/1e3, "user-µs/hop")
	b.ReportMetric(float64(sys1-sys0)/n/1e3, "sys-µs/hop")
}

// rawFD is the file descriptor of a TCP connection, for raw system calls.
// The runtime has already made it non-blocking; it stays valid while the
// connection is open.
func rawFD(b *testing.B, c net.Conn) int {
	b.Helper()
	tc := c.(*net.TCPConn)
	if err := tc.SetNoDelay(true); err != nil {
		b.Fatal(err)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var fd int
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		b.Fatal(err)
	}
	return fd
}
