package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/redisserver"
	"github.com/otpq/otpq/internal/redistest"
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
	code, _, stderr := runOps(t, base, "worker", "--redis-url", "redis://127.0.0.1:1/0", "--callback-addr", "127.0.0.1:0")
	require.Equal(t, ExitUsage, code, "no credentials and no --callback-unverified")
	require.Contains(t, stderr, "--callback-unverified")
	require.Contains(t, stderr, "OTPQ_CALLBACK_USER and OTPQ_CALLBACK_SECRET")
	code, _, stderr = runOps(t, base, "worker", "--redis-url", "redis://127.0.0.1:1/0", "--callback-addr", "0.0.0.0:0", "--callback-unverified")
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

// Issue 16, row 11: the weaker callback modes are explicit. The
// Authorization header alone, or no credentials at all, need their flag
// (exit 2 without it, naming it and the preferred signature); empty
// credential files are refused, naming the variable.
func TestCallbackWeakModesNeedOptIn(t *testing.T) {
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
	// A worker that starts instead of refusing is stopped after 10 s (and
	// fails the exit-code check) rather than hanging the test.
	worker := func(env map[string]string, args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var errOut logsink.Buffer
		m := Main{Stdout: io.Discard, Stderr: &errOut, Getenv: func(k string) string { return env[k] }}
		code := m.Run(ctx, append([]string{"worker", "--redis-url", "redis://127.0.0.1:1/0"}, args...))
		return code, errOut.String()
	}
	code, stderr := worker(with("OTPQ_CALLBACK_AUTHORIZATION", "Bearer s3cret"))
	require.Equal(t, ExitUsage, code, "Authorization only, no opt-in")
	require.Contains(t, stderr, "--callback-authorization-only")
	require.Contains(t, stderr, "set OTPQ_CALLBACK_USER and OTPQ_CALLBACK_SECRET")
	require.NotContains(t, stderr, "s3cret")
	code, stderr = worker(with("OTPQ_CALLBACK_USER", "u", "OTPQ_CALLBACK_SECRET", "s"), "--callback-unverified")
	require.Equal(t, ExitUsage, code, "a flag that contradicts the credentials")
	require.Contains(t, stderr, "drop the flag")
	code, stderr = worker(base, "--callback-authorization-only")
	require.Equal(t, ExitUsage, code)
	require.Contains(t, stderr, "--callback-authorization-only needs OTPQ_CALLBACK_AUTHORIZATION")

	dir := t.TempDir()
	empty, newline := filepath.Join(dir, "empty"), filepath.Join(dir, "newline")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	require.NoError(t, os.WriteFile(newline, []byte("\n"), 0o600))
	for _, env := range []map[string]string{
		with("OTPQ_CALLBACK_USER", "u", "OTPQ_CALLBACK_SECRET_FILE", empty),
		with("OTPQ_CALLBACK_USER_FILE", newline, "OTPQ_CALLBACK_SECRET", "s"),
		with("OTPQ_CALLBACK_AUTHORIZATION_FILE", empty),
	} {
		code, stderr := worker(env)
		require.Equal(t, ExitUsage, code, "%v", env)
		var name string
		for k := range env {
			if strings.HasSuffix(k, "_FILE") {
				name = k
			}
		}
		require.Contains(t, stderr, name+": the file ")
		require.Contains(t, stderr, "is empty")
	}
}

