package dest

import (
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
