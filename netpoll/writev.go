package netpoll

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// frameQueue holds the frames handed to Send and not yet written. It is
// pooled: a connection holds one only from its first Send after a flush to
// the next flush, so an idle connection holds none, and a busy one does not
// grow a new slice for every burst (a fan-out queues a frame on thousands
// of connections per event; growing their queues was most of the
// allocations of a broadcast).
type frameQueue struct{ frames [][]byte }

// maxPooledQueue bounds the queues kept in the pool: a long one (a burst to
// a slow reader) goes to the GC rather than pin memory.
const maxPooledQueue = 1024

var frameQueues = sync.Pool{New: func() any { return &frameQueue{frames: make([][]byte, 0, 8)} }}

func getFrameQueue() *frameQueue { return frameQueues.Get().(*frameQueue) }

// putFrameQueue returns q (nil: none) to the pool, dropping its frames.
func putFrameQueue(q *frameQueue) {
	if q == nil || cap(q.frames) > maxPooledQueue {
		return
	}
	clear(q.frames)
	q.frames = q.frames[:0]
	frameQueues.Put(q)
}

// maxIovecs is the most buffers one writev may carry (Linux UIO_MAXIOV).
const maxIovecs = 1024

// writeFrames writes frames, n bytes in all, to the socket and reports
// whether the connection is still open. It runs on the event loop.
//
// While gnet's outbound buffer is empty (almost always), it makes the writev
// itself from the loop's iovec scratch: gnet's Writev goes through
// unix.Writev, which allocates an iovec slice per call, and that was a
// third of a broadcast's allocations. Only what the socket does not take
// (a full socket buffer, or an error) is handed to gnet, which buffers it
// and waits for the socket to drain, or closes the connection on an error.
func (c *Conn) writeFrames(frames [][]byte, n int) bool {
	count := len(frames)
	if c.gc.OutboundBuffered() == 0 {
		fd := c.gc.Fd()
		for len(frames) > 0 {
			batch := frames[:min(len(frames), maxIovecs)]
			written, want, err := c.loop.writev(fd, batch)
			c.loop.stats.frameWrites.Add(1)
			if err == nil && written == want {
				frames = frames[len(batch):]
				continue
			}
			// Skip what went out; frames[i] is the first frame not
			// written whole (the frames are shared and must not be
			// modified, but this queue's slice headers are ours).
			i := 0
			for i < len(batch) && written >= len(batch[i]) {
				written -= len(batch[i])
				i++
			}
			frames = frames[i:]
			frames[0] = frames[0][written:]
			break
		}
	}
	// The rest, in chunks that one writev can take: gnet writes it, or
	// buffers it behind what it already holds.
	for len(frames) > 0 {
		batch := frames[:min(len(frames), maxIovecs)]
		frames = frames[len(batch):]
		var err error
		if len(batch) == 1 {
			_, err = c.gc.Write(batch[0])
		} else {
			_, err = c.gc.Writev(batch)
		}
		c.loop.stats.frameWrites.Add(1) // or a copy to gnet's buffer
		if err != nil {
			return false // gnet has closed the connection
		}
	}
	c.loop.stats.framesOut.Add(int64(count))
	c.loop.stats.bytesOut.Add(int64(n))
	return true
}

// writev writes frames (at most maxIovecs) to fd in one system call and
// returns the bytes written and the bytes offered. EAGAIN is an error like
// any other: the caller hands the rest to gnet.
func (l *loop) writev(fd int, frames [][]byte) (written, want int, err error) {
	iov := l.iov[:0]
	for _, f := range frames {
		if len(f) == 0 {
			continue
		}
		v := unix.Iovec{Base: unsafe.SliceData(f)}
		v.SetLen(len(f))
		iov = append(iov, v)
		want += len(f)
	}
	l.iov = iov
	defer clear(iov) // the scratch must not keep frames alive
	if want == 0 {
		return 0, 0, nil
	}
	for {
		r, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(iov))), uintptr(len(iov)))
		switch e {
		case 0:
			return int(r), want, nil
		case unix.EINTR:
			continue
		}
		return 0, want, e
	}
}
