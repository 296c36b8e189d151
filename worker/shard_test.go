package worker_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// shardedSends sends n codes of each class through p (the destinations
// numbered from base, a DedupKey for every other one) and returns their
// IDs by destination.
func shardedSends(t *testing.T, p *producer.Producer, base, n int) map[string]string {
	t.Helper()
	ctx := context.Background()
	ids := map[string]string{}
	for i := range n {
		for ci, class := range []string{producer.QueueCritical, producer.QueueBulk} {
			to := fmt.Sprintf("+1555%07d", base+2*i+ci)
			opts := []producer.Option{producer.Queue(class)}
			if i%2 == 0 {
				opts = append(opts, producer.DedupKey(fmt.Sprintf("sharded:%d:%d", base, 2*i+ci)))
			}
			id, err := p.Send(ctx, producer.Request{To: to, Code: canaryCode, TemplateID: "login"}, opts...)
			require.NoError(t, err)
			ids[to] = id
		}
	}
	return ids
}

// checkShardedDelivery waits until every send of ids was delivered once,
// then checks each through Status: completed with its message ID, in the
// shard of its class its ID routes to, its code key gone and its receipt
// link in that shard; and that the fixed (DedupKey) IDs of each class
// used at least 3 of its shards.
func checkShardedDelivery(t *testing.T, p *producer.Producer, rdb redis.UniversalClient, fake *fakeengagelab.Server, ids map[string]string, shards int) {
	t.Helper()
	ctx := context.Background()
	used := map[string]bool{}
	for to, id := range ids {
		require.Eventually(t, func() bool { return fake.Delivered(to) == 1 }, 30*time.Second, 10*time.Millisecond, to)
		var st *producer.Status
		require.Eventually(t, func() bool {
			var err error
			st, err = p.Status(ctx, id)
			return err == nil && st.State == producer.StateCompleted && st.MessageID != ""
		}, 10*time.Second, 10*time.Millisecond, to)
		class := shard.ClassOf(st.Queue)
		require.NotEmpty(t, class, st.Queue)
		require.Equal(t, shard.Queue(class, id, shards), st.Queue)
		if strings.HasPrefix(id, "sharded:") {
			// Only DedupKey IDs count towards the spread below: they are
			// fixed, so the check is too (random IDs left it to chance).
			used[st.Queue] = true
		}
		n, err := rdb.Exists(ctx, asynqstore.CodeKey(st.Queue, id)).Result()
		require.NoError(t, err)
		require.Zero(t, n, "code key deleted")
		link, err := rdb.Get(ctx, receipts.LinkKey(st.Queue, st.MessageID)).Result()
		require.NoError(t, err)
		require.Contains(t, link, id)
	}
	for _, class := range shard.Classes {
		n := 0
		for q := range used {
			if shard.ClassOf(q) == class {
				n++
			}
		}
		require.GreaterOrEqual(t, n, min(shards, 3), "%s: tasks spread over its shards: %v", class, used)
	}
}

// With Shards 4 on one Redis, sends of both classes spread over 4 queues
// each, every one is delivered once, and Status finds it in its shard;
// a repeated DedupKey is refused on its shard; processes with another
// shard count refuse to start, naming both counts.
func TestShardedDeliveryAndStatus(t *testing.T) {
	b := setupStopped(t, func(c *worker.Config) { c.Shards = 4 })
	require.NoError(t, b.worker.Start())
	p, err := producer.New(producer.Config{RedisURL: b.db.URL(), Shards: 4})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	ids := shardedSends(t, p, 100, 12)
	checkShardedDelivery(t, p, b.db.Client, b.fake, ids, 4)

	ctx := context.Background()
	_, err = p.Send(ctx, producer.Request{To: "+15559999999", Code: canaryCode, TemplateID: "login"}, producer.DedupKey("sharded:100:0"))
	require.ErrorIs(t, err, producer.ErrDuplicate)
	require.Zero(t, b.fake.Delivered("+15559999999"))

	// The default producer (one shard) and a worker with 8 refuse.
	_, err = b.producer.Send(ctx, producer.Request{To: "+15559999998", Code: canaryCode, TemplateID: "login"})
	require.ErrorIs(t, err, producer.ErrShardMismatch)
	require.ErrorContains(t, err, "Redis records 4 shards per queue class")
	w, err := worker.New(worker.Config{RedisURL: b.db.URL(), Sender: &instantSender{}, Shards: 8, Logger: jsonLogger(io.Discard)})
	require.NoError(t, err)
	t.Cleanup(w.Shutdown)
	err = w.Start()
	require.ErrorIs(t, err, shard.ErrMismatch)
	require.ErrorContains(t, err, "this process is set to 8")
}

