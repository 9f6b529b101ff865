package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestIsSlowSpreadsEvenly(t *testing.T) {
	for _, frac := range []float64{0, 0.1, 0.25, 0.5, 1} {
		const n = 1000
		if got, want := countSlow(n, frac), int(n*frac); got != want {
			t.Errorf("frac %v: %d slow of %d, want %d", frac, got, n, want)
		}
		if frac == 0 {
			continue
		}
		// Every block of 1/frac consecutive receivers holds exactly one.
		block := int(1 / frac)
		for b := 0; b+block <= n; b += block {
			k := 0
			for i := b; i < b+block; i++ {
				if isSlow(i, frac) {
					k++
				}
			}
			if k != 1 {
				t.Fatalf("frac %v: %d slow in [%d, %d)", frac, k, b, b+block)
			}
		}
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept() // nil on error: the test fails below
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// A paused gatedConn reads nothing: the peer's writes fill the socket
// buffers and then block; once resumed, every byte arrives.
func TestGatedConnPauseStopsTheSocket(t *testing.T) {
	raw, srv := tcpPair(t)
	g := newGatedConn(raw)

	// Unpaused, reads work.
	if _, err := srv.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(g, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}

	g.pause()
	reader := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, g) // waits at the gate, then reads to EOF
		reader <- n
	}()
	// The writer must block within a bounded number of writes: nobody
	// reads. 64 MiB is far beyond any loopback buffer.
	chunk := make([]byte, 64<<10)
	var written int64
	blocked := false
	for range 1024 {
		_ = srv.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := srv.Write(chunk)
		written += int64(n)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			blocked = true
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !blocked {
		t.Fatalf("wrote %d bytes to a paused reader without blocking", written)
	}

	g.resume()
	_ = srv.SetWriteDeadline(time.Time{})
	srv.Close()
	select {
	case n := <-reader:
		if n != written {
			t.Fatalf("read %d of the %d bytes written", n, written)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the resumed reader did not reach EOF (%d written)", written)
	}
}

func TestGatedConnCloseWakesAPausedRead(t *testing.T) {
	raw, _ := tcpPair(t)
	g := newGatedConn(raw)
	g.pause()
	done := make(chan error, 1)
	go func() {
		_, err := g.Read(make([]byte, 1))
		done <- err
	}()
	g.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a paused read outlived Close")
	}
}

// Slow receivers in a direct run: their senders keep sending, the server
// drops them, the other pairs deliver everything.
func TestEndToEndDirectSlow(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a node")
	}
	node := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Pair 1 of 2 is slow. Each sender sends 60 messages/s of 16 KB for
	// 3 s, on a schedule (a window of 200 covers any ack delay short of
	// 3 s): about 2.9 MB, more than the server's 1 MiB send queue plus the
	// socket buffers of a receiver that stopped reading (256 KiB send,
	// 8 KiB receive), and less than the reading receiver's 4 MiB receive
	// buffer, which the kernel fills whether or not the receiver's process
	// gets the CPU: only the slow one is dropped, however loaded the
	// machine.
	sc := &Direct{Senders: 2, Rate: 120, Window: 200, BodyBytes: 16000, Slow: 0.5, Drain: 30 * time.Second,
		ReceiveBuffer: 4 << 20}
	rep, err := Run(ctx, sc, Options{
		HTTP: []string{node.http}, WS: []string{node.ws},
		Settle: 100 * time.Millisecond, Duration: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Result
	if rep.Failed() || res.Acked == 0 || res.Undelivered != 0 {
		t.Fatalf("failures %q, result %+v", rep.Failures, res)
	}
	if got := res.Counters[cntSlowDisconnected]; got != 1 {
		t.Fatalf("%d slow receivers disconnected, want 1; counters %v", got, res.Counters)
	}
	if v, ok := figure(rep, "server queue overflows during the load"); !ok || v < 1 {
		t.Fatalf("overflows %v (%v); figures %+v", v, ok, rep.Figures)
	}
	if !hasFigurePrefix(rep, "server RSS peak") {
		t.Fatalf("no RSS series in %+v", rep.Figures)
	}
	// Only the reading pair's messages are delivered, all of them.
	if res.Delivered == 0 || res.Delivered >= res.Acked {
		t.Fatalf("%d delivered of %d acked: the slow pair's must not count", res.Delivered, res.Acked)
	}
}

func hasFigurePrefix(rep *Report, prefix string) bool {
	for _, f := range rep.Figures {
		if strings.HasPrefix(f.Name, prefix) {
			return true
		}
	}
	return false
}
