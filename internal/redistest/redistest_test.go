package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestMain(m *testing.M) { Main(m) }

// connectionsReceived is the server's count of accepted connections.
func connectionsReceived(t *testing.T, c *redis.Client) int {
	t.Helper()
	info, err := c.Info(context.Background(), "stats").Result()
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "total_connections_received:"); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("no total_connections_received in INFO stats:\n%s", info)
	return 0
}

// A Redis the suite did not start (here one started on a free port,
// standing for a developer's own, and named by the old knob
// OTPQ_TEST_REDIS_ADDR) keeps every key of every database, and never sees a
// connection, while tests claim, use and flush databases. Fails with the
// old redistest (claim and flush databases 2-15 of $OTPQ_TEST_REDIS_ADDR):
// checked.
func TestNeverTouchesARedisItDidNotStart(t *testing.T) {
	foreign := StartServer(t)
	t.Setenv("OTPQ_TEST_REDIS_ADDR", foreign.Addr)
	ctx := context.Background()
	for n := range 16 {
		c := redis.NewClient(&redis.Options{Addr: foreign.Addr, DB: n})
		require.NoError(t, c.Set(ctx, "canary", fmt.Sprint("db", n), 0).Err())
		require.NoError(t, c.Close())
	}
	watch := redis.NewClient(&redis.Options{Addr: foreign.Addr, PoolSize: 1})
	defer watch.Close()
	before := connectionsReceived(t, watch)

	t.Run("claims", func(t *testing.T) {
		for i := range 20 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				db := New(t)
				require.Equal(t, Addr(), db.Addr)
				require.NotEqual(t, foreign.Addr, db.Addr)
				require.NoError(t, db.Client.Set(ctx, "k", i, 0).Err())
			})
		}
	})

	require.Equal(t, before, connectionsReceived(t, watch), "a test connected to the Redis it did not start")
	for n := range 16 {
		c := redis.NewClient(&redis.Options{Addr: foreign.Addr, DB: n})
		v, err := c.Get(ctx, "canary").Result()
		require.NoError(t, err, "db %d lost its canary", n)
		require.Equal(t, fmt.Sprint("db", n), v)
		require.NoError(t, c.Close())
	}
}

// A database comes empty, is held by one test alone, and is flushed at
// the end of the test that held it.
func TestDatabaseIsEmptyAndHeldAlone(t *testing.T) {
	ctx := context.Background()
	var used int
	t.Run("holder", func(t *testing.T) {
		db := New(t)
		used = db.Number
		n, err := db.Client.DBSize(ctx).Result()
		require.NoError(t, err)
		require.Zero(t, n, "db %d handed over with keys", db.Number)
		require.NoError(t, db.Client.Set(ctx, "left", "behind", 0).Err())
		require.NotEqual(t, db.Number, New(t).Number)
	})
	c := redis.NewClient(&redis.Options{Addr: Addr(), DB: used})
	defer c.Close()
	n, err := c.DBSize(ctx).Result()
	require.NoError(t, err)
	require.Zero(t, n, "db %d not flushed after its test", used)
}

// Nothing connects to the default Redis port while tests claim databases.
// It listens on 127.0.0.1:6379 and so runs only where that port is free
// (a machine with a Redis of its own there is covered by
// TestNeverTouchesARedisItDidNotStart, whose Redis is named the way the
// old helper found its target).
func TestNoConnectionTo6379(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:6379")
	if err != nil {
		t.Skipf("127.0.0.1:6379 is taken (%v): cannot watch it", err)
	}
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	db := New(t)
	require.NoError(t, db.Client.Set(context.Background(), "k", "v", 0).Err())
	require.NoError(t, ln.Close())
	require.Zero(t, accepted.Load())
}
