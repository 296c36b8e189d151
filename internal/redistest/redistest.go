// Package redistest gives integration tests a real Redis database of their
// own. Tests run against the server at $OTPQ_TEST_REDIS_ADDR (default
// 127.0.0.1:6379); each test claims a free database among 2–15 with a lock
// key, so packages tested in parallel never share one, and flushes it when
// done.
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

const lockKey = "otpq:test:db-lock"

// DB is a claimed Redis database.
type DB struct {
	Addr   string
	Number int
	Client *redis.Client
}

// URL is the redis:// URL of the database.
func (d *DB) URL() string { return fmt.Sprintf("redis://%s/%d", d.Addr, d.Number) }

// Addr is the address integration tests use.
func Addr() string {
	if a := os.Getenv("OTPQ_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// New claims an empty database for t and flushes it at cleanup. It fails
// the test (it does not skip it) when Redis does not answer: integration
// tests are part of the suite, and .ci/run starts a Redis.
func New(t testing.TB) *DB {
	t.Helper()
	addr := Addr()
	ctx := context.Background()
	locks := redis.NewClient(&redis.Options{Addr: addr, DB: 1})
	defer locks.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		for n := 2; n <= 15; n++ {
			key := fmt.Sprintf("%s:%d", lockKey, n)
			ok, err := locks.SetNX(ctx, key, t.Name(), 10*time.Minute).Result()
			if err != nil {
				t.Fatalf("redistest: Redis at %s does not answer (%v); start one with `redis-server` or set OTPQ_TEST_REDIS_ADDR", addr, err)
			}
			if !ok {
				continue
			}
			c := redis.NewClient(&redis.Options{Addr: addr, DB: n})
			if err := c.FlushDB(ctx).Err(); err != nil {
				t.Fatalf("redistest: flush db %d: %v", n, err)
			}
			t.Cleanup(func() {
				bg := context.Background()
				c.FlushDB(bg)
				c.Close()
				l := redis.NewClient(&redis.Options{Addr: addr, DB: 1})
				l.Del(bg, key)
				l.Close()
			})
			return &DB{Addr: addr, Number: n, Client: c}
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: no free database among 2-15 on %s for 2 minutes", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
