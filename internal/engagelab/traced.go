//go:build !otpq_notrace

package engagelab

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// tracedClient is plain with a client span (otelhttp) of tp for each
// request: the same transport (connection pool), wrapped.
func tracedClient(plain *http.Client, tp trace.TracerProvider) *http.Client {
	c := *plain
	c.Transport = otelhttp.NewTransport(plain.Transport,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()), // metrics stay Prometheus
		// The semantic conventions' name of a client span without a
		// URL template: the method alone.
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }),
	)
	return &c
}

// client is the HTTP client of a request made with ctx: the traced one
// inside a recording span, the plain one otherwise. A request sent with
// tracing off goes straight to the transport: no wrapper in its stack (it
// is copied whenever the goroutine's stack grows) and net/http's
// context-based cancellation, which it uses only for an *http.Transport.
func (c *Client) client(ctx context.Context) *http.Client {
	if c.traced != nil && trace.SpanFromContext(ctx).IsRecording() {
		return c.traced
	}
	return c.http
}
