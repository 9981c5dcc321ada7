package testenv

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// clusterNodes is how many masters a test cluster has: the fewest
// redis-cli --cluster create accepts.
const clusterNodes = 3

// RedisCluster is a private Redis Cluster of three masters (no replicas) on
// loopback ports, each node a redis-server process without persistence in
// its own temporary directory. Addrs are the nodes' host:port addresses, in
// the form --redis-addr takes them (comma-joined).
type RedisCluster struct {
	Addrs []string
	nodes []*clusterNode
	dir   string // removed by Stop when the cluster made it itself
	owned bool
}

type clusterNode struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
	log  *lockedBuffer
}

// StartRedisCluster starts a three-node Redis Cluster for t and stops it when
// t ends. It needs redis-server and redis-cli (Debian's redis-server package
// brings both; `make ci-deps` installs it); without them it fails in CI and
// skips loudly elsewhere (Require).
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	requireClusterTools(t)
	c, err := startRedisCluster(t.TempDir(), false)
	if err != nil {
		t.Fatalf("start a Redis Cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

var shared struct {
	mu sync.Mutex
	c  *RedisCluster
}

// SharedRedisCluster is StartRedisCluster for a whole test binary: the first
// call starts the cluster, later calls return the same one, and
// StopSharedRedisCluster (from TestMain, after m.Run) stops it. Tests sharing
// it must use their own key prefixes, as with the shared Redis.
func SharedRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	requireClusterTools(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c == nil {
		dir, err := os.MkdirTemp("", "keyward-redis-cluster-")
		if err != nil {
			t.Fatal(err)
		}
		c, err := startRedisCluster(dir, true)
		if err != nil {
			os.RemoveAll(dir)
			t.Fatalf("start a Redis Cluster: %v", err)
		}
		shared.c = c
	}
	return shared.c
}

// StopSharedRedisCluster stops the cluster SharedRedisCluster started, if any.
func StopSharedRedisCluster() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.c != nil {
		shared.c.Stop()
		shared.c = nil
	}
}

func requireClusterTools(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			Require(t, bin+" binary (for a Redis Cluster)", err)
		}
	}
}

// startRedisCluster starts the nodes under dir, joins them with
// redis-cli --cluster create and waits until every node reports
// cluster_state:ok. The free ports are found by binding :0 and letting go,
// so another process may take one in between: the whole start is retried.
func startRedisCluster(dir string, owned bool) (*RedisCluster, error) {
	var lastErr error
	for attempt := range 3 {
		c := &RedisCluster{dir: dir, owned: owned}
		lastErr = c.start(filepath.Join(dir, strconv.Itoa(attempt)))
		if lastErr == nil {
			return c, nil
		}
		c.kill()
	}
	if owned {
		os.RemoveAll(dir)
	}
	return nil, lastErr
}

func (c *RedisCluster) start(dir string) error {
	for i := range clusterNodes {
		// Two free ports per node: clients, and the cluster bus.
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		ndir := filepath.Join(dir, "node"+strconv.Itoa(i))
		if err := os.MkdirAll(ndir, 0o700); err != nil {
			return err
		}
		n := &clusterNode{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), done: make(chan struct{}), log: &lockedBuffer{}}
		n.cmd = exec.Command("redis-server",
			"--port", strconv.Itoa(ports[0]), "--cluster-port", strconv.Itoa(ports[1]), "--bind", "127.0.0.1",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(ndir, "nodes.conf"),
			"--cluster-node-timeout", "5000", "--dir", ndir,
			"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "")
		n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
		if err := n.cmd.Start(); err != nil {
			return fmt.Errorf("start redis-server: %w", err)
		}
		go func(n *clusterNode) { n.cmd.Wait(); close(n.done) }(n)
		c.nodes = append(c.nodes, n)
		c.Addrs = append(c.Addrs, n.addr)
	}
	for _, n := range c.nodes {
		if err := n.waitPing(5 * time.Second); err != nil {
			return err
		}
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// create returns once the slots are assigned; the nodes agree on the
	// cluster being healthy a little later, after gossiping.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var notOK []string
		for _, n := range c.nodes {
			info, err := n.do("CLUSTER", "INFO")
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				notOK = append(notOK, n.addr)
			}
		}
		if notOK == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("Redis Cluster %v: %v not in cluster_state:ok within 15s", c.Addrs, notOK)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills every node and removes the cluster's files.
func (c *RedisCluster) Stop() {
	c.kill()
	if c.owned {
		os.RemoveAll(c.dir)
	}
}

func (c *RedisCluster) kill() {
	for _, n := range c.nodes {
		n.cmd.Process.Signal(syscall.SIGCONT)
		n.cmd.Process.Kill()
		<-n.done
	}
	c.nodes = nil
}

// Pause freezes every node (SIGSTOP): connections stay open, nothing answers.
func (c *RedisCluster) Pause() error { return c.signal(syscall.SIGSTOP) }

// Resume undoes Pause.
func (c *RedisCluster) Resume() error { return c.signal(syscall.SIGCONT) }

func (c *RedisCluster) signal(s syscall.Signal) error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.cmd.Process.Signal(s))
	}
	return errors.Join(errs...)
}

// FlushAll empties every node (FLUSHALL on each master).
func (c *RedisCluster) FlushAll() error {
	for _, n := range c.nodes {
		if reply, err := n.do("FLUSHALL"); err != nil || reply != "OK" {
			return fmt.Errorf("FLUSHALL on %s: %q %v", n.addr, reply, err)
		}
	}
	return nil
}

// Logs are the nodes' logs, for a failing test to show.
func (c *RedisCluster) Logs() string {
	var b strings.Builder
	for _, n := range c.nodes {
		fmt.Fprintf(&b, "--- redis-server %s\n%s", n.addr, n.log.String())
	}
	return b.String()
}

func (n *clusterNode) waitPing(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := pingRedis(n.addr)
		if err == nil {
			return nil
		}
		select {
		case <-n.done:
			return fmt.Errorf("redis-server on %s exited: %s", n.addr, n.log.String())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer within %v: %v", n.addr, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// do sends one command in RESP and returns a status or bulk reply.
func (n *clusterNode) do(args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", n.addr, dialTimeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(dialTimeout))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "-"):
		return "", errors.New(line[1:])
	case strings.HasPrefix(line, "$"):
		size, err := strconv.Atoi(line[1:])
		if err != nil || size < 0 {
			return "", fmt.Errorf("unexpected reply %q", line)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:size]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// lockedBuffer collects a process's output; safe for concurrent use.
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
