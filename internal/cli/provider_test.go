package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/producer"
)

// TestWorkerBadBaseURL: ENGAGELAB_BASE_URL is checked at worker start,
// before Redis is touched; a bad one exits 2 with otpq's own reason, never
// the URL's credentials.
func TestWorkerBadBaseURL(t *testing.T) {
	for url, want := range map[string]string{
		"http://urluser:URLSECRET4@[::1": "ENGAGELAB_BASE_URL: not a valid URL",
		"ftp://u:SECRET@h":               `ENGAGELAB_BASE_URL: scheme "ftp" is not http or https`,
		"http://u:p@host":                "ENGAGELAB_BASE_URL: must not carry credentials",
		"https://u:SECRET@otp.example":   "ENGAGELAB_BASE_URL: must not carry credentials",
		"https://otp.example/?k=SECRET":  "ENGAGELAB_BASE_URL: must not have a query or fragment",
	} {
		// Redis points nowhere: the check must fail before Redis is touched.
		b := bundle{env: map[string]string{"OTPQ_REDIS_URL": "redis://127.0.0.1:1/0",
			"ENGAGELAB_DEV_KEY": "k", "ENGAGELAB_DEV_SECRET": "s", "ENGAGELAB_BASE_URL": url}}
		r := b.run(t, context.Background(), "worker", "--http-addr", "")
		require.Equal(t, ExitUsage, r.code, url)
		require.Contains(t, r.stderr, want, url)
		require.NotContains(t, r.stderr+r.stdout, "SECRET", url)
		require.NotContains(t, r.stderr+r.stdout, "urluser", url)
	}
}

// TestStatusShowsUnconfirmedOutcome: a send the provider took without a
// message_id says so in otpq status.
func TestStatusShowsUnconfirmedOutcome(t *testing.T) {
	var out strings.Builder
	printStatus(&out, &producer.Status{ID: "t1", Queue: "critical", State: "completed", Attempts: 1, Outcome: "accepted_unconfirmed"}, time.Now())
	require.Contains(t, out.String(), "outcome:        accepted_unconfirmed\n")
	require.True(t, strings.HasPrefix(out.String(), "verdict:        accepted unconfirmed\n"), out.String())
	require.NotContains(t, out.String(), "message_id:")
}
