package redact

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDestination(t *testing.T) {
	for in, want := range map[string]string{
		"+8618701235678":      "+86187****5678",
		"support@example.com": "s***@example.com",
		"@example.com":        "***@example.com",
		"+1555":               "*****",
		"+4915123":            "+49***23",
		"":                    "",
	} {
		require.Equal(t, want, Destination(in), "Destination(%q)", in)
	}
	// The full number never survives masking.
	require.NotContains(t, Destination("+8618701235678"), "18701235678")
}
