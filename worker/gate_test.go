package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// The gate asks Redis for an idle shard once per slow interval, at once
// after a wake-up, at every poll while the shard gives tasks; a wake-up
// that arrives while Redis answers "empty" keeps the shard open; errors
// keep it open; queues it does not hold pass.
func TestGate(t *testing.T) {
	now := time.Unix(1000, 0)
	g := newGate([]string{"critical-1dp"}, 250*time.Millisecond, func() time.Time { return now })
	pass := func() (uint64, bool) {
		gen, ok, watched := g.admit("critical-1dp")
		require.True(t, watched)
		return gen, ok
	}
	gen, ok := pass()
	require.True(t, ok, "a new gate asks every queue")
	g.settle("critical-1dp", gen, nil)
	gen, ok = pass()
	require.True(t, ok, "a queue that gave a task is asked again")
	g.settle("critical-1dp", gen, redis.Nil)
	for range 5 {
		_, ok = pass()
		require.False(t, ok, "an empty queue is not asked before its slow poll")
	}
	now = now.Add(250 * time.Millisecond)
	gen, ok = pass()
	require.True(t, ok, "the slow poll")
	_, again := pass()
	require.False(t, again, "one slow poll per interval, whichever loop asks")
	g.settle("critical-1dp", gen, redis.Nil)
	_, ok = pass()
	require.False(t, ok)

	g.wake("critical-1dp")
	gen, ok = pass()
	require.True(t, ok, "a wake-up opens the queue")
	g.wake("critical-1dp") // a producer enqueues while Redis answers "empty"
	g.settle("critical-1dp", gen, redis.Nil)
	gen, ok = pass()
	require.True(t, ok, "the wake-up during the answer keeps it open")
	g.settle("critical-1dp", gen, redis.Nil)
	_, ok = pass()
	require.False(t, ok)

	now = now.Add(time.Second)
	gen, ok = pass()
	require.True(t, ok)
	g.settle("critical-1dp", gen, errors.New("NOSCRIPT"))
	_, ok = pass()
	require.True(t, ok, "after an error the queue is asked at once")

	_, ok, watched := g.admit("bulk")
	require.True(t, ok)
	require.False(t, watched)
}

// The hook answers a closed queue's dequeue with redis.Nil without calling
// Redis, and passes everything else.
func TestGateHook(t *testing.T) {
	now := time.Unix(1000, 0)
	g := newGate([]string{"q"}, time.Minute, func() time.Time { return now })
	calls := 0
	next := g.ProcessHook(func(_ context.Context, cmd redis.Cmder) error {
		calls++
		cmd.SetErr(redis.Nil)
		return redis.Nil
	})
	dequeue := func() error {
		return next(context.Background(), redis.NewCmd(context.Background(), "evalsha", "sha", 4,
			"asynq:{q}:pending", "asynq:{q}:paused", "asynq:{q}:active", "asynq:{q}:lease", 1, "asynq:{q}:t:"))
	}
	require.ErrorIs(t, dequeue(), redis.Nil)
	require.Equal(t, 1, calls, "open at first")
	cmd := redis.NewCmd(context.Background(), "evalsha", "sha", 4,
		"asynq:{q}:pending", "asynq:{q}:paused", "asynq:{q}:active", "asynq:{q}:lease", 1, "asynq:{q}:t:")
	require.ErrorIs(t, next(context.Background(), cmd), redis.Nil)
	require.Equal(t, 1, calls, "closed: answered without Redis")
	require.ErrorIs(t, cmd.Err(), redis.Nil, "asynq reads the command's error")
	_ = next(context.Background(), redis.NewStringCmd(context.Background(), "get", "asynq:{q}:pending"))
	require.Equal(t, 2, calls, "other commands pass")
	g.wake("q")
	require.ErrorIs(t, dequeue(), redis.Nil)
	require.Equal(t, 3, calls, "woken: asked")
}
