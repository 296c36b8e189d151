//go:build !otpq_notrace

package tracing

import (
	"context"
	"reflect"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Enabled is false in a build with -tags otpq_notrace, where otpq has no
// tracing code: callers guard their span work with it so that the
// compiler drops it.
const Enabled = true

// Provider is tp, or the global provider when tp is nil.
func Provider(tp trace.TracerProvider) trace.TracerProvider {
	if tp == nil {
		return otel.GetTracerProvider()
	}
	return tp
}

// Tracer starts otpq's spans with a TracerProvider given in a Config, or
// with the global provider when none was given.
type Tracer struct {
	t trace.Tracer
	// global: t is the global provider's, a no-op until the program calls
	// otel.SetTracerProvider.
	global bool
}

// NewTracer is otpq's tracer of tp, or of the global provider when tp is nil.
func NewTracer(tp trace.TracerProvider) Tracer {
	if tp == nil {
		return Tracer{t: otel.GetTracerProvider().Tracer(Scope), global: true}
	}
	return Tracer{t: tp.Tracer(Scope)}
}

// unsetGlobal is the global provider as OpenTelemetry starts it, a no-op
// that delegates to the provider the program sets, if any; nil when a
// provider was set before this package's initialisation.
var unsetGlobal = func() trace.TracerProvider {
	tp := otel.GetTracerProvider()
	if t := reflect.TypeOf(tp); t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" {
		return tp
	}
	return nil
}()

// Off reports whether t uses the global provider and the program never set
// one: its spans would all be no-ops, so otpq makes none (not even the
// context that holds one): tracing off costs one comparison per span.
func (t Tracer) Off() bool { return t.global && otel.GetTracerProvider() == unsetGlobal }

// Start starts a span as trace.Tracer's Start does; when t is Off it
// returns ctx as it is and a no-op span, allocating nothing.
func (t Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if t.Off() {
		return ctx, NoSpan()
	}
	return t.t.Start(ctx, name, opts...)
}

// NoSpan is the no-op span (the span of a context without one).
func NoSpan() trace.Span { return noSpan }

var noSpan = trace.SpanFromContext(context.Background())

var w3c propagation.TraceContext

// Headers is the W3C trace context of the span active in ctx, as task
// headers (traceparent, and tracestate when there is one); nil when no
// span is active, so a task enqueued without tracing carries nothing.
func Headers(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	h := make(map[string]string, 2)
	w3c.Inject(ctx, propagation.MapCarrier(h))
	return h
}

// FromHeaders is the span context that Headers wrote into a task's
// headers; invalid (the zero SpanContext) when there is none or it does
// not parse.
func FromHeaders(h map[string]string) trace.SpanContext {
	if h[HeaderTraceParent] == "" {
		return trace.SpanContext{}
	}
	return trace.SpanContextFromContext(w3c.Extract(context.Background(), propagation.MapCarrier(h)))
}

// TraceParent is sc as a W3C traceparent value ("" for an invalid sc), as
// a receipt link stores the attempt that sent the code.
func TraceParent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	h := make(propagation.MapCarrier, 2)
	w3c.Inject(trace.ContextWithSpanContext(context.Background(), sc), h)
	return h[HeaderTraceParent]
}

// ParseTraceParent reads a TraceParent value; invalid when s is empty or
// malformed.
func ParseTraceParent(s string) trace.SpanContext {
	if s == "" {
		return trace.SpanContext{}
	}
	return FromHeaders(map[string]string{HeaderTraceParent: s})
}

// Follows is the context and span start options of a span that continues
// the work of parent, a span of another process whose context travelled
// through Redis: its child (so the send's story is one trace) and linked
// to it, as the messaging conventions ask of a consumer. Without a valid
// parent, ctx and base are returned as they are.
func Follows(ctx context.Context, parent trace.SpanContext, base []trace.SpanStartOption) (context.Context, []trace.SpanStartOption) {
	if !parent.IsValid() {
		return ctx, base
	}
	opts := make([]trace.SpanStartOption, 0, len(base)+1)
	opts = append(append(opts, base...), trace.WithLinks(trace.Link{SpanContext: parent}))
	return trace.ContextWithRemoteSpanContext(ctx, parent), opts
}
