package redact

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// echoes are the forms in which a provider or a template can echo a code
// (issue 16, row 9: only runs of 4+ digits were scrubbed).
var echoes = map[string][]string{
	"X7K9Q2": {"X7K9Q2", "x7k9q2", "X7k9Q2", "X7K-9Q2", "x7k 9q2", "X 7 K 9 Q 2", "X7K\u200b9Q2", "X7K\u20139Q2",
		"X7K \u2014 9Q2", "\uff38\uff17\uff2b\uff19\uff31\uff12"},
	"123456": {"123456", "123-456", "12 34 56", "1 2 3 4 5 6", "12-34-56", "123\t456", "\uff11\uff12\uff13\uff14\uff15\uff16", "123\u2212456"},
	"ab-12":  {"ab-12", "AB12", "ab 12", "Ab-1-2"},
}

func TestCodeRedactsEveryForm(t *testing.T) {
	for code, forms := range echoes {
		for _, form := range forms {
			for _, text := range []string{form, "Your code is " + form + ", do not share it", "(" + form + ")", "code:" + form + "."} {
				got := Code(text, code)
				require.Contains(t, got, Redacted, "%q in %q", code, text)
				require.NotContains(t, got, form, "%q in %q", code, text)
				require.Equal(t, strings.Replace(text, form, Redacted, 1), got, "only the code goes: %q", text)
				got = CodeToken(text, code)
				require.Equal(t, strings.Replace(text, form, Redacted, 1), got, "as a token too: %q", text)
			}
		}
	}
}

func TestCode(t *testing.T) {
	for _, tc := range []struct{ text, code, want string }{
		{"codeX7K9Q2end", "X7K9Q2", "code[redacted]end"}, // anywhere, inside a word too
		{"121212", "1212", "[redacted]"},                 // overlapping occurrences leave nothing between them
		{"x7k9q2 and X7K-9Q2", "X7K9Q2", "[redacted] and [redacted]"},
		{"\xffX7K9Q2\xff", "X7K9Q2", "\xff[redacted]\xff"},
		{"9182\xff73", "918273", "9182\xff73"}, // invalid bytes are not separators
		{"a#b", "a#b", "[redacted]"},           // a code without only letters and digits, as given
		{"###", "###", "[redacted]"},
		{"nothing here", "", "nothing here"},
		{"", "123456", ""},
	} {
		require.Equal(t, tc.want, Code(tc.text, tc.code), "Code(%q, %q)", tc.text, tc.code)
	}
}

// A provider-assigned ID keeps digits that merely contain the code; the
// code standing as a token of its own is still redacted.
func TestCodeToken(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"1795682081781234567", "1795682081781234567"},
		{"2081", "[redacted]"},
		{"id-2081", "id-[redacted]"},
		{"2081:x:2081", "[redacted]:x:[redacted]"},
		{"a2081-2081", "a2081-[redacted]"},
		{"20-81", "[redacted]"},
		{"20815", "20815"},
	} {
		require.Equal(t, tc.want, CodeToken(tc.text, "2081"), tc.text)
	}
}

func TestByFingerprintRedactsEveryForm(t *testing.T) {
	for code, forms := range echoes {
		fp := Fingerprint(code)
		require.NotEmpty(t, fp)
		require.NotContains(t, strings.ToLower(fp), strings.ToLower(code))
		for _, form := range forms {
			for _, text := range []string{form, "Your code is " + form + ", do not share it", "(" + form + ")", "code:" + form + "."} {
				got := ByFingerprint(text, fp)
				require.Equal(t, strings.Replace(text, form, Redacted, 1), got, "%q: %q", code, text)
			}
		}
	}
}

// A fingerprint of a code of digits never matches words; one made from
// another code (another salt) matches nothing of this one's forms but by
// the rare fragment collision, which only redacts more.
func TestByFingerprintKeepsOtherText(t *testing.T) {
	fp := Fingerprint("918273")
	text := "handset unreachable: absent subscriber, try later"
	require.Equal(t, text, ByFingerprint(text, fp))
	for _, bad := range []string{"", "x", "1:6:d:12:zz:1", "2:6:d:12:00:1", "1:99:d:12:00:1", "1:6:q:12:00:1"} {
		require.Equal(t, "918273", ByFingerprint("918273", bad), "unreadable fingerprint %q", bad)
	}
	require.Empty(t, Fingerprint("12"), "too short to fingerprint without revealing it")
	require.Empty(t, Fingerprint("a"))
	require.Empty(t, Fingerprint("--"))
}

// The fingerprint does not tell the code: many codes of its length share
// its fragment (about 10000/2^9 ≈ 20 four-digit codes).
func TestFingerprintDoesNotRevealTheCode(t *testing.T) {
	for range 5 {
		fp := Fingerprint("2081")
		f, ok := parseFingerprint(fp)
		require.True(t, ok)
		require.Equal(t, 9, f.bits)
		matches := 0
		for n := range 10000 {
			c := []rune{rune('0' + n/1000), rune('0' + n/100%10), rune('0' + n/10%10), rune('0' + n%10)}
			if fragment(f.salt, c, f.bits) == f.frag {
				matches++
			}
		}
		require.GreaterOrEqual(t, matches, 5, "fingerprint %s", fp)
	}
	for n, want := range map[int]int{3: 5, 4: 9, 5: 12, 6: 12, 32: 12} {
		require.Equal(t, want, fpBits(n, true), "%d digits", n)
	}
	require.Equal(t, 6, fpBits(2, false))
}

func TestCut(t *testing.T) {
	text := strings.Repeat("x", 90) + ". code X7K 9Q2 expires"
	out, cut := Cut(text, 90+len(". code X7K 9"))
	require.True(t, cut)
	require.Equal(t, strings.Repeat("x", 90)+".", out, "the stretch the cut split goes whole")
	long := strings.Repeat("word ", 100)
	out, cut = Cut(long, 300)
	require.True(t, cut)
	require.Equal(t, strings.Repeat("word ", 52), out, "at most 32 letters and digits go")
	out, cut = Cut("short", 300)
	require.False(t, cut)
	require.Equal(t, "short", out)
	out, _ = Cut("ééé", 3)
	require.Equal(t, "", out, "never inside a character, and é is a letter")
}

func TestDigitRuns(t *testing.T) {
	for in, want := range map[string]string{
		"Invalid phone number +6598765432": "Invalid phone number +##########",
		"engagelab 4001":                   "engagelab ####",
		"code 123-456":                     "code ###-###",
		"code 12 34 56":                    "code ## ## ##",
		"sent 2 of 3, 12 3":                "sent 2 of 3, 12 3",
		"12  34":                           "12  34", // two spaces: two runs
		"abc":                              "abc",
	} {
		require.Equal(t, want, DigitRuns(in), in)
	}
}
