//go:build otpq_notrace

package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/tracing"
)

// This build (-tags otpq_notrace) has no tracing code: the OTEL_*
// variables are not read, and a variable that would turn tracing on gets
// a warning, so that an operator does not wait for spans that never come.

// noProvider stands for the SDK's provider in this build; there is never
// one (tracerProvider returns nil).
type noProvider struct{ trace.TracerProvider }

// tracerProvider is always nil in this build; it warns on standard error
// when the environment asks for tracing.
func (m *Main) tracerProvider(command string) (*noProvider, error) {
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"} {
		if v := strings.TrimSpace(m.Getenv(name)); v != "" && v != "none" {
			fmt.Fprintf(m.Stderr, "otpq %s: %s is set, but this otpq was built with -tags otpq_notrace: no spans are exported\n", command, name)
			break
		}
	}
	return nil, nil
}

// flushTracing does nothing in this build.
func flushTracing(*noProvider, *slog.Logger) {}

// rootSpan returns ctx and the no-op span.
func rootSpan(ctx context.Context, _ *noProvider, _ string) (context.Context, trace.Span) {
	return ctx, tracing.NoSpan()
}

// continueTrace is h as it is.
func continueTrace(h http.Handler) http.Handler { return h }
