// Package redact masks personal data before it reaches logs, errors or the
// web UI. OTP codes are never masked: they are never shown at all.
package redact

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Destination masks a phone number or e-mail address so that an operator can
// still tell two destinations apart without learning either. The result is
// always valid UTF-8 and holds no control or invisible formatting
// characters, whatever the input.
//
// Phone numbers (and any other text without '@'): of the n characters after
// a leading '+', only ⌊n/2⌋ are shown, the first ⌈⌊n/2⌋/2⌉ and the last
// ⌊⌊n/2⌋/2⌋; the rest is starred. So at least half of all the digits is
// hidden, hence more than half of the national number, whatever the length
// of the country code: "+15550000010" → "+155******10",
// "+8618701235678" → "+861*******678".
//
// E-mail addresses keep the first character of the local part (when it is
// a letter or digit) and the domain: "support@example.com" →
// "s***@example.com".
func Destination(to string) string {
	if at := strings.LastIndexByte(to, '@'); at >= 0 {
		local, domain := to[:at], clean(to[at+1:])
		first, _ := utf8.DecodeRuneInString(local)
		if local == "" || !(unicode.IsLetter(first) || unicode.IsDigit(first)) {
			return "***@" + domain
		}
		return string(first) + "***@" + domain
	}
	plus := ""
	rest := to
	if strings.HasPrefix(to, "+") {
		plus, rest = "+", to[1:]
	}
	runes := []rune(rest) // invalid bytes count as one character each
	n := len(runes)
	shown := n / 2
	head, tail := (shown+1)/2, shown/2
	var b strings.Builder
	b.WriteString(plus)
	for i, r := range runes {
		if i >= head && i < n-tail || !(unicode.IsLetter(r) || unicode.IsDigit(r)) {
			r = '*'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// clean makes s safe to print: invalid UTF-8 becomes U+FFFD, control and
// invisible formatting characters become '?'.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}
