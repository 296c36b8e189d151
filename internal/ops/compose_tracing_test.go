package ops_test

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestComposeTracing: the tracing profile runs a pinned Jaeger whose UI is
// on loopback only; the worker, the API and the otpq tool pass
// OTEL_EXPORTER_OTLP_ENDPOINT through (empty, so tracing off, by default),
// each with a service name of its own.
func TestComposeTracing(t *testing.T) {
	require.NotContains(t, loadCompose(t, nil).ServiceNames(), "jaeger", "opt-in")
	p := loadCompose(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318"}, "tracing", "api", "tools")
	j, ok := p.Services["jaeger"]
	require.True(t, ok)
	require.Equal(t, []string{"tracing"}, j.Profiles)
	require.Regexp(t, `^jaegertracing/all-in-one:\d+\.\d+\.\d+$`, j.Image, "a fixed version, not latest")
	require.Len(t, j.Ports, 1)
	require.Equal(t, "127.0.0.1", j.Ports[0].HostIP)
	require.Equal(t, "16686", j.Ports[0].Published)
	for name, service := range map[string]string{"worker": "otpq-worker", "api": "otpq-api", "otpq": "otpq-cli"} {
		s := p.Services[name]
		require.Equal(t, "http://jaeger:4318", *s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"], name)
		require.Equal(t, service, *s.Environment["OTEL_SERVICE_NAME"], name)
	}
	off := loadCompose(t, nil).Services["worker"]
	require.Empty(t, *off.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"], "no endpoint: tracing off")
}
