package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"parley/engine"
	"parley/netpoll"
	"parley/wire"
)

// The hot-path benchmarks measure the server side of delivery with real
// loopback sockets. The sockets are read by a child process (this test
// binary re-executed as TestHotpathReaderProcess) that reads with epoll,
// counts binary frames and discards the bytes, so:
//
//   - the server process holds only its own sockets (10,000 members need
//     20,000 descriptors in all, over one process's limit here);
//   - the CPU this process uses (getrusage) is the server's: Publish, the
//     hub, netpoll and its socket writes, plus the benchmark's driver loop;
//     the reader's is reported apart (reader-cpu-ns/frame);
//   - a profile shows the server alone (PARLEY_HOTPATH_PROFILE=dir profiles
//     the timed part only; -cpuprofile also has the connection setup).
//
// Neither goes through Raft: Apply is called directly, as raftlog's FSM
// goroutine calls it, so what is measured is the CPU path around it.

// hotpathEnv is a bench server: a partial Node (hub, metrics, engine when
// needed) behind a netpoll server whose handler registers each connection
// as the session of the user named in its query.
type hotpathEnv struct {
	n      *Node
	ws     *netpoll.Server
	reader *benchReader
}

// benchHandler accepts "?u=<user>" connections (device = user) and puts
// them in the hub, as Node.OnOpen does, without the hello.
type benchHandler struct{ n *Node }

func (h benchHandler) Authorize(r *netpoll.Request) (any, int, string) {
	u, err := strconv.ParseUint(r.Query.Get("u"), 10, 64)
	if err != nil || u == 0 {
		return nil, 400, "u"
	}
	return &session{user: u, device: u, limiter: rate.NewLimiter(rate.Inf, 1)}, 0, ""
}

func (h benchHandler) OnOpen(c *netpoll.Conn) {
	s := c.Session().(*session)
	s.conn = c
	h.n.hub.add(s)
}

func (h benchHandler) OnMessage(*netpoll.Conn, bool, []byte) {}

func (h benchHandler) OnClose(c *netpoll.Conn, _ error) {
	s := c.Session().(*session)
	s.closed.Store(true)
	h.n.hub.remove(s)
}

