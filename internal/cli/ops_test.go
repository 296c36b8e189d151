package cli

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
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
		if r.URL.Path != "/readyz" {
			fmt.Fprintln(w, "otpq operations")
			return
		}
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

	// The server root means its /readyz.
	for _, root := range []string{srv.URL, srv.URL + "/"} {
		code, out, stderr := runOps(t, nil, "healthcheck", "--url", root)
		require.Equal(t, ExitOK, code, stderr)
		require.Equal(t, "ready\n", out)
	}
	// A 200 that is not readiness (another path, another server) fails.
	code, _, stderr := runOps(t, nil, "healthcheck", "--url", srv.URL+"/healthz")
	require.Equal(t, ExitFailure, code)
	require.Contains(t, stderr, `answered 200 but not "ready"`)
	anything := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hello") }))
	defer anything.Close()
	code, _, stderr = runOps(t, nil, "healthcheck", "--url", anything.URL)
	require.Equal(t, ExitFailure, code, "a server answering 200 on every path is not ready")
	require.Contains(t, stderr, anything.URL+"/readyz")

	ready = false
	code, _, stderr = runOps(t, nil, "healthcheck", "--url", srv.URL+"/readyz")
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

// fake-engagelab --help explains --fail's STATUS, gives an example and
// lists the rules otpq dev scripts.
func TestFakeHelp(t *testing.T) {
	code, out, _ := runOps(t, nil, "fake-engagelab", "--help")
	require.Equal(t, ExitOK, code)
	require.Contains(t, out, "STATUS is the HTTP status of the answer, 4xx or 5xx")
	require.Contains(t, out, "Examples:\n  otpq fake-engagelab --addr 127.0.0.1:8090")
	for _, s := range devSamples {
		require.Contains(t, out, s.to, "dev's sample %q is listed", s.label)
		if s.rule != nil {
			r := *s.rule
			r.To = s.to
			require.Contains(t, out, "--fail '"+ruleText(r)+"'")
			_, err := fakeengagelab.ParseRule(ruleText(r))
			require.NoError(t, err, "the listed rule is valid --fail syntax")
		}
	}
}
