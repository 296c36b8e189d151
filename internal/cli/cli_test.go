package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/producer"
)

const canaryCode = "CANARY-3141"

type result struct {
	code           int
	stdout, stderr string
}

type bundle struct {
	db  *redistest.DB
	env map[string]string
}

func setup(t *testing.T) bundle {
	t.Helper()
	db := redistest.New(t)
	return bundle{db: db, env: map[string]string{"OTPQ_REDIS_URL": db.URL()}}
}

// run executes otpq with args and the bundle's environment.
func (b bundle) run(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	var out, errb logsink.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return b.env[k] }}
	code := m.Run(ctx, args)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// startWorker runs `otpq worker args…` in the background with the bundle's
// environment, as main runs it. stop cancels it with a cause, as
// signal.NotifyContext in main does on SIGTERM, and requires a graceful
// exit 0 within 20 s; it is safe to call more than once.
func (b bundle) startWorker(t *testing.T, args ...string) (log *logsink.Buffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancelCause(context.Background())
	log = &logsink.Buffer{}
	done := make(chan int, 1)
	go func() {
		m := &Main{Stdin: strings.NewReader(""), Stdout: &logsink.Buffer{}, Stderr: log, Getenv: func(k string) string { return b.env[k] }}
		done <- m.Run(ctx, append([]string{"worker"}, args...))
	}()
	var once sync.Once
	return log, func() {
		once.Do(func() {
			cancel(errors.New("terminated signal received"))
			select {
			case code := <-done:
				require.Equal(t, ExitOK, code, log.String())
			case <-time.After(20 * time.Second):
				t.Fatal("worker did not stop on cancel")
			}
		})
	}
}

func (b bundle) pending(t *testing.T, queue string) int {
	t.Helper()
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: b.db.Addr, DB: b.db.Number})
	defer ins.Close()
	return pendingIn(t, ins, queue)
}

// pendingIn is the number of pending tasks of queue: 0 when the queue was
// never written (asynq does not list it), and a test failure when Redis
// cannot be read, so that "nothing enqueued" and "could not read" never
// look the same.
func pendingIn(t *testing.T, ins *asynq.Inspector, queue string) int {
	t.Helper()
	queues, err := ins.Queues()
	require.NoError(t, err, "listing queues")
	if !slices.Contains(queues, queue) {
		return 0
	}
	q, err := ins.GetQueueInfo(queue)
	require.NoError(t, err, "reading queue %s", queue)
	return q.Pending
}

func TestSendPrintsTaskID(t *testing.T) {
	b := setup(t)
	r := b.run(t, context.Background(), "send", "--to", "+8618701235678", "--code", canaryCode, "--template", "login", "--param", "name=Bob", "--language", "en")
	require.Equal(t, ExitOK, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)
	require.Regexp(t, `^[0-9a-f-]{36}$`, id, "the task ID alone on stdout")
	require.Equal(t, 1, b.pending(t, "critical"))

	r = b.run(t, context.Background(), "status", "--json", id)
	require.Equal(t, ExitOK, r.code, r.stderr)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	require.Equal(t, "pending", st["state"])
	require.Equal(t, "critical", st["queue"])
	require.NotContains(t, r.stdout, canaryCode)
}

func TestSendInvalidInput(t *testing.T) {
	b := setup(t)
	cases := []struct {
		args  []string
		field string
	}{
		{[]string{"--to", "12345", "--code", canaryCode, "--template", "t"}, "invalid to:"},
		{[]string{"--to", "+8618701235678", "--template", "t"}, "invalid code: required"},
		{[]string{"--to", "+8618701235678", "--code", canaryCode}, "invalid template: required"},
		{[]string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "--language", "fr"}, "invalid language:"},
		{[]string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "--param", "novalue"}, "want key=value"},
		{[]string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "--queue", "default"}, "invalid queue:"},
		{[]string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "--expires-in", "-1s"}, "invalid expires_in:"},
		{[]string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "--id", "has space"}, "invalid id:"},
		{[]string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "extra"}, "takes no arguments"},
		{[]string{"--to", "+8618701235678", "--code", canaryCode, "--template", "t", "--redis-url", "redis://:pw@127.0.0.1:6379/0"}, "visible in ps"},
		{[]string{"--nope"}, "unknown flag: --nope"},
	}
	for _, tc := range cases {
		r := b.run(t, context.Background(), append([]string{"send"}, tc.args...)...)
		require.Equal(t, ExitUsage, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.field, tc.args)
		require.NotContains(t, r.stderr, canaryCode)
		require.Empty(t, r.stdout)
	}
	require.Zero(t, b.pending(t, "critical"), "nothing enqueued")
}

