//go:build !otpq_notrace

package engagelab

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traced is rt with a client span (otelhttp) for each request made inside
// a recording span of tp.
func traced(rt http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	return tracedTransport{plain: rt, traced: otelhttp.NewTransport(rt,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()), // metrics stay Prometheus
		// The semantic conventions' name of a client span without a
		// URL template: the method alone.
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
	)}
}

// tracedTransport sends a request through traced (otelhttp) when it is
// made inside a recording span, through plain otherwise: with tracing off
// a request costs one context lookup more.
type tracedTransport struct{ plain, traced http.RoundTripper }

func (t tracedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if trace.SpanFromContext(r.Context()).IsRecording() {
		return t.traced.RoundTrip(r)
	}
	return t.plain.RoundTrip(r)
}