// startHotpath starts the server and a reader process holding conns
// connections, as users 1..conns.
func startHotpath(b testing.TB, conns int, e *engine.Engine) *hotpathEnv {
	b.Helper()
	n := &Node{
		cfg:     DefaultConfig(),
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		metrics: newMetrics(),
		hub:     newHub(),
		engine:  e,
	}
	ws, err := netpoll.NewServer(netpoll.Config{Addr: "127.0.0.1:0", Logger: n.log}, benchHandler{n})
	if err != nil {
		b.Fatal(err)
	}
	if err := ws.Start(); err != nil {
		b.Fatal(err)
	}
	n.fanout = startFanout(n.deliver)
	env := &hotpathEnv{n: n, ws: ws}
	b.Cleanup(func() {
		n.fanout.stop()
		if env.reader != nil {
			env.reader.stop()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ws.Stop(ctx) // not b.Context(): it is canceled before cleanups run
	})
	env.reader = startBenchReader(b, ws.Addr(), conns)
	deadline := time.Now().Add(time.Minute)
	for n.hub.count() < conns {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sessions open", n.hub.count(), conns)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return env
}

// profileTimed profiles the timed part of a benchmark alone (without the
// setup of thousands of connections, which -cpuprofile includes) when
// PARLEY_HOTPATH_PROFILE names a directory: it writes <dir>/<name>.cpu.
// Call the returned function when the timed part ends.
func profileTimed(b *testing.B) func() {
	dir := os.Getenv("PARLEY_HOTPATH_PROFILE")
	if dir == "" {
		return func() {}
	}
	name := regexp.MustCompile(`[^A-Za-z0-9=]+`).ReplaceAllString(b.Name(), "_")
	f, err := os.Create(fmt.Sprintf("%s/%s.cpu", dir, name))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// reportWrites reports the frames the server wrote per system call.
func reportWrites(b *testing.B, before, after netpoll.Stats) {
	if w := after.FrameWrites - before.FrameWrites; w > 0 {
		b.ReportMetric(float64(after.FramesOut-before.FramesOut)/float64(w), "frames/write")
	}
}

// cpuNow is this process's user+system CPU time.
func cpuNow() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanout publishes committed message events to a group of N
// online members on this node: Node.Publish encodes each once, the hub
// hands the frame to every session, netpoll queues, flushes and writes it.
// An op is one Publish of an entry of `entry` events; the publisher stays
// at most `window` ops ahead of what the reader has (window=1: each entry
// is delivered whole before the next is published, so nothing piles up to
// be written together), and the timer stops once the reader has every
// frame. frames/write shows how much the loops coalesced.
func BenchmarkFanout(b *testing.B) {
	cases := []struct{ members, window, entry int }{
		{100, 32, 1}, {1000, 32, 1}, {10_000, 32, 1},
		{1000, 1, 1}, {1000, 1, 16}, {10_000, 1, 1},
	}
	body := strings.Repeat("b", 100)
	var env *hotpathEnv
	for _, tc := range cases {
		if env == nil || env.n.hub.count() != tc.members {
			if env != nil {
				env.reader.stop()
				env.reader = nil
			}
			env = startHotpath(b, tc.members, nil)
		}
		recipients := make([]uint64, tc.members)
		for i := range recipients {
			recipients[i] = uint64(i + 1)
		}
		b.Run(fmt.Sprintf("members=%d,window=%d,entry=%d", tc.members, tc.window, tc.entry), func(b *testing.B) {
			base := env.reader.frames()
			events := make([]engine.Event, tc.entry)
			perOp := uint64(tc.members * tc.entry)
			stopProfile := profileTimed(b)
			cpu0, rcpu0, st0 := cpuNow(), env.reader.cpu(), env.ws.Stats()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				for j := range events {
					seq := uint64(i*tc.entry + j + 1)
					events[j] = engine.Event{
						Conv: 42, Seq: seq, Index: uint64(i + 1), Ts: time.Now().UnixMilli(), Kind: engine.EventMessage,
						From: 1, Device: 1, ClientMsgID: "c-0123456789", Body: body, Recipients: recipients,
					}
				}
				env.n.Publish(events)
				if i+1 >= tc.window {
					env.reader.waitFrames(base + perOp*uint64(i+1-tc.window))
				}
			}
			env.reader.waitFrames(base + perOp*uint64(b.N))
			b.StopTimer()
			stopProfile()
			d := float64(perOp) * float64(b.N)
			b.ReportMetric(d/b.Elapsed().Seconds(), "deliveries/s")
			b.ReportMetric(float64(cpuNow()-cpu0)/d, "cpu-ns/delivery")
			b.ReportMetric(float64(env.reader.cpu()-rcpu0)/d, "reader-cpu-ns/frame")
			reportWrites(b, st0, env.ws.Stats())
		})
	}
	env.reader.stop()
	env.reader = nil
}

// applier applies commands to an engine directly, one entry per call at
// the next index, as raftlog's FSM would; a command that fails stops the
// benchmark (setup only succeeds).
type applier struct {
	tb  testing.TB
	e   *engine.Engine
	idx uint64 // the next entry's index
}

func (a *applier) apply(cmds ...*engine.Command) []any {
	raw := make([][]byte, len(cmds))
	for i, c := range cmds {
		var err error
		if raw[i], err = engine.EncodeCommand(c); err != nil {
			a.tb.Fatal(err)
		}
	}
	res := a.e.Apply(a.idx, time.Now().UnixMilli(), raw)
	a.idx++
	for _, r := range res {
		if r := r.(*engine.Result); r.Err != "" {
			a.tb.Fatalf("setup: %s %s", r.Err, r.Message)
		}
	}
	return res
}

// BenchmarkMessagePath is the CPU path of a 1:1 message, without Raft and
// without the sender's socket: decode the client's request frame (as
// OnMessage does), build and encode the command, Apply it (entries of
// perEntry commands, as the proposer's group commit makes them), Publish
// its event to both members' sessions, encode and queue the sender's ack;
// netpoll writes the three frames to the reader. 100 pairs chat in 100
// direct conversations.
func BenchmarkMessagePath(b *testing.B) {
	const pairs = 100
	cache := pebble.NewCache(256 << 20)
	defer cache.Unref()
	e, err := engine.Open(b.TempDir(), cache)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()

	ap := &applier{tb: b, e: e, idx: 1}
	apply := ap.apply
	// Users 1..2*pairs, device u for user u; pair p is users 2p+1, 2p+2 in conv p+1.
	for u := 1; u <= 2*pairs; u++ {
		apply(&engine.Command{Op: engine.OpRegister, Username: fmt.Sprintf("user%d", u), PasswordHash: []byte("x")})
	}
	for u := uint64(1); u <= 2*pairs; u++ {
		apply(&engine.Command{Op: engine.OpAddDevice, User: u, DeviceName: "d"})
	}
	for p := uint64(0); p < pairs; p++ {
		apply(&engine.Command{Op: engine.OpOpenDirect, User: 2*p + 1, Peer: 2*p + 2})
	}

	env := startHotpath(b, 2*pairs, e)
	e.SetPublisher(env.n)
	defer e.SetPublisher(nil)
	senders := make([]*session, pairs)
	for p := range senders {
		senders[p] = env.n.hub.sessions(uint64(2*p + 1))[0]
	}
	body := strings.Repeat("b", 100)

	for _, perEntry := range []int{1, 16} {
		name := fmt.Sprintf("perEntry=%d", perEntry)
		b.Run(name, func(b *testing.B) {
			base := env.reader.frames()
			// The clients' request frames, encoded before the timer starts.
			frames := make([][]byte, b.N)
			for i := range frames {
				p := i % pairs
				frames[i], _ = wire.Marshal(&wire.Request{
					Type: wire.TypeSend, ID: uint64(i + 1), Conv: uint64(p + 1),
					ClientMsgID: fmt.Sprintf("%d-%d", ap.idx, i), Body: body,
				})
			}
			type pending struct {
				s   *session
				req *wire.Request
			}
			batch := make([]pending, 0, perEntry)
			cmds := make([][]byte, 0, perEntry)
			const window = 256 // messages ahead of the reader
			stopProfile := profileTimed(b)
			cpu0, rcpu0, st0 := cpuNow(), env.reader.cpu(), env.ws.Stats()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				// OnMessage, on the event loop.
				s := senders[i%pairs]
				req := new(wire.Request)
				s.inflight.Add(1)
				if e := wire.DecodeRequest(frames[i], req); e != nil {
					b.Fatal(e)
				}
				env.n.metrics.requests.WithLabelValues(req.Type).Inc()
				if !s.limiter.Allow() {
					b.Fatal("rate limited")
				}
				raw, err := engine.EncodeCommand(&engine.Command{
					Op: engine.OpSend, User: s.user, Device: s.device, Conv: req.Conv,
					ClientMsgID: req.ClientMsgID, Body: req.Body, ReplyTo: req.ReplyTo,
				})
				if err != nil {
					b.Fatal(err)
				}
				batch = append(batch, pending{s, req})
				cmds = append(cmds, raw)
				if len(cmds) < perEntry && i < b.N-1 {
					continue
				}
				// The FSM goroutine: Apply publishes the events, then the
				// proposer's callbacks reply.
				results := e.Apply(ap.idx, time.Now().UnixMilli(), cmds)
				ap.idx++
				for j, r := range results {
					res := r.(*engine.Result)
					if res.Err != "" {
						b.Fatalf("%s: %s", res.Err, res.Message)
					}
					pd := batch[j]
					env.n.reply(pd.s, &wire.Reply{
						Type: wire.TypeOK, ID: pd.req.ID, ClientMsgID: pd.req.ClientMsgID, Conv: res.Conv,
						Seq: res.Seq, Ts: res.Ts, Index: res.Index, Duplicate: res.Duplicate,
					})
				}
				batch, cmds = batch[:0], cmds[:0]
				if i >= window {
					env.reader.waitFrames(base + 3*uint64(i-window))
				}
			}
			env.reader.waitFrames(base + 3*uint64(b.N))
			b.StopTimer()
			stopProfile()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64(cpuNow()-cpu0)/float64(b.N), "cpu-ns/msg")
			b.ReportMetric(float64(env.reader.cpu()-rcpu0)/float64(3*b.N), "reader-cpu-ns/frame")
			reportWrites(b, st0, env.ws.Stats())
		})
	}
}

