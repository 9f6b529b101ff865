package faults

import (
	"io"
	"net"
	"sync"
	"testing"
)

// linkProxy stands in front of a node's internal port: peers dial the proxy
// (the node advertises its address), and the test cuts and heals it. A cut
// closes every open connection and refuses new ones, so the node hears
// nothing from its peers: raft RPCs, forwarded commands and peer signals
// addressed to it are lost, which is what a network partition does to it.
type linkProxy struct {
	ln net.Listener

	mu     sync.Mutex // guards target, cut and conns
	target string     // the node's internal address; empty: refuse
	cut    bool
	conns  map[net.Conn]struct{}
}

// newLinkProxy listens on a port the kernel chose. The node behind it
// advertises addr() and is started after it, so its address is given
// later, by setTarget.
func newLinkProxy(t testing.TB) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, conns: make(map[net.Conn]struct{})}
	go p.accept()
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
	return p
}

func (p *linkProxy) addr() string { return p.ln.Addr().String() }

// setTarget sets the address the proxy forwards to.
func (p *linkProxy) setTarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

func (p *linkProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *linkProxy) serve(c net.Conn) {
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	if target == "" {
		c.Close()
		return
	}
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, up) {
		c.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	p.untrack(c, up)
}

func (p *linkProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *linkProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// setCut cuts (true) or heals (false) the link.
func (p *linkProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
	}
}
