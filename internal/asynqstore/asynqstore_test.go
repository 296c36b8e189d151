package asynqstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
)

// bundle is what a parity test needs: a Redis database of its own and
// asynq's own client and inspector on it.
type bundle struct {
	db     *redistest.DB
	opt    asynq.RedisClientOpt
	client *asynq.Client
	ins    *asynq.Inspector
}

func setup(t *testing.T) bundle {
	t.Helper()
	db := redistest.New(t)
	opt := asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number}
	b := bundle{db: db, opt: opt, client: asynq.NewClient(opt), ins: asynq.NewInspector(opt)}
	t.Cleanup(func() { b.client.Close(); b.ins.Close() })
	return b
}

// variant is one combination of the options the producer exposes, in both
// forms: asynq.Client options and an asynqstore.Task.
type variant struct {
	name  string
	queue string
	opts  func(id string, now time.Time) []asynq.Option
	task  func(id string, now time.Time) asynqstore.Task
}

func variants() []variant {
	msg := func(id, q string) asynqstore.Message {
		return asynqstore.Message{Type: "otp:send", Payload: []byte(`{"v":3}`), ID: id, Queue: q, Retry: 25, Timeout: asynqstore.DefaultTimeout}
	}
	return []variant{
		{name: "defaults", queue: "default",
			opts: func(id string, _ time.Time) []asynq.Option { return []asynq.Option{asynq.TaskID(id)} },
			task: func(id string, _ time.Time) asynqstore.Task { return asynqstore.Task{Msg: msg(id, "default")} }},
		{name: "queue, retry 3, retention, timeout", queue: "critical",
			opts: func(id string, _ time.Time) []asynq.Option {
				return []asynq.Option{asynq.TaskID(id), asynq.Queue("critical"), asynq.MaxRetry(3), asynq.Retention(time.Hour), asynq.Timeout(90 * time.Second)}
			},
			task: func(id string, _ time.Time) asynqstore.Task {
				m := msg(id, "critical")
				m.Retry, m.Retention, m.Timeout = 3, time.Hour, 90*time.Second
				return asynqstore.Task{Msg: m}
			}},
		{name: "retry 0", queue: "bulk",
			opts: func(id string, _ time.Time) []asynq.Option {
				return []asynq.Option{asynq.TaskID(id), asynq.Queue("bulk"), asynq.MaxRetry(0)}
			},
			task: func(id string, _ time.Time) asynqstore.Task {
				m := msg(id, "bulk")
				m.Retry = 0
				return asynqstore.Task{Msg: m}
			}},
		{name: "deadline only", queue: "bulk",
			opts: func(id string, now time.Time) []asynq.Option {
				return []asynq.Option{asynq.TaskID(id), asynq.Queue("bulk"), asynq.Deadline(now.Add(time.Hour))}
			},
			task: func(id string, now time.Time) asynqstore.Task {
				m := msg(id, "bulk")
				m.Timeout, m.Deadline = 0, now.Add(time.Hour)
				return asynqstore.Task{Msg: m}
			}},
		{name: "timeout and deadline", queue: "bulk",
			opts: func(id string, now time.Time) []asynq.Option {
				return []asynq.Option{asynq.TaskID(id), asynq.Queue("bulk"), asynq.Timeout(10 * time.Second), asynq.Deadline(now.Add(time.Hour))}
			},
			task: func(id string, now time.Time) asynqstore.Task {
				m := msg(id, "bulk")
				m.Timeout, m.Deadline = 10*time.Second, now.Add(time.Hour)
				return asynqstore.Task{Msg: m}
			}},
		{name: "process in (delay)", queue: "critical",
			opts: func(id string, _ time.Time) []asynq.Option {
				return []asynq.Option{asynq.TaskID(id), asynq.Queue("critical"), asynq.ProcessIn(time.Minute), asynq.Retention(time.Minute)}
			},
			task: func(id string, now time.Time) asynqstore.Task {
				m := msg(id, "critical")
				m.Retention = time.Minute
				return asynqstore.Task{Msg: m, ProcessAt: now.Add(time.Minute)}
			}},
		{name: "process at", queue: "critical",
			opts: func(id string, now time.Time) []asynq.Option {
				return []asynq.Option{asynq.TaskID(id), asynq.Queue("critical"), asynq.ProcessAt(now.Add(2 * time.Hour))}
			},
			task: func(id string, now time.Time) asynqstore.Task {
				return asynqstore.Task{Msg: msg(id, "critical"), ProcessAt: now.Add(2 * time.Hour)}
			}},
		{name: "process at in the past", queue: "critical",
			opts: func(id string, now time.Time) []asynq.Option {
				return []asynq.Option{asynq.TaskID(id), asynq.Queue("critical"), asynq.ProcessAt(now.Add(-time.Minute))}
			},
			task: func(id string, now time.Time) asynqstore.Task {
				return asynqstore.Task{Msg: msg(id, "critical"), ProcessAt: now.Add(-time.Minute)}
			}},
		{name: "headers", queue: "critical",
			opts: func(id string, _ time.Time) []asynq.Option {
				return []asynq.Option{asynq.TaskID(id), asynq.Queue("critical")}
			},
			task: func(id string, _ time.Time) asynqstore.Task {
				m := msg(id, "critical")
				m.Headers = map[string]string{"a": "1", "b": "2"}
				return asynqstore.Task{Msg: m}
			}},
	}
}

