package redisserver_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redistest"
)

// A started server answers on its own port with the extra arguments
// applied, survives Kill + Restart on the same port, and is gone after
// the test's cleanup kills it.
func TestStartServerRestartKill(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartServer(t, "--maxclients", "1234")
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())
	cfg, err := c.ConfigGet(ctx, "maxclients").Result()
	require.NoError(t, err)
	require.Equal(t, "1234", cfg["maxclients"])

	require.NoError(t, s.Kill())
	require.False(t, s.Running())
	require.Error(t, c.Ping(ctx).Err(), "a killed server must not answer")
	require.NoError(t, s.Restart(ctx))
	require.NoError(t, c.Ping(ctx).Err())
	n, err := c.Exists(ctx, "k").Result()
	require.NoError(t, err)
	require.Zero(t, n, "without persistence a restart starts empty")
}

// SIGSTOP freezes the server (a command waits past its deadline), SIGCONT
// resumes it, and Kill ends a server that is stopped.
func TestSignalStopContinue(t *testing.T) {
	ctx := context.Background()
	s := redistest.StartServer(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, ReadTimeout: 300 * time.Millisecond})
	defer c.Close()
	require.NoError(t, c.Ping(ctx).Err())

	require.NoError(t, s.Signal(syscall.SIGSTOP))
	require.Error(t, c.Ping(ctx).Err(), "a stopped server must not answer")
	require.NoError(t, s.Signal(syscall.SIGCONT))
	require.Eventually(t, func() bool { return c.Ping(ctx).Err() == nil }, 10*time.Second, 20*time.Millisecond)

	require.NoError(t, s.Signal(syscall.SIGSTOP))
	require.NoError(t, s.Kill())
	require.False(t, s.Running())
}
