package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redisserver"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/producer"
)

// ---- 8. a bulk drain on a Redis Cluster ------------------------------------

// clusterMasters is the cluster case's master count.
const clusterMasters = 3

// redisCluster is the cluster case's Redis Cluster: masters only, no
// replicas (a replica's work is not a master's).
type redisCluster struct {
	nodes   []*redisserver.Server
	clients []*redis.Client
	url     string
}

func (c *redisCluster) stop() {
	for _, cl := range c.clients {
		cl.Close()
	}
	for _, n := range c.nodes {
		n.Stop()
	}
}

func (e *env) startCluster(ctx context.Context, masters int) (*redisCluster, error) {
	c := &redisCluster{}
	var addrs []string
	for i := range masters {
		s, err := redisserver.Start(ctx, redisserver.Config{Bin: e.cfg.RedisServer, Dir: filepath.Join(e.dir, fmt.Sprintf("cluster-%d", i)),
			Cluster: true, Args: []string{"--maxclients", "10000"}})
		if err != nil {
			c.stop()
			return nil, err
		}
		c.nodes = append(c.nodes, s)
		c.clients = append(c.clients, redis.NewClient(&redis.Options{Addr: s.Addr}))
		addrs = append(addrs, s.Addr)
	}
	if err := redisserver.FormCluster(ctx, c.nodes, nil); err != nil {
		c.stop()
		return nil, err
	}
	c.url = "redis-cluster://" + strings.Join(addrs, ",")
	return c, nil
}

// masterSnap is each master's Redis work and CPU time so far.
type masterSnap struct {
	work []redisWork
	cpu  []time.Duration
}

func (c *redisCluster) snap(ctx context.Context) (masterSnap, error) {
	var s masterSnap
	for i, cl := range c.clients {
		info, err := cl.InfoMap(ctx, "stats", "commandstats").Result()
		if err != nil {
			return s, err
		}
		s.work = append(s.work, parseRedisWork(info))
		s.cpu = append(s.cpu, cpuTime(c.nodes[i].Pid()))
	}
	return s, nil
}

// clusterResult is one drain on the cluster: what each master did over
// the measured window, and the worker's CPU.
type clusterResult struct {
	shards    int
	limit     float64 // the worker's --rate, 0 for none
	times     []int64 // TIME calls per master: the --rate script's (and the guard's, off here)
	rate      float64
	delivered int
	cmds      []int64         // commands per master
	cpu       []time.Duration // redis-server CPU per master
	work      redisWork       // all masters' work together
	workerCPU time.Duration
}

// shares are each master's share of xs.
func shares[T int64 | time.Duration](xs []T) []float64 {
	var all T
	for _, x := range xs {
		all += x
	}
	out := make([]float64, len(xs))
	for i, x := range xs {
		if all > 0 {
			out[i] = float64(x) / float64(all)
		}
	}
	return out
}

func busiest(shares []float64) float64 {
	m := 0.0
	for _, s := range shares {
		m = max(m, s)
	}
	return m
}

// perDelivery is the redis-server CPU (all masters) and the worker's CPU
// per delivery, and the commands per delivery.
func (r clusterResult) perDelivery() (redisCPU, workerCPU time.Duration, cmds float64) {
	if r.delivered == 0 {
		return 0, 0, 0
	}
	var all time.Duration
	for _, c := range r.cpu {
		all += c
	}
	n := time.Duration(r.delivered)
	return all / n, r.workerCPU / n, float64(r.work.commands()) / float64(r.delivered)
}

// clusterRate is the --rate of the cluster case's rate-limited drain:
// far above what the drain reaches, so that it never waits, and only the
// limiter's script (one per send, on one global key) is added.
const clusterRate = 1e6

