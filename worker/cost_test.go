package worker_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sort"
	"strconv"
	"strings"
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

// countingOpt is an asynq.RedisConnOpt whose client counts round trips: one
// per command sent alone, one per pipeline (subscriptions aside).
type countingOpt struct {
	addr string
	rts  *atomic.Int64
}

func (o countingOpt) MakeRedisClient() any {
	c := redis.NewClient(&redis.Options{Addr: o.addr, PoolSize: 300})
	c.AddHook(rtHook{o.rts})
	return c
}

type rtHook struct{ n *atomic.Int64 }

func (h rtHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h rtHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h rtHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// instantSender answers every send at once, as a provider that is never
// the bottleneck.
type instantSender struct{ n atomic.Int64 }

func (s *instantSender) Send(_ context.Context, _ worker.SendRequest) (*worker.SendResponse, error) {
	n := s.n.Add(1)
	return &worker.SendResponse{MessageID: "m" + strconv.FormatInt(n, 10), SendChannel: "sms"}, nil
}

// commandStats is INFO commandstats: calls per command (commands run inside
// scripts included), without the test's own INFO and CONFIG calls.
func commandStats(t *testing.T, c *redis.Client) map[string]int64 {
	t.Helper()
	s, err := c.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	out := map[string]int64{}
	for _, line := range strings.Split(s, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		name = strings.TrimPrefix(name, "cmdstat_")
		if name == "info" || strings.HasPrefix(name, "config") {
			continue
		}
		calls, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		out[name] = calls
	}
	return out
}

func total(m map[string]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

func perDelivery(m map[string]int64, n int) string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return m[names[i]] > m[names[j]] })
	var b strings.Builder
	for _, k := range names {
		if v := float64(m[k]) / float64(n); v >= 0.05 {
			fmt.Fprintf(&b, "%s %.2f, ", k, v)
		}
	}
	return strings.TrimSuffix(b.String(), ", ")
}

type cost struct {
	cmds, rts, rate float64
	detail          string
}

// measureDeliveries drains n preloaded tasks through start's consumer on a
// private redis-server and returns the Redis commands and round trips per
// delivered task.
func measureDeliveries(t *testing.T, c *redis.Client, rts *atomic.Int64, sender *instantSender, n int, start func() (stop func())) cost {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, c.ConfigResetStat(ctx).Err())
	rts.Store(0)
	sender.n.Store(0)
	began := time.Now()
	stop := start()
	require.Eventually(t, func() bool { return sender.n.Load() >= int64(n) }, 60*time.Second, 2*time.Millisecond)
	took := time.Since(began)
	// Let the last completions land before reading the counters.
	q := func() int64 {
		a, _ := c.LLen(ctx, asynqstore.ActiveKey(task.QueueCritical)).Result()
		b, _ := c.LLen(ctx, asynqstore.ActiveKey(task.QueueBulk)).Result()
		return a + b
	}
	require.Eventually(t, func() bool { return q() == 0 }, 10*time.Second, time.Millisecond)
	stats := commandStats(t, c)
	r := rts.Load()
	stop()
	return cost{cmds: float64(total(stats)) / float64(n), rts: float64(r) / float64(n), rate: float64(n) / took.Seconds(), detail: perDelivery(stats, n)}
}

// idleCost is the Redis commands per second of a consumer with nothing to
// do, once its servers (asynq servers, one per fetch loop) have registered:
// start-up writes are not idle cost. Each server's first recovery pass
// may still fall in the window (a few commands, noise against the bar).
func idleCost(t *testing.T, c *redis.Client, servers int, start func() (stop func())) float64 {
	t.Helper()
	ctx := context.Background()
	registered := func(n int) func() bool {
		return func() bool { return c.ZCard(ctx, "asynq:servers").Val() == int64(n) }
	}
	require.Eventually(t, registered(0), 10*time.Second, 5*time.Millisecond, "the previous consumer never unregistered")
	stop := start()
	defer stop()
	require.Eventually(t, registered(servers), 10*time.Second, 5*time.Millisecond, "%d servers never registered", servers)
	require.NoError(t, c.ConfigResetStat(ctx).Err())
	const d = 3 * time.Second
	time.Sleep(d)
	return float64(total(commandStats(t, c))) / d.Seconds()
}

