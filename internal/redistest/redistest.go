// Package redistest gives integration tests a real Redis database of their
// own, on a redis-server the test binary started itself: Main (called from
// the package's TestMain) runs one private redis-server per test binary on a
// free port of 127.0.0.1 (see internal/redisserver) and kills it when the
// tests end. New hands each test a database of that server. No test ever
// connects to a Redis it did not start (a developer's Redis on 6379 keeps
// its data).
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/redisserver"
)

// databases is how many databases the binary's server has: enough for
// every parallel test of a package to hold one.
const databases = 64

// binary is the test binary's own server, set by Main.
var binary struct {
	mu     sync.Mutex
	server *redisserver.Server
	free   chan int // database numbers not held by a test
}

// DB is a database of the test binary's own Redis, held by one test.
type DB struct {
	Addr   string
	Number int
	Client *redis.Client
}

// URL is the redis:// URL of the database.
func (d *DB) URL() string { return fmt.Sprintf("redis://%s/%d", d.Addr, d.Number) }

// Main runs the package's tests against a redis-server of their own:
// call it from TestMain,
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//
// It starts the server on a free port (its data in a temporary directory,
// no persistence), runs m, stops the server and exits with m's code. It
// exits 1, saying why, when redis-server does not start (.ci/ensure-redis
// installs it).
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	s, err := redisserver.Start(context.Background(), redisserver.Config{
		Args: []string{"--databases", strconv.Itoa(databases)},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "redistest: the tests' own redis-server did not start: %v\n", err)
		return 1
	}
	defer s.Stop()
	free := make(chan int, databases)
	for n := range databases {
		free <- n
	}
	binary.mu.Lock()
	binary.server, binary.free = s, free
	binary.mu.Unlock()
	return m.Run()
}

// Addr is the address of the test binary's own Redis, "" before Main
// started it.
func Addr() string {
	binary.mu.Lock()
	defer binary.mu.Unlock()
	if binary.server == nil {
		return ""
	}
	return binary.server.Addr
}

// New hands t an empty database of the test binary's own Redis, held by t
// alone until its end, and flushes it at cleanup. It fails the test when
// the package's TestMain does not call Main, or when every database stays
// held for 2 minutes.
func New(t testing.TB) *DB {
	t.Helper()
	binary.mu.Lock()
	s, free := binary.server, binary.free
	binary.mu.Unlock()
	if s == nil {
		t.Fatalf("redistest: no Redis of the tests' own: add `func TestMain(m *testing.M) { redistest.Main(m) }` to this package's tests")
	}
	var n int
	select {
	case n = <-free:
	case <-time.After(2 * time.Minute):
		t.Fatalf("redistest: all %d databases of %s held for 2 minutes", databases, s.Addr)
	}
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DB: n})
	if err := c.FlushDB(ctx).Err(); err != nil {
		c.Close()
		free <- n
		t.Fatalf("redistest: flush db %d of %s: %v", n, s.Addr, err)
	}
	t.Cleanup(func() {
		c.FlushDB(context.Background())
		c.Close()
		free <- n
	})
	return &DB{Addr: s.Addr, Number: n, Client: c}
}

// StartServer runs a redis-server of t's own on a free port (see
// internal/redisserver; args are extra server arguments), with its data in
// t.TempDir(), and kills it at the end of t. It fails the test when the
// server does not start.
func StartServer(t testing.TB, args ...string) *redisserver.Server {
	t.Helper()
	return StartServerConfig(t, redisserver.Config{Args: args})
}

