package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
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
//   - StallTagged does the same to some connections only: those on which the
//     client sent a chosen command (Tag), e.g. a Redis client's pub/sub
//     connection, while its other connections keep working;
//   - SetLatency delays everything forwarded, as a slow or distant link would;
//   - Restore ends Cut, Stall and StallTagged (not SetLatency).
type Proxy struct {
	target string
	addr   string

	mu          sync.Mutex
	ln          net.Listener // nil while cut
	conns       map[*pipe]struct{}
	stalled     bool          // every connection, and new ones unconnected
	stallTagged bool          // tagged connections only
	resume      chan struct{} // closed by Restore after Stall or StallTagged
	tag         []byte        // lower case; nil: tag nothing
	closed      bool
	wg          sync.WaitGroup

	latency atomic.Int64 // nanoseconds added to every chunk
}

// pipe is one proxied connection: the client's side and the target's.
type pipe struct {
	client, server net.Conn
	tagged         atomic.Bool // the client sent the tag
}

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
	quit := make(chan struct{})
	go func() { p.copy(pp, pp.server, pp.client, true, quit); done <- struct{}{} }()
	go func() { p.copy(pp, pp.client, pp.server, false, quit); done <- struct{}{} }()
	<-done
	// One direction ended: end both, abruptly, so neither side waits.
	close(quit)
	abort(pp.client)
	abort(pp.server)
	<-done
}

// chunk is data read from one side, due on the other at due.
type chunk struct {
	data []byte
	due  time.Time
}

// copy forwards src to dst: it reads chunks as they come and writes each
// one once the latency has passed since it was read (so a latency delays
// data without limiting throughput), holding data back while the proxy is
// stalled for pp. fromClient: src is the client, whose chunks may tag pp.
// It returns when src has ended and everything read is written, when a
// write fails, or when quit is closed.
func (p *Proxy) copy(pp *pipe, dst, src net.Conn, fromClient bool, quit chan struct{}) {
	chunks := make(chan chunk, 256)
	go func() {
		defer close(chunks)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if fromClient && !pp.tagged.Load() && p.tags(buf[:n]) {
					pp.tagged.Store(true)
				}
				c := chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(time.Duration(p.latency.Load()))}
				select {
				case chunks <- c:
				case <-quit:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		if d := time.Until(c.due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-quit:
				t.Stop()
				return
			}
		}
		for {
			p.mu.Lock()
			hold := p.holdLocked(pp)
			p.mu.Unlock()
			if hold == nil {
				break
			}
			select {
			case <-hold: // Restore, or Cut/Close, which also close the conns
			case <-quit:
				return
			}
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}

// holdLocked is the channel to wait on before forwarding for pp, or nil.
func (p *Proxy) holdLocked(pp *pipe) chan struct{} {
	if p.stalled || p.stallTagged && pp.tagged.Load() {
		return p.resume
	}
	return nil
}

// tags reports whether data contains the tag (ASCII case-insensitively).
// A tag split between two reads is missed: tags are meant to be command
// names sent in one write, such as a Redis client's SSUBSCRIBE.
func (p *Proxy) tags(data []byte) bool {
	p.mu.Lock()
	tag := p.tag
	p.mu.Unlock()
	return tag != nil && bytes.Contains(bytes.ToLower(data), tag)
}

// Tag marks, from now on, every connection on which the client sends tag
// (ASCII case-insensitive), for StallTagged. For a Redis client's pub/sub
// connection: Tag("subscribe") (SUBSCRIBE, SSUBSCRIBE and PSUBSCRIBE).
// Call it before the clients connect: connections are tagged by what they
// send after it.
func (p *Proxy) Tag(tag string) {
	p.mu.Lock()
	p.tag = bytes.ToLower([]byte(tag))
	p.mu.Unlock()
}

// Tagged is the number of open connections that sent the tag.
func (p *Proxy) Tagged() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for pp := range p.conns {
		if pp.tagged.Load() {
			n++
		}
	}
	return n
}

// StallTagged stops forwarding on tagged connections, those open now and
// those tagged later, keeping them open, as a partition of that one flow
// would; other connections, and new ones until they send the tag, carry on.
// Restore ends it.
func (p *Proxy) StallTagged() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
	p.stallTagged = true
}

// SetLatency delays every chunk read from now on, in either direction, by d
// (0: no delay): a request and its answer take 2d longer. Data keeps its
// order. Restore leaves it in place.
func (p *Proxy) SetLatency(d time.Duration) { p.latency.Store(int64(d)) }

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
	if p.resume == nil {
		p.resume = make(chan struct{})
	}
	p.stalled = true
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
	p.stalled, p.stallTagged = false, false
	if p.resume != nil {
		close(p.resume)
		p.resume = nil
	}
}
