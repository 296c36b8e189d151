//go:build otpq_notrace

package tracing

import (
	"context"

	"go.opentelemetry.io/otel/trace"
)

// Enabled is false in this build (-tags otpq_notrace): otpq has no tracing
// code, and callers' `if tracing.Enabled` blocks are compiled out.
const Enabled = false

// Provider is nil: nothing is traced in this build.
func Provider(trace.TracerProvider) trace.TracerProvider { return nil }

// Tracer starts no span in this build.
type Tracer struct{}

// NewTracer ignores tp: this build traces nothing.
func NewTracer(trace.TracerProvider) Tracer { return Tracer{} }

// Off is always true in this build.
func (Tracer) Off() bool { return true }

// Start returns ctx as it is and the no-op span.
func (Tracer) Start(ctx context.Context, _ string, _ ...trace.SpanStartOption) (context.Context, trace.Span) {
	return ctx, noSpan
}

var noSpan = trace.SpanFromContext(context.Background())

// NoSpan is the no-op span.
func NoSpan() trace.Span { return noSpan }

// Headers is nil: a task carries no trace context in this build.
func Headers(context.Context) map[string]string { return nil }

// FromHeaders is the invalid span context.
func FromHeaders(map[string]string) trace.SpanContext { return trace.SpanContext{} }

// TraceParent is "".
func TraceParent(trace.SpanContext) string { return "" }

// ParseTraceParent is the invalid span context.
func ParseTraceParent(string) trace.SpanContext { return trace.SpanContext{} }

// Follows returns ctx and base as they are.
func Follows(ctx context.Context, _ trace.SpanContext, base []trace.SpanStartOption) (context.Context, []trace.SpanStartOption) {
	return ctx, base
}
