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