func TestSendDuplicateExit3(t *testing.T) {
	b := setup(t)
	args := []string{"send", "--to", "a@example.com", "--code", canaryCode, "--template", "t", "--id", "signup-9"}
	r := b.run(t, context.Background(), args...)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, "signup-9\n", r.stdout)
	r = b.run(t, context.Background(), args...)
	require.Equal(t, ExitDuplicate, r.code)
	require.Equal(t, "signup-9\n", r.stdout)
	require.Contains(t, r.stderr, "duplicate")
	require.Equal(t, 1, b.pending(t, "critical"))
}

func TestSendCodeFromEnvAndFile(t *testing.T) {
	b := setup(t)
	b.env["OTPQ_CODE"] = canaryCode
	r := b.run(t, context.Background(), "send", "--to", "+8618701235678", "--template", "t")
	require.Equal(t, ExitOK, r.code, r.stderr)

	var out, errb logsink.Buffer
	m := &Main{Stdin: strings.NewReader(canaryCode + "\n"), Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		if k == "OTPQ_REDIS_URL" {
			return b.db.URL()
		}
		return ""
	}}
	require.Equal(t, ExitOK, m.Run(context.Background(), []string{"send", "--to", "+8618701235678", "--template", "t", "--code-file", "-"}), errb.String())
	require.Equal(t, 2, b.pending(t, "critical"))
}

// With Redis down, send, status and bulk say so once, in otpq's words:
// not the destination guard's, not asynq's UNKNOWN codes.
func TestRedisDownSaysSoOnce(t *testing.T) {
	b := bundle{env: map[string]string{"OTPQ_REDIS_URL": "redis://:CANARY-PW@127.0.0.1:1/0"}}
	want := "otpq: cannot reach Redis at 127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused\n"
	for _, args := range [][]string{
		{"send", "--to", "+8618701235678", "--code", canaryCode, "--template", "t"},
		{"status", "3f0c6a52-0000-4000-8000-000000000000"},
		{"bulk", "-"},
	} {
		var out, errb logsink.Buffer
		m := &Main{Stdin: strings.NewReader("to,code,template\n+8618701235678," + canaryCode + ",t\n"), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return b.env[k] }}
		require.Equal(t, ExitFailure, m.Run(context.Background(), args), args[0])
		require.Equal(t, want, errb.String(), args[0])
		if args[0] != "bulk" {
			require.Empty(t, out.String(), "%s: no task ID for a send that was not enqueued", args[0])
		}
	}
}

// go-redis's messages about an unreachable Redis go to debug (the command's
// error or the worker's outage line says it once); others stay warnings.
func TestRedisLoggerCollapsesConnectionFailures(t *testing.T) {
	var buf logsink.Buffer
	l := RedisLogger{Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	for range 50 {
		l.Printf(context.Background(), "redis: connection pool: failed to dial after %d attempts: %v", 5, "dial tcp 127.0.0.1:1: connect: connection refused")
	}
	l.Printf(context.Background(), "redis: %s", "discarding bad PubSub connection: unexpected reply")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 1, buf.String())
	require.Contains(t, lines[0], `"level":"WARN"`)
	require.Contains(t, lines[0], "discarding bad PubSub connection")
}

func TestStatusNotFound(t *testing.T) {
	b := setup(t)
	r := b.run(t, context.Background(), "status", "nope")
	require.Equal(t, ExitFailure, r.code)
	// It names the Redis it searched, so a wrong OTPQ_REDIS_URL shows.
	require.Contains(t, r.stderr, fmt.Sprintf("task not found: nope in the critical and bulk queues of the Redis at %s db %d\n", b.db.Addr, b.db.Number))
	// Searched by default (no OTPQ_REDIS_URL, no --redis-url), it says so
	// and how to pick another (checked without dialling the default Redis).
	m := &Main{Getenv: func(string) string { return "" }}
	cmd := m.statusCmd()
	require.Contains(t, defaultHint(cmd, m), "the default: set OTPQ_REDIS_URL")
	require.NoError(t, cmd.Flags().Set("redis-url", "redis://127.0.0.1:1/3"))
	require.Empty(t, defaultHint(cmd, m))
	require.Empty(t, defaultHint(m.statusCmd(), &Main{Getenv: func(k string) string { return map[string]string{"OTPQ_REDIS_URL": "x"}[k] }}))
	r = b.run(t, context.Background(), "status")
	require.Equal(t, ExitUsage, r.code)
}

