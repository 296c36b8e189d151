//go:build !otpq_notrace

package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/tracing"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// traced is a worker, a producer and a receipt receiver sharing one
// in-process span recorder; with callbacks, the fake provider posts a
// delivered receipt 50 ms after each accepted send.
type traced struct {
	spans    *tracetest.SpanRecorder
	tp       *sdktrace.TracerProvider
	fake     *fakeengagelab.Server
	producer *producer.Producer
	ins      *asynq.Inspector
}

func setupTraced(t *testing.T, mod func(*worker.Config), callbacks bool) traced {
	t.Helper()
	db := redistest.New(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	rdb := redis.NewClient(&redis.Options{Addr: db.Addr, DB: db.Number})
	t.Cleanup(func() { rdb.Close() })
	recv, err := receipts.NewReceiver(receipts.Config{Redis: rdb, Credentials: receipts.Credentials{Username: "cb", Secret: canarySecret},
		TracerProvider: tp, PollInterval: 20 * time.Millisecond, Logger: quiet})
	require.NoError(t, err)
	rsrv := httptest.NewServer(recv)
	t.Cleanup(rsrv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { recv.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	fcfg := fakeengagelab.Config{DevKey: "key", DevSecret: canarySecret}
	if callbacks {
		fcfg.Callback = fakeengagelab.CallbackConfig{
			URL: rsrv.URL + receipts.Path, Username: "cb", Secret: canarySecret,
			Lifecycles: []fakeengagelab.Lifecycle{{To: "*", Steps: []fakeengagelab.Step{{Status: "delivered", After: 50 * time.Millisecond}}}},
		}
	}
	fake := fakeengagelab.New(fcfg)
	t.Cleanup(fake.Close)
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	cfg := worker.Config{
		RedisURL: db.URL(), BaseURL: srv.URL, DevKey: "key", DevSecret: canarySecret,
		Concurrency: 4, RetryMinDelay: 100 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond,
		HTTPTimeout: 2 * time.Second, Logger: quiet, TracerProvider: tp,
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := worker.New(cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start())
	t.Cleanup(w.Shutdown)
	p, err := producer.New(producer.Config{RedisURL: db.URL(), TracerProvider: tp})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number})
	t.Cleanup(func() { ins.Close() })
	return traced{spans: sr, tp: tp, fake: fake, producer: p, ins: ins}
}

// send enqueues a send inside a span "caller", as an application that
// traces its own requests does, and waits until the task is final.
func (tr traced) send(t *testing.T, to string, opts ...producer.Option) string {
	t.Helper()
	ctx, span := tr.tp.Tracer("test").Start(context.Background(), "caller")
	id, err := tr.producer.Send(ctx, producer.Request{To: to, Code: canaryCode, TemplateID: "login"}, opts...)
	span.End()
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := tr.ins.GetTaskInfo(producer.QueueCritical, id)
		return err == nil && (info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived)
	}, 20*time.Second, 10*time.Millisecond, "task %s never finished", id)
	return id
}

// shown are the attributes tree prints, in this order.
var shown = []attribute.Key{tracing.Attempt, tracing.Outcome, tracing.Reason, tracing.Code, tracing.ReceiptStatus, "http.request.method", "url.path", "http.response.status_code"}

// tree renders spans as an indented tree (children by start time): name,
// kind, the shown attributes and the links, by the linked span's name. It
// requires that every span belongs to one trace.
func tree(t *testing.T, spans []sdktrace.ReadOnlySpan) string {
	t.Helper()
	for _, s := range spans {
		require.Equal(t, spans[0].SpanContext().TraceID(), s.SpanContext().TraceID(), "span %s is in another trace", s.Name())
	}
	return renderTree(spans, spans)
}