// cluster drains a preloaded bulk backlog with the otpq worker binary on
// a 3-master cluster, at Config.Shards shards (without and with --rate)
// and at 1, and measures each master's share of the commands and of
// redis-server's CPU.
func (e *env) cluster(ctx context.Context) error {
	c, err := e.startCluster(ctx, clusterMasters)
	if err != nil {
		return err
	}
	defer c.stop()
	pr, err := e.startProvider(ctx, "stub", 0)
	if err != nil {
		return err
	}
	defer pr.proc.stop()
	n := e.n(20000)
	for _, d := range []struct {
		shards int
		limit  float64
	}{{e.cfg.Shards, 0}, {e.cfg.Shards, clusterRate}, {1, 0}} {
		r, err := e.clusterDrain(ctx, c, pr, d.shards, n, d.limit)
		if err != nil {
			return err
		}
		e.rep.cluster = append(e.rep.cluster, r)
	}
	e.rep.clusterTasks = n
	e.rep.streamXAdd, e.rep.streamAdds, err = e.streamCost(ctx, c, e.n(20000))
	return err
}

// streamCost measures the receipt stream's cost on its master: n XADDs
// of a receipt entry's fields to receipts.StreamKey, trimmed as the
// receiver trims it, from 50 goroutines one command per round trip as
// concurrent callbacks add them; it returns the master's redis-server CPU
// per XADD.
func (e *env) streamCost(ctx context.Context, c *redisCluster, n int) (time.Duration, int, error) {
	slot, m := shard.Slot(receipts.StreamKey), 0
	for i, r := range redisserver.SlotRanges(len(c.nodes)) {
		if slot >= r[0] && slot <= r[1] {
			m = i
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: c.nodes[m].Addr, PoolSize: 50})
	defer rdb.Close()
	// The fields of receipts.Entry as the receiver writes them.
	values := []any{"task_id", "3f1c9a2e-7d41-4c55-9a0b-2b8e6f7d9c10", "queue", "bulk-5k", "message_id", "1700000000000000000",
		"status", "delivered", "raw_status", "delivered", "final", "1", "channel", "sms", "error_code", "0",
		"at", "2026-12-06T03:00:00.123Z", "to", "+86187****5678"}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	c0 := cpuTime(c.nodes[m].Pid())
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: receipts.StreamKey, MaxLen: receipts.DefaultStreamMaxLen, Approx: true, Values: values}).Err(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu := cpuTime(c.nodes[m].Pid()) - c0
	select {
	case err := <-errs:
		return 0, 0, fmt.Errorf("receipt stream: %w", err)
	default:
	}
	e.logf("  receipt stream: %d XADDs cost master %d %s", n, m, cpu)
	return cpu / time.Duration(n), n, nil
}

func (e *env) clusterDrain(ctx context.Context, c *redisCluster, pr *provider, shards, n int, limit float64) (clusterResult, error) {
	for _, cl := range c.clients {
		if err := cl.FlushAll(ctx).Err(); err != nil {
			return clusterResult{}, err
		}
	}
	if err := pr.reset(); err != nil {
		return clusterResult{}, err
	}
	e.logf("  %d masters, %d shards, --rate %g: preloading %d bulk tasks", len(c.nodes), shards, limit, n)
	if err := preloadWith(ctx, producer.Config{RedisURL: c.url, Shards: shards}, n, producer.QueueBulk); err != nil {
		return clusterResult{}, err
	}
	s := shardedSide(shards)
	s.redisURL = c.url
	if limit > 0 {
		s.extra = []string{"--rate", strconv.FormatFloat(limit, 'f', -1, 64)}
	}
	w, err := e.worker(s, pr.url, 100)
	if err != nil {
		return clusterResult{}, err
	}
	var t0, t1 time.Time
	var d0, d1 int
	var s0, s1 masterSnap
	var wc0, wc1 time.Duration
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) && t1.IsZero() {
		time.Sleep(50 * time.Millisecond)
		d, err := pr.delivered()
		if err != nil {
			continue
		}
		switch now := time.Now(); {
		case t0.IsZero() && d >= n/10:
			if s0, err = c.snap(ctx); err != nil {
				w.stop()
				return clusterResult{}, err
			}
			t0, d0, wc0 = now, d, cpuTime(w.cmd.Process.Pid)
		case !t0.IsZero() && (d >= n*9/10 || now.Sub(t0) >= 10*time.Second):
			if s1, err = c.snap(ctx); err != nil {
				w.stop()
				return clusterResult{}, err
			}
			t1, d1, wc1 = now, d, cpuTime(w.cmd.Process.Pid)
		}
	}
	w.stop()
	if t1.IsZero() || d1 <= d0 {
		out, _ := os.ReadFile(w.log)
		return clusterResult{}, fmt.Errorf("%d shards on the cluster: nothing measurable delivered (log: %s)", shards, lastLines(string(out), 10))
	}
	r := clusterResult{shards: shards, limit: limit, rate: float64(d1-d0) / t1.Sub(t0).Seconds(), delivered: d1 - d0, workerCPU: wc1 - wc0,
		work: redisWork{calls: map[string]int64{}, usec: map[string]int64{}}}
	for i := range c.nodes {
		d := s1.work[i].since(s0.work[i])
		r.cmds = append(r.cmds, d.commands())
		r.times = append(r.times, d.calls["time"])
		r.cpu = append(r.cpu, s1.cpu[i]-s0.cpu[i])
		for k, v := range d.calls {
			r.work.calls[k] += v
		}
		for k, v := range d.usec {
			r.work.usec[k] += v
		}
		r.work.reads += d.reads
	}
	e.logf("  %d shards, --rate %g: %s, commands per master %v, CPU per master %v", shards, limit, fmtRate(r.rate), r.cmds, r.cpu)
	return r, nil
}