// TestHubDeliver checks deliver against what the sockets receive: every
// online session gets the frame once, offline users are skipped, a user's
// second session gets it too.
func TestHubDeliver(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a reader process")
	}
	const online = 300
	env := startHotpath(t, online, nil)
	h := env.n.hub
	// A second session for user 7, borrowed from user 299's connection.
	extra := &session{user: 7, device: 70, conn: h.sessions(299)[0].conn}
	h.add(extra)
	defer h.remove(extra)

	frame := netpoll.PrepareBinary([]byte{0x80})
	var want uint64
	for _, tc := range []struct {
		users []uint64
		sends int
	}{
		{[]uint64{1, 7, 1000}, 3},
		{[]uint64{2, 3}, 2},
	} {
		if got := h.deliver(tc.users, frame); got != tc.sends {
			t.Fatalf("deliver(%v) = %d, want %d", tc.users, got, tc.sends)
		}
		want += uint64(tc.sends)
	}
	all := make([]uint64, 0, 2*online)
	for u := uint64(1); u <= 2*online; u++ {
		all = append(all, u) // users above online are offline
	}
	for _, users := range [][]uint64{all, all[:64], all[1:63]} {
		sends := 0
		for _, u := range users {
			if u <= online {
				sends++
			}
			if u == 7 {
				sends++
			}
		}
		if got := h.deliver(users, frame); got != sends {
			t.Fatalf("deliver(%d users) = %d, want %d", len(users), got, sends)
		}
		want += uint64(sends)
	}
	env.reader.waitFrames(want)
	time.Sleep(50 * time.Millisecond) // and no more
	if got := env.reader.frames(); got != want {
		t.Fatalf("reader got %d frames, want %d", got, want)
	}
}

