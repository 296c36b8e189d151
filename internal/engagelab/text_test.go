package engagelab

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/redact"
)

func TestPrintable(t *testing.T) {
	require.Equal(t, `a\x1b[2J\nb\u202ec\u200bd\xffé`, Printable("a\x1b[2J\nb\u202ec\u200bd\xffé", 512))
	require.Equal(t, "plain text, 中文", Printable("plain text, 中文", 512))
	once := Printable("\x1b"+strings.Repeat("é", 300), 128)
	require.LessOrEqual(t, len(once), 128)
	require.True(t, utf8.ValidString(once))
	require.True(t, strings.HasPrefix(once, `\x1bé`) && strings.HasSuffix(once, "é…"), once)
	require.Equal(t, once, Printable(once, 128), "escaped text passes unchanged")
	// Never a cut inside an escape.
	cut := Printable(strings.Repeat("a", 122)+"\x1b\x1b", 128)
	require.Equal(t, strings.Repeat("a", 122)+`…`, cut)
}

// A provider-assigned ID keeps digits that merely contain the code (a
// 19-digit message_id holds most 3- and 4-digit codes somewhere), so that
// receipts still match it; the code standing as a token of its own is
// still redacted.
func TestIDTextRedactsOnlyTheCodeAsAToken(t *testing.T) {
	req := Request{To: "+8618701235678", Code: "2081"}
	for _, tc := range []struct{ in, want string }{
		{"1795682081781234567", "1795682081781234567"},
		{"2081", "[redacted]"},
		{"id-2081", "id-[redacted]"},
		{"2081:x:2081", "[redacted]:x:[redacted]"},
		{"a2081-2081", "a2081-[redacted]"},
		{"to+8618701235678", "to" + redact.Destination("+8618701235678")},
		{"17\x1b[2J", `17\x1b[2J`},
	} {
		require.Equal(t, tc.want, idText(tc.in, req), tc.in)
	}
}
