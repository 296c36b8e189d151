//go:build !otpq_notrace

package tracing

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// A tracer of the global provider makes nothing while the program has set
// no provider (ctx comes back as it is), and follows the provider the
// program sets later, as OpenTelemetry's global tracers do. This test sets
// the process's global provider: it is alone in its package.
func TestGlobalTracerOffUntilSet(t *testing.T) {
	tr := NewTracer(nil)
	require.True(t, tr.Off())
	ctx := context.WithValue(context.Background(), struct{}{}, 1)
	got, span := tr.Start(ctx, "x")
	require.Equal(t, ctx, got, "no span in the context when off")
	require.False(t, span.IsRecording())
	require.Nil(t, Headers(got), "nothing to carry")

	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	own := NewTracer(tp)
	require.False(t, own.Off())
	otel.SetTracerProvider(tp)
	require.False(t, tr.Off(), "the program set a provider")
	got, span = tr.Start(ctx, "y")
	require.True(t, span.IsRecording())
	h := Headers(got)
	span.End()
	require.Len(t, sr.Ended(), 1)
	require.Equal(t, sr.Ended()[0].SpanContext(), FromHeaders(h).WithRemote(false))
	require.Equal(t, span.SpanContext(), ParseTraceParent(TraceParent(span.SpanContext())).WithRemote(false))
}

// Follows makes the remote parent the parent of the new span and links
// it; without a valid parent it changes nothing.
func TestFollows(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tr := NewTracer(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr)))
	pctx, parent := tr.Start(context.Background(), "parent")
	parent.End()
	base := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}

	ctx, opts := Follows(context.Background(), FromHeaders(Headers(pctx)), base)
	_, child := tr.Start(ctx, "child", opts...)
	child.End()
	c := sr.Ended()[1]
	require.Equal(t, parent.SpanContext().SpanID(), c.Parent().SpanID())
	require.Len(t, c.Links(), 1)
	require.Equal(t, parent.SpanContext().SpanID(), c.Links()[0].SpanContext.SpanID())
	require.Equal(t, trace.SpanKindConsumer, c.SpanKind())

	bg := context.Background()
	ctx, opts = Follows(bg, FromHeaders(map[string]string{HeaderTraceParent: "garbage"}), base)
	require.Equal(t, bg, ctx)
	require.Len(t, opts, 1)
}
