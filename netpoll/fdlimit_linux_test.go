package netpoll

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"parley/internal/testwait"
)

const fdChildEnv = "NETPOLL_FD_CHILD"

// TestAcceptSurvivesDescriptorExhaustion runs a server with no caps in a
// child process (this test binary again) whose descriptor limit is a few
// above what it holds, floods it past that limit, and checks that the
// listener lives on: gnet's own acceptor would have shut the engine down on
// the first EMFILE, dropping every connection. The flood's sockets are all
// answered (101, 503, or closed unanswered) and none waits.
func TestAcceptSurvivesDescriptorExhaustion(t *testing.T) {
	if os.Getenv(fdChildEnv) == "1" {
		runFDChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptSurvivesDescriptorExhaustion$", "-test.count=1")
	cmd.Env = append(os.Environ(), fdChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(lockedBuffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child log:\n%s", stderr.String())
		}
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(prefix string) string {
		t.Helper()
		timeout := time.After(60 * time.Second) // the child builds nothing; this only stops a hang
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child exited before printing %q", prefix)
				}
				if rest, found := strings.CutPrefix(l, prefix); found {
					return rest
				}
			case <-timeout:
				t.Fatalf("child did not print %q", prefix)
			}
		}
	}
	addr := next("addr ")
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	first := upgradeRaw(t, addr)

	// Another part of the process takes every descriptor left: accept
	// itself fails with EMFILE. The reserve descriptor answers each
	// waiting socket 503, and the open connection is unaffected.
	say("hog")
	next("hogged ")
	//
	// If a descriptor comes free in the child meanwhile, one accept
	// succeeds, the loop cannot dup the socket, and that one socket is
	// dropped unanswered; from then on each socket is checked first and
	// answered 503 (admit, fdShort). That drop happened once in CI, so one
	// is allowed here, as the flood below allows its own.
	shed, unanswered := 0, 0
	for range 6 {
		// The 503 comes at accept, before the request is read; a request
		// written first may still be unread when the server closes, and
		// then the kernel resets the connection before the client reads
		// the answer (seen in CI). So the client only reads.
		c := dialRaw(t, addr)
		_ = c.conn.SetReadDeadline(time.Now().Add(ioGuard))
		resp, err := http.ReadResponse(c.r, nil)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatal("out of descriptors: a socket got no answer")
		case err != nil:
			unanswered++
			c.conn.Close()
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), reasonNoFD) {
			t.Fatalf("out of descriptors: %s %v %q", resp.Status, resp.Header, body)
		}
		shed++
		c.conn.Close()
	}
	if shed < 5 || unanswered > 1 {
		t.Fatalf("out of descriptors: %d answered 503, %d dropped unanswered; want at most one dropped", shed, unanswered)
	}
	first.write(clientFrame(true, opText, []byte("hogged")))
	first.expectFrame(opText, []byte("hogged"))
	say("health")
	// Not ready: accept fails for want of a descriptor, or, after the drop
	// above, accept works but the loops cannot take the sockets.
	got := next("health ")
	failing := strings.HasPrefix(got, "alive=<nil> ready=netpoll: accept failing") && strings.Contains(got, "too many open files")
	if !failing && got != "alive=<nil> ready="+ErrOutOfDescriptors.Error() {
		t.Fatalf("child health while out of descriptors: %s", got)
	}
	say("free")
	next("freed")

	// Now the server's own sockets use the descriptors up.
	var upgraded, refused, dropped int
	var flood []*rawClient
	for range 60 {
		c := dialRaw(t, addr)
		flood = append(flood, c)
		c.write([]byte(upgradeRequest("/v1/ws?token=good")))
		_ = c.conn.SetReadDeadline(time.Now().Add(ioGuard))
		resp, err := http.ReadResponse(c.r, nil)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatal("a socket got no answer")
		case err != nil:
			dropped++ // accepted with the last descriptor, dropped unanswered
		case resp.StatusCode == http.StatusSwitchingProtocols:
			upgraded++
		case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), reasonNoFD) {
				t.Fatalf("503 %q", body)
			}
			refused++
		default:
			t.Fatalf("got %s", resp.Status)
		}
	}
	t.Logf("flood: %d upgraded, %d refused with 503, %d dropped", upgraded, refused, dropped)
	if upgraded == 0 || refused == 0 || dropped > 2 {
		t.Fatalf("flood: %d upgraded, %d refused, %d dropped", upgraded, refused, dropped)
	}

	// The connection from before the flood was never dropped.
	first.write(clientFrame(true, opText, []byte("still here")))
	first.expectFrame(opText, []byte("still here"))

	// The flood goes away; the listener takes new connections again.
	for _, c := range flood {
		c.conn.Close()
	}
	testwait.Eventually(t, "an upgrade after the flood", func() bool {
		c := dialRaw(t, addr)
		resp, _ := c.request(upgradeRequest("/v1/ws?token=good"))
		c.conn.Close()
		return resp.StatusCode == http.StatusSwitchingProtocols
	})
	first.write(clientFrame(true, opText, []byte("and now")))
	first.expectFrame(opText, []byte("and now"))

	say("health")
	if got := next("health "); got != "alive=<nil> ready=<nil>" {
		t.Fatalf("child health after the flood: %s", got)
	}

	// One descriptor left: accept takes it, the loop cannot dup the
	// socket, and that socket is dropped unanswered; the next ones are
	// answered 503, and the server is not ready until descriptors come
	// free, although accept works.
	say("hog-but-one")
	next("hogged ")
	c := dialRaw(t, addr)
	_ = c.conn.SetReadDeadline(time.Now().Add(ioGuard))
	if _, err := http.ReadResponse(c.r, nil); err == nil {
		t.Fatal("one descriptor left: the socket that took it was answered")
	}
	c.conn.Close()
	c = dialRaw(t, addr)
	_ = c.conn.SetReadDeadline(time.Now().Add(ioGuard))
	if resp, err := http.ReadResponse(c.r, nil); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("one descriptor left, after the drop: %v %v", resp, err)
	}
	c.conn.Close()
	say("health")
	if got := next("health "); got != "alive=<nil> ready="+ErrOutOfDescriptors.Error() {
		t.Fatalf("child health with one descriptor left: %s", got)
	}
	first.write(clientFrame(true, opText, []byte("one left")))
	first.expectFrame(opText, []byte("one left"))
	say("free")
	next("freed")

	_ = stdin.Close() // the child reports and exits
	if got := next("health "); got != "alive=<nil> ready=<nil>" {
		t.Fatalf("child health after descriptors came free: %s", got)
	}
	for _, bad := range []string{"engine is being shutdown", "reactor is exiting", "Accept() failed"} {
		if strings.Contains(stderr.String(), bad) {
			t.Fatalf("child log says %q", bad)
		}
	}
}