// forest renders each trace of spans as tree does, the trace that starts
// first first, separated by "--" lines; links name spans of any trace.
func forest(spans []sdktrace.ReadOnlySpan) string {
	var order []trace.TraceID
	byTrace := map[trace.TraceID][]sdktrace.ReadOnlySpan{}
	sorted := slices.Clone(spans)
	slices.SortFunc(sorted, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
	for _, s := range sorted {
		id := s.SpanContext().TraceID()
		if _, ok := byTrace[id]; !ok {
			order = append(order, id)
		}
		byTrace[id] = append(byTrace[id], s)
	}
	var out []string
	for _, id := range order {
		out = append(out, renderTree(byTrace[id], spans))
	}
	return strings.Join(out, "--\n")
}

// renderTree renders spans (one trace) for tree and forest, naming linked
// spans found in all.
func renderTree(spans, all []sdktrace.ReadOnlySpan) string {
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = s
	}
	names := map[trace.SpanID]string{}
	for _, s := range all {
		names[s.SpanContext().SpanID()] = s.Name()
	}
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if _, ok := byID[s.Parent().SpanID()]; ok {
			children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
		} else {
			roots = append(roots, s)
		}
	}
	var b strings.Builder
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		fmt.Fprintf(&b, "%s%s (%s)", strings.Repeat("  ", depth), s.Name(), s.SpanKind())
		attrs := attribute.NewSet(s.Attributes()...)
		for _, k := range shown {
			if v, ok := attrs.Value(k); ok {
				fmt.Fprintf(&b, " %s=%s", k, v.Emit())
			}
		}
		for _, l := range s.Links() {
			name, ok := names[l.SpanContext.SpanID()]
			if !ok {
				name = "?"
			}
			fmt.Fprintf(&b, " link=%s", name)
		}
		b.WriteString("\n")
		kids := children[s.SpanContext().SpanID()]
		slices.SortFunc(kids, func(a, b sdktrace.ReadOnlySpan) int { return a.StartTime().Compare(b.StartTime()) })
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return b.String()
}

