//go:build otpq_notrace

package worker_test

import (
	"context"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// Built with -tags otpq_notrace (the benchmark's "no tracing code at all"),
// otpq makes no span and writes no trace context even when its Configs
// are given a recording TracerProvider and the caller's span is active:
// only the caller's own span is recorded, the task carries no headers,
// and the provider call is not wrapped by otelhttp (no POST span).
func TestNoTraceBuildMakesNoSpans(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	b := setup(t, func(c *worker.Config) { c.TracerProvider = tp })
	p, err := producer.New(producer.Config{RedisURL: b.db.URL(), TracerProvider: tp})
	require.NoError(t, err)
	defer p.Close()

	ctx, span := tp.Tracer("test").Start(context.Background(), "caller")
	id, err := p.Send(ctx, producer.Request{To: "+8618701235678", Code: canaryCode, TemplateID: "login"})
	require.NoError(t, err)
	res := p.SendBatch(ctx, []producer.Request{{To: "+8618701235679", Code: canaryCode, TemplateID: "login"}})
	require.NoError(t, res[0].Err)
	span.End()
	for _, id := range []string{id, res[0].ID} {
		info := b.waitFinal(t, producer.QueueCritical, id)
		require.Equal(t, asynq.TaskStateCompleted, info.State)
		require.Empty(t, info.Headers, "no trace context in the task")
	}
	var names []string
	for _, s := range sr.Ended() {
		names = append(names, s.Name())
	}
	require.Equal(t, []string{"caller"}, names, "otpq made spans in a notrace build")
}
