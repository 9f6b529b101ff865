package netpoll

import "sync"

// buffer is a pooled byte slice. Connections hold a *buffer only while they
// need one (a partial frame, a fragmented message, a partial handshake), so
// an idle connection holds none.
type buffer struct {
	b []byte
}

// bufferClasses are the pooled capacities; larger requests are allocated
// and left to the GC so that one huge message does not pin memory in a pool.
var bufferClasses = [...]int{512, 2 << 10, 8 << 10, 32 << 10, 128 << 10}

var bufferPools [len(bufferClasses)]sync.Pool

// getBuffer returns an empty buffer with capacity for at least n bytes.
func getBuffer(n int) *buffer {
	for i, size := range bufferClasses {
		if n <= size {
			if v := bufferPools[i].Get(); v != nil {
				return v.(*buffer)
			}
			return &buffer{b: make([]byte, 0, size)}
		}
	}
	return &buffer{b: make([]byte, 0, n)}
}

// putBuffer returns buf to its pool; buf must not be used afterwards.
func putBuffer(buf *buffer) {
	if buf == nil {
		return
	}
	c := cap(buf.b)
	for i, size := range bufferClasses {
		if c == size {
			buf.b = buf.b[:0]
			bufferPools[i].Put(buf)
			return
		}
	}
}

// grow makes room for n more bytes, moving to a larger pooled buffer when
// needed, and returns the buffer to use from now on.
func (buf *buffer) grow(n int) *buffer {
	if len(buf.b)+n <= cap(buf.b) {
		return buf
	}
	nb := getBuffer(len(buf.b) + n)
	nb.b = append(nb.b, buf.b...)
	putBuffer(buf)
	return nb
}
