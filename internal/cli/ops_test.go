package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

// runOps runs the otpq command line with env and returns the exit code,
// stdout and stderr.
func runOps(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	m := Main{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}
	code := m.Run(context.Background(), args)
	return code, out.String(), errOut.String()
}

func TestWorkerRefusesUnprotectedPublicUI(t *testing.T) {
	creds := map[string]string{"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s"}
	code, _, stderr := runOps(t, creds, "worker", "--redis-url", "redis://127.0.0.1:1/0", "--http-addr", "0.0.0.0:0")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "refusing to serve the web UI unprotected")
	require.Contains(t, stderr, "OTPQ_UI_USER and OTPQ_UI_PASSWORD")

	onlyUser := map[string]string{"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s", "OTPQ_UI_USER": "ops"}
	code, _, stderr = runOps(t, onlyUser, "worker", "--redis-url", "redis://127.0.0.1:1/0")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "both OTPQ_UI_USER and OTPQ_UI_PASSWORD")
}

func TestHealthcheck(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready {
			http.Error(w, "not ready: redis unreachable", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	}))
	defer srv.Close()
	code, out, _ := runOps(t, nil, "healthcheck", "--url", srv.URL+"/readyz")
	require.Equal(t, ExitOK, code)
	require.Equal(t, "ready\n", out)

	ready = false
	code, _, stderr := runOps(t, nil, "healthcheck", "--url", srv.URL+"/readyz")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, stderr, "503")
	require.Contains(t, stderr, "not ready: redis unreachable")

	code, _, stderr = runOps(t, nil, "healthcheck", "--url", "127.0.0.1:8080/readyz")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "--url")

	srv.Close()
	code, _, _ = runOps(t, nil, "healthcheck", "--url", srv.URL+"/readyz")
	require.Equal(t, ExitFailure, code)
}