// benchReader is the parent's end of the reader process.
type benchReader struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu     sync.Mutex
	cond   *sync.Cond
	count  uint64 // binary frames read, all connections
	closed bool
}

const readerEnv = "PARLEY_HOTPATH_READER" // addr,conns for the child

func startBenchReader(b testing.TB, addr string, conns int) *benchReader {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHotpathReaderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", readerEnv, addr, conns))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r := &benchReader{cmd: cmd, stdin: stdin}
	r.cond = sync.NewCond(&r.mu)
	br := bufio.NewReader(stdout)
	line, err := br.ReadString('\n')
	if err != nil || line != "ready\n" {
		r.stop()
		b.Fatalf("reader process: %q %v", line, err)
	}
	go func() {
		var buf [8]byte
		for {
			_, err := io.ReadFull(br, buf[:])
			r.mu.Lock()
			if err != nil {
				r.closed = true
			} else {
				r.count = binary.LittleEndian.Uint64(buf[:])
			}
			r.cond.Broadcast()
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *benchReader) frames() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

// waitFrames blocks (without spinning: the reader needs the other core)
// until the reader has counted at least n frames.
func (r *benchReader) waitFrames(n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.count < n && !r.closed {
		r.cond.Wait()
	}
	if r.count < n {
		panic(fmt.Sprintf("reader process ended at %d of %d frames", r.count, n))
	}
}

// cpu is the reader process's CPU time so far (10 ms resolution).
func (r *benchReader) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

func (r *benchReader) stop() {
	_ = r.stdin.Close() // the child exits on EOF
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
}

// TestHotpathReaderProcess is the reader process of the hot-path
// benchmarks; it does nothing unless started by one. It opens the
// connections as users 1..conns, prints "ready", then reads every socket
// with epoll, counts binary frames (server frames are unmasked, so a header
// is 2, 4 or 10 bytes) and writes the running count as 8 bytes to stdout
// after every round of reads. It exits when stdin closes.
func TestHotpathReaderProcess(t *testing.T) {
	spec := os.Getenv(readerEnv)
	if spec == "" {
		t.Skip("only run by the hot-path benchmarks")
	}
	addr, connsStr, _ := strings.Cut(spec, ",")
	conns, _ := strconv.Atoi(connsStr)
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	var sa unix.SockaddrInet4
	copy(sa.Addr[:], net.ParseIP(host).To4())
	sa.Port = port

	go func() { // the parent closes stdin to stop us
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()

	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	type connState struct {
		hdr  [10]byte
		nh   int
		left uint64 // payload bytes of the current frame still to come
		bin  bool   // the current frame is binary
	}
	states := make(map[int32]*connState, conns)
	for u := 1; u <= conns; u++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Connect(fd, &sa); err != nil {
			t.Fatal(err)
		}
		req := "GET /v1/ws?u=" + strconv.Itoa(u) + " HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n" +
			"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
		if _, err := unix.Write(fd, []byte(req)); err != nil {
			t.Fatal(err)
		}
		var buf [512]byte
		got := 0
		for !bytes.Contains(buf[:got], []byte("\r\n\r\n")) {
			k, err := unix.Read(fd, buf[got:])
			if err != nil || k <= 0 {
				t.Fatalf("handshake %d: %v", u, err)
			}
			got += k
		}
		if !bytes.HasPrefix(buf[:got], []byte("HTTP/1.1 101 ")) {
			t.Fatalf("refused: %q", buf[:got])
		}
		if !bytes.HasSuffix(buf[:got], []byte("\r\n\r\n")) {
			t.Fatal("frames behind the 101")
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			t.Fatal(err)
		}
		states[int32(fd)] = &connState{}
	}
	out := bufio.NewWriter(os.Stdout)
	out.WriteString("ready\n")
	out.Flush()

	var frames, reported uint64
	events := make([]unix.EpollEvent, 512)
	buf := make([]byte, 256<<10)
	for {
		k, err := unix.EpollWait(epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range events[:k] {
			st := states[ev.Fd]
			for {
				m, err := unix.Read(int(ev.Fd), buf)
				if m <= 0 || err != nil {
					break
				}
				p := buf[:m]
				for len(p) > 0 {
					if st.left > 0 {
						s := min(st.left, uint64(len(p)))
						st.left -= s
						p = p[s:]
						if st.left == 0 && st.bin {
							frames++ // counted whole, not at its header
						}
						continue
					}
					st.hdr[st.nh] = p[0]
					st.nh++
					p = p[1:]
					if st.nh < 2 {
						continue
					}
					need := 2
					switch st.hdr[1] & 0x7f {
					case 126:
						need = 4
					case 127:
						need = 10
					}
					if st.nh < need {
						continue
					}
					switch need {
					case 2:
						st.left = uint64(st.hdr[1] & 0x7f)
					case 4:
						st.left = uint64(binary.BigEndian.Uint16(st.hdr[2:4]))
					default:
						st.left = binary.BigEndian.Uint64(st.hdr[2:10])
					}
					st.bin = st.hdr[0]&0x0f == 0x2
					if st.left == 0 && st.bin {
						frames++
					}
					st.nh = 0
				}
				if m < len(buf) {
					break
				}
			}
		}
		if frames != reported {
			reported = frames
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], frames)
			if _, err := os.Stdout.Write(b[:]); err != nil {
				os.Exit(0)
			}
		}
	}
}

// BenchmarkHubWalk is the hub's share of a fan-out alone: finding the
// sessions of 10,000 recipients (every session is marked closed, so send
// returns before reaching a connection). About 20 ns a recipient: taking
// each shard's lock once per deliver instead of once per recipient
// measured 17 ns, too little to be worth the code.
func BenchmarkHubWalk(b *testing.B) {
	h := newHub()
	users := make([]uint64, 10_000)
	for i := range users {
		users[i] = uint64(i + 1)
		s := &session{user: users[i]}
		s.closed.Store(true)
		h.add(s)
	}
	for b.Loop() {
		h.deliver(users, nil)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(users)), "ns/recipient")
}
