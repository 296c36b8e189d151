package outcome

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWireStrings: archive texts, metric labels and log values are stable
// names that dashboards, alerts and scripts read.
func TestWireStrings(t *testing.T) {
	labels := map[Reason]string{}
	for _, r := range Reasons() {
		labels[r] = r.Label()
	}
	require.Equal(t, map[Reason]string{
		"bad payload":                           "bad_payload",
		"expired":                               "expired",
		"retries exhausted":                     "retries_exhausted",
		"provider rejected":                     "provider_rejected",
		"likely accepted by an earlier attempt": "provider_rejected",
		"configuration problem":                 "configuration",
		"no code":                               "no_code",
	}, labels)
	require.Equal(t, "other", Reason("new").Label())

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "outcome", AcceptedUnconfirmed, "reason", Configuration)
	require.Contains(t, buf.String(), `"outcome":"accepted_unconfirmed","reason":"configuration problem"`)
}

// TestVerdictOf: a receipt's verdict comes first; without one, the task's
// state and stored outcome speak, and an old "delivered" outcome reads as
// accepted (the worker never knew whether it arrived).
func TestVerdictOf(t *testing.T) {
	require.Equal(t, Failed, Of(Failed, "completed", Accepted))
	require.Equal(t, Delivered, Of(Delivered, "completed", "delivered"))
	require.Equal(t, VerdictAccepted, Of("", "completed", "delivered"))
	require.Equal(t, VerdictAccepted, Of("", "completed", ""))
	require.Equal(t, VerdictAcceptedUnconfirmed, Of("", "completed", AcceptedUnconfirmed))
	require.Equal(t, VerdictDeadLetter, Of("", "archived", ""))
	require.Equal(t, Retrying, Of("", "retry", ""))
	require.Equal(t, Sending, Of("", "active", ""))
	require.Equal(t, Queued, Of("", "pending", ""))
	require.Equal(t, Queued, Of("", "scheduled", ""))
	require.Equal(t, Accepted, Parse("delivered"))
	for _, v := range Verdicts() {
		require.NotEmpty(t, v.Meaning(), v)
	}
	require.Equal(t, "dead letter", VerdictDeadLetter.Text())
}

func TestSummary(t *testing.T) {
	require.Equal(t, "delivered · sms · 1.2 s after acceptance · 0.005 USD",
		Facts{Verdict: Delivered, Channel: "sms", After: 1240 * time.Millisecond, HasAfter: true, Cost: 0.005, Currency: "USD"}.Summary())
	require.Equal(t, "failed · sms · 4001 Message could not be delivered · 0 s after acceptance",
		Facts{Verdict: Failed, Channel: "sms", ErrorCode: 4001, ErrorText: "Message could not be delivered", HasAfter: true}.Summary())
	require.Equal(t, "dead letter · provider rejected: engagelab 5013: Number has been blacklisted",
		Facts{Verdict: VerdictDeadLetter, Channel: "sms", ErrorText: "provider rejected: engagelab 5013: Number has been blacklisted", Attempts: 1}.Summary())
	require.Equal(t, "accepted · email · 2 attempts", Facts{Verdict: VerdictAccepted, Channel: "email", Attempts: 2}.Summary())
	for d, want := range map[time.Duration]string{0: "0 s", 660 * time.Millisecond: "0.7 s", 9949 * time.Millisecond: "9.9 s", 42 * time.Second: "42 s"} {
		require.Equal(t, want, Seconds(d))
	}
}
