package fakeengagelab

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/otpq/otpq/internal/engagelab"
)

// Rule scripts failures (or slowness) for a destination.
//
// Matching: a rule applies to a request whose "to" equals To exactly, or to
// every request when To is "*". Among the rules that apply, the first one
// with an exact To wins; only if none has an exact To does the first "*"
// rule win. A rule whose Times budget is used up no longer applies, so the
// request falls through to the next applicable rule, or to normal
// processing. Rules are checked after request validation, so a request
// rejected for a missing field never consumes a rule's budget.
//
// Outcome of a matching rule, in this order:
//   - Latency is waited first (the request is abandoned if its context ends).
//   - Hang: the request is never answered; the handler returns once the
//     request context is done.
//   - A failure status (see below) answers an error.
//   - Otherwise (no failure status) processing continues normally, so a rule
//     with only Latency scripts a slow but successful provider.
//
// The failure status is Status when it is 400 or more. When Status is 0 and
// Code is not, the HTTP status is the one the spec's error table
// (engagelab.Codes) gives for Code (400 for codes not in the table). Status 1–399, or Status and Code both
// 0, inject no failure.
type Rule struct {
	// To is the exact destination, or "*" for all destinations.
	To string
	// Status is the HTTP status to answer (e.g. 400, 500, 502, 429).
	Status int
	// Code is the EngageLab error code put in the JSON body. Code 0 with
	// Status 502 answers a non-JSON HTML page, like a failing proxy; Code 0
	// with Status 429 answers {"code":0,...} with a Retry-After header.
	Code int
	// Message is the error message; empty means DefaultMessage(Code), or the
	// HTTP status text when Code has no description.
	Message string
	// Times limits the rule to the first Times matching requests; 0 means
	// the rule applies forever.
	Times int
	// Latency is extra latency for matching requests, added to
	// Config.Latency.
	Latency time.Duration
	// Hang makes matching requests never get an answer: the handler blocks
	// until the request context is done (simulates a hung provider).
	Hang bool
	// RetryAfter is the Retry-After header value in seconds sent with a 429
	// answer; 0 means 1.
	RetryAfter int
}

// failureStatus is the HTTP status r injects, or 0 when it injects none.
func (r Rule) failureStatus() int {
	switch {
	case r.Status >= 400:
		return r.Status
	case r.Status == 0 && r.Code != 0:
		if info, ok := engagelab.Code(r.Code).Info(); ok {
			return info.HTTPStatus
		}
		return http.StatusBadRequest
	default:
		return 0
	}
}

// validate reports the first problem with r, for rules given through
// ParseRule or the control API (SetRules is lenient and never fails).
func (r Rule) validate() error {
	switch {
	case strings.TrimSpace(r.To) == "":
		return errors.New("destination (to) is empty")
	case r.Status != 0 && (r.Status < 400 || r.Status > 599):
		return fmt.Errorf("status %d must be 4xx or 5xx (or 0)", r.Status)
	case r.Code < 0:
		return fmt.Errorf("code %d is negative", r.Code)
	case r.Times < 0:
		return fmt.Errorf("times %d is negative (0 means always)", r.Times)
	case r.Latency < 0:
		return fmt.Errorf("latency %s is negative", r.Latency)
	case r.RetryAfter < 0:
		return fmt.Errorf("retry_after %d is negative", r.RetryAfter)
	}
	return nil
}

// ParseRule parses the command-line form of a Rule:
//
//	TO=STATUS:CODE[:TIMES]        e.g. "+8613800000001=400:5013", "*=500:1000:2"
//	TO=429:CODE:TIMES:RETRY_AFTER e.g. "+1666=429:0:1:5" (Retry-After: 5)
//	TO=hang[:TIMES]               e.g. "+1555=hang"
//	TO=delay:DURATION[:TIMES]     e.g. "*=delay:300ms" (slow but successful)
//
// TO is an exact destination or "*". STATUS must be 4xx or 5xx, CODE and
// TIMES non-negative integers (TIMES 0 or absent means always). The text is
// split at its last "=", so TO may itself contain "=". Errors name the part
// that is wrong.
func ParseRule(s string) (Rule, error) {
	r, err := parseRule(s)
	if err != nil {
		return Rule{}, fmt.Errorf("fakeengagelab: rule %q: %v", s, err)
	}
	return r, nil
}

