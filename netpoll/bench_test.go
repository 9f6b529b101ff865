package netpoll

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"parley/internal/testwait"
)

// BenchmarkBroadcast sends one prepared frame to every connection per op,
// over loopback to raw clients that count what they read. Senders stay at
// most a window of frames ahead of the slowest client, and the timer stops
// only after every client has read every frame.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("conns=%d", n), func(b *testing.B) { benchBroadcast(b, n) })
	}
}

func benchBroadcast(b *testing.B, n int) {
	h := newTestHandler()
	cfg := testConfig()
	cfg.SendQueueBytes = 16 << 20
	s := startServer(b, cfg, h)
	frame := PrepareBinary(bytes.Repeat([]byte{'m'}, 128))

	received := make([]atomic.Int64, n) // frames read per client
	for i := range n {
		c := upgradeRaw(b, s.Addr())
		go func() {
			buf := make([]byte, 64<<10)
			var total int64
			for {
				_ = c.conn.SetReadDeadline(time.Time{})
				k, err := c.r.Read(buf)
				total += int64(k)
				received[i].Store(total / int64(len(frame)))
				if err != nil {
					return
				}
			}
		}()
	}
	testwait.Eventually(b, "all connections open", func() bool { return s.Stats().OpenConnections == int64(n) })
	conns := h.openConns()
	minReceived := func() int64 {
		m := received[0].Load()
		for i := range received {
			m = min(m, received[i].Load())
		}
		return m
	}

	const window = 256
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for _, c := range conns {
			if err := c.Send(frame); err != nil {
				b.Fatal(err)
			}
		}
		if i%64 == 63 {
			for minReceived() < int64(i+1-window) {
				runtime.Gosched()
			}
		}
	}
	deadline := time.Now().Add(time.Minute)
	for minReceived() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("clients read %d of %d frames", minReceived(), b.N)
		}
		runtime.Gosched()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
}

// BenchmarkIdleConnMemory reports the server's memory per idle upgraded
// connection, measured with 2,000 connections from raw sockets of this
// process (which hold no Go memory). Run it with -benchtime=1x.
func BenchmarkIdleConnMemory(b *testing.B) {
	heap, rss := measureIdleConnMemory(b, 2000)
	b.ReportMetric(heap, "heapB/conn")
	b.ReportMetric(rss, "rssB/conn")
}

// TestIdleConnMemory keeps the per-connection cost honest: well under the
// 2 KiB budget, gnet's share included.
func TestIdleConnMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("measures memory; skipped in -short and under the race detector")
	}
	heap, rss := measureIdleConnMemory(t, 500)
	t.Logf("idle connection: %.0f heap bytes, %.0f RSS bytes", heap, rss)
	if heap > 1536 {
		t.Fatalf("%.0f heap bytes per idle connection, budget 1536", heap)
	}
}

func measureIdleConnMemory(tb testing.TB, n int) (heapPerConn, rssPerConn float64) {
	h := newTestHandler()
	cfg := testConfig()
	s := startServer(tb, cfg, h)
	host, portStr, _ := net.SplitHostPort(s.Addr())
	port, _ := strconv.Atoi(portStr)
	var addr unix.SockaddrInet4
	copy(addr.Addr[:], net.ParseIP(host).To4())
	addr.Port = port
	req := []byte(upgradeRequest("/v1/ws?token=good"))

	heap0, rss0 := memoryInUse(tb)
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}()
	for range n {
		fd, err := rawUpgrade(&addr, req)
		if err != nil {
			tb.Fatalf("connection %d: %v", len(fds), err)
		}
		fds = append(fds, fd)
	}
	testwait.Eventually(tb, "all connections open", func() bool { return s.Stats().OpenConnections == int64(n) })
	heap1, rss1 := memoryInUse(tb)
	return float64(heap1-heap0) / float64(n), float64(rss1-rss0) / float64(n)
}

// rawUpgrade opens a socket with system calls and completes a handshake.
func rawUpgrade(addr *unix.SockaddrInet4, req []byte) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	tv := unix.NsecToTimeval(int64(ioGuard))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Connect(fd, addr); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if _, err := unix.Write(fd, req); err != nil {
		unix.Close(fd)
		return -1, err
	}
	var buf [512]byte
	got := 0
	for !bytes.Contains(buf[:got], headerEnd) {
		k, err := unix.Read(fd, buf[got:])
		if err != nil || k == 0 {
			unix.Close(fd)
			return -1, fmt.Errorf("reading the 101: %v (got %q)", err, buf[:got])
		}
		got += k
	}
	if !bytes.HasPrefix(buf[:got], []byte("HTTP/1.1 101 ")) {
		unix.Close(fd)
		return -1, fmt.Errorf("refused: %q", buf[:got])
	}
	return fd, nil
}

// memoryInUse returns the live heap after a GC, and the process RSS.
func memoryInUse(tb testing.TB) (heap, rss int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f, err := os.Open("/proc/self/statm")
	if err != nil {
		return int64(ms.HeapAlloc), 0
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	fields := strings.Fields(string(b))
	if len(fields) > 1 {
		pages, _ := strconv.ParseInt(fields[1], 10, 64)
		rss = pages * int64(os.Getpagesize())
	}
	return int64(ms.HeapAlloc), rss
}

// BenchmarkDecodeFrames measures the read path on frames that lie whole in
// one buffer, as most do.
func BenchmarkDecodeFrames(b *testing.B) {
	one := clientFrame(true, opText, bytes.Repeat([]byte("chat message "), 10))
	frames := bytes.Repeat(one, 100)
	buf := make([]byte, len(frames))
	var d decoder
	var sink nopSink
	b.SetBytes(int64(len(frames)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, frames)
		if _, err := d.feed(buf, DefaultMaxMessageSize, &sink); err != nil {
			b.Fatal(err)
		}
	}
}