// TestRedisCostPerDelivery counts, on a private redis-server, the Redis
// commands (INFO commandstats, commands inside scripts included) and round
// trips per delivered task of the worker at its defaults, against an
// instant provider, next to a hand-written asynq handler (one asynq.Server,
// asynq's defaults, tasks enqueued by asynq.Client); and the commands per
// second of each when idle. The figures are logged; the bounds asserted are
// the design's: asynq's fetch and completion per task, plus the code read
// and the delivery write, which concurrent deliveries share (coalesced into
// common pipelines: 4 round trips per task without that), and an idle
// worker under 400 commands/s.
func TestRedisCostPerDelivery(t *testing.T) {
	addr := redistest.StartServer(t).Addr
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	var rts atomic.Int64
	opt := countingOpt{addr: addr, rts: &rts}
	sender := &instantSender{}
	const n = 3000

	p, err := producer.New(producer.Config{Redis: asynq.RedisClientOpt{Addr: addr}, DestinationLimit: -1})
	require.NoError(t, err)
	defer p.Close()
	preload := func(queue string) {
		reqs := make([]producer.Request, n)
		for i := range reqs {
			reqs[i] = producer.Request{To: fmt.Sprintf("+1555%07d", i), Code: "123456", TemplateID: "login"}
		}
		for _, res := range p.SendBatch(ctx, reqs, producer.Queue(queue), producer.ExpiresIn(time.Hour)) {
			require.NoError(t, res.Err)
		}
	}
	otpq := func() (stop func()) {
		w, err := worker.New(worker.Config{Redis: opt, Sender: sender, Logger: jsonLogger(io.Discard)})
		require.NoError(t, err)
		require.NoError(t, w.Start())
		return w.Shutdown
	}
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: addr})
	defer client.Close()
	baselineLoad := func() {
		payload := []byte(`{"v":1,"to":"+15550000000","code":"123456","template":{"id":"login"},"expires_at":"2999-01-01T00:00:00Z"}`)
		for range n {
			_, err := client.Enqueue(asynq.NewTask(task.TypeSend, payload), asynq.Queue(task.QueueCritical))
			require.NoError(t, err)
		}
	}
	baseline := func() (stop func()) {
		rdb := opt.MakeRedisClient().(*redis.Client)
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 100,
			Queues: map[string]int{task.QueueCritical: 10, task.QueueBulk: 1}, LogLevel: asynq.FatalLevel})
		mux := asynq.NewServeMux()
		mux.HandleFunc(task.TypeSend, func(ctx context.Context, at *asynq.Task) error {
			_, err := sender.Send(ctx, worker.SendRequest{})
			return err
		})
		require.NoError(t, srv.Start(mux))
		return func() { srv.Shutdown(); rdb.Close() }
	}

	baselineLoad()
	base := measureDeliveries(t, c, &rts, sender, n, baseline)
	preload(producer.QueueCritical)
	crit := measureDeliveries(t, c, &rts, sender, n, otpq)
	preload(producer.QueueBulk)
	bulk := measureDeliveries(t, c, &rts, sender, n, otpq)
	baseIdle := idleCost(t, c, 1, baseline)
	otpqIdle := idleCost(t, c, 2*runtime.GOMAXPROCS(0), otpq) // Servers loops per queue, by default

	t.Logf("per delivered task, %d tasks, instant in-process provider, worker defaults:", n)
	t.Logf("| consumer | commands | round trips | delivered/s (in-process) | commands by name |")
	t.Logf("| hand-written asynq handler (1 server, asynq defaults) | %.1f | %.2f | %.0f | %s |", base.cmds, base.rts, base.rate, base.detail)
	t.Logf("| otpq worker, critical queue | %.1f | %.2f | %.0f | %s |", crit.cmds, crit.rts, crit.rate, crit.detail)
	t.Logf("| otpq worker, bulk queue | %.1f | %.2f | %.0f | %s |", bulk.cmds, bulk.rts, bulk.rate, bulk.detail)
	t.Logf("idle Redis commands/s per process: hand-written handler %.0f, otpq worker %.0f", baseIdle, otpqIdle)

	require.LessOrEqual(t, crit.rts, 3.0, "fetch and completion, plus the code reads and delivery writes shared by concurrent deliveries")
	require.LessOrEqual(t, otpqIdle, 400.0, "idle cost per worker process")
}
