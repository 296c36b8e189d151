package asynqstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
)

// requireReadsAsInspector reads a task through ReadTask and through
// asynq's Inspector and requires the same answer, except NextProcessAt of
// a pending task, which the Inspector reports as its read time and
// ReadTask leaves zero.
func requireReadsAsInspector(t *testing.T, db *redistest.DB, ins *asynq.Inspector, queue, id string) *asynq.TaskInfo {
	t.Helper()
	want, err := ins.GetTaskInfo(queue, id)
	require.NoError(t, err)
	got, err := asynqstore.ReadTask(context.Background(), db.Client, queue, id)
	require.NoError(t, err)
	if want.State == asynq.TaskStatePending {
		require.Zero(t, got.NextProcessAt, "pending: NextProcessAt left zero")
		got.NextProcessAt = want.NextProcessAt
	}
	require.Equal(t, want, got, "task %s in %s", id, queue)
	return got
}

// TestReadTaskMatchesInspectorEnqueued: every option the producer
// exposes, on tasks pending and scheduled by asynq.Client, reads the same
// through ReadTask as through asynq's Inspector.
func TestReadTaskMatchesInspectorEnqueued(t *testing.T) {
	b := setup(t)
	db, client, ins := b.db, b.client, b.ins
	ctx := context.Background()
	states := map[asynq.TaskState]bool{}
	for i, v := range variants() {
		now := time.Now()
		id := fmt.Sprintf("client-%02d", i)
		_, err := client.EnqueueContext(ctx, asynq.NewTaskWithHeaders("otp:send", []byte(`{"v":3}`), v.task(id, now).Msg.Headers), v.opts(id, now)...)
		require.NoError(t, err)
		states[requireReadsAsInspector(t, db, ins, v.queue, id).State] = true
	}
	require.Equal(t, map[asynq.TaskState]bool{asynq.TaskStatePending: true, asynq.TaskStateScheduled: true}, states)
}

// TestReadTaskMatchesInspectorProcessed: tasks moved through every other
// state by a stock asynq server (active, retry, archived after retries or
// at once, completed with and without a result) read the same through
// ReadTask as through asynq's Inspector: attempts, last error and its
// time, next attempt, completion time, result.
func TestReadTaskMatchesInspectorProcessed(t *testing.T) {
	b := setup(t)
	db, opt, client, ins := b.db, b.opt, b.client, b.ins

	const q = "work"
	tasks := []struct {
		id   string
		opts []asynq.Option
		want asynq.TaskState
	}{
		{"active", nil, asynq.TaskStateActive},
		{"retry", []asynq.Option{asynq.MaxRetry(3)}, asynq.TaskStateRetry},
		{"retried-archived", []asynq.Option{asynq.MaxRetry(1)}, asynq.TaskStateArchived},
		{"archived", []asynq.Option{asynq.MaxRetry(0), asynq.Timeout(time.Minute)}, asynq.TaskStateArchived},
		{"skip-retry", []asynq.Option{asynq.MaxRetry(5), asynq.Deadline(time.Now().Add(time.Hour))}, asynq.TaskStateArchived},
		{"completed", []asynq.Option{asynq.Retention(time.Hour)}, asynq.TaskStateCompleted},
		{"completed-no-result", []asynq.Option{asynq.Retention(time.Hour)}, asynq.TaskStateCompleted},
	}
	release := make(chan struct{})
	mux := asynq.NewServeMux()
	mux.HandleFunc("otp:send", func(ctx context.Context, at *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		switch id {
		case "active":
			<-release
			return nil
		case "completed":
			_, err := at.ResultWriter().Write([]byte(`{"message_id":"m-1","attempts":1}`))
			return err
		case "completed-no-result":
			return nil
		case "skip-retry":
			return fmt.Errorf("engagelab 5013: Number has been blacklisted: %w", asynq.SkipRetry)
		}
		return errors.New("engagelab 1000: Internal error")
	})
	srv := asynq.NewServer(opt, asynq.Config{
		Queues: map[string]int{q: 1}, Concurrency: 10, LogLevel: asynq.FatalLevel,
		TaskCheckInterval: 10 * time.Millisecond, DelayedTaskCheckInterval: 100 * time.Millisecond,
		RetryDelayFunc: func(_ int, _ error, at *asynq.Task) time.Duration {
			if string(at.Payload()) == "retry" { // the payload is the ID
				return time.Hour // stays in retry while it is read
			}
			return 0
		},
	})
	for _, tk := range tasks {
		_, err := client.Enqueue(asynq.NewTask("otp:send", []byte(tk.id)), append(tk.opts, asynq.TaskID(tk.id), asynq.Queue(q))...)
		require.NoError(t, err)
	}
	require.NoError(t, srv.Start(mux))
	defer srv.Shutdown()
	defer close(release) // before Shutdown, which waits for the active handler

	for _, tk := range tasks {
		require.Eventually(t, func() bool {
			info, err := ins.GetTaskInfo(q, tk.id)
			return err == nil && info.State == tk.want
		}, 10*time.Second, 20*time.Millisecond, "task %s never %s", tk.id, tk.want)
		got := requireReadsAsInspector(t, db, ins, q, tk.id)
		switch tk.id {
		case "retry":
			require.Equal(t, 1, got.Retried)
			require.NotZero(t, got.NextProcessAt)
			require.NotZero(t, got.LastFailedAt)
		case "retried-archived":
			require.Equal(t, 1, got.Retried)
			require.Equal(t, "engagelab 1000: Internal error", got.LastErr)
		case "completed":
			require.JSONEq(t, `{"message_id":"m-1","attempts":1}`, string(got.Result))
			require.NotZero(t, got.CompletedAt)
		}
	}
}