// runFDChild is the child: a server with no caps, then a descriptor limit
// 16 above what the process holds.
func runFDChild() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := NewServer(Config{Addr: "127.0.0.1:0", NumEventLoops: 1, TickInterval: 10 * time.Millisecond, Logger: logger}, newTestHandler())
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fds, err := os.ReadDir("/proc/self/fd")
	var lim syscall.Rlimit
	if err == nil {
		err = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if err == nil {
		lim.Cur = uint64(len(fds) + 16)
		err = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("addr", s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	health := func() { fmt.Printf("health alive=%v ready=%v\n", s.Alive(), s.Ready(ctx)) }
	var hog []*os.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() { // until the parent closes stdin
		switch sc.Text() {
		case "hog", "hog-but-one": // every free descriptor, or all but one
			for {
				f, err := os.Open(os.DevNull)
				if err != nil {
					break
				}
				hog = append(hog, f)
			}
			if sc.Text() == "hog-but-one" {
				_ = hog[len(hog)-1].Close()
				hog = hog[:len(hog)-1]
			}
			fmt.Println("hogged", len(hog))
		case "free":
			for _, f := range hog {
				_ = f.Close()
			}
			hog = nil
			fmt.Println("freed")
		case "health":
			health()
		}
	}
	health()
	logger.Info("child stats", "stats", fmt.Sprintf("%+v", s.Stats()))
	_ = s.Stop(ctx)
}

// lockedBuffer is a bytes.Buffer for a child's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
