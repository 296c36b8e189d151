package producer

import (
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/otpq/otpq/internal/task"
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

var (
	e164     = regexp.MustCompile(`^\+[1-9][0-9]{7,14}$`)
	dedupKey = regexp.MustCompile(`^[A-Za-z0-9._:/@+=-]+$`)
)

// Validate checks a request as Send does.
func (r Request) Validate() error {
	if err := validateTo(r.To); err != nil {
		return err
	}
	switch {
	case r.Code == "":
		return invalid("code", "required")
	case len(r.Code) > MaxCodeLen:
		return invalid("code", "longer than %d bytes", MaxCodeLen)
	case strings.ContainsFunc(r.Code, func(c rune) bool { return unicode.IsSpace(c) || !unicode.IsPrint(c) }):
		return invalid("code", "contains white space or control characters")
	}
	switch {
	case r.TemplateID == "":
		return invalid("template", "required")
	case len(r.TemplateID) > MaxTemplateIDLen:
		return invalid("template", "longer than %d bytes", MaxTemplateIDLen)
	}
	if r.Language != "" && !slices.Contains(task.Languages, r.Language) {
		return invalid("language", "%q is not one of %s", r.Language, strings.Join(task.Languages, ", "))
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
		}
		total += len(k) + len(v)
	}
	if total > MaxParamsBytes {
		return invalid("params", "%d bytes in all, at most %d", total, MaxParamsBytes)
	}
	return nil
}

func validateTo(to string) error {
	switch {
	case to == "":
		return invalid("to", "required")
	case strings.HasPrefix(to, "+"):
		if !e164.MatchString(to) {
			return invalid("to", "phone number must be E.164: + then 8 to 15 digits, no spaces")
		}
		return nil
	case strings.Contains(to, "@"):
		addr, err := mail.ParseAddress(to)
		if err != nil || addr.Address != to || addr.Name != "" || len(to) > 254 {
			return invalid("to", "not a valid e-mail address")
		}
		if domain := to[strings.LastIndexByte(to, '@')+1:]; !strings.Contains(domain, ".") {
			return invalid("to", "e-mail domain %q has no dot", domain)
		}
		return nil
	default:
		return invalid("to", "must be an E.164 phone number (+8613800138000) or an e-mail address")
	}
}

func validateDedupKey(key string) error {
	switch {
	case len(key) > MaxDedupKeyLen:
		return invalid("id", "longer than %d bytes", MaxDedupKeyLen)
	case !dedupKey.MatchString(key):
		return invalid("id", "may hold only letters, digits and . _ : / @ + = -")
	}
	return nil
}
