package testenv

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on a loopback port that a test controls, to make a
// dependency (Postgres, Redis) unreachable and reachable again without
// touching the server behind it:
//   - Cut closes every connection abruptly (RST) and refuses new ones, as a
//     crashed or firewalled server would;
//   - Stall keeps connections open but forwards nothing, and accepts new
//     connections without connecting them, as a network partition that drops
//     packets would;
//   - Restore ends either.
type Proxy struct {
	target string
	addr   string

	mu      sync.Mutex
	ln      net.Listener // nil while cut
	conns   map[*pipe]struct{}
	stalled bool
	resume  chan struct{} // closed by Restore after Stall
	closed  bool
	wg      sync.WaitGroup
}

// pipe is one proxied connection: the client's side and the target's.
type pipe struct{ client, server net.Conn }

// NewProxy listens on a free loopback port and forwards each connection to
// target. It is closed when t ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listen: %v", err)
	}
	p := &Proxy{target: target, addr: ln.Addr().String(), ln: ln, conns: map[*pipe]struct{}{}}
	p.wg.Add(1)
	go p.accept(ln)
	t.Cleanup(p.Close)
	return p
}

// Addr is the proxy's host:port; it stays the same across Cut and Restore.
func (p *Proxy) Addr() string { return p.addr }

// Conns is the number of proxied connections open now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Cut or Close
		}
		p.mu.Lock()
		if p.closed || p.ln != ln {
			p.mu.Unlock()
			abort(c)
			continue
		}
		pp := &pipe{client: c}
		p.conns[pp] = struct{}{}
		resume := p.resume
		stalled := p.stalled
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pp, stalled, resume)
	}
}

func (p *Proxy) serve(pp *pipe, stalled bool, resume chan struct{}) {
	defer p.wg.Done()
	defer p.drop(pp)
	if stalled {
		// Accepted but not connected: the client's handshake gets no answer
		// until Restore (or until the client gives up).
		<-resume
		p.mu.Lock()
		_, alive := p.conns[pp]
		p.mu.Unlock()
		if !alive {
			return
		}
	}
	s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		abort(pp.client)
		return
	}
	p.mu.Lock()
	if _, alive := p.conns[pp]; !alive {
		p.mu.Unlock()
		abort(s)
		return
	}
	pp.server = s
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.copy(pp.server, pp.client); done <- struct{}{} }()
	go func() { p.copy(pp.client, pp.server); done <- struct{}{} }()
	<-done
	// One direction ended: end both, abruptly, so neither side waits.
	abort(pp.client)
	abort(pp.server)
	<-done
}

// copy forwards src to dst, holding data back while the proxy is stalled.
func (p *Proxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			stalled, resume := p.stalled, p.resume
			p.mu.Unlock()
			if stalled {
				<-resume // Restore, or Cut/Close, which also close the conns
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *Proxy) drop(pp *pipe) {
	p.mu.Lock()
	delete(p.conns, pp)
	p.mu.Unlock()
}

// abort closes c with a reset rather than an orderly FIN, as a crash would.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// Cut refuses new connections and resets every open one.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.abortAllLocked()
	p.unstallLocked()
}

// Stall stops forwarding: open connections stay open but carry nothing, new
// connections are accepted but not connected to the target.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stalled {
		p.stalled = true
		p.resume = make(chan struct{})
	}
}

// Restore accepts and forwards connections again, on the same address.
// After Stall, held data flows on; after Cut, the reset connections are gone
// and clients must reconnect.
func (p *Proxy) Restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("proxy: closed")
	}
	p.unstallLocked()
	if p.ln != nil {
		return nil
	}
	var err error
	// The port was ours a moment ago; retry briefly in case the kernel has
	// not released it yet.
	for i := 0; i < 50; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.ln = ln
			p.wg.Add(1)
			go p.accept(ln)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("proxy: listen again on %s: %w", p.addr, err)
}

// Close stops the proxy and resets every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.abortAllLocked()
	p.unstallLocked()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) abortAllLocked() {
	for pp := range p.conns {
		abort(pp.client)
		if pp.server != nil {
			abort(pp.server)
		}
		delete(p.conns, pp)
	}
}

func (p *Proxy) unstallLocked() {
	if p.stalled {
		p.stalled = false
		close(p.resume)
	}
}
