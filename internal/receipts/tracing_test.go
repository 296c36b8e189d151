//go:build !otpq_notrace

package receipts

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/redistest"
)

// Each callback request is a server span named after the route, with the
// HTTP semantic conventions' attributes and none of the request's header
// values. The provider is outside otpq's traces: the traceparent it may
// send becomes a link of the request's span, never its parent.
func TestCallbackRequestSpan(t *testing.T) {
	db := redistest.New(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	const secret = "Bearer CANARY-s3cret"
	recv, err := NewReceiver(Config{Redis: db.Client, Credentials: Credentials{Authorization: secret}, TracerProvider: tp,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	srv := httptest.NewServer(recv)
	defer srv.Close()
	const providerTrace = "0af7651916cd43dd8448eb211c80319c"
	post := func(auth string) int {
		req, err := http.NewRequest(http.MethodPost, srv.URL+Path, strings.NewReader("{}"))
		require.NoError(t, err)
		req.Header.Set("Authorization", auth)
		req.Header.Set("traceparent", "00-"+providerTrace+"-b7ad6b7169203331-01")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, post(secret))
	require.Equal(t, http.StatusUnauthorized, post("Bearer wrong"))

	spans := sr.Ended()
	require.Len(t, spans, 2)
	for i, want := range []int64{200, 401} {
		s := spans[i]
		require.Equal(t, "POST "+Path, s.Name())
		require.Equal(t, trace.SpanKindServer, s.SpanKind())
		require.False(t, s.Parent().IsValid(), "the provider's context is not the parent")
		require.NotEqual(t, providerTrace, s.SpanContext().TraceID().String())
		require.Len(t, s.Links(), 1)
		require.Equal(t, providerTrace, s.Links()[0].SpanContext.TraceID().String())
		attrs := attribute.NewSet(s.Attributes()...)
		code, _ := attrs.Value("http.response.status_code")
		require.Equal(t, want, code.AsInt64())
		path, _ := attrs.Value("url.path")
		require.Equal(t, Path, path.AsString())
		for _, kv := range s.Attributes() {
			for _, canary := range []string{"CANARY", "Bearer", "wrong"} {
				require.NotContains(t, kv.Value.Emit(), canary, "attribute %s", kv.Key)
			}
		}
	}
}
