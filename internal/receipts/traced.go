//go:build !otpq_notrace

package receipts

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// serverSpans is h with a server span (HTTP semantic conventions, otelhttp)
// per callback request, named after the route. The caller is the
// provider, outside otpq's traces: a traceparent it sends is a link of the
// request's span, never its parent (a public endpoint). Header values and
// the body are not recorded.
func serverSpans(h http.Handler, tp trace.TracerProvider) http.Handler {
	return otelhttp.NewHandler(h, Path,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithPublicEndpointFn(func(*http.Request) bool { return true }),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()), // metrics stay Prometheus
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + Path }),
	)
}
