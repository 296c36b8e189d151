//go:build otpq_notrace

package tracing

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// In the otpq_notrace build a tracer of a recording provider makes no span
// and carries no context: the build has no tracing code.
func TestNoTraceBuildTracerMakesNothing(t *testing.T) {
	require.False(t, Enabled)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	parent, ps := tp.Tracer("test").Start(context.Background(), "caller")
	defer ps.End()
	tr := NewTracer(tp)
	require.True(t, tr.Off())
	got, span := tr.Start(parent, "x")
	require.Equal(t, parent, got)
	require.False(t, span.IsRecording())
	span.End()
	require.Empty(t, sr.Ended())
	require.Nil(t, Headers(parent), "no context carried even inside a span")
	require.Equal(t, "", TraceParent(ps.SpanContext()))
	ctx, opts := Follows(parent, ps.SpanContext(), nil)
	require.Equal(t, parent, ctx)
	require.Empty(t, opts)
	require.Nil(t, Provider(tp))
	require.False(t, FromHeaders(map[string]string{HeaderTraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}).IsValid())
	var _ trace.Span = NoSpan()
}
