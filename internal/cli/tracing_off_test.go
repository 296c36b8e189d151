//go:build otpq_notrace

package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// Built with -tags otpq_notrace, `otpq send` with an OTLP endpoint set
// still sends, exports nothing and says why on standard error.
func TestNoTraceBuildWarnsAndExportsNothing(t *testing.T) {
	b := setup(t)
	var posts atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { posts.Add(1) }))
	defer collector.Close()
	b.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.URL
	r := b.run(t, context.Background(), "send", "--to", "+8613800000001", "--code", canaryCode, "--template", "login")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.NotEmpty(t, strings.TrimSpace(r.stdout), "the task ID")
	require.Contains(t, r.stderr, "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this otpq was built with -tags otpq_notrace: no spans are exported")
	require.Zero(t, posts.Load())
}
