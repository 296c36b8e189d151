package redact

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Redacted replaces a code found in text.
const Redacted = "[redacted]"

// MaxCodeUnits is the most letters and digits a code can hold (the input
// rules allow 32 bytes): a code echoed across a cut starts within this many
// letters and digits of it (see Cut).
const MaxCodeUnits = 32

// A code can come back from a provider in any of the forms the input rules
// allow and a human or a template may write: in another case ("x7k9q2" for
// "X7K9Q2"), grouped with spaces or dashes ("123-456", "12 34 56"), in
// full-width digits. The functions below see text as a stream of units:
// letters and digits, case-folded and NFKC-normalised, each remembering the
// bytes it came from. Separators (white space, dashes, the minus sign,
// invisible format characters) join the units on both sides; any other
// character ends a stretch, so that a code never matches across
// punctuation such as "12.34".

// unit is one normalised letter or digit of a text.
type unit struct {
	r          rune
	start, end int  // bytes of text it comes from
	joined     bool // only separators (or nothing) between it and the previous unit
	tokStart   bool // the character before it is not a letter or digit
	tokEnd     bool // the character after it is not a letter or digit
}

func isAlnum(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) }

func isSeparator(r rune) bool {
	return unicode.IsSpace(r) || unicode.Is(unicode.Pd, r) || r == '\u2212' || unicode.Is(unicode.Cf, r)
}

// fold is r case-folded and NFKC-normalised: its letters and digits.
func fold(r rune, buf []rune) []rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return append(buf, r)
	}
	for _, n := range norm.NFKC.String(string(r)) {
		if isAlnum(n) {
			buf = append(buf, unicode.ToLower(n))
		}
	}
	return buf
}

// units splits text into its normalised letters and digits. Invalid UTF-8
// bytes end a stretch.
func units(text string) []unit {
	var out []unit
	var buf []rune
	joined, prevAlnum := false, false
	for i, r := range text {
		size := utf8.RuneLen(r)
		if r == utf8.RuneError {
			_, size = utf8.DecodeRuneInString(text[i:])
		}
		switch {
		case r != utf8.RuneError && isAlnum(r):
			buf = fold(r, buf[:0])
			for k, n := range buf {
				out = append(out, unit{r: n, start: i, end: i + size, joined: joined || k > 0, tokStart: k == 0 && !prevAlnum})
			}
			if len(out) > 0 && len(buf) > 0 {
				joined = true
			}
			prevAlnum = true
			continue
		case r != utf8.RuneError && isSeparator(r):
		default:
			joined = false
		}
		if prevAlnum && len(out) > 0 {
			out[len(out)-1].tokEnd = true
		}
		prevAlnum = false
	}
	if prevAlnum && len(out) > 0 {
		out[len(out)-1].tokEnd = true
	}
	return out
}

// normCode is code's letters and digits, normalised like text.
func normCode(code string) []rune {
	var c []rune
	for _, u := range units(code) {
		c = append(c, u.r)
	}
	return c
}

// matchAt reports whether code's units start at us[s], joined throughout.
func matchAt(us []unit, s int, code []rune) bool {
	if s+len(code) > len(us) {
		return false
	}
	for k, r := range code {
		if us[s+k].r != r || k > 0 && !us[s+k].joined {
			return false
		}
	}
	return true
}

// replaceSpans returns text with each span replaced by Redacted, spans
// that overlap or touch merged (so that no piece of an overlapping second
// occurrence is left between them). spans are in order of their start.
func replaceSpans(text string, spans [][2]int) string {
	if len(spans) == 0 {
		return text
	}
	var b strings.Builder
	last := 0
	for i := 0; i < len(spans); {
		start, end := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= end; i++ {
			end = max(end, spans[i][1])
		}
		b.WriteString(text[last:start])
		b.WriteString(Redacted)
		last = end
	}
	b.WriteString(text[last:])
	return b.String()
}

// Code returns text with every occurrence of code replaced by
// "[redacted]": as given, and in any other case, grouped by spaces or
// dashes, wherever it stands (inside a longer word too). A code without
// letters or digits is replaced only as given.
func Code(text, code string) string {
	return findCode(text, code, false)
}

