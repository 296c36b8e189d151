// Package dest checks a send's destination and gives its canonical form:
// the one string under which every spelling of the same phone number or
// e-mail address, every address that reaches the same handset or mailbox,
// is counted (by the per-destination guard) and deduplicated (by bulk
// sends). The destination sent stays the one given.
//
// Accepted forms, and their canonical form:
//   - a phone number in E.164: "+", a non-zero digit, then 7 to 14 ASCII
//     digits, nothing else (no spaces, dashes or brackets). Canonical form:
//     the number without a national trunk prefix "0" written right after
//     the country code ("+86013800138000" and "+8613800138000" are one
//     handset; carriers drop the 0), except for the country codes whose
//     numbers keep their leading 0 in international form (Italy +39, San
//     Marino +378, Vatican +379, Côte d'Ivoire +225, Benin +229, Gabon +241,
//     Congo +242).
//   - an e-mail address (addr-spec only, no display name, at most 254
//     bytes, a dot in the domain, the domain a valid internationalised
//     domain name). Canonical form, local part and domain each:
//     NFC-normalised, then Unicode case-folded (the providers and
//     mailboxes an OTP goes to treat addresses without case, and a guard
//     must rather count two spellings as one than let one through twice);
//     the local part without its plus-tag ("victim+1" is "victim"), and for
//     gmail.com and googlemail.com (one mailbox service: googlemail.com is
//     written gmail.com) without dots ("v.ictim" is "victim"); the domain in
//     its ASCII (punycode) form, Unicode and punycode spellings alike
//     ("bücher.example" is "xn--bcher-kva.example").
//
// Refused anywhere in a destination: invalid UTF-8, control characters
// (C0, DEL, C1) and invisible format characters (Unicode category Cf:
// zero-width space and joiners U+200B–U+200D, marks U+200E/U+200F,
// bidi embeddings and overrides U+202A–U+202E, isolates U+2066–U+2069,
// word joiner U+2060, byte-order mark U+FEFF, soft hyphen…).
package dest

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// MaxEmailLen is the longest e-mail address accepted, in bytes.
const MaxEmailLen = 254

// isE164 reports whether to is + then 8 to 15 digits, the first not 0
// (what the regular expression ^\+[1-9][0-9]{7,14}$ says, at a tenth of
// its cost: every bulk row goes through it).
func isE164(to string) bool {
	if len(to) < 9 || len(to) > 16 || to[0] != '+' || to[1] == '0' {
		return false
	}
	for i := 1; i < len(to); i++ {
		if to[i] < '0' || to[i] > '9' {
			return false
		}
	}
	return true
}

// Canonical checks to and returns its canonical form (see the package
// documentation). The error's text says what is wrong without repeating
// to's invisible characters.
func Canonical(to string) (string, error) {
	if to == "" {
		return "", errors.New("required")
	}
	if err := CheckText(to); err != nil {
		return "", err
	}
	switch {
	case strings.HasPrefix(to, "+"):
		if !isE164(to) {
			return "", errors.New("phone number must be E.164: + then 8 to 15 digits, no spaces")
		}
		return phoneKey(to), nil
	case strings.Contains(to, "@"):
		addr, err := mail.ParseAddress(to)
		if err != nil || addr.Address != to || addr.Name != "" || len(to) > MaxEmailLen {
			return "", errors.New("not a valid e-mail address")
		}
		at := strings.LastIndexByte(to, '@')
		domain, err := domainKey(to[at+1:])
		if err != nil {
			return "", err
		}
		return localKey(to[:at], domain) + "@" + domain, nil
	default:
		return "", errors.New("must be an E.164 phone number (+8613800138000) or an e-mail address")
	}
}

// CheckText refuses invalid UTF-8, control characters and invisible
// format characters (Unicode Cc and Cf) in s, saying which and where.
func CheckText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for i, r := range s {
		switch {
		case unicode.Is(unicode.Cc, r):
			return fmt.Errorf("control character %U at byte %d", r, i)
		case unicode.Is(unicode.Cf, r):
			return fmt.Errorf("invisible formatting character %U at byte %d", r, i)
		}
	}
	return nil
}

// Key is the canonical form of to for counting, or to itself when it is
// not a valid destination (callers count only validated destinations;
// this never fails so that a key can always be built).
func Key(to string) string {
	if c, err := Canonical(to); err == nil {
		return c
	}
	return to
}

// fold is s NFC-normalised and Unicode case-folded.
func fold(s string) string { return cases.Fold().String(norm.NFC.String(s)) }

// domainKey is an e-mail domain's canonical form: its Unicode form
// case-folded, then in ASCII (punycode), so that "BÜCHER.example",
// "bücher.example" and "xn--bcher-kva.example" are one domain.
func domainKey(domain string) (string, error) {
	if !strings.Contains(domain, ".") {
		return "", fmt.Errorf("e-mail domain %q has no dot", domain)
	}
	u, err := idna.Lookup.ToUnicode(domain)
	var key string
	if err == nil {
		key, err = idna.Lookup.ToASCII(fold(u))
	}
	if err != nil {
		return "", fmt.Errorf("e-mail domain %q is not a valid domain name", domain)
	}
	if key == "googlemail.com" {
		key = "gmail.com"
	}
	return key, nil
}

// localKey is an e-mail local part's canonical form at domain (canonical):
// case-folded, without its plus-tag, and without dots at gmail.com.
func localKey(local, domain string) string {
	local = fold(local)
	if i := strings.IndexByte(local, '+'); i > 0 {
		local = local[:i]
	}
	if domain == "gmail.com" {
		if l := strings.ReplaceAll(local, ".", ""); l != "" {
			local = l
		}
	}
	return local
}

// phoneKey is an E.164 number's canonical form: without a trunk "0" right
// after its country code, unless that country keeps the 0 (see the package
// documentation).
func phoneKey(to string) string {
	n := countryCodeLen(to[1:])
	if to[1+n] != '0' || keepsZero[to[1:1+n]] {
		return to
	}
	return to[:1+n] + to[2+n:]
}

// countryCodeLen is the length of the country code that digits start
// with. Country codes are prefix-free (ITU-T E.164): 1 and 7 are the
// only one-digit codes, twoDigitCodes the two-digit ones, every other
// code has three digits.
func countryCodeLen(digits string) int {
	switch {
	case digits[0] == '1' || digits[0] == '7':
		return 1
	case twoDigitCodes[digits[:2]]:
		return 2
	}
	return 3
}

var twoDigitCodes = map[string]bool{
	"20": true, "27": true,
	"30": true, "31": true, "32": true, "33": true, "34": true, "36": true, "39": true,
	"40": true, "41": true, "43": true, "44": true, "45": true, "46": true, "47": true, "48": true, "49": true,
	"51": true, "52": true, "53": true, "54": true, "55": true, "56": true, "57": true, "58": true,
	"60": true, "61": true, "62": true, "63": true, "64": true, "65": true, "66": true,
	"81": true, "82": true, "84": true, "86": true,
	"90": true, "91": true, "92": true, "93": true, "94": true, "95": true, "98": true,
}

// keepsZero are the country codes whose national numbers begin with a 0
// that stays in the international form: a 0 after them is part of the
// number, not a trunk prefix.
var keepsZero = map[string]bool{"39": true, "378": true, "379": true, "225": true, "229": true, "241": true, "242": true}