func TestWorkerNeedsCredentials(t *testing.T) {
	// Redis points nowhere: the check must fail before Redis is touched.
	b := bundle{env: map[string]string{"OTPQ_REDIS_URL": "redis://127.0.0.1:1/0", "ENGAGELAB_DEV_KEY": "k"}}
	r := b.run(t, context.Background(), "worker")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "missing EngageLab credentials: set ENGAGELAB_DEV_SECRET")
}

func TestWorkerBadFlags(t *testing.T) {
	b := bundle{env: map[string]string{"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s"}}
	for args, want := range map[string]string{
		"--concurrency 0":                           "--concurrency: must be positive",
		"--retry-codes 50x6":                        `--retry-codes: "50x6" is not a 4-digit`,
		"--retry-codes 999":                         `--retry-codes: "999" is not a 4-digit`,
		"--retry-min-delay 5s --retry-max-delay 1s": "--retry-max-delay 1s is below --retry-min-delay 5s",
		"--http-timeout 0s":                         "--http-timeout: must be positive",
		"--log-level loud":                          "--log-level",
		"--max-retry -1":                            "--max-retry: must not be negative",
	} {
		r := b.run(t, context.Background(), append([]string{"worker"}, strings.Fields(args)...)...)
		require.Equal(t, ExitUsage, r.code, args)
		require.Contains(t, r.stderr, want, args)
	}
	b.env["OTPQ_CONCURRENCY"] = "many"
	r := b.run(t, context.Background(), "worker")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "OTPQ_CONCURRENCY: invalid value for --concurrency")
}

// Every flag reads its OTPQ_ variable, and the command line wins over it.
func TestFlagsFromEnvironment(t *testing.T) {
	b := setup(t)
	b.env["OTPQ_QUEUE"] = "bulk"
	b.env["OTPQ_TEMPLATE"] = "login"
	b.env["OTPQ_EXPIRES_IN"] = "90s"
	r := b.run(t, context.Background(), "send", "--to", "+8618701235678", "--code", canaryCode)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, 1, b.pending(t, "bulk"))

	r = b.run(t, context.Background(), "send", "--to", "+8618701235679", "--code", canaryCode, "--queue", "critical")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Equal(t, 1, b.pending(t, "critical"), "--queue beats OTPQ_QUEUE")

	b.env["OTPQ_EXPIRES_IN"] = "soon"
	r = b.run(t, context.Background(), "send", "--to", "+8618701235670", "--code", canaryCode)
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "OTPQ_EXPIRES_IN: invalid value for --expires-in")
}

func TestUnknownSubcommand(t *testing.T) {
	b := bundle{}
	r := b.run(t, context.Background(), "sned")
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "sned")
}

