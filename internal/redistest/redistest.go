// Package redistest gives integration tests a real Redis database of their
// own. Tests run against the server at $OTPQ_TEST_REDIS_ADDR (default
// 127.0.0.1:6379); each test claims a free database among 2–15 with a lock
// key, so packages tested in parallel never share one, and flushes it when
// done.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
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
	s, err := redisserver.Start(context.Background(), redisserver.Config{Dir: t.TempDir(), Args: args})
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: listen: %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read or answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}
