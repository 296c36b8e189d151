// Package metrics holds otpq's Prometheus collectors: the asynq queue
// metrics (what asynq's x/metrics exports, under the same names) and otpq's
// own delivery series. Every label takes a bounded set of values: queue names,
// task states, outcomes, known EngageLab codes, dead-letter reasons. No
// destination, task ID or code is ever a label or a value.
package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/shard"
)

// QueueCollector exports asynq queue metrics on every scrape, read from
// Redis. The names and labels are those of asynq's
// github.com/hibiken/asynq/x/metrics collector (so its dashboards and
// asynqmon's Prometheus charts work), plus the completed and aggregating
// states and lifetime processed/failed counters that asynq v0.26 tracks.
//
// Per queue class: the queue label of otpq's queues is their class,
// critical or bulk, whatever the shard count (see internal/shard): each
// series of a class is the sum over its shards (the latency the longest
// wait of any shard; paused 1 when any shard is paused), so dashboards and
// alerts read the same with 1 shard or 128. The shards read are those
// Redis records as served (otpq:shards), plus any other shard queue asynq
// knows. With more than one shard, otpq_shard_queue_size{queue,shard}
// gives each shard's size: a shard that is not being served (a paused
// shard queue, a master down) shows there while its class's sum hides
// it. Queues that are not otpq's keep their own names.
//
// The queue sizes are read at most once every QueueCacheFor: scrapes in
// between (any number, concurrent ones included) are answered from the
// last reading, so /metrics, which anyone who reaches the ops server can
// ask, costs Redis a bounded number of commands however often it is
// scraped. A reading is three round trips whatever the shard count (the
// shard count, the queue set, then one pipeline of two scripts per queue:
// on a Cluster one pipeline per master; see asynqstore.QueueStats).
//
// It is written here rather than imported because x/metrics was last
// published in 2021: it predates the completed state and the lifetime
// totals, logs through the standard logger, and drops queues that hold no
// task yet; otpq always reports its own queues, zeros included.
type QueueCollector struct {
	read func(context.Context) ([]*asynq.QueueInfo, error)
	log  *slog.Logger

	size, latency, memory, paused *prometheus.Desc
	tasks, processed, failed      *prometheus.Desc
	processedToday, failedToday   *prometheus.Desc
	up                            *prometheus.Desc
	shardSize                     *prometheus.Desc

	// The last reading, under mu (held while reading, so concurrent
	// scrapes wait for one reading instead of making their own).
	mu     sync.Mutex
	readAt time.Time
	infos  []*asynq.QueueInfo
	err    error
}

// QueueCacheFor is how long a reading of the queues answers scrapes.
const QueueCacheFor = 5 * time.Second

// queueReadTimeout bounds one reading of the queues.
const queueReadTimeout = 10 * time.Second

// NewQueueCollector returns a collector over the queues in rdb: otpq's two
// classes (every shard workers serve, zeros included before a task was
// ever enqueued) and any other queue asynq knows. log receives scrape
// errors (default slog.Default()).
func NewQueueCollector(rdb redis.UniversalClient, log *slog.Logger) *QueueCollector {
	return newQueueCollector(func(ctx context.Context) ([]*asynq.QueueInfo, error) { return readQueues(ctx, rdb) }, log)
}

// readQueues reads every queue of rdb, shard by shard.
func readQueues(ctx context.Context, rdb redis.UniversalClient) ([]*asynq.QueueInfo, error) {
	l, err := shard.Read(ctx, rdb)
	if err != nil {
		return nil, err
	}
	queues := shard.All(l.Served)
	known, err := rdb.SMembers(ctx, asynqstore.AllQueues).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", asynqstore.AllQueues, err)
	}
	slices.Sort(known)
	for _, q := range known {
		if !slices.Contains(queues, q) {
			queues = append(queues, q)
		}
	}
	return asynqstore.QueueStats(ctx, rdb, queues, time.Now())
}