// Lowering the shard count strands nothing: tasks queued in shards 4-15
// under 16 shards are delivered by a worker started with 4 after
// otpq shards 4, and Status still finds them.
func TestShardCountLoweredStrandsNothing(t *testing.T) {
	b := setupStopped(t, func(c *worker.Config) { c.Shards = 4 })
	ctx := context.Background()
	_, err := shard.Set(ctx, b.db.Client, 16)
	require.NoError(t, err)
	p16, err := producer.New(producer.Config{RedisURL: b.db.URL(), Shards: 16})
	require.NoError(t, err)
	t.Cleanup(func() { p16.Close() })
	ids := shardedSends(t, p16, 300, 16)
	beyond := 0
	for _, id := range ids {
		if shard.Index(id, 16) >= 4 {
			beyond++
		}
	}
	require.Positive(t, beyond, "some tasks are in shards a 4-shard worker would not serve by count alone")
	_, err = shard.Set(ctx, b.db.Client, 4)
	require.NoError(t, err)
	require.NoError(t, b.worker.Start())
	p4, err := producer.New(producer.Config{RedisURL: b.db.URL(), Shards: 4})
	require.NoError(t, err)
	t.Cleanup(func() { p4.Close() })
	checkShardedDelivery(t, p4, b.db.Client, b.fake, ids, 16)
}

// An idle shard is asked only every IdlePollInterval, but a send wakes
// its shard at once: with the gate's slow poll at an hour, a send to an
// idle 16-shard worker is still delivered (within the test's 20 s), by the
// wake-up alone. Fails with the wake-up publish removed (the send waits
// for the hour's poll): checked.
func TestShardWakeUpDeliversIdleShard(t *testing.T) {
	t.Cleanup(worker.SetGateSlowPoll(time.Hour))
	b := setupStopped(t, func(c *worker.Config) { c.Shards = 16 })
	require.NoError(t, b.worker.Start())
	p, err := producer.New(producer.Config{RedisURL: b.db.URL(), Shards: 16})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	require.Eventually(t, func() bool { return b.worker.ClosedShards() == 32 }, 10*time.Second, 10*time.Millisecond,
		"every shard asked and found empty")
	for i := range 4 {
		to := fmt.Sprintf("+1555800%04d", i)
		_, err := p.Send(context.Background(), producer.Request{To: to, Code: canaryCode, TemplateID: "login"})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return b.fake.Delivered(to) == 1 }, 20*time.Second, 5*time.Millisecond, to)
	}
}

// The idle fetch cost does not grow with the shard count: a worker at its
// defaults costs Redis at most 400 commands/s idle with 16 shards, as with
// one (TestRedisCostPerDelivery); both figures are logged.
func TestShardedIdleCost(t *testing.T) {
	cost := map[int]float64{}
	for _, shards := range []int{1, 16} {
		addr := redistest.StartServer(t).Addr
		c := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { c.Close() })
		opt, err := redisconn.Option("redis://"+addr+"/0", nil, 0)
		require.NoError(t, err)
		cost[shards] = idleCost(t, c, 2*runtime.GOMAXPROCS(0), func() func() {
			w, err := worker.New(worker.Config{Redis: opt, Sender: &instantSender{}, Shards: shards, Logger: jsonLogger(io.Discard)})
			require.NoError(t, err)
			require.NoError(t, w.Start())
			return w.Shutdown
		})
	}
	t.Logf("idle worker, defaults: %.0f Redis commands/s with 1 shard, %.0f with 16", cost[1], cost[16])
	require.Less(t, cost[16], 400.0)
}

