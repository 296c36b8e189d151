//go:build otpq_notrace

package receipts

import (
	"net/http"

	"go.opentelemetry.io/otel/trace"
)

// serverSpans is nil: this build (-tags otpq_notrace) has no tracing.
func serverSpans(http.Handler, trace.TracerProvider) http.Handler { return nil }
