package outcome

import (
	"bytes"
	"log/slog"
	"testing"

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
		"bad payload":                            "bad_payload",
		"expired":                                "expired",
		"retries exhausted":                      "retries_exhausted",
		"provider rejected":                      "provider_rejected",
		"likely delivered by an earlier attempt": "provider_rejected",
		"configuration problem":                  "configuration",
		"no code":                                "no_code",
	}, labels)
	require.Equal(t, "other", Reason("new").Label())

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "outcome", AcceptedUnconfirmed, "reason", Configuration)
	require.Contains(t, buf.String(), `"outcome":"accepted_unconfirmed","reason":"configuration problem"`)
}