// CodeToken is Code for identifiers: the code is replaced only where it
// stands as a token of its own (the characters around it are not letters
// or digits), so that a long message_id that merely contains a short
// code's digits stays whole.
func CodeToken(text, code string) string {
	return findCode(text, code, true)
}

func findCode(text, code string, token bool) string {
	if code == "" || text == "" {
		return text
	}
	spans := literal(text, code, token)
	if c := normCode(code); len(c) > 0 {
		us := units(text)
		for s := range us {
			if token && !us[s].tokStart {
				continue
			}
			if matchAt(us, s, c) && (!token || us[s+len(c)-1].tokEnd) {
				spans = append(spans, [2]int{us[s].start, us[s+len(c)-1].end})
			}
		}
	}
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	return replaceSpans(text, spans)
}

// literal finds code as given, overlapping occurrences included; with
// token, only where it is not part of a longer run of letters and digits.
func literal(s, code string, token bool) [][2]int {
	var spans [][2]int
	for from := 0; ; {
		i := strings.Index(s[from:], code)
		if i < 0 {
			return spans
		}
		i += from
		end := i + len(code)
		before, _ := utf8.DecodeLastRuneInString(s[:i])
		after, _ := utf8.DecodeRuneInString(s[end:])
		if !token || (i == 0 || !isAlnum(before)) && (end == len(s) || !isAlnum(after)) {
			spans = append(spans, [2]int{i, end})
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		from = i + size
	}
}

// Fingerprint parameters: a fragment of fpMaxBits bits at most, and at least
// fpMinAlias codes of the same length and kind share each fragment value, so
// that a fingerprint never tells which code it was made from.
const (
	fpVersion  = "1"
	fpMaxBits  = 12
	fpMinAlias = 4 // bits: 2^4 = 16 codes per fragment value at least
	fpMinBits  = 4
	fpSaltLen  = 8
)

// Fingerprint is a short salted fingerprint of code for text scrubbed
// where the code itself is no longer known (the delivery receipts that
// EngageLab posts after the worker deleted the code): ByFingerprint
// redacts the tokens of a text that match it. It holds the code's length,
// whether it is made only of digits, a random salt and a fragment of at
// most 12 bits of an HMAC-SHA256 of the normalised code under that salt:
// so many codes of the same length share a fragment (at least 16, 244 for
// six digits) that the fingerprint does not reveal the code. Empty when
// the code is too short for that (fewer than 3 digits, or than 2 letters
// and digits); ByFingerprint then redacts nothing.
func Fingerprint(code string) string {
	c := normCode(code)
	digits := !strings.ContainsFunc(string(c), unicode.IsLetter)
	bits := fpBits(len(c), digits)
	if bits == 0 {
		return ""
	}
	salt := make([]byte, fpSaltLen)
	_, _ = rand.Read(salt) // never fails (crypto/rand)
	kind := "a"
	if digits {
		kind = "d"
	}
	return fpVersion + ":" + strconv.Itoa(len(c)) + ":" + kind + ":" + strconv.Itoa(bits) + ":" +
		hex.EncodeToString(salt) + ":" + strconv.FormatUint(uint64(fragment(salt, c, bits)), 16)
}

// fpBits is the fragment length for a code of n units: at most
// fpMaxBits, and fpMinAlias bits fewer than the code space holds.
func fpBits(n int, digits bool) int {
	alphabet := 36.0
	if digits {
		alphabet = 10
	}
	bits := int(math.Floor(float64(n)*math.Log2(alphabet))) - fpMinAlias
	switch {
	case bits < fpMinBits:
		return 0
	case bits > fpMaxBits:
		return fpMaxBits
	}
	return bits
}

func fragment(salt []byte, c []rune, bits int) uint16 {
	m := hmac.New(sha256.New, salt)
	m.Write([]byte("otpq/code/v1\x00" + string(c)))
	sum := m.Sum(nil)
	return (uint16(sum[0])<<8 | uint16(sum[1])) >> (16 - bits)
}

// fingerprint is a parsed Fingerprint.
type fingerprint struct {
	n      int
	digits bool
	bits   int
	salt   []byte
	frag   uint16
}

func parseFingerprint(fp string) (fingerprint, bool) {
	p := strings.Split(fp, ":")
	if len(p) != 6 || p[0] != fpVersion || (p[2] != "a" && p[2] != "d") {
		return fingerprint{}, false
	}
	n, err1 := strconv.Atoi(p[1])
	bits, err2 := strconv.Atoi(p[3])
	salt, err3 := hex.DecodeString(p[4])
	frag, err4 := strconv.ParseUint(p[5], 16, 16)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || n < 1 || n > MaxCodeUnits || bits < 1 || bits > 16 {
		return fingerprint{}, false
	}
	return fingerprint{n: n, digits: p[2] == "d", bits: bits, salt: salt, frag: uint16(frag)}, true
}

// ByFingerprint returns text with "[redacted]" in place of every token
// that matches fp (a Fingerprint): a run of letters and digits, possibly
// grouped by spaces or dashes, that starts and ends on a token boundary,
// has the code's length (and only digits, for a code of digits) and whose
// fragment is fp's. Being a fragment, it also matches about one unrelated
// token of that length in 4096 (for a six-digit code): those are redacted
// too, which costs a word, never a code. An empty or unreadable fp
// redacts nothing.
func ByFingerprint(text, fp string) string {
	f, ok := parseFingerprint(fp)
	if !ok || text == "" {
		return text
	}
	us := units(text)
	var spans [][2]int
	c := make([]rune, 0, f.n)
	for s := range us {
		if !us[s].tokStart || s+f.n > len(us) {
			continue
		}
		c = c[:0]
		ok := true
		for k := 0; k < f.n && ok; k++ {
			u := us[s+k]
			ok = (k == 0 || u.joined) && (!f.digits || !unicode.IsLetter(u.r))
			c = append(c, u.r)
		}
		if ok && us[s+f.n-1].tokEnd && fragment(f.salt, c, f.bits) == f.frag {
			spans = append(spans, [2]int{us[s].start, us[s+f.n-1].end})
		}
	}
	return replaceSpans(text, spans)
}

// Cut returns text cut to at most limit bytes on a character boundary; when
// it cuts, it also drops the last MaxCodeUnits letters and digits before
// the cut together with the separators between them (never crossing other
// characters), so that no beginning of a code that the cut split is left
// for a later scrub to miss. cut reports whether it cut.
func Cut(text string, limit int) (out string, cut bool) {
	if len(text) <= limit {
		return text, false
	}
	i := limit
	for i > 0 && !utf8.RuneStart(text[i]) {
		i--
	}
	text = text[:i]
	n := 0
	for len(text) > 0 && n < MaxCodeUnits {
		r, size := utf8.DecodeLastRuneInString(text)
		switch {
		case r != utf8.RuneError && isAlnum(r):
			n++
		case r != utf8.RuneError && isSeparator(r):
		default:
			return text, true
		}
		text = text[:len(text)-size]
	}
	return text, true
}

// DigitRuns replaces by '#' every digit of a run of 4 or more ASCII digits,
// counting groups of digits joined by one space or dash as one run
// ("123-456", "12 34 56"): a phone number, or a code, echoed by the
// provider in text that is stored.
func DigitRuns(s string) string {
	b := []byte(s)
	isDigit := func(i int) bool { return i < len(b) && '0' <= b[i] && b[i] <= '9' }
	for i := 0; i < len(b); {
		if !isDigit(i) {
			i++
			continue
		}
		j, n := i, 0
		for {
			for isDigit(j) {
				j, n = j+1, n+1
			}
			if j+1 < len(b) && (b[j] == ' ' || b[j] == '-') && isDigit(j+1) {
				j++
				continue
			}
			break
		}
		if n >= 4 {
			for k := i; k < j; k++ {
				if isDigit(k) {
					b[k] = '#'
				}
			}
		}
		i = j
	}
	return string(b)
}
