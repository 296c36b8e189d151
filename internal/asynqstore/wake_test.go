package asynqstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
)

// dequeueSeen records the queues of the asynq dequeues DequeueQueue
// recognises among the commands of a client.
type dequeueSeen struct {
	mu     sync.Mutex
	queues map[string]int
	others int // commands naming a pending key that were not recognised
}

func (h *dequeueSeen) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *dequeueSeen) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *dequeueSeen) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		if q, ok := asynqstore.DequeueQueue(cmd.Args()); ok {
			h.queues[q]++
		}
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *dequeueSeen) count(q string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.queues[q]
}

// Parity: asynq's own server's dequeues (the call the worker's fetch gate
// answers for idle shards) are recognised, with their queue; its other
// calls (forwarding, enqueueing, leases) are not taken for dequeues. Run
// it when upgrading asynq.
func TestDequeueQueueRecognisesAsynqDequeue(t *testing.T) {
	b := setup(t)
	seen := &dequeueSeen{queues: map[string]int{}}
	rdb := redis.NewClient(&redis.Options{Addr: b.db.Addr, DB: b.db.Number})
	rdb.AddHook(seen)
	t.Cleanup(func() { rdb.Close() })
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: 1, Queues: map[string]int{"critical-1dp": 1, "bulk": 1}, TaskCheckInterval: 10 * time.Millisecond,
		LogLevel: asynq.FatalLevel,
	})
	done := make(chan string, 1)
	mux := asynq.NewServeMux()
	mux.HandleFunc("t", func(_ context.Context, t *asynq.Task) error { done <- string(t.Payload()); return nil })
	require.NoError(t, srv.Start(mux))
	t.Cleanup(srv.Shutdown)
	_, err := b.client.Enqueue(asynq.NewTask("t", []byte("x")), asynq.Queue("critical-1dp"), asynq.ProcessIn(time.Second))
	require.NoError(t, err)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the task was not processed")
	}
	require.Positive(t, seen.count("critical-1dp"))
	require.Positive(t, seen.count("bulk"))
	seen.mu.Lock()
	defer seen.mu.Unlock()
	require.Len(t, seen.queues, 2, "nothing else is a dequeue: %v", seen.queues)

	for _, args := range [][]any{
		{"evalsha", "x", 4, "asynq:{q}:pending", "asynq:{q}:paused", "asynq:{q}:active", "asynq:{q}:lease", 1, "p"},
		{"EVAL", "x", 4, "asynq:{q}:pending", "asynq:{q}:paused", "asynq:{q}:active", "asynq:{q}:lease"},
	} {
		q, ok := asynqstore.DequeueQueue(args)
		require.True(t, ok)
		require.Equal(t, "q", q)
	}
	for _, args := range [][]any{
		{"evalsha", "x", 3, "asynq:{q}:pending", "asynq:{q}:paused", "asynq:{q}:active", "asynq:{q}:lease"},
		{"evalsha", "x", 4, "asynq:{q}:pending", "asynq:{r}:paused", "asynq:{q}:active", "asynq:{q}:lease"},
		{"lpush", "x", 4, "asynq:{q}:pending", "asynq:{q}:paused", "asynq:{q}:active", "asynq:{q}:lease"},
		{"evalsha", "x", 4, "asynq:{q}:pending"},
	} {
		_, ok := asynqstore.DequeueQueue(args)
		require.False(t, ok, "%v", args)
	}
}

// EnqueueWaking publishes to the queue's ready channel when it made a task
// pending (not for a scheduled task, not for a duplicate); Enqueue never
// publishes. The tasks it writes are Enqueue's.
func TestEnqueueWakingPublishes(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	ps := b.db.Client.SSubscribe(ctx, asynqstore.ReadyChannel("critical-1dp"))
	t.Cleanup(func() { ps.Close() })
	_, err := ps.Receive(ctx) // the subscription's confirmation
	require.NoError(t, err)
	msgs := ps.Channel()
	now := time.Now()
	task := func(id string, at time.Time) asynqstore.Task {
		return asynqstore.Task{Msg: asynqstore.Message{Type: "otp:send", ID: id, Queue: "critical-1dp", Timeout: time.Minute}, ProcessAt: at}
	}
	require.NoError(t, asynqstore.Publish(ctx, b.db.Client, "critical-1dp"))
	_, err = asynqstore.Enqueue(ctx, b.db.Client, "critical-1dp", now, []asynqstore.Task{task("plain", time.Time{})})
	require.NoError(t, err)
	_, err = asynqstore.EnqueueWaking(ctx, b.db.Client, "critical-1dp", now, []asynqstore.Task{task("later", now.Add(time.Hour))})
	require.NoError(t, err)
	created, err := asynqstore.EnqueueWaking(ctx, b.db.Client, "critical-1dp", now, []asynqstore.Task{task("plain", time.Time{})})
	require.NoError(t, err)
	require.Equal(t, []bool{false}, created)
	created, err = asynqstore.EnqueueWaking(ctx, b.db.Client, "critical-1dp", now, []asynqstore.Task{task("woken", time.Time{})})
	require.NoError(t, err)
	require.Equal(t, []bool{true}, created)
	select {
	case m := <-msgs:
		require.Equal(t, asynqstore.ReadyChannel("critical-1dp"), m.Channel)
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up published")
	}
	select {
	case m := <-msgs:
		t.Fatalf("a second wake-up: %v (only the pending task wakes)", m)
	case <-time.After(100 * time.Millisecond):
	}
	info, err := b.ins.GetTaskInfo("critical-1dp", "woken")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStatePending, info.State)
}
