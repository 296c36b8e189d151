//go:build !otpq_notrace

package worker_test

import (
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// BenchmarkDeliveryPathTraced is BenchmarkDeliveryPath with tracing on at
// 100% sampling: the SDK's batch span processor, every span handed to an
// exporter that drops it (the cost of making and batching the spans, not
// of encoding and sending them).
func BenchmarkDeliveryPathTraced(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(b.Context())
	benchPath(b, func(p *producer.Config, w *worker.Config) {
		p.TracerProvider, w.TracerProvider = tp, tp
	})
}
