package asynqstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
)

// TestQueueStatsMatchesInspector: QueueStats reads, in one pipeline, what
// asynq's Inspector.GetQueueInfo reads of each queue: tasks in every
// state, today's and lifetime counters, a paused queue, the memory
// estimate; a queue never used reads as zeros. The scripts are sent again
// after SCRIPT FLUSH.
func TestQueueStatsMatchesInspector(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	for i := range 5 {
		_, err := b.client.Enqueue(asynq.NewTask("otp:send", []byte(`{"v":3}`)), asynq.Queue("critical"), asynq.TaskID(fmt.Sprintf("p%d", i)))
		require.NoError(t, err)
	}
	for i := range 3 {
		_, err := b.client.Enqueue(asynq.NewTask("otp:send", []byte(`{"v":4}`)), asynq.Queue("bulk-1s"), asynq.ProcessIn(time.Hour), asynq.TaskID(fmt.Sprintf("s%d", i)))
		require.NoError(t, err)
	}
	_, err := b.client.Enqueue(asynq.NewTask("otp:send", nil), asynq.Queue("bulk-1s"), asynq.TaskID("a0"))
	require.NoError(t, err)
	require.NoError(t, b.ins.ArchiveTask("bulk-1s", "a0"))
	require.NoError(t, b.ins.PauseQueue("bulk-1s"))
	day := time.Now().UTC().Format("2006-01-02")
	require.NoError(t, b.db.Client.Set(ctx, "asynq:{critical}:processed:"+day, 7, 0).Err())
	require.NoError(t, b.db.Client.Set(ctx, "asynq:{critical}:failed:"+day, 2, 0).Err())
	require.NoError(t, b.db.Client.Set(ctx, "asynq:{critical}:processed", 70, 0).Err())
	require.NoError(t, b.db.Client.Set(ctx, "asynq:{critical}:failed", 20, 0).Err())

	queues := []string{"critical", "bulk-1s"}
	for _, flush := range []bool{false, true} {
		if flush {
			require.NoError(t, b.db.Client.ScriptFlush(ctx).Err())
		}
		now := time.Now()
		got, err := asynqstore.QueueStats(ctx, b.db.Client, append(queues, "never-used"), now)
		require.NoError(t, err)
		require.Len(t, got, 3)
		for i, q := range queues {
			want, err := b.ins.GetQueueInfo(q)
			require.NoError(t, err)
			require.InDelta(t, want.Latency, got[i].Latency, float64(time.Second), q)
			require.Equal(t, now, got[i].Timestamp)
			got[i].Latency, got[i].Timestamp = want.Latency, want.Timestamp
			require.Equal(t, want, got[i], q)
		}
		require.Equal(t, &asynq.QueueInfo{Queue: "never-used", Timestamp: now}, got[2])
		require.Equal(t, 5, got[0].Pending)
		require.Equal(t, 7, got[0].Processed)
		require.Equal(t, 20, got[0].FailedTotal)
		require.Positive(t, got[0].Latency)
		require.Positive(t, got[0].MemoryUsage)
		require.Equal(t, 3, got[1].Scheduled)
		require.Equal(t, 1, got[1].Archived)
		require.True(t, got[1].Paused)
	}
}

// TestQueueStatsOneRoundTrip: any number of queues cost one pipeline.
func TestQueueStatsOneRoundTrip(t *testing.T) {
	b := setup(t)
	queues := make([]string, 32)
	for i := range queues {
		queues[i] = fmt.Sprintf("q%d", i)
	}
	// The first reading may find the scripts uncached (two pipelines) and
	// opens the connection.
	_, err := asynqstore.QueueStats(context.Background(), b.db.Client, queues, time.Now())
	require.NoError(t, err)
	var trips countTrips
	b.db.Client.AddHook(&trips)
	_, err = asynqstore.QueueStats(context.Background(), b.db.Client, queues, time.Now())
	require.NoError(t, err)
	require.Equal(t, 0, trips.single, trips.names)
	require.Equal(t, 1, trips.pipelines, "one pipeline for %d queues", len(queues))
}

// countTrips counts the commands and pipelines a client sends.
type countTrips struct {
	single, pipelines int
	names             []string
}

func (c *countTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *countTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.single++
		c.names = append(c.names, cmd.Name())
		return next(ctx, cmd)
	}
}
func (c *countTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { c.pipelines++; return next(ctx, cmds) }
}