// TestReadTaskNotFound: a task that does not exist (or no longer does)
// is ErrTaskNotFound; one in another queue is not found either.
func TestReadTaskNotFound(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	_, err := asynqstore.ReadTask(ctx, db.Client, "critical", "nope")
	require.ErrorIs(t, err, asynqstore.ErrTaskNotFound)

	require.NoError(t, asynqstore.Publish(ctx, db.Client, "critical"))
	_, err = asynqstore.Enqueue(ctx, db.Client, "critical", time.Now(), []asynqstore.Task{{Msg: asynqstore.Message{Type: "otp:send", ID: "a", Queue: "critical"}}})
	require.NoError(t, err)
	_, err = asynqstore.ReadTask(ctx, db.Client, "bulk", "a")
	require.ErrorIs(t, err, asynqstore.ErrTaskNotFound)
	info, err := asynqstore.ReadTask(ctx, db.Client, "critical", "a")
	require.NoError(t, err)
	require.Equal(t, "a", info.ID)
}

// TestReadTaskRejectsCorruptTask: a task hash whose message does not
// decode, or whose state asynq does not know, is an error, not a
// made-up answer.
func TestReadTaskRejectsCorruptTask(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	msg := string(asynqstore.Message{Type: "otp:send", ID: "a", Queue: "critical"}.Encode())
	for name, fields := range map[string][]string{
		"junk message":  {"msg", "\x0a\x09junk", "state", "pending"},
		"no message":    {"state", "pending"},
		"unknown state": {"msg", msg, "state", "sleeping"},
		"no state":      {"msg", msg},
	} {
		require.NoError(t, db.Client.HSet(ctx, asynqstore.TaskKey("critical", "a"), fields).Err())
		_, err := asynqstore.ReadTask(ctx, db.Client, "critical", "a")
		require.Error(t, err, name)
		require.NotErrorIs(t, err, asynqstore.ErrTaskNotFound, name)
		require.NoError(t, db.Client.Del(ctx, asynqstore.TaskKey("critical", "a")).Err())
	}
}

// TestReadTaskHonoursContext: against a Redis that never answers,
// ReadTask returns when its ctx ends, with ctx's error.
func TestReadTaskHonoursContext(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: redistest.Stalled(t), ReadTimeout: time.Minute, ContextTimeoutEnabled: true})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := asynqstore.ReadTask(ctx, rdb, "critical", "a")
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