// TestWorkerEndToEnd drives `otpq worker` and `otpq send` as a user would.
func TestWorkerEndToEnd(t *testing.T) {
	b := setup(t)
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: "CANARY-SECRET"})
	fake.SetRules(fakeengagelab.Rule{To: "+8613800000002", Code: 5013}, fakeengagelab.Rule{To: "+8613800000003", Status: 500, Code: 1000})
	srv := httptest.NewServer(fake)
	defer srv.Close()
	b.env["ENGAGELAB_DEV_KEY"], b.env["ENGAGELAB_DEV_SECRET"], b.env["ENGAGELAB_BASE_URL"] = "key", "CANARY-SECRET", srv.URL

	// Stopped with a cause, as main stops it on SIGTERM: a stop by signal
	// is graceful and exits 0.
	werr, stop := b.startWorker(t, "--concurrency", "4", "--log-format", "json", "--http-addr", "", "--retry-min-delay", "10s", "--retry-max-delay", "20s")
	defer stop()

	ok := b.run(t, context.Background(), "send", "--to", "+8613800000001", "--code", canaryCode, "--template", "login")
	require.Equal(t, ExitOK, ok.code, ok.stderr)
	bad := b.run(t, context.Background(), "send", "--to", "+8613800000002", "--code", canaryCode, "--template", "login")
	require.Equal(t, ExitOK, bad.code, bad.stderr)
	flaky := b.run(t, context.Background(), "send", "--to", "+8613800000003", "--code", canaryCode, "--template", "login")
	require.Equal(t, ExitOK, flaky.code, flaky.stderr)

	waitState := func(id, state string) string {
		var out string
		require.Eventually(t, func() bool {
			r := b.run(t, context.Background(), "status", id)
			out = r.stdout
			return strings.Contains(r.stdout, "state:          "+state+"\n")
		}, 15*time.Second, 20*time.Millisecond, "task %s never %s; worker log:\n%s", id, state, werr.String())
		return out
	}
	delivered := waitState(strings.TrimSpace(ok.stdout), "completed")
	require.Contains(t, delivered, "send_channel:   sms")
	require.Contains(t, delivered, "message_id:")
	require.Contains(t, delivered, "attempts:       1 done\n")
	require.Regexp(t, `completed_at:   \S+Z \((\d+s ago|now)\)`, delivered)
	archived := waitState(strings.TrimSpace(bad.stdout), "archived")
	require.Contains(t, archived, "last_error:     engagelab 5013: Number has been blacklisted")
	require.Contains(t, archived, "attempts:       1 done\n")
	require.Regexp(t, `dead_lettered:  \S+Z \((\d+s ago|now)\)`, archived, "when it was dead-lettered")
	retrying := waitState(strings.TrimSpace(flaky.stdout), "retry")
	require.Contains(t, retrying, "attempts:       1 done\n")
	require.Contains(t, retrying, "last_error:     engagelab 1000: ")
	require.Regexp(t, `next_attempt:   \S+Z \(in \d+s\)`, retrying, "when the next attempt comes")
	r := b.run(t, context.Background(), "status", strings.TrimSpace(flaky.stdout), "--json")
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	require.NotEmpty(t, st["next_process_at"])
	require.NotEmpty(t, st["last_failed_at"])

	stop()
	logs := werr.String()
	require.Contains(t, logs, `"msg":"accepted"`)
	require.Contains(t, logs, `"to":"+861*******001"`)
	require.NotContains(t, logs, canaryCode)
	require.NotContains(t, logs, "CANARY-SECRET")
	require.NotContains(t, logs, "+8613800000001")
}

// While the 2nd attempt runs, status says one attempt is done and which
// one is running, beside the 1st attempt's error.
func TestStatusTextAttemptInProgress(t *testing.T) {
	now := time.Date(2026, 11, 26, 7, 0, 10, 0, time.UTC)
	var out strings.Builder
	printStatus(&out, &producer.Status{ID: "t1", Queue: "critical", State: "active", Attempts: 1, InProgress: true,
		LastError: "engagelab 1000: Internal error", LastFailedAt: now.Add(-3 * time.Second)}, now)
	require.Equal(t, `verdict:        sending
id:             t1
queue:          critical
state:          active
attempts:       1 done, attempt 2 in progress
last_error:     engagelab 1000: Internal error
last_failed_at: 2026-11-26T07:00:07Z (3s ago)
`, out.String())
}

func TestDevOnce(t *testing.T) {
	b := bundle{}
	r := b.run(t, context.Background(), "dev", "--once")
	require.Equal(t, ExitOK, r.code, r.stderr)
	// Each sample in otpq status's words, the receipt's verdict first.
	require.Regexp(t, `\n  delivered +task \S+ → delivered · sms · [\d.]+ s after acceptance · 0\.005 USD, message_id \d{19}\n`, r.stdout)
	require.Regexp(t, `\n  retried, then delivered +task \S+ → delivered · sms · [^\n]*· 2 attempts[^\n]*, message_id \d{19}\n`, r.stdout)
	require.Regexp(t, `\n  dead-lettered \(5013 blacklisted\) +task \S+ → dead letter · engagelab 5013: Number has been blacklisted\n`, r.stdout)
	require.Regexp(t, `\n  accepted, failed on the handset \(4001\) +task \S+ → failed · sms · 4001 Message could not be delivered · `, r.stdout)
	require.Regexp(t, `\n  SMS after WhatsApp failed +task \S+ → delivered · sms · [^\n]*\n +stages: sent via whatsapp → [^\n]*delivered via sms\n`, r.stdout)
	require.NotRegexp(t, `→ (completed|archived)`, r.stdout, "asynq's states are not the verdict")
	require.NotContains(t, r.stdout, "/monitoring/", "no link to a UI that is gone when read")
	require.Contains(t, r.stdout, "Web UI:  not served with --once")
	require.Regexp(t, `The fake provider scripts these destinations[^\n]*\n  \+8613800138001 +retried, then delivered\n  \+8613800138002 +dead-lettered \(5013 blacklisted\)`, r.stdout)
	// Nothing alarming about dev mode's own defaults (it draws its own
	// payload key), and no raw log lines around the summary.
	require.NotContains(t, r.stderr, "OTPQ_PAYLOAD_KEY")
	require.Empty(t, r.stderr)
}