// TestParityWithAsynqClient: for every option the producer exposes, a task
// written by Enqueue reads back through asynq's Inspector, and is stored in
// Redis, exactly as the same task enqueued by asynq.Client.
func TestParityWithAsynqClient(t *testing.T) {
	b := setup(t)
	db, client, ins := b.db, b.client, b.ins
	ctx := context.Background()
	for i, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			now := time.Now()
			cid, sid := fmt.Sprintf("client-%02d", i), fmt.Sprintf("stored-%02d", i)
			tk := v.task(sid, now)
			var headers map[string]string
			if tk.Msg.Headers != nil {
				headers = tk.Msg.Headers
			}
			_, err := client.EnqueueContext(ctx, asynq.NewTaskWithHeaders("otp:send", []byte(`{"v":3}`), headers), v.opts(cid, now)...)
			require.NoError(t, err)
			require.NoError(t, asynqstore.Publish(ctx, db.Client, v.queue))
			created, err := asynqstore.Enqueue(ctx, db.Client, v.queue, now, []asynqstore.Task{tk})
			require.NoError(t, err)
			require.Equal(t, []bool{true}, created)

			want, err := ins.GetTaskInfo(v.queue, cid)
			require.NoError(t, err)
			got, err := ins.GetTaskInfo(v.queue, sid)
			require.NoError(t, err)
			want.ID = sid
			if want.State == asynq.TaskStatePending {
				// asynq reports a pending task's NextProcessAt as the
				// reading clock's current second, so the two reads above
				// may straddle a second boundary: compare it with that
				// slack, and everything else exactly.
				require.Equal(t, asynq.TaskStatePending, got.State)
				require.WithinDuration(t, want.NextProcessAt, got.NextProcessAt, time.Second)
				got.NextProcessAt = want.NextProcessAt
			}
			require.Equal(t, want, got)

			wantHash, err := db.Client.HGetAll(ctx, asynqstore.TaskKey(v.queue, cid)).Result()
			require.NoError(t, err)
			gotHash, err := db.Client.HGetAll(ctx, asynqstore.TaskKey(v.queue, sid)).Result()
			require.NoError(t, err)
			require.ElementsMatch(t, keysOf(wantHash), keysOf(gotHash), "hash fields")
			require.Equal(t, wantHash["state"], gotHash["state"])
			if tk.Msg.Headers == nil { // protobuf maps have no fixed order
				require.Equal(t, wantHash["msg"], strings.Replace(gotHash["msg"], sid, cid, 1), "encoded message")
			}
			if want.State == asynq.TaskStateScheduled {
				ws, err := db.Client.ZScore(ctx, asynqstore.ScheduledKey(v.queue), cid).Result()
				require.NoError(t, err)
				gs, err := db.Client.ZScore(ctx, asynqstore.ScheduledKey(v.queue), sid).Result()
				require.NoError(t, err)
				require.Equal(t, ws, gs, "scheduled score")
			}
		})
	}
	queues, err := db.Client.SMembers(ctx, asynqstore.AllQueues).Result()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"default", "critical", "bulk"}, queues)
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestEnqueueWritesCodeKeyAndSkipsExisting: the code key is written with
// the task, expires at the code's expiry, and a task ID that exists already
// is refused without touching its code key.
func TestEnqueueWritesCodeKeyAndSkipsExisting(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	now := time.Now()
	tk := asynqstore.Task{Msg: asynqstore.Message{Type: "otp:send", ID: "a", Queue: "critical", Timeout: time.Minute},
		Code: "p:123456", CodeExpiresAt: now.Add(time.Minute)}
	created, err := asynqstore.Enqueue(ctx, db.Client, "critical", now, []asynqstore.Task{tk, {Msg: asynqstore.Message{Type: "otp:send", ID: "b", Queue: "critical", Timeout: time.Minute}}})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true}, created)
	code, err := db.Client.Get(ctx, asynqstore.CodeKey("critical", "a")).Result()
	require.NoError(t, err)
	require.Equal(t, "p:123456", code)
	ttl, err := db.Client.PTTL(ctx, asynqstore.CodeKey("critical", "a")).Result()
	require.NoError(t, err)
	require.InDelta(t, time.Minute.Seconds(), ttl.Seconds(), 2)
	n, err := db.Client.Exists(ctx, asynqstore.CodeKey("critical", "b")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "no code, no code key")

	tk.Code = "p:999999"
	created, err = asynqstore.Enqueue(ctx, db.Client, "critical", now, []asynqstore.Task{tk})
	require.NoError(t, err)
	require.Equal(t, []bool{false}, created)
	code, err = db.Client.Get(ctx, asynqstore.CodeKey("critical", "a")).Result()
	require.NoError(t, err)
	require.Equal(t, "p:123456", code, "a duplicate leaves the first code")

	_, err = asynqstore.Enqueue(ctx, db.Client, "bulk", now, []asynqstore.Task{tk})
	require.ErrorContains(t, err, "queue")
}