// parseRule is ParseRule without the error's prefix.
func parseRule(s string) (Rule, error) {
	to, parts, err := splitRule(s)
	if err != nil {
		return Rule{}, err
	}
	r := Rule{To: to}
	switch strings.ToLower(parts[0]) {
	case "hang":
		err = r.parseHang(parts[1:])
	case "delay":
		err = r.parseDelay(parts[1:])
	default:
		err = r.parseFailure(parts)
	}
	return r, err
}

// splitRule splits TO=SPEC at its last "=" and SPEC at ":", trimmed.
func splitRule(s string) (to string, parts []string, err error) {
	eq := strings.LastIndex(s, "=")
	if eq < 0 {
		return "", nil, errors.New(`missing "=" (want TO=STATUS:CODE[:TIMES], TO=hang[:TIMES] or TO=delay:DURATION[:TIMES])`)
	}
	to = strings.TrimSpace(s[:eq])
	if to == "" {
		return "", nil, errors.New(`empty destination before "=" (use "*" for all destinations)`)
	}
	spec := strings.TrimSpace(s[eq+1:])
	if spec == "" {
		return "", nil, errors.New(`empty spec after "=" (want STATUS:CODE[:TIMES], hang[:TIMES] or delay:DURATION[:TIMES])`)
	}
	parts = strings.Split(spec, ":")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return to, parts, nil
}

// parseHang reads what follows "hang": [TIMES].
func (r *Rule) parseHang(args []string) (err error) {
	if len(args) > 1 {
		return errors.New("too many fields after hang (want hang[:TIMES])")
	}
	r.Hang = true
	if len(args) == 1 {
		r.Times, err = parseTimes(args[0])
	}
	return err
}

// parseDelay reads what follows "delay": DURATION[:TIMES].
func (r *Rule) parseDelay(args []string) (err error) {
	if len(args) < 1 || args[0] == "" {
		return errors.New("delay needs a duration (want delay:DURATION[:TIMES], e.g. delay:300ms)")
	}
	if len(args) > 2 {
		return errors.New("too many fields after delay (want delay:DURATION[:TIMES])")
	}
	d, err := time.ParseDuration(args[0])
	if err != nil || d < 0 {
		return fmt.Errorf("delay duration %q is not a non-negative Go duration such as 300ms", args[0])
	}
	r.Latency = d
	if len(args) == 2 {
		r.Times, err = parseTimes(args[1])
	}
	return err
}

// parseFailure reads STATUS:CODE[:TIMES[:RETRY_AFTER]].
func (r *Rule) parseFailure(parts []string) (err error) {
	status, err := strconv.Atoi(parts[0])
	if err != nil {
		return fmt.Errorf("status %q is not a number (or the word hang or delay)", parts[0])
	}
	if status < 400 || status > 599 {
		return fmt.Errorf("status %d must be 4xx or 5xx", status)
	}
	r.Status = status
	if len(parts) < 2 || parts[1] == "" {
		return fmt.Errorf("missing code after status %d (want STATUS:CODE[:TIMES]; use code 0 for none)", status)
	}
	code, err := strconv.Atoi(parts[1])
	if err != nil || code < 0 {
		return fmt.Errorf("code %q is not a non-negative integer", parts[1])
	}
	r.Code = code
	if len(parts) >= 3 {
		if r.Times, err = parseTimes(parts[2]); err != nil {
			return err
		}
	}
	if len(parts) == 4 {
		if r.RetryAfter, err = parseRetryAfter(status, parts[3]); err != nil {
			return err
		}
	}
	if len(parts) > 4 {
		return errors.New("too many fields (want STATUS:CODE[:TIMES], or 429:CODE:TIMES:RETRY_AFTER)")
	}
	return nil
}

// parseTimes reads a rule's TIMES.
func parseTimes(p string) (int, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("times %q is not a non-negative integer", p)
	}
	return n, nil
}

// parseRetryAfter reads the fourth field of a failure rule, allowed with
// status 429 only.
func parseRetryAfter(status int, p string) (int, error) {
	if status != http.StatusTooManyRequests {
		return 0, errors.New("a fourth field (retry-after seconds) is only allowed with status 429")
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("retry-after %q is not a non-negative number of seconds", p)
	}
	return n, nil
}

// DefaultMessage returns the spec's description of an EngageLab error code
// (every code in the spec's Error Codes table), or "" for any other code,
// including 0.
func DefaultMessage(code int) string {
	info, _ := engagelab.Code(code).Info()
	return info.Meaning
}
