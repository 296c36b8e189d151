package cli

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/logsink"
)

// logLines decodes a JSON log.
func logLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		lines = append(lines, m)
	}
	return lines
}

// startWorker runs `otpq worker` with env and args until the test ends.
func startWorker(t *testing.T, env map[string]string, args ...string) *logsink.Buffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var log logsink.Buffer
	done := make(chan int)
	go func() {
		m := &Main{Stdin: strings.NewReader(""), Stdout: &logsink.Buffer{}, Stderr: &log, Getenv: func(k string) string { return env[k] }}
		done <- m.Run(ctx, append([]string{"worker", "--log-format", "json", "--http-addr", ""}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
	return &log
}

// Redis going away is one warning (where, and how often it is retried) and
// its return one line, instead of every failing command of asynq and
// go-redis; the start line says where the worker sends and fetches.
func TestWorkerRedisOutageLogsOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	addr := mr.Addr()
	mr.Close() // Redis is down when the worker starts
	fake := httptest.NewServer(fakeengagelab.New(fakeengagelab.Config{}))
	defer fake.Close()
	env := map[string]string{
		"OTPQ_REDIS_URL":       "redis://:CANARY-PW@" + addr + "/0",
		"ENGAGELAB_DEV_KEY":    "key",
		"ENGAGELAB_BASE_URL":   fake.URL,
		"ENGAGELAB_DEV_SECRET": "CANARY-SECRET",
	}
	log := startWorker(t, env, "--concurrency", "20", "--servers", "4", "--rate", "50")

	require.Eventually(t, func() bool { return strings.Contains(log.String(), "cannot reach Redis") }, 10*time.Second, 20*time.Millisecond, log.String())
	time.Sleep(3 * time.Second) // asynq's loops and go-redis's pools keep failing meanwhile

	restarted := miniredis.NewMiniRedis()
	require.NoError(t, restarted.StartAddr(addr))
	defer restarted.Close()
	require.Eventually(t, func() bool { return strings.Contains(log.String(), "reachable again") }, 10*time.Second, 20*time.Millisecond, log.String())

	var started map[string]any
	var down, up, keyWarned int
	for _, l := range logLines(t, log.String()) {
		msg, _ := l["msg"].(string)
		switch {
		case msg == "worker started":
			started = l
		case strings.HasPrefix(msg, "cannot reach Redis at "+addr+": "):
			down++
			require.Contains(t, msg, "connection refused")
			require.Equal(t, "1s", l["retry_every"])
			require.Equal(t, "WARN", l["level"])
		case msg == "Redis at "+addr+" is reachable again":
			up++
			require.NotEmpty(t, l["down_for"])
		case strings.HasPrefix(msg, "OTPQ_PAYLOAD_KEY is not set"):
			keyWarned++ // a deployment without a payload key is warned (otpq dev is not: TestDevOnce)
		default:
			require.NotEqual(t, "WARN", l["level"], "an outage is reported once: %s", msg)
			require.NotEqual(t, "ERROR", l["level"], "an outage is reported once: %s", msg)
		}
	}
	require.Equal(t, 1, down, log.String())
	require.Equal(t, 1, up, log.String())
	require.Equal(t, 1, keyWarned, log.String())

	require.NotNil(t, started, log.String())
	require.Equal(t, strings.TrimPrefix(fake.URL, "http://"), started["provider"], "the provider's host")
	require.Equal(t, addr, started["redis"])
	require.Equal(t, "critical,bulk (strict priority)", started["queues"])
	require.EqualValues(t, 20, started["concurrency"])
	require.EqualValues(t, 4, started["servers"])
	require.Equal(t, "50/s across all workers", started["rate"])
	for _, secret := range []string{"CANARY-PW", "CANARY-SECRET"} {
		require.NotContains(t, log.String(), secret)
	}
}