// otpq dev prints the outcome of the user's own sends too, points at otpq
// status, and says when Ctrl-C stopped it.
func TestDevShowsEveryOutcome(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out logsink.Buffer
	done := make(chan int)
	go func() {
		m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &logsink.Buffer{}, Getenv: func(string) string { return "" }}
		done <- m.Run(ctx, []string{"dev", "--http-addr", ""})
	}()
	var redisURL string
	require.Eventually(t, func() bool {
		_, rest, ok := strings.Cut(out.String(), "Enqueue more with: OTPQ_REDIS_URL=")
		redisURL, _, _ = strings.Cut(rest, " ")
		return ok && redisURL != ""
	}, 30*time.Second, 20*time.Millisecond, "dev never got ready")

	user := bundle{env: map[string]string{"OTPQ_REDIS_URL": redisURL}}
	sent := user.run(t, context.Background(), "send", "--to", "+8613800138002", "--code", canaryCode, "--template", "demo-login")
	require.Equal(t, ExitOK, sent.code, sent.stderr)
	id := strings.TrimSpace(sent.stdout)
	ok := user.run(t, context.Background(), "send", "--to", "+8613800138009", "--code", canaryCode, "--template", "demo-login")
	require.Equal(t, ExitOK, ok.code, ok.stderr)
	okID := strings.TrimSpace(ok.stdout)
	failed := user.run(t, context.Background(), "send", "--to", "+8613800138003", "--code", canaryCode, "--template", "demo-login")
	require.Equal(t, ExitOK, failed.code, failed.stderr)
	failedID := strings.TrimSpace(failed.stdout)
	// The curl line works as pasted: its send is delivered and shows too.
	_, curl, ok2 := strings.Cut(out.String(), "or over HTTP, as EngageLab's API (any language): ")
	curl, _, _ = strings.Cut(curl, "\n")
	require.True(t, ok2, out.String())
	curlOut, err := exec.Command("bash", "-c", curl).Output()
	require.NoError(t, err, curl)
	var ans map[string]string
	require.NoError(t, json.Unmarshal(curlOut, &ans), string(curlOut))
	require.Equal(t, "sms", ans["send_channel"])
	require.Eventually(t, func() bool {
		return regexp.MustCompile(`task ` + ans["message_id"] + ` → (accepted|pending|delivered) · sms[^\n]*, message_id `).MatchString(out.String())
	}, 15*time.Second, 20*time.Millisecond, out.String())
	require.Eventually(t, func() bool {
		s := out.String()
		return strings.Contains(s, "task "+id+" → dead-lettered after 1 attempt(s): engagelab 5013: Number has been blacklisted  (otpq status "+id+")") &&
			regexp.MustCompile(`task `+okID+` → (accepted|pending|delivered) · sms[^\n]*, message_id `).MatchString(s)
	}, 15*time.Second, 20*time.Millisecond, out.String())
	// Then the receipts of the user's sends: delivered, and failed on the
	// handset with EngageLab's error.
	require.Eventually(t, func() bool {
		s := out.String()
		return regexp.MustCompile(`task `+okID+` → delivered · sms · [^\n]*after acceptance[^\n]*, message_id `).MatchString(s) &&
			regexp.MustCompile(`task `+failedID+` → failed · sms · 4001 [^\n]*, message_id `).MatchString(s)
	}, 15*time.Second, 20*time.Millisecond, out.String())

	cancel()
	select {
	case code := <-done:
		require.Equal(t, ExitOK, code)
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop")
	}
	require.True(t, strings.HasSuffix(out.String(), "otpq dev: stopped; the embedded Redis and its tasks are gone.\n"), out.String())
	require.NotContains(t, out.String(), canaryCode)
}
