package cli

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/receipts"
)

// TestReceiptDetailEchoingTheCode: the provider's callback error detail
// echoes each task's code in another case or grouped (issue 16, row 9);
// neither `otpq status --json`, `otpq status` nor the worker log shows it.
func TestReceiptDetailEchoingTheCode(t *testing.T) {
	b := setup(t)
	opsAddr, cbAddr := freeAddr(t), freeAddr(t)
	secretFile := filepath.Join(t.TempDir(), "cb-secret")
	require.NoError(t, os.WriteFile(secretFile, []byte("CANARY-CB-SECRET\n"), 0o600))
	cases := []struct{ to, code, echo string }{
		{"+8613800000021", "X7K9Q2", "x7k9q2"},
		{"+8613800000022", "X7K9Q2", "X7K-9Q2"},
		{"+8613800000023", "123456", "123-456"},
		{"+8613800000024", "123456", "12 34 56"},
	}
	var lcs []fakeengagelab.Lifecycle
	for _, c := range cases {
		lcs = append(lcs, fakeengagelab.FailedLifecycle(c.to, 100*time.Millisecond, 4001, "rejected content: code "+c.echo+" blocked"))
	}
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: "CANARY-SECRET", Callback: fakeengagelab.CallbackConfig{
		URL: "http://" + cbAddr + receipts.Path, Username: "otpq", Secret: "CANARY-CB-SECRET", Lifecycles: lcs,
	}})
	defer fake.Close()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	b.env["ENGAGELAB_DEV_KEY"], b.env["ENGAGELAB_DEV_SECRET"], b.env["ENGAGELAB_BASE_URL"] = "key", "CANARY-SECRET", srv.URL
	b.env["OTPQ_CALLBACK_USER"], b.env["OTPQ_CALLBACK_SECRET_FILE"] = "otpq", secretFile
	werr, stop := b.startWorker(t, "--concurrency", "4", "--log-format", "json", "--http-addr", opsAddr, "--callback-addr", cbAddr)
	defer stop()

	flat := func(s string) string { return strings.NewReplacer(" ", "", "-", "").Replace(strings.ToLower(s)) }
	for _, c := range cases {
		r := b.run(t, context.Background(), "send", "--to", c.to, "--code", c.code, "--template", "login")
		require.Equal(t, ExitOK, r.code, r.stderr)
		id := strings.TrimSpace(r.stdout)
		var out string
		require.Eventually(t, func() bool {
			out = b.run(t, context.Background(), "status", "--json", id).stdout
			return strings.Contains(out, `"error_detail"`)
		}, 15*time.Second, 50*time.Millisecond, "worker log:\n%s", werr.String())
		var st struct {
			Receipt struct {
				ErrorDetail string `json:"error_detail"`
			} `json:"receipt"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &st))
		require.Equal(t, "rejected content: code [redacted] blocked", st.Receipt.ErrorDetail, c.echo)
		require.NotContains(t, flat(out), flat(c.code), "status --json")
		require.NotContains(t, flat(b.run(t, context.Background(), "status", id).stdout), flat(c.code), "status")
	}
	require.Contains(t, werr.String(), `"msg":"delivery receipt"`)
	for _, c := range cases {
		require.NotContains(t, flat(werr.String()), flat(c.code), "worker log")
	}
}
