package redact

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

func TestDestination(t *testing.T) {
	for in, want := range map[string]string{
		"+8618701235678":         "+861*******678",
		"+15550000010":           "+155******10",
		"+4915123":               "+49****3",
		"support@example.com":    "s***@example.com",
		"@example.com":           "***@example.com",
		"\u0430dmin@example.com": "\u0430***@example.com", // Cyrillic а: kept whole, not cut in half
		"\xd0\xb0dmin@ex.com":    "\u0430***@ex.com",
		"\xffdmin@ex\x1b.com":    "***@ex?.com",
		"\u200bvictim@ex.com":    "***@ex.com",
		"+1555":                  "+1**5",
		"":                       "",
	} {
		require.Equal(t, want, Destination(in), "Destination(%q)", in)
	}
}

// At least half of the national number is hidden, whatever the country
// code's length (1 to 3 digits), for every E.164 length (issue 9, item 8:
// "+15550000010" showed 8 of its 10 national digits).
func TestDestinationHidesHalfTheNationalNumber(t *testing.T) {
	for digits := 8; digits <= 15; digits++ {
		to := "+" + strings.Repeat("7", digits)
		masked := Destination(to)
		hidden := strings.Count(masked, "*")
		for cc := 1; cc <= 3; cc++ {
			national := digits - cc
			require.GreaterOrEqual(t, 2*hidden, national, "%s → %s hides %d of a %d-digit national number", to, masked, hidden, national)
		}
		require.Equal(t, len(to), len(masked), "the length is kept, so that destinations stay tellable apart")
	}
	require.NotContains(t, Destination("+15550000010"), "5550000")
}

// Masking never produces invalid UTF-8 or control characters, whatever the
// input (a non-ASCII local part was cut inside its first character).
func TestDestinationAlwaysValidText(t *testing.T) {
	inputs := []string{"\u0430dmin@example.com", "日本@例え.jp", "\xd0@x", "\xd0", "+\xd0\xb01234567", "ü", "😀😀😀😀😀😀😀😀@x.y", "a\x00b@c\x7f.d", "+86\u202e18701235678"}
	for c := rune(0x20); c < 0x3000; c += 37 {
		inputs = append(inputs, string(c)+"bc@example.com", "+"+strings.Repeat(string(c), 11))
	}
	for _, b := range []byte{0x80, 0xbf, 0xc0, 0xe2, 0xf0, 0xff} {
		inputs = append(inputs, string([]byte{b})+"x@example.com", "+1"+string([]byte{b, b})+"55501234")
	}
	for _, in := range inputs {
		out := Destination(in)
		require.True(t, utf8.ValidString(out), "Destination(%q) = %q", in, out)
		require.False(t, strings.ContainsFunc(out, func(r rune) bool { return unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) }), "Destination(%q) = %q", in, out)
	}
}
