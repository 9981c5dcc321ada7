package testenv

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// echoServer answers each line with the same line, until t ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends one line on c and reads the echo, within d.
func roundTrip(c net.Conn, line string, d time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestProxyForwardsCutsAndRestores(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "hello", time.Second); err != nil || got != "hello" {
		t.Fatalf("through the proxy: %q, %v; want the echo", got, err)
	}
	if n := p.Conns(); n != 1 {
		t.Errorf("Conns = %d, want 1", n)
	}

	p.Cut()
	if _, err := roundTrip(c, "after cut", time.Second); err == nil {
		t.Error("an open connection still works after Cut")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("an open connection hangs after Cut (%v); want it reset", err)
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c2.Close()
		t.Error("a new connection is accepted while cut")
	}
	if n := p.Conns(); n != 0 {
		t.Errorf("Conns = %d after Cut, want 0", n)
	}

	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	c3 := dial(t, p.Addr())
	if got, err := roundTrip(c3, "again", time.Second); err != nil || got != "again" {
		t.Fatalf("after Restore: %q, %v; want the echo", got, err)
	}
}

func TestProxyStallHoldsDataUntilRestore(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "warm", time.Second); err != nil || got != "warm" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.Stall()
	_, err := roundTrip(c, "held", 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("an open connection while stalled: %v; want a read timeout", err)
	}
	// A new connection is accepted, but nothing comes back.
	c2 := dial(t, p.Addr())
	if _, err := roundTrip(c2, "new", 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a new connection while stalled: %v; want a read timeout", err)
	}

	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	// The held line arrives now, then the connection works as before.
	c.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(c)
	if got, err := r.ReadString('\n'); err != nil || got != "held\n" {
		t.Fatalf("after Restore, the held line: %q, %v", got, err)
	}
	c2.SetDeadline(time.Now().Add(time.Second))
	if got, err := bufio.NewReader(c2).ReadString('\n'); err != nil || got != "new\n" {
		t.Fatalf("after Restore, the new connection's line: %q, %v", got, err)
	}
}

func TestProxyCloseEndsEverything(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	p.Stall()
	done := make(chan struct{})
	go func() {
		p.Close() // must not wait for the stalled connection
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Close hangs on a stalled connection")
	}
	if _, err := roundTrip(c, "x", time.Second); err == nil {
		t.Error("a connection still works after Close")
	}
	if err := p.Restore(); err == nil {
		t.Error("Restore after Close succeeded")
	}
}

func TestProxyLatencyDelaysWithoutLimitingThroughput(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "warm", time.Second); err != nil || got != "warm" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	const d = 100 * time.Millisecond
	p.SetLatency(d)
	t0 := time.Now()
	if got, err := roundTrip(c, "slow", 2*time.Second); err != nil || got != "slow" {
		t.Fatalf("with latency: %q, %v", got, err)
	}
	if took := time.Since(t0); took < 2*d || took > 2*d+400*time.Millisecond {
		t.Errorf("a round trip with latency %v took %v, want about %v (one delay each way)", d, took, 2*d)
	}

	// Twenty lines sent 5 ms apart come back about 2d after each was sent,
	// in order: the delay is latency, not a narrower pipe.
	t0 = time.Now()
	go func() {
		for i := range 20 {
			c.Write([]byte(strings.Repeat("x", i+1) + "\n"))
			time.Sleep(5 * time.Millisecond)
		}
	}()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for i := range 20 {
		got, err := r.ReadString('\n')
		if err != nil || got != strings.Repeat("x", i+1)+"\n" {
			t.Fatalf("line %d: %q, %v", i, got, err)
		}
	}
	if took := time.Since(t0); took < 2*d || took > 2*d+20*5*time.Millisecond+400*time.Millisecond {
		t.Errorf("20 pipelined lines took %v, want about 2×%v + 100ms", took, d)
	}

	p.SetLatency(0)
	t0 = time.Now()
	if got, err := roundTrip(c, "fast", time.Second); err != nil || got != "fast" {
		t.Fatalf("latency off: %q, %v", got, err)
	}
	if took := time.Since(t0); took > d {
		t.Errorf("latency off: a round trip took %v", took)
	}
}

func TestProxyStallTaggedHoldsOnlyTaggedConnections(t *testing.T) {
	p := NewProxy(t, echoServer(t))
	p.Tag("SSUBSCRIBE")
	sub := dial(t, p.Addr())
	if got, err := roundTrip(sub, "ssubscribe chan", time.Second); err != nil || got != "ssubscribe chan" {
		t.Fatalf("tagged connection: %q, %v", got, err)
	}
	plain := dial(t, p.Addr())
	if got, err := roundTrip(plain, "get x", time.Second); err != nil || got != "get x" {
		t.Fatalf("plain connection: %q, %v", got, err)
	}
	if n := p.Tagged(); n != 1 {
		t.Fatalf("Tagged = %d, want 1", n)
	}

	p.StallTagged()
	var ne net.Error
	if _, err := roundTrip(sub, "ping", 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("the tagged connection while stalled: %v; want a read timeout", err)
	}
	if got, err := roundTrip(plain, "get y", time.Second); err != nil || got != "get y" {
		t.Fatalf("an untagged connection while tagged ones are stalled: %q, %v", got, err)
	}
	// A new connection works until it sends the tag; then it is held too.
	fresh := dial(t, p.Addr())
	if got, err := roundTrip(fresh, "hello", time.Second); err != nil || got != "hello" {
		t.Fatalf("a new connection: %q, %v", got, err)
	}
	if _, err := roundTrip(fresh, "SSubscribe again", 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a new connection after sending the tag: %v; want a read timeout", err)
	}

	if err := p.Restore(); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		c    net.Conn
		want string
	}{{sub, "ping\n"}, {fresh, "SSubscribe again\n"}} {
		x.c.SetDeadline(time.Now().Add(time.Second))
		if got, err := bufio.NewReader(x.c).ReadString('\n'); err != nil || got != x.want {
			t.Fatalf("after Restore, the held line: %q, %v; want %q", got, err, x.want)
		}
	}
}