// ---- 9. an idle fleet -------------------------------------------------------

// fleetSizes are the idle fleet case's worker process counts.
var fleetSizes = []int{1, 2, 4, 8}

// fleetResult is the Redis work of n idle worker processes at a shard
// count, over the fleet window.
type fleetResult struct {
	shards, workers int
	secs            float64
	work            redisWork
	redisCPU        time.Duration
}

// fleet starts idle otpq worker processes, 1 then 2, 4 and 8 of them, at
// 1 shard and at Config.Shards, and counts Redis's commands per second
// and its CPU: each process polls and forwards every shard on its own.
func (e *env) fleet(ctx context.Context) error {
	pr, err := e.startProvider(ctx, "stub", 0)
	if err != nil {
		return err
	}
	defer pr.proc.stop()
	window := e.dur(5*time.Second, 3*time.Second)
	for _, shards := range []int{1, e.cfg.Shards} {
		if err := e.flush(ctx); err != nil {
			return err
		}
		s := shardedSide(shards)
		var procs []*proc
		stopAll := func() {
			for _, p := range procs {
				p.stop()
			}
		}
		for _, n := range fleetSizes {
			for len(procs) < n {
				p, err := start(e.dir, fmt.Sprintf("otpq-worker-%d", len(procs)), workerEnv(pr.url), e.cfg.Otpq, e.workerArgs(s, 100)...)
				if err != nil {
					stopAll()
					return err
				}
				procs = append(procs, p)
			}
			if err := e.waitServers(ctx, n*2*runtime.GOMAXPROCS(0)); err != nil {
				stopAll()
				return fmt.Errorf("%d workers, %d shards: %w", n, shards, err)
			}
			time.Sleep(time.Second) // each asynq server's first recovery pass
			w0, err := e.redisWork(ctx)
			if err != nil {
				stopAll()
				return err
			}
			c0 := cpuTime(e.redis.Pid())
			time.Sleep(window)
			w1, err := e.redisWork(ctx)
			if err != nil {
				stopAll()
				return err
			}
			r := fleetResult{shards: shards, workers: n, secs: window.Seconds(), work: w1.since(w0), redisCPU: cpuTime(e.redis.Pid()) - c0}
			e.logf("  %d shards, %d workers: %.0f commands/s", shards, n, float64(r.work.commands())/r.secs)
			e.rep.fleet = append(e.rep.fleet, r)
		}
		stopAll()
	}
	return e.flush(ctx)
}

// waitServers waits until n asynq servers have registered (each worker
// process runs 2 × --servers of them, --servers defaulting to GOMAXPROCS).
func (e *env) waitServers(ctx context.Context, n int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := e.rdb.ZCard(ctx, "asynq:servers").Result()
		if err == nil && got >= int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d asynq servers registered, want %d", got, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
