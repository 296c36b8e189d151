package producer

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/otpq/otpq/internal/dest"
	"github.com/otpq/otpq/internal/engagelab"
)

// Limits on a Request, checked before anything is enqueued.
const (
	MaxCodeLen       = 32
	MaxTemplateIDLen = 128
	MaxParams        = 32
	MaxParamKeyLen   = 64
	MaxParamValueLen = 512
	MaxParamsBytes   = 4096
	MaxDedupKeyLen   = 128
)

// ErrInvalid is wrapped by every *ValidationError.
var ErrInvalid = errors.New("invalid request")

// ValidationError names the field of a Request that is wrong and why. Its
// text never contains the code.
type ValidationError struct {
	Field  string
	Reason string
}

// Error reads "invalid FIELD: REASON".
func (e *ValidationError) Error() string { return "invalid " + e.Field + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// isDedupKey reports whether key is made only of letters, digits and
// . _ : / @ + = - (and is not empty).
func isDedupKey(key string) bool {
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("._:/@+=-", c) >= 0:
		default:
			return false
		}
	}
	return key != ""
}

// Validate checks a request as Send does. Every field must be valid UTF-8
// (nothing is silently replaced on its way to the provider); to, template,
// language and param keys hold no control or invisible formatting
// characters; the code holds no white space or control characters.
func (r Request) Validate() error {
	if err := validateTo(r.To); err != nil {
		return err
	}
	switch {
	case r.Code == "":
		return invalid("code", "required")
	case len(r.Code) > MaxCodeLen:
		return invalid("code", "longer than %d bytes", MaxCodeLen)
	case !utf8.ValidString(r.Code):
		return invalid("code", "not valid UTF-8")
	case strings.ContainsFunc(r.Code, func(c rune) bool { return unicode.IsSpace(c) || !unicode.IsPrint(c) }):
		return invalid("code", "contains white space or control characters")
	}
	switch {
	case r.TemplateID == "":
		return invalid("template", "required")
	case len(r.TemplateID) > MaxTemplateIDLen:
		return invalid("template", "longer than %d bytes", MaxTemplateIDLen)
	}
	if err := dest.CheckText(r.TemplateID); err != nil {
		return invalid("template", "%v", err)
	}
	if r.Language != "" {
		if err := dest.CheckText(r.Language); err != nil {
			return invalid("language", "%v", err)
		}
		if !engagelab.Language(r.Language).Known() {
			return invalid("language", "%q is not one of %s", r.Language, engagelab.LanguageList())
		}
	}
	if len(r.Params) > MaxParams {
		return invalid("params", "%d entries, at most %d", len(r.Params), MaxParams)
	}
	total := 0
	for k, v := range r.Params {
		switch {
		case k == "":
			return invalid("params", "empty key")
		case len(k) > MaxParamKeyLen:
			return invalid("params", "key %.20q… longer than %d bytes", k, MaxParamKeyLen)
		case len(v) > MaxParamValueLen:
			return invalid("params", "value of %q longer than %d bytes", k, MaxParamValueLen)
		case !utf8.ValidString(v):
			return invalid("params", "value of %q is not valid UTF-8", k)
		}
		if err := dest.CheckText(k); err != nil {
			return invalid("params", "key %q: %v", k, err)
		}
		total += len(k) + len(v)
	}
	if total > MaxParamsBytes {
		return invalid("params", "%d bytes in all, at most %d", total, MaxParamsBytes)
	}
	return nil
}

// validateTo checks the destination through dest.Canonical, the form the
// guard counts.
func validateTo(to string) error {
	if _, err := dest.Canonical(to); err != nil {
		return invalid("to", "%v", err)
	}
	return nil
}

func validateDedupKey(key string) error {
	switch {
	case len(key) > MaxDedupKeyLen:
		return invalid("id", "longer than %d bytes", MaxDedupKeyLen)
	case !isDedupKey(key):
		return invalid("id", "may hold only letters, digits and . _ : / @ + = -")
	}
	return nil
}
