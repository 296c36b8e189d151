package metrics

import (
	"errors"
	"strings"
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
	d.Completed(outcome.Delivered, now.Add(-2*time.Second), now)
	d.Completed(outcome.AcceptedUnconfirmed, now.Add(-time.Second), now)
	d.Retried(outcome.Throttle, 0)
	d.Retried(outcome.Retry, 1000)
	d.DeadLettered(outcome.ProviderRejected, 5013)
	d.DeadLettered(outcome.CodeExpired, 0)
	d.DeadLettered(outcome.Configuration, 0)
	d.DeadLettered("something new", 7777)
	d.ProviderRequest(ResultOK, 30*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("delivered", "none")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("accepted_unconfirmed", "none")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("retry", "1000")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("dead_letter", "5013")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("dead_letter", "other")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.sends.WithLabelValues("expired", "none")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.retries.WithLabelValues("throttle")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.deadLetters.WithLabelValues("other")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.deadLetters.WithLabelValues("configuration")))
	require.Equal(t, 1.0, testutil.ToFloat64(d.expired))
	require.Equal(t, 1, testutil.CollectAndCount(d.endToEnd))
	var nilD *Delivery // a nil Delivery records nothing and does not panic
	nilD.Begin()()
	nilD.Completed(outcome.Delivered, now, now)
	nilD.DeadLettered("x", 1)
	_, err = NewDelivery(reg)
	require.Error(t, err, "registering twice is refused")
}

type stubInspector struct {
	queues []string
	err    error
}

func (s stubInspector) Queues() ([]string, error) { return s.queues, s.err }
func (s stubInspector) GetQueueInfo(q string) (*asynq.QueueInfo, error) {
	return &asynq.QueueInfo{Queue: q, Size: 3, Pending: 2, Archived: 1, Latency: 1500 * time.Millisecond, ProcessedTotal: 9, FailedTotal: 4}, nil
}

func TestQueueCollector(t *testing.T) {
	c := newQueueCollector(stubInspector{queues: []string{"critical"}}, []string{"critical", "bulk"}, nil)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	require.NoError(t, testutil.GatherAndCompare(reg, stringsReader(`
# HELP asynq_queue_latency_seconds How long the oldest pending task of a queue has waited.
# TYPE asynq_queue_latency_seconds gauge
asynq_queue_latency_seconds{queue="bulk"} 0
asynq_queue_latency_seconds{queue="critical"} 1.5
# HELP asynq_tasks_processed_total Tasks processed since the queue was created, succeeded or failed.
# TYPE asynq_tasks_processed_total counter
asynq_tasks_processed_total{queue="bulk"} 0
asynq_tasks_processed_total{queue="critical"} 9
# HELP asynq_scrape_up 1 if the queue metrics could be read from Redis on this scrape, else 0.
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
	down.MustRegister(newQueueCollector(stubInspector{err: errors.New("redis down")}, []string{"critical"}, nil))
	require.NoError(t, testutil.GatherAndCompare(down, stringsReader(`
# HELP asynq_scrape_up 1 if the queue metrics could be read from Redis on this scrape, else 0.
# TYPE asynq_scrape_up gauge
asynq_scrape_up 0
`), "asynq_scrape_up"))
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
