package metrics

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/shard"
)

// Each class's series sum its shards (latency: the longest; paused: any),
// other queues keep their names, and each shard's size has its own series
// only when a class has more than one shard.
func TestQueueCollectorSumsShards(t *testing.T) {
	read := func(context.Context) ([]*asynq.QueueInfo, error) {
		return []*asynq.QueueInfo{
			{Queue: "critical", Size: 1, Pending: 1, Latency: time.Second, ProcessedTotal: 10},
			{Queue: "critical-1dp", Size: 2, Pending: 2, Latency: 3 * time.Second, ProcessedTotal: 20, Paused: true},
			{Queue: "critical-2ds", Size: 4, Retry: 4, ProcessedTotal: 40},
			{Queue: "bulk", Size: 5, Pending: 5, Latency: 2 * time.Second},
			{Queue: "default", Size: 7, Pending: 7},
		}, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newQueueCollector(read, nil))
	require.NoError(t, testutil.GatherAndCompare(reg, stringsReader(`
# HELP asynq_queue_latency_seconds How long the oldest pending task of a queue (of any of its shards) has waited.
# TYPE asynq_queue_latency_seconds gauge
asynq_queue_latency_seconds{queue="bulk"} 2
asynq_queue_latency_seconds{queue="critical"} 3
asynq_queue_latency_seconds{queue="default"} 0
# HELP asynq_queue_paused_total 1 if the queue (any of its shards) is paused, else 0.
# TYPE asynq_queue_paused_total gauge
asynq_queue_paused_total{queue="bulk"} 0
asynq_queue_paused_total{queue="critical"} 1
asynq_queue_paused_total{queue="default"} 0
# HELP asynq_queue_size Number of tasks in a queue, all states but completed.
# TYPE asynq_queue_size gauge
asynq_queue_size{queue="bulk"} 5
asynq_queue_size{queue="critical"} 7
asynq_queue_size{queue="default"} 7
# HELP asynq_tasks_processed_total Tasks processed since the queue was created, succeeded or failed.
# TYPE asynq_tasks_processed_total counter
asynq_tasks_processed_total{queue="bulk"} 0
asynq_tasks_processed_total{queue="critical"} 70
asynq_tasks_processed_total{queue="default"} 0
# HELP otpq_shard_queue_size Number of tasks in one shard of a queue class, all states but completed (only when the class has more than one shard).
# TYPE otpq_shard_queue_size gauge
otpq_shard_queue_size{queue="critical",shard="critical"} 1
otpq_shard_queue_size{queue="critical",shard="critical-1dp"} 2
otpq_shard_queue_size{queue="critical",shard="critical-2ds"} 4
`), "asynq_queue_latency_seconds", "asynq_queue_paused_total", "asynq_queue_size", "asynq_tasks_processed_total", "otpq_shard_queue_size"))
}

// TestQueueCollectorShardsSingleNode: 4 shards on one Redis, read by the
// collector ops serves: each class's gauges are the sums of its shards.
func TestQueueCollectorShardsSingleNode(t *testing.T) {
	db := redistest.New(t)
	testQueueCollectorShards(t, asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number}, 4)
}

// TestQueueCollectorShardsCluster: the same on a 3-master Redis Cluster,
// 16 shards per class: still one pipeline per master per reading.
func TestQueueCollectorShardsCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	opt, err := redisconn.Option(cl.URL(), nil, 0)
	require.NoError(t, err)
	testQueueCollectorShards(t, opt, 16)
}

