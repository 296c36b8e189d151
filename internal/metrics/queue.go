// Package metrics holds otpq's Prometheus collectors: the asynq queue
// metrics (what asynq's x/metrics exports, under the same names) and otpq's
// own delivery series. Every label takes a bounded set of values: queue names,
// task states, outcomes, known EngageLab codes, dead-letter reasons. No
// destination, task ID or code is ever a label or a value.
package metrics

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
)

// inspector is the part of *asynq.Inspector the queue collector reads.
type inspector interface {
	Queues() ([]string, error)
	GetQueueInfo(queue string) (*asynq.QueueInfo, error)
}

// QueueCollector exports asynq queue metrics on every scrape, read from
// Redis through an asynq Inspector. The names and labels are those of
// asynq's github.com/hibiken/asynq/x/metrics collector (so its dashboards
// and asynqmon's Prometheus charts work), plus the completed and aggregating
// states and lifetime processed/failed counters that asynq v0.26 tracks.
//
// It is written here rather than imported because x/metrics was last
// published in 2021: it predates the completed state and the lifetime
// totals, logs through the standard logger, and drops queues that hold no
// task yet; otpq always reports its own queues, zeros included.
type QueueCollector struct {
	ins    inspector
	queues []string
	log    *slog.Logger

	size, latency, memory, paused *prometheus.Desc
	tasks, processed, failed      *prometheus.Desc
	processedToday, failedToday   *prometheus.Desc
	up                            *prometheus.Desc
}

// NewQueueCollector returns a collector over ins. The queues in always are
// reported even before a task has ever been enqueued into them; others
// appear as asynq learns of them. log receives scrape errors (default
// slog.Default()).
func NewQueueCollector(ins *asynq.Inspector, always []string, log *slog.Logger) *QueueCollector {
	return newQueueCollector(ins, always, log)
}

func newQueueCollector(ins inspector, always []string, log *slog.Logger) *QueueCollector {
	if log == nil {
		log = slog.Default()
	}
	q := []string{"queue"}
	return &QueueCollector{
		ins: ins, queues: always, log: log,
		tasks:          prometheus.NewDesc("asynq_tasks_enqueued_total", "Number of tasks in a queue, by state (a gauge, despite the name kept from asynq's x/metrics).", []string{"queue", "state"}, nil),
		size:           prometheus.NewDesc("asynq_queue_size", "Number of tasks in a queue, all states but completed.", q, nil),
		latency:        prometheus.NewDesc("asynq_queue_latency_seconds", "How long the oldest pending task of a queue has waited.", q, nil),
		memory:         prometheus.NewDesc("asynq_queue_memory_usage_approx_bytes", "Approximate Redis memory used by a queue (sampled).", q, nil),
		processedToday: prometheus.NewDesc("asynq_tasks_processed_today", "Tasks processed today (UTC), succeeded or failed.", q, nil),
		failedToday:    prometheus.NewDesc("asynq_tasks_failed_today", "Tasks whose processing failed today (UTC).", q, nil),
		processed:      prometheus.NewDesc("asynq_tasks_processed_total", "Tasks processed since the queue was created, succeeded or failed.", q, nil),
		failed:         prometheus.NewDesc("asynq_tasks_failed_total", "Task attempts that failed since the queue was created.", q, nil),
		paused:         prometheus.NewDesc("asynq_queue_paused_total", "1 if the queue is paused, else 0.", q, nil),
		up:             prometheus.NewDesc("asynq_scrape_up", "1 if the queue metrics could be read from Redis on this scrape, else 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.tasks, c.size, c.latency, c.memory, c.processedToday, c.failedToday, c.processed, c.failed, c.paused, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A Redis failure is reported as
// asynq_scrape_up 0 (and logged), never as a failed scrape of the other
// series.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, err := c.read()
	up := 1.0
	if err != nil {
		up = 0
		c.log.LogAttrs(context.Background(), slog.LevelWarn, "queue metrics: cannot read Redis", slog.String("error", err.Error()))
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up)
	for _, in := range infos {
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

// read returns the info of every known queue plus the always-reported ones
// (zero when asynq has not seen them yet).
func (c *QueueCollector) read() ([]*asynq.QueueInfo, error) {
	names, err := c.ins.Queues()
	if err != nil {
		return nil, err
	}
	var out []*asynq.QueueInfo
	for _, name := range names {
		in, err := c.ins.GetQueueInfo(name)
		if err != nil {
			return out, err
		}
		out = append(out, in)
	}
	for _, name := range c.queues {
		if !slices.Contains(names, name) {
			out = append(out, &asynq.QueueInfo{Queue: name, Timestamp: time.Now()})
		}
	}
	return out, nil
}