// Row 11, at run time: a worker without credentials does not serve the
// callback route on its loopback ops address unless --callback-unverified
// asks for it (and then warns); Authorization-only mode, opted in, serves
// it and warns.
func TestCallbackModesAtStart(t *testing.T) {
	post := func(addr string, hdr map[string]string) int {
		req, err := http.NewRequest(http.MethodPost, "http://"+addr+receipts.Path, strings.NewReader("{}"))
		require.NoError(t, err)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	start := func(t *testing.T, env map[string]string, args ...string) (string, *logsink.Buffer) {
		b := setup(t)
		b.env["ENGAGELAB_DEV_KEY"], b.env["ENGAGELAB_DEV_SECRET"], b.env["ENGAGELAB_BASE_URL"] = "k", "s", "http://127.0.0.1:1"
		for k, v := range env {
			b.env[k] = v
		}
		addr := freeAddr(t)
		log, stop := b.startWorker(t, append([]string{"--log-format", "json", "--http-addr", addr}, args...)...)
		t.Cleanup(stop)
		require.Eventually(t, func() bool {
			resp, err := http.Get("http://" + addr + "/healthz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil
		}, 10*time.Second, 20*time.Millisecond)
		return addr, log
	}
	t.Run("no credentials", func(t *testing.T) {
		addr, log := start(t, nil)
		require.Equal(t, http.StatusNotFound, post(addr, nil), "an unverified receiver needs --callback-unverified")
		require.Contains(t, log.String(), "EngageLab callbacks not served")
		metrics := httpBody(t, "http://"+addr+"/metrics")
		require.NotContains(t, metrics, "otpq_callback_requests_total", "no route, no callback series (the receipts-missing alert reads them as served)")
	})
	t.Run("unverified", func(t *testing.T) {
		addr, log := start(t, nil, "--callback-unverified")
		require.Equal(t, http.StatusOK, post(addr, nil))
		require.Contains(t, log.String(), `"level":"WARN","msg":"EngageLab callbacks are served unverified (--callback-unverified)`)
	})
	t.Run("authorization only", func(t *testing.T) {
		addr, log := start(t, map[string]string{"OTPQ_CALLBACK_AUTHORIZATION": "Bearer s3cret", "OTPQ_CALLBACK_AUTHORIZATION_ONLY": "true"})
		require.Equal(t, http.StatusUnauthorized, post(addr, nil))
		require.Equal(t, http.StatusOK, post(addr, map[string]string{"Authorization": "Bearer s3cret"}))
		require.Contains(t, log.String(), `"level":"WARN","msg":"EngageLab callbacks are checked by their Authorization header only`)
		require.NotContains(t, log.String(), "s3cret")
	})
}

// Row 11: otpq dev's receiver never accepts a callback signed with a
// secret written in the source, whatever address it serves: each run
// draws its own.
func TestDevCallbackSecretDrawnPerRun(t *testing.T) {
	db := redistest.New(t)
	m := &Main{Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }}
	log := slog.New(slog.DiscardHandler)
	var secrets []string
	for run := range 2 {
		d, stop, err := m.startDevCallbacks("", "127.0.0.1:0", db.URL(), prometheus.NewRegistry(), log, nil)
		require.NoError(t, err)
		t.Cleanup(stop)
		require.Len(t, d.creds.Secret, 64)
		secrets = append(secrets, d.creds.Secret)
		for _, secret := range []string{"dev-callback-secret", "dev-secret", "dev", ""} {
			id := receipts.NewCallbackID(secret, devCallbackUser, fmt.Sprintf("n%d-%s", run, secret), time.Now())
			req, err := http.NewRequest(http.MethodPost, d.url(""), strings.NewReader("{}"))
			require.NoError(t, err)
			req.Header.Set(receipts.HeaderCallbackID, id.String())
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "signed with %q", secret)
		}
		id := receipts.NewCallbackID(d.creds.Secret, devCallbackUser, fmt.Sprintf("n%d-drawn", run), time.Now())
		req, err := http.NewRequest(http.MethodPost, d.url(""), strings.NewReader("{}"))
		require.NoError(t, err)
		req.Header.Set(receipts.HeaderCallbackID, id.String())
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "the run's own secret")
	}
	require.NotEqual(t, secrets[0], secrets[1])
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
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
		return strings.Contains(out, "receipt:        delivered (final)") && strings.Contains(out, "cost:")
	}, 10*time.Second, 50*time.Millisecond, "worker log:\n%s", werr.String())
	out := text(ids[delivered])
	// The receipt's verdict first; the worker's own word is "accepted".
	require.Regexp(t, `^verdict: +delivered · sms · \d+(\.\d)? s after acceptance · 0\.005 USD\n`, out)
	require.Contains(t, out, "outcome:        accepted\n")
	require.Contains(t, out, "channel:        sms")
	require.Contains(t, out, "cost:           0.005 USD")
	require.Regexp(t, `delivered_at: +\S+ \(\d+(\.\d)? s after acceptance\)`, out)
	require.Regexp(t, `stage: +\S+ sent via sms`, out)
	require.Eventually(t, func() bool {
		out := text(ids[failed])
		return strings.Contains(out, `receipt:        delivered_failed (final; EngageLab sent "delivered_fail")`) && strings.Contains(out, "cost:")
	},
		10*time.Second, 50*time.Millisecond, "worker log:\n%s", werr.String())
	out = text(ids[failed])
	require.Contains(t, out, "error:          4001 Handset unreachable")
	require.Regexp(t, `^verdict: +failed · sms · 4001 Handset unreachable · `, out)
	require.NotRegexp(t, `[(·] ?-\d`, out, "no negative durations")
	require.Regexp(t, `stage: +\S+ sent via sms\n +stage: +\S+ delivered_failed via sms \(error 4001\) \(EngageLab sent "delivered_fail"\)`, out, "stages in time order, one spelling")
	st := status(ids[failed])
	rc := st["receipt"].(map[string]any)
	require.Equal(t, "delivered_fail", rc["raw_status"])
	require.Equal(t, "failed", st["verdict"])
	require.Equal(t, "failed", rc["verdict"])
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