// testQueueCollectorShards fills shard i of each class with i+1 pending
// tasks, 100·(i+1) processed ones, one scheduled task in bulk's last shard,
// pauses critical's shard 2, and requires the sums, with a bounded number
// of round trips per reading whatever n.
func testQueueCollectorShards(t *testing.T, opt asynq.RedisConnOpt, n int) {
	ctx := context.Background()
	rdb, err := redisconn.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })
	trips := &roundTrips{perNode: map[string]int{}}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		cc.OnNewNode(func(c *redis.Client) { c.AddHook(&nodeTrips{trips, c.Options().Addr}) })
	} else {
		rdb.AddHook(&nodeTrips{trips, "single"})
	}
	_, err = shard.Check(ctx, rdb, n)
	require.NoError(t, err)
	client := asynq.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	ins := asynq.NewInspector(opt)
	t.Cleanup(func() { ins.Close() })
	want := map[string]int{} // class → pending
	for _, class := range shard.Classes {
		for i, q := range shard.Names(class, n) {
			for j := range i + 1 {
				_, err := client.Enqueue(asynq.NewTask("otp:send", nil), asynq.Queue(q), asynq.TaskID(fmt.Sprintf("t%d", j)))
				require.NoError(t, err)
			}
			require.NoError(t, rdb.Set(ctx, "asynq:{"+q+"}:processed", 100*(i+1), 0).Err())
			want[class] += i + 1
		}
	}
	_, err = client.Enqueue(asynq.NewTask("otp:send", nil), asynq.Queue(shard.Name("bulk", n-1)), asynq.ProcessIn(time.Hour))
	require.NoError(t, err)
	require.NoError(t, ins.PauseQueue(shard.Name("critical", 2)))

	// The first reading finds the scripts uncached (a second pipeline,
	// with their bodies); the next reading, of a new collector, is counted.
	warm := prometheus.NewRegistry()
	warm.MustRegister(NewQueueCollector(rdb, nil))
	_ = gathered(t, warm)
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewQueueCollector(rdb, nil))
	trips.reset()
	got := gathered(t, reg)
	t.Logf("one reading of %d shards per class: %d commands alone, pipelines per node %v", n, trips.single, trips.perNode)
	require.LessOrEqual(t, trips.single, 2, "the shard count and the queue set")
	for node, p := range trips.perNode {
		require.LessOrEqual(t, p, 1, "node %s: one pipeline per reading", node)
	}

	processed := 100 * n * (n + 1) / 2
	for class, pending := range want {
		size := pending
		if class == "bulk" {
			size++
		}
		require.Equal(t, float64(pending), got[`asynq_tasks_enqueued_total{queue="`+class+`",state="pending"}`], class)
		require.Equal(t, float64(size), got[`asynq_queue_size{queue="`+class+`"}`], class)
		require.Equal(t, float64(processed), got[`asynq_tasks_processed_total{queue="`+class+`"}`], class)
		require.Positive(t, got[`asynq_queue_latency_seconds{queue="`+class+`"}`], class)
		for i, q := range shard.Names(class, n) {
			s := i + 1
			if class == "bulk" && i == n-1 {
				s++
			}
			require.Equal(t, float64(s), got[`otpq_shard_queue_size{queue="`+class+`",shard="`+q+`"}`], q)
		}
	}
	require.Equal(t, 1.0, got[`asynq_tasks_enqueued_total{queue="bulk",state="scheduled"}`])
	require.Equal(t, 1.0, got[`asynq_queue_paused_total{queue="critical"}`])
	require.Equal(t, 0.0, got[`asynq_queue_paused_total{queue="bulk"}`])
	for k := range got {
		if strings.HasPrefix(k, "asynq_") {
			require.Regexp(t, `(^asynq_scrape_up$)|queue="(critical|bulk)"`, k, "every queue series is per class")
		}
	}
	require.Equal(t, 1.0, got["asynq_scrape_up"])
}

// gathered is every sample of reg, keyed name{label="value",…} (labels
// sorted, as Prometheus prints them).
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			v := m.GetGauge().GetValue()
			if m.GetCounter() != nil {
				v = m.GetCounter().GetValue()
			}
			out[key] = v
		}
	}
	return out
}

// roundTrips counts, per node, the pipelines sent to it, and the commands
// sent alone.
type roundTrips struct {
	mu      sync.Mutex
	single  int
	perNode map[string]int
}

func (r *roundTrips) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.single, r.perNode = 0, map[string]int{}
}

// nodeTrips is the hook of one node's client.
type nodeTrips struct {
	r    *roundTrips
	addr string
}

func (h *nodeTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *nodeTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name != "hello" && name != "cluster" {
			h.r.mu.Lock()
			h.r.single++
			h.r.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (h *nodeTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() != "client" && cmds[0].Name() != "hello" { // not a new connection's set-up
			h.r.mu.Lock()
			h.r.perNode[h.addr]++
			h.r.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// TestQueueCollectorReadingCost logs the Redis commands (script-inner ones
// included) of one reading with 1 and 16 shards per class, queues empty
// and then 100 pending tasks in each: the cost grows with the number of
// shard queues (two scripts each; the memory estimate samples up to 20
// tasks of each state), not with the number of tasks.
func TestQueueCollectorReadingCost(t *testing.T) {
	srv := redistest.StartServer(t)
	ctx := context.Background()
	opt := asynq.RedisClientOpt{Addr: srv.Addr}
	rdb, err := redisconn.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })
	client := asynq.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	commands := func() int64 {
		info, err := rdb.Info(ctx, "stats").Result()
		require.NoError(t, err)
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "total_commands_processed:"); ok {
				var n int64
				_, err := fmt.Sscan(v, &n)
				require.NoError(t, err)
				return n
			}
		}
		t.Fatal("no total_commands_processed")
		return 0
	}
	reading := func() int64 {
		_ = gathered(t, registryOf(NewQueueCollector(rdb, nil))) // scripts cached, connection open
		before := commands()
		_ = gathered(t, registryOf(NewQueueCollector(rdb, nil)))
		return commands() - before - 1 // the INFO
	}
	var per [2][2]int64 // [1 or 16 shards][empty or full]
	for i, n := range []int{1, 16} {
		if n > 1 {
			_, err := shard.Set(ctx, rdb, n)
			require.NoError(t, err)
		}
		per[i][0] = reading()
		for _, class := range shard.Classes {
			for _, q := range shard.Names(class, n) {
				for j := range 100 {
					_, err := client.Enqueue(asynq.NewTask("otp:send", nil), asynq.Queue(q), asynq.TaskID(fmt.Sprintf("t%d", j)))
					if err != nil {
						require.ErrorIs(t, err, asynq.ErrTaskIDConflict) // filled at 1 shard already
					}
				}
			}
		}
		per[i][1] = reading()
	}
	t.Logf("Redis commands per reading: 1 shard per class %d empty, %d with 100 tasks per queue; 16 shards %d empty, %d with 100 tasks per queue",
		per[0][0], per[0][1], per[1][0], per[1][1])
	require.Less(t, per[1][1], 16*per[0][1]+100, "a reading costs per shard queue, not per task")
}

// registryOf is a registry holding c.
func registryOf(c prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return reg
}
