package engagelab

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/otpq/otpq/internal/redact"
)

// Caps on provider text kept by otpq, in bytes after escaping.
const (
	// MaxIDText caps message_id, send_channel and a redirect's host.
	MaxIDText = 128
	// MaxMessageText caps an error message.
	MaxMessageText = 512
)

// providerText makes text that came from the provider (or from the network)
// safe to store, log and print: the code and the full destination are
// redacted first, so that a cut can never leave part of them behind; then
// Printable escapes and caps it.
func providerText(s string, req Request, limit int) string {
	return Printable(scrub(s, req), limit)
}

// Printable escapes control, format (bidi, zero-width) characters and
// invalid UTF-8 bytes Go-style (\x1b, \n, \u202e, \xff), so that nothing
// reaches a terminal raw, then cuts the result at limit bytes on a character
// boundary, never inside an escape, marked with "…". Text already escaped
// passes unchanged. It redacts nothing: redact before calling it.
func Printable(s string, limit int) string {
	const mark = "…"
	var b strings.Builder
	fit := 0 // length of b at the last piece boundary that leaves room for mark
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		piece := s[i : i+size]
		switch {
		case r == utf8.RuneError && size == 1:
			piece = `\x` + strconv.FormatUint(uint64(s[i])|0x100, 16)[1:]
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			q := strconv.QuoteRuneToASCII(r)
			piece = q[1 : len(q)-1]
		}
		if b.Len()+len(piece) > limit {
			return b.String()[:fit] + mark
		}
		b.WriteString(piece)
		if b.Len()+len(mark) <= limit {
			fit = b.Len()
		}
		i += size
	}
	return b.String()
}

// idText makes a provider-assigned identifier (message_id, send_channel)
// safe like providerText, but redacts the code only where it stands as a
// token of its own (bounded by the ends or by characters that are not
// letters or digits): a 19-digit message_id that happens to contain a
// 4-digit code's digits is not an echo of the code, and cutting it would
// break the receipt link that matches callbacks by message_id.
func idText(s string, req Request) string {
	s = redact.CodeToken(s, req.Code)
	if req.To != "" {
		s = strings.ReplaceAll(s, req.To, redact.Destination(req.To))
	}
	return Printable(s, MaxIDText)
}

// scrub removes the code, in any form it can take (redact.Code: any case,
// grouped by spaces or dashes), and the full destination from text that
// may echo the request (a provider message, a transport error).
// Credentials never appear: they travel in a header, not in the URL.
func scrub(text string, req Request) string {
	text = redact.Code(text, req.Code)
	if req.To != "" {
		text = strings.ReplaceAll(text, req.To, redact.Destination(req.To))
	}
	return text
}
