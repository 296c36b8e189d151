package worker_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// gatedSender holds every send until the test releases it, and reports
// each send as it starts.
type gatedSender struct {
	started chan string
	release chan struct{}
}

func (g *gatedSender) Send(ctx context.Context, r worker.SendRequest) (*worker.SendResponse, error) {
	g.started <- r.To
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &worker.SendResponse{MessageID: "m-" + r.To, SendChannel: "sms"}, nil
}

// TestCriticalOvertakesWaitingBulk: every send slot is taken and a bulk
// task already waits for one when a critical task arrives; the next slot
// freed goes to the critical task, not to the bulk task that waited first.
func TestCriticalOvertakesWaitingBulk(t *testing.T) {
	g := &gatedSender{started: make(chan string, 100), release: make(chan struct{})}
	b := setupStopped(t, func(c *worker.Config) { c.Concurrency, c.Servers, c.Sender = 2, 1, g })
	t.Cleanup(func() { close(g.release) })
	rdb := redis.NewClient(&redis.Options{Addr: b.db.Addr, DB: b.db.Number})
	defer rdb.Close()
	active := func(queue string, n int64) {
		require.Eventually(t, func() bool { return rdb.LLen(context.Background(), asynqstore.ActiveKey(queue)).Val() == n },
			10*time.Second, time.Millisecond, "%d active in %s", n, queue)
	}
	// A task shown active in Redis has been fetched; its handler may not
	// have asked for a slot yet. Wait until it does, or the release below
	// races the arrival (CI saw the bulk task win that race).
	waiting := func(crit, bulk int) {
		require.Eventually(t, func() bool { c, bk := b.worker.SlotWaiters(); return c == crit && bk == bulk },
			10*time.Second, time.Millisecond, "%d critical and %d bulk handlers waiting for a slot", crit, bulk)
	}
	next := func() string {
		select {
		case to := <-g.started:
			return to
		case <-time.After(10 * time.Second):
			t.Fatal("no send started")
			return ""
		}
	}
	require.NoError(t, b.worker.Start())

	b.send(t, "+19990000001") // critical, takes one slot
	require.Equal(t, "+19990000001", next())
	for i := range 10 {
		b.send(t, fmt.Sprintf("+1888000%04d", i), producer.Queue(producer.QueueBulk))
	}
	first := next() // a bulk send takes the other slot
	require.Contains(t, first, "+1888000")
	active(producer.QueueBulk, 2) // and another bulk task waits for a slot
	waiting(0, 1)
	b.send(t, "+19990000002")
	active(producer.QueueCritical, 2) // the second critical task waits too
	waiting(1, 1)

	g.release <- struct{}{} // one send ends
	require.Equal(t, "+19990000002", next(), "the freed slot goes to the critical task")
	g.release <- struct{}{}
	require.Contains(t, next(), "+1888000", "then to the bulk task that waited")
}

// TestBulkDrainCostsNoCriticalDequeue: during a bulk drain, the bulk
// tasks are fetched by loops of their own: the critical queue is only
// polled at its idle pace, not once more per bulk task (asynq's strict
// priority over both queues runs one dequeue script per queue it tries).
func TestBulkDrainCostsNoCriticalDequeue(t *testing.T) {
	addr := redistest.StartServer(t).Addr
	var critDequeues atomic.Int64
	opt := hookOpt{addr: addr, hook: dequeueHook{queue: task.QueueCritical, n: &critDequeues}}
	sender := &instantSender{}
	const n = 2000
	p, err := producer.New(producer.Config{Redis: asynq.RedisClientOpt{Addr: addr}, DestinationLimit: -1})
	require.NoError(t, err)
	defer p.Close()
	reqs := make([]producer.Request, n)
	for i := range reqs {
		reqs[i] = producer.Request{To: fmt.Sprintf("+1555%07d", i), Code: "123456", TemplateID: "login"}
	}
	for _, res := range p.SendBatch(context.Background(), reqs, producer.Queue(producer.QueueBulk), producer.ExpiresIn(time.Hour)) {
		require.NoError(t, res.Err)
	}
	// Idle polls 1 s apart, so that the count is the drain's, not the
	// polling's.
	w, err := worker.New(worker.Config{Redis: opt, Sender: sender, Logger: jsonLogger(io.Discard),
		PollInterval: time.Second, IdlePollInterval: time.Second})
	require.NoError(t, err)
	began := time.Now()
	require.NoError(t, w.Start())
	defer w.Shutdown()
	require.Eventually(t, func() bool { return sender.n.Load() >= n }, time.Minute, 5*time.Millisecond)
	took := time.Since(began)
	d := critDequeues.Load()
	t.Logf("%d bulk deliveries in %s: %d critical dequeues", n, took, d)
	// Each critical loop polls at most every 0.5 s while idle (asynq's
	// jitter), plus once as it starts.
	loops := int64(runtime.GOMAXPROCS(0)) // critical loops (Config.Servers)
	require.LessOrEqual(t, d, loops*(int64(took/(500*time.Millisecond))+2), "critical dequeues during a %d-task bulk drain", n)
}

// hookOpt is an asynq.RedisConnOpt whose client runs hook.
type hookOpt struct {
	addr string
	hook redis.Hook
}

func (o hookOpt) MakeRedisClient() any {
	c := redis.NewClient(&redis.Options{Addr: o.addr, PoolSize: 300})
	c.AddHook(o.hook)
	return c
}

// dequeueHook counts asynq's dequeue scripts on queue: the only command
// naming the queue's paused key besides pausing it.
type dequeueHook struct {
	queue string
	n     *atomic.Int64
}

func (h dequeueHook) count(cmd redis.Cmder) {
	if slices.Contains(cmd.Args(), any("asynq:{"+h.queue+"}:paused")) {
		h.n.Add(1)
	}
}

func (h dequeueHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h dequeueHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.count(cmd); return next(ctx, cmd) }
}
func (h dequeueHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.count(c)
		}
		return next(ctx, cmds)
	}
}
