package dest

import (
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"+8618701235678":      "+8618701235678",
		"victim@example.com":  "victim@example.com",
		"victim@EXAMPLE.com":  "victim@example.com",
		"VICTIM@example.com":  "victim@example.com",
		"victim@example.COM":  "victim@example.com",
		"Straße@example.com":  "strasse@example.com", // full case folding
		"e\u0301@example.com": "\u00e9@example.com",  // NFC: e + combining acute = é
		"É@example.com":       "\u00e9@example.com",
	} {
		got, err := Canonical(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for in, reason := range map[string]string{
		"":                         "required",
		"vic\u200btim@example.com": "invisible formatting character U+200B",
		"victim@example.com\u200f": "invisible formatting character U+200F",
		"\u202evictim@example.com": "invisible formatting character U+202E",
		"vic\u2069tim@example.com": "invisible formatting character U+2069",
		"vic\u2060tim@example.com": "invisible formatting character U+2060",
		"\ufeff+8618701235678":     "invisible formatting character U+FEFF",
		"vic\x7ftim@example.com":   "control character U+007F",
		"vic\u0085tim@example.com": "control character U+0085",
		"+86187\x0001235678":       "control character U+0000",
		"vic\xfftim@example.com":   "not valid UTF-8",
		"+86 187 0123 5678":        "E.164",
		"+８６１８７０１２３５６７８":           "E.164",
		"8618701235678":            "must be an E.164 phone number",
		"Bob <bob@example.com>":    "not a valid e-mail address",
		"bob@localhost":            "has no dot",
	} {
		_, err := Canonical(in)
		require.ErrorContains(t, err, reason, "%q", in)
	}
	require.Equal(t, "not a destination", Key("not a destination"))
	require.Equal(t, "bob@example.com", Key("BOB@Example.com"))
}

// isE164 says what ^\+[1-9][0-9]{7,14}$ says, on edge cases and on every
// string of up to 4 characters drawn from a small alphabet, padded to each
// length around the bounds.
func TestIsE164MatchesItsRegexp(t *testing.T) {
	re := regexp.MustCompile(`^\+[1-9][0-9]{7,14}$`)
	cases := []string{"", "+", "+1", "+12345678", "+1234567", "+123456789012345", "+1234567890123456",
		"+01234567", "++1234567", "1234567890", "+1234567a", "+１２３４５６７８", "+12345678\n", " +12345678"}
	alphabet := []string{"+", "0", "1", "9", "a", " ", "٣"}
	var grow func(prefix string, n int)
	grow = func(prefix string, n int) {
		for pad := 0; pad <= 14; pad++ {
			cases = append(cases, prefix+strings.Repeat("5", pad), "+"+prefix+strings.Repeat("5", pad))
		}
		if n == 0 {
			return
		}
		for _, a := range alphabet {
			grow(prefix+a, n-1)
		}
	}
	grow("", 3)
	for _, c := range cases {
		require.Equal(t, re.MatchString(c), isE164(c), "%q", c)
	}
}