// StartServerConfig is StartServer with a full redisserver.Config (a TLS
// port, a sentinel's config file, cluster mode); an empty cfg.Dir becomes
// t.TempDir(). It kills the server at the end of t and fails the test when
// the server does not start.
func StartServerConfig(t testing.TB, cfg redisserver.Config) *redisserver.Server {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := redisserver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Stalled returns the address of a server that accepts connections and never
// answers, like a Redis that is frozen or behind a black-holed network path.
// It stops at the end of t.
func Stalled(t testing.TB) string {
	t.Helper()
	return serveHeld(t, func(c net.Conn, h *held) {
		h.hold(c) // held open, never read or answered
	})
}

// Freezing returns the address of a proxy to the Redis at target that
// forwards commands, and their answers, until a command for which freeze
// returns true arrives (freeze gets its arguments, the command name
// first). From then on the proxy is frozen, like Stalled: that command and
// every later one, on any connection, is neither forwarded nor answered.
// It models a Redis that hangs between two round trips of one call. It
// stops at the end of t.
func Freezing(t testing.TB, target string, freeze func(args []string) bool) string {
	t.Helper()
	var (
		mu     sync.Mutex
		frozen bool
	)
	// forwards reports whether a command goes through (not frozen yet).
	forwards := func(args []string) bool {
		mu.Lock()
		defer mu.Unlock()
		frozen = frozen || freeze(args)
		return !frozen
	}
	return serveHeld(t, func(c net.Conn, h *held) {
		if !h.hold(c) {
			return
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			_ = c.Close()
			return
		}
		if !h.hold(s) {
			return
		}
		go func() { _, _ = io.Copy(c, s) }()
		r := bufio.NewReader(c)
		for {
			raw, args, err := readCommand(r)
			if err != nil || !forwards(args) {
				return // frozen: c and s stay open, unanswered, until the end of t
			}
			if _, err := s.Write(raw); err != nil {
				return
			}
		}
	})
}

// held keeps connections open until the end of a test.
type held struct {
	mu    sync.Mutex
	conns []net.Conn
	ended bool
}

// hold keeps c open until the end of the test; false (and c closed) when
// the test has ended already.
func (h *held) hold(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended {
		_ = c.Close()
		return false
	}
	h.conns = append(h.conns, c)
	return true
}

// serveHeld listens on a free port of 127.0.0.1 and runs serve on each
// connection in a goroutine of its own; at the end of t it stops listening
// and closes every connection held. It returns the address.
func serveHeld(t testing.TB, serve func(c net.Conn, h *held)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: listen: %v", err)
	}
	h := &held{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c, h)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		h.ended = true
		for _, c := range h.conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// readCommand reads one command as clients send it, a RESP array of bulk
// strings, returning its bytes and its arguments.
func readCommand(r *bufio.Reader) (raw []byte, args []string, err error) {
	header := func(prefix byte) (int, error) {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return 0, err
		}
		raw = append(raw, line...)
		if len(line) < 3 || line[0] != prefix {
			return 0, errors.New("redistest: not a RESP command")
		}
		return strconv.Atoi(strings.TrimSpace(string(line[1:])))
	}
	n, err := header('*')
	if err != nil || n < 1 {
		return nil, nil, errors.New("redistest: not a RESP command")
	}
	for range n {
		size, err := header('$')
		if err != nil || size < 0 {
			return nil, nil, errors.New("redistest: not a RESP command")
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, nil, err
		}
		raw = append(raw, buf...)
		args = append(args, string(buf[:size]))
	}
	return raw, args, nil
}

// Cluster is a Redis Cluster of t's own (StartCluster).
type Cluster struct {
	// Masters hold the slots, in slot order; Replicas[i] replicates
	// Masters[i % len(Masters)].
	Masters, Replicas []*redisserver.Server
}

// Seeds are the addresses of every node, masters first, for a
// redis-cluster:// URL or redis.ClusterOptions.Addrs.
func (c *Cluster) Seeds() []string {
	var out []string
	for _, s := range append(append([]*redisserver.Server(nil), c.Masters...), c.Replicas...) {
		out = append(out, s.Addr)
	}
	return out
}

// URL is the redis-cluster:// URL naming every node.
func (c *Cluster) URL() string { return "redis-cluster://" + strings.Join(c.Seeds(), ",") }

// StartCluster runs a Redis Cluster of masters masters, each with
// replicas replicas, on free ports with their data in t.TempDir(): the
// slots split evenly in order, as redis-cli --cluster create splits them
// (3 masters: 0-5460, 5461-10922, 10923-16383). args are extra
// redis-server arguments of every node (e.g. "--cluster-node-timeout",
// "1000": how long a master may be unreachable before its replica takes
// over, 15 s by default). It returns once every node sees the cluster ok
// with every replica attached, and stops the nodes at the end of t.
func StartCluster(t testing.TB, masters, replicas int, args ...string) *Cluster {
	t.Helper()
	c := &Cluster{}
	for range masters {
		c.Masters = append(c.Masters, StartServerConfig(t, redisserver.Config{Cluster: true, Args: args}))
	}
	for range masters * replicas {
		c.Replicas = append(c.Replicas, StartServerConfig(t, redisserver.Config{Cluster: true, Args: args}))
	}
	if err := redisserver.FormCluster(context.Background(), c.Masters, c.Replicas); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return c
}