func newQueueCollector(read func(context.Context) ([]*asynq.QueueInfo, error), log *slog.Logger) *QueueCollector {
	if log == nil {
		log = slog.Default()
	}
	q := []string{"queue"}
	return &QueueCollector{
		read: read, log: log,
		tasks:          prometheus.NewDesc("asynq_tasks_enqueued_total", "Number of tasks in a queue, by state (a gauge, despite the name kept from asynq's x/metrics).", []string{"queue", "state"}, nil),
		size:           prometheus.NewDesc("asynq_queue_size", "Number of tasks in a queue, all states but completed.", q, nil),
		latency:        prometheus.NewDesc("asynq_queue_latency_seconds", "How long the oldest pending task of a queue (of any of its shards) has waited.", q, nil),
		memory:         prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes", "Approximate Redis memory used by a queue (sampled).", q, nil),
		processedToday: prometheus.NewDesc("asynq_tasks_processed_today", "Tasks processed today (UTC), succeeded or failed.", q, nil),
		failedToday:    prometheus.NewDesc("asynq_tasks_failed_today", "Tasks whose processing failed today (UTC).", q, nil),
		processed:      prometheus.NewDesc("asynq_tasks_processed_total", "Tasks processed since the queue was created, succeeded or failed.", q, nil),
		failed:         prometheus.NewDesc("asynq_tasks_failed_total", "Task attempts that failed since the queue was created.", q, nil),
		paused:         prometheus.NewDesc("asynq_queue_paused_total", "1 if the queue (any of its shards) is paused, else 0.", q, nil),
		up:             prometheus.NewDesc("asynq_scrape_up", "1 if the queue metrics could be read from Redis at the last reading (at most 5 s old), else 0.", nil, nil),
		shardSize:      prometheus.NewDesc("otpq_shard_queue_size", "Number of tasks in one shard of a queue class, all states but completed (only when the class has more than one shard).", []string{"queue", "shard"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.tasks, c.size, c.latency, c.memory, c.processedToday, c.failedToday, c.processed, c.failed, c.paused, c.up, c.shardSize} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A Redis failure is reported as
// asynq_scrape_up 0 (and logged), never as a failed scrape of the other
// series.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, err := c.cached()
	up := 1.0
	if err != nil {
		up = 0
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	if err != nil {
		return // no reading: zeros would hide waiting tasks from the alerts
	}
	classes, shards := perClass(infos)
	for _, in := range shards {
		ch <- prometheus.MustNewConstMetric(c.shardSize, prometheus.GaugeValue, float64(in.Size), shard.ClassOf(in.Queue), in.Queue)
	}
	for _, in := range classes {
		g := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{in.Queue}, labels...)...)
		}
		for state, n := range map[asynq.TaskState]int{
			asynq.TaskStateActive: in.Active, asynq.TaskStatePending: in.Pending, asynq.TaskStateScheduled: in.Scheduled,
			asynq.TaskStateRetry: in.Retry, asynq.TaskStateArchived: in.Archived, asynq.TaskStateCompleted: in.Completed,
			asynq.TaskStateAggregating: in.Aggregating,
		} {
			g(c.tasks, float64(n), state.String())
		}
		g(c.size, float64(in.Size))
		g(c.latency, in.Latency.Seconds())
		g(c.memory, float64(in.MemoryUsage))
		g(c.processedToday, float64(in.Processed))
		g(c.failedToday, float64(in.Failed))
		paused := 0.0
		if in.Paused {
			paused = 1
		}
		g(c.paused, paused)
		ch <- prometheus.MustNewConstMetric(c.processed, prometheus.CounterValue, float64(in.ProcessedTotal), in.Queue)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(in.FailedTotal), in.Queue)
	}
}

// cached returns the last reading, reading again when it is older than
// QueueCacheFor. A failed reading is kept as long (and logged once).
func (c *QueueCollector) cached() ([]*asynq.QueueInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.readAt.IsZero() && time.Since(c.readAt) < QueueCacheFor {
		return c.infos, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), queueReadTimeout)
	defer cancel()
	c.infos, c.err = c.read(ctx)
	c.readAt = time.Now()
	if c.err != nil {
		c.log.LogAttrs(context.Background(), slog.LevelWarn, "queue metrics: cannot read Redis", slog.String("error", c.err.Error()))
	}
	return c.infos, c.err
}

// perClass sums the shards of each of otpq's classes into one QueueInfo
// named after the class (both classes always present), other queues kept
// as they are, and returns the shards of the classes that have more than
// one.
func perClass(infos []*asynq.QueueInfo) (classes, shards []*asynq.QueueInfo) {
	sums := map[string]*asynq.QueueInfo{}
	n := map[string]int{}
	for _, c := range shard.Classes {
		sums[c] = &asynq.QueueInfo{Queue: c}
		classes = append(classes, sums[c])
	}
	for _, in := range infos {
		c := shard.ClassOf(in.Queue)
		if c == "" {
			classes = append(classes, in)
			continue
		}
		n[c]++
		s := sums[c]
		s.Size += in.Size
		s.Groups += in.Groups
		s.Pending += in.Pending
		s.Active += in.Active
		s.Scheduled += in.Scheduled
		s.Retry += in.Retry
		s.Archived += in.Archived
		s.Completed += in.Completed
		s.Aggregating += in.Aggregating
		s.Processed += in.Processed
		s.Failed += in.Failed
		s.ProcessedTotal += in.ProcessedTotal
		s.FailedTotal += in.FailedTotal
		s.MemoryUsage += in.MemoryUsage
		s.Latency = max(s.Latency, in.Latency)
		s.Paused = s.Paused || in.Paused
		s.Timestamp = in.Timestamp
	}
	for _, in := range infos {
		if c := shard.ClassOf(in.Queue); c != "" && n[c] > 1 {
			shards = append(shards, in)
		}
	}
	return classes, shards
}