// A Redis Cluster of 3 masters with a replica each: with Shards 4 both
// classes' shards sit on several masters; every send is delivered once
// and found by Status; a receipt link and code key live in the task's
// shard slot.
func TestShardedCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 1)
	opt, err := redisconn.Option(cl.URL(), nil, 0)
	require.NoError(t, err)
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: canarySecret})
	w, err := worker.New(worker.Config{Redis: opt, BaseURL: newFakeHTTP(t, fake), DevKey: "key", DevSecret: canarySecret,
		Concurrency: 8, Shards: 4, Logger: jsonLogger(io.Discard)})
	require.NoError(t, err)
	t.Cleanup(w.Shutdown)
	require.NoError(t, w.Start())
	p, err := producer.New(producer.Config{Redis: opt, Shards: 4})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	rdb, err := redisconn.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(func() { rdb.Close() })
	ids := shardedSends(t, p, 500, 16)
	// A batch too, spread over the shards in one call.
	var reqs []producer.Request
	for i := range 8 {
		reqs = append(reqs, producer.Request{To: fmt.Sprintf("+1555600%04d", i), Code: canaryCode, TemplateID: "login"})
	}
	for i, r := range p.SendBatch(context.Background(), reqs, producer.Queue(producer.QueueBulk)) {
		require.NoError(t, r.Err)
		ids[reqs[i].To] = r.ID
	}
	checkShardedDelivery(t, p, rdb, fake, ids, 4)

	masters := map[string]bool{}
	for _, class := range shard.Classes {
		for _, q := range shard.Names(class, 4) {
			m, err := rdb.(*redis.ClusterClient).MasterForKey(context.Background(), asynqstore.PendingKey(q))
			require.NoError(t, err)
			masters[m.Options().Addr] = true
		}
	}
	require.Len(t, masters, 3, "the 8 shard queues sit on all 3 masters")
	queues, err := rdb.SMembers(context.Background(), asynqstore.AllQueues).Result()
	require.NoError(t, err)
	require.Subset(t, append(shard.Names("critical", 4), shard.Names("bulk", 4)...), queues,
		"only shard queues are published (each the first time a task goes to it)")
}

// masterLoad is the commands (INFO commandstats) and CPU seconds (INFO
// cpu, user+sys) a cluster node has used since its stats were reset.
func masterLoad(t *testing.T, c *redis.Client) (cmds int64, cpu float64) {
	t.Helper()
	info, err := c.InfoMap(context.Background(), "cpu").Result()
	require.NoError(t, err)
	for _, k := range []string{"used_cpu_user", "used_cpu_sys"} {
		var v float64
		_, _ = fmt.Sscan(info["CPU"][k], &v)
		cpu += v
	}
	return total(commandStats(t, c)), cpu
}

// A drain of 16-shard bulk tasks over a 3-master cluster spreads Redis's
// work: the busiest master carries at most 40% of the commands (issue 21's
// bar; 16 shards split 5/6/5). The share of commands and of redis-server
// CPU per master is logged.
func TestShardedDrainSpreadsOverMasters(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	opt, err := redisconn.Option(cl.URL(), nil, 0)
	require.NoError(t, err)
	p, err := producer.New(producer.Config{Redis: opt, Shards: 16, DestinationLimit: -1})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	const n = 3000
	reqs := make([]producer.Request, n)
	for i := range reqs {
		reqs[i] = producer.Request{To: fmt.Sprintf("+1555%07d", i), Code: canaryCode, TemplateID: "login"}
	}
	for _, r := range p.SendBatch(context.Background(), reqs, producer.Queue(producer.QueueBulk)) {
		require.NoError(t, r.Err)
	}
	masters := make([]*redis.Client, len(cl.Masters))
	cpu0 := make([]float64, len(cl.Masters))
	for i, m := range cl.Masters {
		masters[i] = redis.NewClient(&redis.Options{Addr: m.Addr})
		t.Cleanup(func() { masters[i].Close() })
		require.NoError(t, masters[i].ConfigResetStat(context.Background()).Err())
		_, cpu0[i] = masterLoad(t, masters[i])
	}
	sender := &instantSender{}
	w, err := worker.New(worker.Config{Redis: opt, Sender: sender, Shards: 16, Logger: jsonLogger(io.Discard)})
	require.NoError(t, err)
	t.Cleanup(w.Shutdown)
	require.NoError(t, w.Start())
	require.Eventually(t, func() bool { return sender.n.Load() >= n }, 120*time.Second, 10*time.Millisecond)
	var cmds []int64
	var cpus []float64
	var all int64
	var allCPU float64
	for i, m := range masters {
		c, cpu := masterLoad(t, m)
		cmds, cpus = append(cmds, c), append(cpus, cpu-cpu0[i])
		all, allCPU = all+c, allCPU+cpu-cpu0[i]
	}
	var line strings.Builder
	busiest := 0.0
	for i := range masters {
		share := float64(cmds[i]) / float64(all)
		busiest = max(busiest, share)
		fmt.Fprintf(&line, "master %d: %.0f%% of commands (%d), %.0f%% of CPU (%.2fs); ", i, 100*share, cmds[i], 100*cpus[i]/allCPU, cpus[i])
	}
	t.Logf("drain of %d bulk tasks, 16 shards, 3 masters: %s%.1f commands per delivery", n, line.String(), float64(all)/n)
	require.LessOrEqual(t, busiest, 0.40)
}