// named is the spans called name.
func named(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// attr is the value of span s's attribute k, "" when absent.
func attr(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	set := attribute.NewSet(s.Attributes()...)
	v, _ := set.Value(k)
	return v.Emit()
}

// noSecrets fails when any text of spans (attributes, events, links,
// status, resource) holds one of secrets.
func noSecrets(t *testing.T, spans []sdktrace.ReadOnlySpan, secrets ...string) {
	t.Helper()
	for _, s := range spans {
		texts := []string{s.Name(), s.Status().Description}
		add := func(kvs []attribute.KeyValue) {
			for _, kv := range kvs {
				texts = append(texts, string(kv.Key)+"="+kv.Value.Emit())
			}
		}
		add(s.Attributes())
		add(s.Resource().Attributes())
		for _, e := range s.Events() {
			texts = append(texts, e.Name)
			add(e.Attributes)
		}
		for _, l := range s.Links() {
			add(l.Attributes)
		}
		for _, text := range texts {
			for _, secret := range secrets {
				require.NotContains(t, text, secret, "span %s", s.Name())
			}
		}
	}
}

// The delivered send is one trace across the Redis hop: the caller's span,
// the enqueue, the attempt (child and link of the enqueue) and the
// provider request (a client span, child of the attempt); the attempt says
// which task, attempt and outcome, the message_id and channel, and the
// destination masked as in logs.
func TestTraceDelivered(t *testing.T) {
	tr := setupTraced(t, nil, false)
	id := tr.send(t, "+8618701235678")
	spans := tr.spans.Ended()
	require.Equal(t, `caller (internal)
  otpq.enqueue (producer) otpq.outcome=enqueued
    otpq.deliver (consumer) otpq.attempt=1 otpq.outcome=accepted link=otpq.enqueue
      POST (client) http.request.method=POST http.response.status_code=200
`, tree(t, spans))
	d := named(spans, tracing.SpanDeliver)[0]
	require.Equal(t, id, attr(d, tracing.TaskID))
	require.Equal(t, producer.QueueCritical, attr(d, tracing.Queue))
	require.Equal(t, "+861*******678", attr(d, tracing.To))
	require.Equal(t, tr.fake.Receipts()[0].MessageID, attr(d, tracing.MessageID))
	require.Equal(t, "sms", attr(d, tracing.Channel))
	require.Regexp(t, `^\d+$`, attr(d, tracing.QueueWait))
	require.Equal(t, codes.Unset, d.Status().Code)
	e := named(spans, tracing.SpanEnqueue)[0]
	require.Equal(t, id, attr(e, tracing.TaskID))
	noSecrets(t, spans, canaryCode, canarySecret, "+8618701235678")
}

// A retried send has one attempt span per attempt, each a child of the
// enqueue span: the failed one says retry and the provider's code.
func TestTraceRetriedThenDelivered(t *testing.T) {
	tr := setupTraced(t, nil, false)
	tr.fake.SetRules(fakeengagelab.Rule{To: "+8618701235678", Status: 500, Code: 1000, Times: 1})
	tr.send(t, "+8618701235678")
	spans := tr.spans.Ended()
	require.Equal(t, `caller (internal)
  otpq.enqueue (producer) otpq.outcome=enqueued
    otpq.deliver (consumer) otpq.attempt=1 otpq.outcome=retry otpq.engagelab.code=1000 link=otpq.enqueue
      POST (client) http.request.method=POST http.response.status_code=500
    otpq.deliver (consumer) otpq.attempt=2 otpq.outcome=accepted link=otpq.enqueue
      POST (client) http.request.method=POST http.response.status_code=200
`, tree(t, spans))
	first := named(spans, tracing.SpanDeliver)[0]
	require.Equal(t, codes.Error, first.Status().Code)
	require.Equal(t, "retry", first.Status().Description, "the outcome, never the provider's text")
	noSecrets(t, spans, canaryCode, canarySecret, "+8618701235678")
}

// A send the provider refuses for good is one attempt, dead-lettered, its
// span failed with the reason.
func TestTraceDeadLettered(t *testing.T) {
	tr := setupTraced(t, nil, false)
	tr.fake.SetRules(fakeengagelab.Rule{To: "+8618701235678", Code: 5013})
	tr.send(t, "+8618701235678")
	spans := tr.spans.Ended()
	require.Equal(t, `caller (internal)
  otpq.enqueue (producer) otpq.outcome=enqueued
    otpq.deliver (consumer) otpq.attempt=1 otpq.outcome=dead_letter otpq.reason=provider rejected otpq.engagelab.code=5013 link=otpq.enqueue
      POST (client) http.request.method=POST http.response.status_code=400
`, tree(t, spans))
	d := named(spans, tracing.SpanDeliver)[0]
	require.Equal(t, codes.Error, d.Status().Code)
	require.Equal(t, "dead_letter: provider rejected", d.Status().Description)
	noSecrets(t, spans, canaryCode, canarySecret, "+8618701235678")
}

// An expired code is never sent: its attempt has no provider request.
func TestTraceExpired(t *testing.T) {
	tr := setupTraced(t, func(c *worker.Config) { c.Now = func() time.Time { return time.Now().Add(time.Hour) } }, false)
	tr.send(t, "+8618701235678")
	spans := tr.spans.Ended()
	require.Equal(t, `caller (internal)
  otpq.enqueue (producer) otpq.outcome=enqueued
    otpq.deliver (consumer) otpq.attempt=1 otpq.outcome=expired otpq.reason=expired link=otpq.enqueue
`, tree(t, spans))
	noSecrets(t, spans, canaryCode, canarySecret, "+8618701235678")
}

// The provider's receipt, arriving later through the callback receiver,
// joins the trace as a child (and link) of the attempt that sent the code:
// its context travelled in the receipt link in Redis.
func TestTraceReceipt(t *testing.T) {
	tr := setupTraced(t, nil, true)
	id := tr.send(t, "+8618701235678")
	require.Eventually(t, func() bool {
		ended := tr.spans.Ended()
		return len(named(ended, tracing.SpanReceipt)) == 1 && len(named(ended, "POST "+receipts.Path)) == 1
	}, 10*time.Second, 10*time.Millisecond, "no receipt span, or no span of its callback request")
	spans := tr.spans.Ended()
	// The send's trace holds its receipt; the callback request is a
	// server span of its own trace (it may carry other sends' receipts),
	// which the receipt links to.
	require.Equal(t, `caller (internal)
  otpq.enqueue (producer) otpq.outcome=enqueued
    otpq.deliver (consumer) otpq.attempt=1 otpq.outcome=accepted link=otpq.enqueue
      POST (client) http.request.method=POST http.response.status_code=200
      otpq.receipt (consumer) otpq.receipt.status=delivered link=otpq.deliver link=POST /callbacks/engagelab
--
POST /callbacks/engagelab (server) http.request.method=POST url.path=/callbacks/engagelab http.response.status_code=200
`, forest(spans))
	r := named(spans, tracing.SpanReceipt)[0]
	require.Equal(t, id, attr(r, tracing.TaskID))
	require.Equal(t, tr.fake.Receipts()[0].MessageID, attr(r, tracing.MessageID))
	require.Equal(t, "+861*******678", attr(r, tracing.To))
	noSecrets(t, spans, canaryCode, canarySecret, "+8618701235678")
}

// Without a span in the caller's context and with no tracer provider
// anywhere, the task carries no trace headers, and delivery works as
// before.
func TestUntracedTaskCarriesNoHeaders(t *testing.T) {
	b := setup(t, nil)
	id := b.send(t, "+8618701235678")
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateCompleted, info.State)
	require.Empty(t, info.Headers)
}