// TestStoredTasksProcessedByAsynqServer: tasks written by Enqueue (pending
// and scheduled, with retention) are fetched by a stock asynq server, and
// the result written by Delivered shows in the completed task like one
// written by asynq's ResultWriter.
func TestStoredTasksProcessedByAsynqServer(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	opt := asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number}
	now := time.Now()
	m := func(id string) asynqstore.Message {
		return asynqstore.Message{Type: "otp:send", Payload: []byte("x"), ID: id, Queue: "critical", Retry: 1, Timeout: time.Minute, Retention: time.Hour}
	}
	require.NoError(t, asynqstore.Publish(ctx, db.Client, "critical"))
	_, err := asynqstore.Enqueue(ctx, db.Client, "critical", now, []asynqstore.Task{
		{Msg: m("now")}, {Msg: m("later"), ProcessAt: now.Add(time.Second)},
	})
	require.NoError(t, err)

	var mu sync.Mutex
	seen := map[string]bool{}
	srv := asynq.NewServer(opt, asynq.Config{Queues: map[string]int{"critical": 1}, TaskCheckInterval: 10 * time.Millisecond,
		DelayedTaskCheckInterval: 100 * time.Millisecond, LogLevel: asynq.FatalLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc("otp:send", func(ctx context.Context, at *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		pipe := db.Client.Pipeline()
		asynqstore.Delivered(ctx, pipe, "critical", id, []byte(`{"ok":"`+id+`"}`))
		_, err := pipe.Exec(ctx)
		mu.Lock()
		seen[id] = true
		mu.Unlock()
		return err
	})
	require.NoError(t, srv.Start(mux))
	defer srv.Shutdown()
	ins := asynq.NewInspector(opt)
	defer ins.Close()
	for _, id := range []string{"now", "later"} {
		require.Eventually(t, func() bool {
			info, err := ins.GetTaskInfo("critical", id)
			return err == nil && info.State == asynq.TaskStateCompleted
		}, 10*time.Second, 20*time.Millisecond, "task %s not completed by asynq", id)
		info, err := ins.GetTaskInfo("critical", id)
		require.NoError(t, err)
		require.Equal(t, `{"ok":"`+id+`"}`, string(info.Result))
	}
	require.Len(t, seen, 2)
}

// TestEnqueuePendingOrderMatchesAsynqClient: a batch larger than the
// script's LPUSH slice (1,000 IDs), mixing new, repeated and scheduled
// tasks, leaves the pending list in the order asynq.Client's one-by-one
// enqueues leave it, so workers take the batch first in, first out.
func TestEnqueuePendingOrderMatchesAsynqClient(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number})
	defer client.Close()
	now := time.Now()
	var tasks []asynqstore.Task
	for i := range 2500 {
		id := fmt.Sprintf("t%04d", i)
		if i%7 == 3 { // a repeat of an earlier ID: skipped by both
			id = fmt.Sprintf("t%04d", i-1)
		}
		var opts []asynq.Option
		tk := asynqstore.Task{Msg: asynqstore.Message{Type: "otp:send", Payload: []byte(`{"v":3}`), ID: id, Queue: "client", Retry: 25, Timeout: asynqstore.DefaultTimeout}}
		if i%11 == 5 { // scheduled: not in the pending list
			opts = append(opts, asynq.ProcessAt(now.Add(time.Hour)))
			tk.ProcessAt = now.Add(time.Hour)
		}
		_, err := client.EnqueueContext(ctx, asynq.NewTask("otp:send", []byte(`{"v":3}`)), append(opts, asynq.TaskID(id), asynq.Queue("client"))...)
		if i%7 == 3 {
			require.ErrorIs(t, err, asynq.ErrTaskIDConflict)
		} else {
			require.NoError(t, err)
		}
		tk.Msg.Queue = "stored"
		tasks = append(tasks, tk)
	}
	created, err := asynqstore.Enqueue(ctx, db.Client, "stored", now, tasks)
	require.NoError(t, err)
	for i, c := range created {
		require.Equal(t, i%7 != 3, c, "task %d", i)
	}
	want, err := db.Client.LRange(ctx, asynqstore.PendingKey("client"), 0, -1).Result()
	require.NoError(t, err)
	got, err := db.Client.LRange(ctx, asynqstore.PendingKey("stored"), 0, -1).Result()
	require.NoError(t, err)
	require.Greater(t, len(want), 1000)
	require.Equal(t, want, got)
}
