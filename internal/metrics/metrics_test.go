package metrics

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
)

func TestCodeLabelBounded(t *testing.T) {
	require.Equal(t, "none", CodeLabel(0))
	require.Equal(t, "5013", CodeLabel(engagelab.CodeBlacklisted))
	require.Equal(t, "1000", CodeLabel(1000))
	seen := map[string]bool{}
	for c := engagelab.Code(-10); c < 100000; c++ {
		seen[CodeLabel(c)] = true
	}
	require.Len(t, seen, len(engagelab.Codes())+2, "no provider answer can grow the label set")
}

func TestDeliverySeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	d, err := NewDelivery(reg)
	require.NoError(t, err)
	done := d.Begin()
	require.Equal(t, 1.0, testutil.ToFloat64(d.inFlight))
	done()
	require.Equal(t, 0.0, testutil.ToFloat64(d.inFlight))
	now := time.Now()
	d.Completed(outcome.Accepted, now.Add(-2*time.Second), now)
	d.Completed(outcome.AcceptedUnconfirmed, now.Add(-time.Second), now)
	d.Completed(outcome.AlreadyAccepted, now.Add(-time.Minute), now) // counted, not timed
	d.Retried(outcome.Throttle, 0)
	d.Retried(outcome.Retry, 1000)
	d.DeadLettered(outcome.ProviderRejected, 5013)
	d.DeadLettered(outcome.CodeExpired, 0)
	d.DeadLettered(outcome.Configuration, 0)
	d.DeadLettered("something new", 7777)
	d.ProviderRequest(ResultOK, 30*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("accepted", "none")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("accepted_unconfirmed", "none")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("already_accepted", "none")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("retry", "1000")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("dead_letter", "5013")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("dead_letter", "other")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("expired", "none")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.retries.WithLabelValues("throttle")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.deadLetters.WithLabelValues("other")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.deadLetters.WithLabelValues("configuration")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.expired))
	require.Equal(t, 1, testutil.CollectAndCount(d.endToEnd))
	require.Equal(t, uint64(2), endToEndCount(t, reg), "the attempt that found an earlier acceptance is not timed")
	var nilD *Delivery // a nil Delivery records nothing and does not panic
	nilD.Begin()()
	nilD.Completed(outcome.Accepted, now, now)
	nilD.DeadLettered("x", 1)
	_, err = NewDelivery(reg)
	require.Error(t, err, "registering twice is refused")
}

// endToEndCount is the number of observations of otpq_enqueue_to_send_seconds.
func endToEndCount(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "otpq_enqueue_to_send_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("no otpq_enqueue_to_send_seconds")
	return 0
}

// stubQueues reads queues from no Redis: each with the same figures.
type stubQueues struct {
	queues []string
	err    error
	reads  *atomic.Int64 // readings, when not nil
}

func (s stubQueues) read(context.Context) ([]*asynq.QueueInfo, error) {
	if s.reads != nil {
		s.reads.Add(1)
	}
	if s.err != nil {
		return nil, s.err
	}
	var out []*asynq.QueueInfo
	for _, q := range s.queues {
		out = append(out, &asynq.QueueInfo{Queue: q, Size: 3, Pending: 2, Archived: 1, Latency: 1500 * time.Millisecond, ProcessedTotal: 9, FailedTotal: 4})
	}
	return out, nil
}

func TestQueueCollector(t *testing.T) {
	c := newQueueCollector(stubQueues{queues: []string{"critical"}}.read, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	require.NoError(t, testutil.GatherAndCompare(reg, stringsReader(`
# HELP asynq_queue_latency_seconds How long the oldest pending task of a queue (of any of its shards) has waited.
# TYPE asynq_queue_latency_seconds gauge
asynq_queue_latency_seconds{queue="bulk"} 0
asynq_queue_latency_seconds{queue="critical"} 1.5
# HELP asynq_tasks_processed_total Tasks processed since the queue was created, succeeded or failed.
# TYPE asynq_tasks_processed_total counter
asynq_tasks_processed_total{queue="bulk"} 0
asynq_tasks_processed_total{queue="critical"} 9
# HELP asynq_scrape_up 1 if the queue metrics could be read from Redis at the last reading (at most 5 s old), else 0.
# TYPE asynq_scrape_up gauge
asynq_scrape_up 1
`), "asynq_queue_latency_seconds", "asynq_tasks_processed_total", "asynq_scrape_up"))
	// One gauge per asynq task state, labelled with asynq's own state names.
	require.NoError(t, testutil.GatherAndCompare(reg, stringsReader(`
# HELP asynq_tasks_enqueued_total Number of tasks in a queue, by state (a gauge, despite the name kept from asynq's x/metrics).
# TYPE asynq_tasks_enqueued_total gauge
asynq_tasks_enqueued_total{queue="bulk",state="active"} 0
asynq_tasks_enqueued_total{queue="bulk",state="aggregating"} 0
asynq_tasks_enqueued_total{queue="bulk",state="archived"} 0
asynq_tasks_enqueued_total{queue="bulk",state="completed"} 0
asynq_tasks_enqueued_total{queue="bulk",state="pending"} 0
asynq_tasks_enqueued_total{queue="bulk",state="retry"} 0
asynq_tasks_enqueued_total{queue="bulk",state="scheduled"} 0
asynq_tasks_enqueued_total{queue="critical",state="active"} 0
asynq_tasks_enqueued_total{queue="critical",state="aggregating"} 0
asynq_tasks_enqueued_total{queue="critical",state="archived"} 1
asynq_tasks_enqueued_total{queue="critical",state="completed"} 0
asynq_tasks_enqueued_total{queue="critical",state="pending"} 2
asynq_tasks_enqueued_total{queue="critical",state="retry"} 0
asynq_tasks_enqueued_total{queue="critical",state="scheduled"} 0
`), "asynq_tasks_enqueued_total"))

	down := prometheus.NewRegistry()
	down.MustRegister(newQueueCollector(stubQueues{err: errors.New("redis down")}.read, nil))
	require.NoError(t, testutil.GatherAndCompare(down, stringsReader(`
# HELP asynq_scrape_up 1 if the queue metrics could be read from Redis at the last reading (at most 5 s old), else 0.
# TYPE asynq_scrape_up gauge
asynq_scrape_up 0
`), "asynq_scrape_up"))
	require.Zero(t, testutil.CollectAndCount(down, "asynq_queue_size", "asynq_tasks_enqueued_total"),
		"no reading, no queue series: zeros would tell the alerts nothing waits")
}

// Scrapes in a loop, concurrent ones included, read the queues once per
// QueueCacheFor, not once per scrape (issue 16 row 13).
func TestQueueCollectorCachesReadings(t *testing.T) {
	var reads atomic.Int64
	reg := prometheus.NewRegistry()
	reg.MustRegister(newQueueCollector(stubQueues{queues: []string{"critical", "bulk"}, reads: &reads}.read, nil))
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				_, err := reg.Gather()
				require.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	// One reading per QueueCacheFor begun: 1 unless the machine is so
	// slow that the 20 scrapes took longer than that.
	readings := 1 + int64(time.Since(start)/QueueCacheFor)
	require.LessOrEqual(t, reads.Load(), readings, "20 scrapes read the queues more than once per %s", QueueCacheFor)
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
