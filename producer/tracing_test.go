//go:build !otpq_notrace

package producer

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/tracing"
)

// Send and SendBatch put the W3C trace context of their enqueue span into
// each task's asynq headers, the enqueue span a child of the caller's; a
// send without any span (no provider, no caller span) carries no headers.
func TestSendCarriesTraceContext(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	b := setupWith(t, func(c *Config) { c.TracerProvider = tp; c.DestinationLimit = -1 })
	req := Request{To: "+8618701235678", Code: "CANARY-4242", TemplateID: "login"}

	ctx, caller := tp.Tracer("test").Start(context.Background(), "caller")
	id, err := b.p.Send(ctx, req)
	require.NoError(t, err)
	results := b.p.SendBatch(ctx, []Request{req, {To: "bad"}})
	caller.End()
	require.NoError(t, results[0].Err)

	enq, batch := spanNamed(t, sr, tracing.SpanEnqueue), spanNamed(t, sr, tracing.SpanEnqueueBatch)
	require.Equal(t, caller.SpanContext().SpanID(), enq.Parent().SpanID())
	require.Equal(t, trace.SpanKindProducer, enq.SpanKind())
	set := attribute.NewSet(enq.Attributes()...)
	v, _ := set.Value(tracing.TaskID)
	require.Equal(t, id, v.AsString())
	set = attribute.NewSet(batch.Attributes()...)
	v, _ = set.Value(tracing.BatchSize)
	require.EqualValues(t, 2, v.AsInt64())
	v, _ = set.Value("otpq.outcome.invalid")
	require.EqualValues(t, 1, v.AsInt64())

	info, err := b.ins.GetTaskInfo(QueueCritical, id)
	require.NoError(t, err)
	require.Equal(t, enq.SpanContext(), tracing.FromHeaders(info.Headers).WithRemote(false), "the task carries its enqueue span")
	info, err = b.ins.GetTaskInfo(QueueCritical, results[0].ID)
	require.NoError(t, err)
	require.Equal(t, batch.SpanContext(), tracing.FromHeaders(info.Headers).WithRemote(false))

	// Without a caller's span the enqueue span is a root, still carried.
	id, err = b.p.Send(context.Background(), Request{To: "+8618701235679", Code: "CANARY-4242", TemplateID: "login"})
	require.NoError(t, err)
	info, err = b.ins.GetTaskInfo(QueueCritical, id)
	require.NoError(t, err)
	require.NotEmpty(t, info.Headers, "the recording provider makes a root enqueue span")

	plain := setupWith(t, func(c *Config) { c.DestinationLimit = -1 })
	id, err = plain.p.Send(context.Background(), req)
	require.NoError(t, err)
	info, err = plain.ins.GetTaskInfo(QueueCritical, id)
	require.NoError(t, err)
	require.Empty(t, info.Headers, "no span, no trace context")
}

func spanNamed(t *testing.T, sr *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range sr.Ended() {
		if s.Name() == name {
			return s
		}
	}
	t.Fatalf("no span %s", name)
	return nil
}
