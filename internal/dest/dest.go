// Package dest checks a send's destination and gives its canonical form:
// the one string under which every spelling of the same phone number or
// e-mail address is counted (by the per-destination guard) and
// deduplicated (by bulk sends).
//
// Accepted forms, and their canonical form:
//   - a phone number in E.164: "+", a non-zero digit, then 7 to 14 ASCII
//     digits, nothing else (no spaces, dashes or brackets). It is its own
//     canonical form: there is one way to write it.
//   - an e-mail address (addr-spec only, no display name, at most 254
//     bytes, a dot in the domain). Canonical form: NFC-normalised, then
//     Unicode case-folded, whole (local part included: the providers and
//     mailboxes an OTP goes to treat it without case, and a guard must
//     rather count two spellings as one than let one through twice).
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
		return to, nil
	case strings.Contains(to, "@"):
		addr, err := mail.ParseAddress(to)
		if err != nil || addr.Address != to || addr.Name != "" || len(to) > MaxEmailLen {
			return "", errors.New("not a valid e-mail address")
		}
		if domain := to[strings.LastIndexByte(to, '@')+1:]; !strings.Contains(domain, ".") {
			return "", fmt.Errorf("e-mail domain %q has no dot", domain)
		}
		return cases.Fold().String(norm.NFC.String(to)), nil
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
