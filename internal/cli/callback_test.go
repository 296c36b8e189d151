package cli

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/redisserver"
	"github.com/otpq/otpq/internal/task"
)

func TestCallbackConfigurationErrors(t *testing.T) {
	base := map[string]string{"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s"}
	with := func(kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	code, _, stderr := runOps(t, base, "worker", "--redis-url", "redis://127.0.0.1:1/0", "--callback-addr", "0.0.0.0:0")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "refusing to receive callbacks unverified")
	require.Contains(t, stderr, "OTPQ_CALLBACK_USER and OTPQ_CALLBACK_SECRET")

	code, _, stderr = runOps(t, with("OTPQ_CALLBACK_USER", "u"), "worker", "--redis-url", "redis://127.0.0.1:1/0")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "both OTPQ_CALLBACK_USER and OTPQ_CALLBACK_SECRET")

	code, _, stderr = runOps(t, with("OTPQ_CALLBACK_USER", "u", "OTPQ_CALLBACK_SECRET", "s", "OTPQ_CALLBACK_SECRET_FILE", "/x"), "worker", "--redis-url", "redis://127.0.0.1:1/0")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "OTPQ_CALLBACK_SECRET or OTPQ_CALLBACK_SECRET_FILE")

	code, _, stderr = runOps(t, nil, "fake-engagelab", "--callback", "+1=fallback")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "--callback needs --callback-url")
	code, _, stderr = runOps(t, nil, "fake-engagelab", "--callback-url", "localhost:1")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "--callback-url")
	code, _, _ = runOps(t, nil, "fake-engagelab", "--callback", "+1=bogus")
	require.Equal(t, ExitUsage, code)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := redisserver.FreePort()
	require.NoError(t, err)
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// TestReceiptsEndToEnd: the fake provider's signed callbacks reach a real
// `otpq worker` on --callback-addr and show in `otpq status` and /metrics.
func TestReceiptsEndToEnd(t *testing.T) {
	b := setup(t)
	opsAddr, cbAddr := freeAddr(t), freeAddr(t)
	secretFile := filepath.Join(t.TempDir(), "cb-secret")
	require.NoError(t, os.WriteFile(secretFile, []byte("CANARY-CB-SECRET\n"), 0o600))
	const delivered, failed = "+8613800000011", "+8613800000012"
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: "CANARY-SECRET", Callback: fakeengagelab.CallbackConfig{
		URL: "http://" + cbAddr + receipts.Path, Username: "otpq", Secret: "CANARY-CB-SECRET",
		Lifecycles: []fakeengagelab.Lifecycle{fakeengagelab.FailedLifecycle(failed, 100*time.Millisecond, 4001, "Handset unreachable")},
	}})
	defer fake.Close()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	b.env["ENGAGELAB_DEV_KEY"], b.env["ENGAGELAB_DEV_SECRET"], b.env["ENGAGELAB_BASE_URL"] = "key", "CANARY-SECRET", srv.URL
	b.env["OTPQ_CALLBACK_USER"], b.env["OTPQ_CALLBACK_SECRET_FILE"] = "otpq", secretFile

	werr, stop := b.startWorker(t, "--concurrency", "4", "--log-format", "json", "--http-addr", opsAddr, "--callback-addr", cbAddr)
	defer stop()

	ids := map[string]string{}
	for _, to := range []string{delivered, failed} {
		r := b.run(t, context.Background(), "send", "--to", to, "--code", canaryCode, "--template", "login")
		require.Equal(t, ExitOK, r.code, r.stderr)
		ids[to] = strings.TrimSpace(r.stdout)
	}
	status := func(id string) map[string]any {
		r := b.run(t, context.Background(), "status", "--json", id)
		require.Equal(t, ExitOK, r.code, r.stderr)
		var st map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
		return st
	}
	for to, id := range ids {
		var st map[string]any
		require.Eventually(t, func() bool { st = status(id); return st["state"] == "completed" }, 15*time.Second, 20*time.Millisecond, werr.String())
		// The worker's delivery write recorded the link the receiver follows.
		raw, err := b.db.Client.Get(context.Background(), receipts.LinkKey(task.QueueCritical, st["message_id"].(string))).Result()
		require.NoError(t, err)
		l, err := receipts.DecodeLink(raw)
		require.NoError(t, err)
		require.Equal(t, id, l.TaskID)
		require.Equal(t, redact.Destination(to), l.To)
	}
	text := func(id string) string {
		return b.run(t, context.Background(), "status", id).stdout
	}
	// The sent callback, posted as the provider accepts, is held until the
	// link exists and may be attached after the delivered one: a stale
	// stage that still adds its history and cost.
	require.Eventually(t, func() bool {
		out := text(ids[delivered])
		return strings.Contains(out, "delivery:     delivered (final)") && strings.Contains(out, "cost:")
	}, 10*time.Second, 50*time.Millisecond, "worker log:\n%s", werr.String())
	out := text(ids[delivered])
	require.Contains(t, out, "channel:      sms")
	require.Contains(t, out, "cost:         0.005 USD")
	require.Regexp(t, `stage: +\S+ sent via sms`, out)
	require.Eventually(t, func() bool {
		out := text(ids[failed])
		return strings.Contains(out, "delivery:     delivered_failed (final)") && strings.Contains(out, "cost:")
	},
		10*time.Second, 50*time.Millisecond, "worker log:\n%s", werr.String())
	require.Contains(t, text(ids[failed]), "error:        4001 Handset unreachable")
	st := status(ids[failed])
	rc := st["receipt"].(map[string]any)
	require.Equal(t, "delivered_fail", rc["raw_status"])
	require.Equal(t, redact.Destination(failed), rc["to"])

	resp, err := http.Get("http://" + opsAddr + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := string(body)
	for _, want := range []string{
		`otpq_receipts_total{channel="sms",status="delivered"} 1`,
		`otpq_receipts_total{channel="sms",status="delivered_failed"} 1`,
		`otpq_receipts_total{channel="sms",status="sent"} 2`,
		"otpq_receipt_delivered_seconds_count 1",
		`otpq_callback_requests_total{result="bad_signature"} 0`,
	} {
		require.True(t, strings.Contains(m, want), "/metrics lacks %s", want)
	}
	ok, failedPosts := fake.CallbacksSent()
	require.Equal(t, 4, ok)
	require.Zero(t, failedPosts)
	for _, s := range []string{canaryCode, "CANARY-CB-SECRET", "+8613800000011", "+8613800000012"} {
		require.False(t, strings.Contains(werr.String(), s), "%s in the worker log", s)
		require.False(t, strings.Contains(m, s), "%s in /metrics", s)
	}
	require.Contains(t, werr.String(), `"msg":"delivery receipt"`)
}
