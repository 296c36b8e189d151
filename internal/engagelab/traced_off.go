//go:build otpq_notrace

package engagelab

import (
	"net/http"

	"go.opentelemetry.io/otel/trace"
)

// traced is rt as it is: this build (-tags otpq_notrace) has no tracing.
func traced(rt http.RoundTripper, _ trace.TracerProvider) http.RoundTripper { return rt }
