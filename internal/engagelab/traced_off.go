//go:build otpq_notrace

package engagelab

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/trace"
)

// tracedClient is nil: this build (-tags otpq_notrace) has no tracing.
func tracedClient(*http.Client, trace.TracerProvider) *http.Client { return nil }

// client is the plain HTTP client: this build traces nothing.
func (c *Client) client(context.Context) *http.Client { return c.http }
