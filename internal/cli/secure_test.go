package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/sealing"
	"github.com/otpq/otpq/internal/task"
)

const secureCanary = "CANARY-2718"

// secureBundle runs otpq against a database of its own. Secrets go through
// Main.Getenv (as in production, where it is os.Getenv); the Redis URL
// goes on the command line, since flags read OTPQ_* from the process
// environment.
type secureBundle struct {
	db  *redistest.DB
	env map[string]string
}

func secureSetup(t *testing.T) secureBundle {
	t.Helper()
	return secureBundle{db: redistest.New(t), env: map[string]string{}}
}

type secureResult struct {
	code           int
	stdout, stderr string
}

func (b secureBundle) run(t *testing.T, args ...string) secureResult {
	t.Helper()
	var out, errb bytes.Buffer
	m := &Main{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return b.env[k] }}
	args = append(args[:1:1], append([]string{"--redis-url", b.db.URL()}, args[1:]...)...)
	code := m.Run(context.Background(), args)
	return secureResult{code: code, stdout: out.String(), stderr: errb.String()}
}

func (b secureBundle) pending(t *testing.T) int {
	t.Helper()
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: b.db.Addr, DB: b.db.Number})
	defer ins.Close()
	return pendingIn(t, ins, "critical")
}

func TestSendDestinationLimitExit5(t *testing.T) {
	b := secureSetup(t)
	args := []string{"send", "--to", "+8618701235678", "--code", secureCanary, "--template", "t", "--destination-limit", "2"}
	for range 2 {
		r := b.run(t, args...)
		require.Equal(t, ExitOK, r.code, r.stderr)
	}
	r := b.run(t, args...)
	require.Equal(t, ExitLimited, r.code, r.stderr)
	require.Empty(t, r.stdout)
	require.Contains(t, r.stderr, "destination send limit reached: +861*******678 already had 2 sends in the last 15m0s")
	require.Contains(t, r.stderr, "nothing enqueued")
	require.NotContains(t, r.stderr, "+8618701235678")
	require.Equal(t, 2, b.pending(t))

	// Negative turns it off.
	r = b.run(t, "send", "--to", "+8618701235678", "--code", secureCanary, "--template", "t", "--destination-limit", "-1")
	require.Equal(t, ExitOK, r.code, r.stderr)
}

func TestSendSealsWithPayloadKey(t *testing.T) {
	b := secureSetup(t)
	key, err := sealing.GenerateKey("k7")
	require.NoError(t, err)
	file := filepath.Join(t.TempDir(), "payload.key")
	require.NoError(t, os.WriteFile(file, []byte(key+"\n"), 0o600))
	for _, env := range []map[string]string{{"OTPQ_PAYLOAD_KEY": key}, {"OTPQ_PAYLOAD_KEY_FILE": file}} {
		for k, v := range env {
			b.env[k] = v
		}
		r := b.run(t, "send", "--to", "a@example.com", "--code", secureCanary, "--template", "t")
		require.Equal(t, ExitOK, r.code, r.stderr)
		ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: b.db.Addr, DB: b.db.Number})
		info, err := ins.GetTaskInfo("critical", strings.TrimSpace(r.stdout))
		ins.Close()
		require.NoError(t, err)
		require.NotContains(t, string(info.Payload), secureCanary)
		v, err := b.db.Client.Get(context.Background(), asynqstore.CodeKey("critical", info.ID)).Result()
		require.NoError(t, err)
		require.NotContains(t, v, secureCanary)
		_, sealed, err := task.ParseCodeValue(v)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(sealed, "k7:"), "the code key holds the sealed code")
		for k := range env {
			delete(b.env, k)
		}
	}
}

func TestSecretEnvErrors(t *testing.T) {
	b := secureSetup(t)
	good, err := sealing.GenerateKey("k1")
	require.NoError(t, err)
	_, secret, _ := strings.Cut(good, ":")
	send := []string{"send", "--to", "a@example.com", "--code", secureCanary, "--template", "t"}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"OTPQ_PAYLOAD_KEY": "k1:" + secret[:20]}, send, "OTPQ_PAYLOAD_KEY: bad payload keyring"},
		{map[string]string{"OTPQ_PAYLOAD_KEY": good, "OTPQ_PAYLOAD_KEY_FILE": "/x"}, send, "not both"},
		{map[string]string{"OTPQ_PAYLOAD_KEY_FILE": "/nonexistent/key"}, send, "OTPQ_PAYLOAD_KEY_FILE"},
		{map[string]string{"OTPQ_REDIS_PASSWORD_FILE": "/nonexistent/pw"}, send, "OTPQ_REDIS_PASSWORD_FILE"},
		{map[string]string{"OTPQ_REDIS_CA_FILE": "/nonexistent/ca"}, send, "OTPQ_REDIS_CA_FILE"},
		{map[string]string{"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s", "OTPQ_PAYLOAD_KEY": "junk"}, []string{"worker"}, "OTPQ_PAYLOAD_KEY: bad payload keyring"},
		{map[string]string{"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s"}, []string{"worker", "--rate", "-5"}, "--rate: must not be negative"},
		{map[string]string{"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s"}, []string{"worker", "--rate", "10", "--rate-burst", "-1"}, "--rate-burst: must not be negative"},
	} {
		r := secureBundle{db: b.db, env: tc.env}.run(t, tc.args...)
		require.Equal(t, ExitUsage, r.code, "%v: %s", tc.env, r.stderr)
		require.Contains(t, r.stderr, tc.want)
		require.NotContains(t, r.stderr, secret[:20])
	}
	require.Zero(t, b.pending(t))
}

func TestRedisPasswordFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "redis.pw")
	require.NoError(t, os.WriteFile(file, []byte("from-file\n"), 0o600))
	m := &Main{Getenv: func(k string) string {
		return map[string]string{"OTPQ_REDIS_PASSWORD_FILE": file}[k]
	}}
	opt, err := m.redisOption("redis://:from-url@h:1/0")
	require.NoError(t, err)
	require.Equal(t, "from-file", opt.(asynq.RedisClientOpt).Password, "the file wins over the URL")
}
