// Package redact masks personal data before it reaches logs, errors or the
// web UI. OTP codes are never masked: they are never shown at all.
package redact

import "strings"

// Destination masks a phone number or e-mail address so that an operator can
// still tell two destinations apart without learning either:
// "+8618701235678" → "+86187****5678", "support@example.com" → "s***@example.com".
// Anything shorter than a real destination is masked whole.
func Destination(to string) string {
	if at := strings.LastIndexByte(to, '@'); at >= 0 {
		local, domain := to[:at], to[at+1:]
		if local == "" {
			return "***@" + domain
		}
		return local[:1] + "***@" + domain
	}
	n := len(to)
	if n < 8 {
		return strings.Repeat("*", n)
	}
	keepHead, keepTail := 6, 4
	if n < 12 {
		keepHead, keepTail = 3, 2
	}
	return to[:keepHead] + strings.Repeat("*", n-keepHead-keepTail) + to[n-keepTail:]
}
