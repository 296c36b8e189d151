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

// Every spelling of one mailbox or handset has one key (issue 16, row 10:
// plus-tags, gmail dots, punycode and Unicode domains, a trunk 0 after the
// country code were each counted as a new destination).
func TestKeyOneDestinationPerMailboxOrHandset(t *testing.T) {
	for want, spellings := range map[string][]string{
		"victim@example.com": {"victim@example.com", "victim+1@example.com", "Victim+otp+2@EXAMPLE.com", "victim+@example.com"},
		"victim@gmail.com": {"victim@gmail.com", "v.ictim@gmail.com", "V.I.C.T.I.M+x@gmail.com", "victim@googlemail.com",
			"vic.tim+9@GoogleMail.com", "victim@GMAIL.COM"},
		"admin@xn--bcher-kva.example": {"admin@bücher.example", "admin@BÜCHER.example", "admin@xn--bcher-kva.example",
			"admin@XN--BCHER-KVA.example", "admin+z@bu\u0308cher.example"},
		"a@xn--fsq.xn--0zwm56d": {"a@例.测试", "a@xn--fsq.xn--0zwm56d"},
		"+8613800138000":        {"+8613800138000", "+86013800138000"},
		"+447700900123":         {"+447700900123", "+4407700900123"},
		"+15550000010":          {"+15550000010", "+105550000010"},
		"+2348012345678":        {"+2348012345678", "+23408012345678"}, // three-digit country code
		"+390612345678":         {"+390612345678"},                     // Italy: the 0 is part of the number
		"+2250701020304":        {"+2250701020304"},
	} {
		for _, s := range spellings {
			got, err := Canonical(s)
			require.NoError(t, err, s)
			require.Equal(t, want, got, s)
			require.Equal(t, want, Key(s), s)
		}
	}
	// Not one destination: kept apart.
	for _, pair := range [][2]string{
		{"victim@example.com", "v.ictim@example.com"}, // dots count outside gmail
		{"+390612345678", "+39612345678"},
		{"+2250701020304", "+225701020304"},
		{"+8613800138000", "+861380013800"},
		{"victim@gmail.com", "victim@gmail.co"},
	} {
		require.NotEqual(t, Key(pair[0]), Key(pair[1]), "%q and %q", pair[0], pair[1])
	}
}

func TestCanonicalRefusesInvalidDomainNames(t *testing.T) {
	for _, s := range []string{"a@exa_mple.com", "a@-example.com", "a@xn--zz-.com", "a@example-.com"} {
		_, err := Canonical(s)
		require.ErrorContains(t, err, "not a valid domain name", s)
	}
}

// Each country code the table gives is one that E.164 assigns with that
// length: spot checks on each length, and that the table is prefix-free.
func TestCountryCodeLen(t *testing.T) {
	for digits, want := range map[string]int{"15550000010": 1, "79161234567": 1, "8613800138000": 2, "447700900123": 2,
		"390612345678": 2, "35312345678": 3, "2250701020304": 3, "97150123456": 3, "88612345678": 3, "4201234567": 3} {
		require.Equal(t, want, countryCodeLen(digits), digits)
	}
	for cc := range twoDigitCodes {
		require.NotContains(t, "17", cc[:1], "a two-digit code under a one-digit one")
	}
}
