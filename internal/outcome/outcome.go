// Package outcome names how a delivery attempt ended and why a task was
// dead-lettered: one set of values shared by the worker's log lines, its
// metrics labels and the archive reasons operators read.
package outcome

import "log/slog"

// Outcome is how one delivery attempt ended: the "outcome" of the worker's
// log line and of the otpq_sends_total metric.
type Outcome string

// The outcomes of an attempt.
const (
	// Delivered: the provider accepted the code and returned its message_id.
	Delivered Outcome = "delivered"
	// AcceptedUnconfirmed: the provider answered 2xx but its body was
	// unreadable or had no message_id. The code is taken to be sent and the
	// task completes (it is never re-sent); there is no message_id to show.
	AcceptedUnconfirmed Outcome = "accepted_unconfirmed"
	// Retry: the attempt failed and the task will run again (counted
	// against MaxRetry).
	Retry Outcome = "retry"
	// Throttle: the provider (HTTP 429) or the global rate limit asked to
	// wait; the task runs again without using a retry.
	Throttle Outcome = "throttle"
	// DeadLetter: the task was archived for a Reason.
	DeadLetter Outcome = "dead_letter"
	// Expired: the task was archived because its code expired before it
	// could be delivered.
	Expired Outcome = "expired"
	// DeliveredLikely: archived on a 3004 that follows an attempt whose
	// outcome was unknown: the code most likely arrived (logs only; its
	// metric outcome is DeadLetter).
	DeliveredLikely Outcome = "delivered_likely"
)

// String returns the wire form of o.
func (o Outcome) String() string { return string(o) }

// LogValue logs o as a plain string.
func (o Outcome) LogValue() slog.Value { return slog.StringValue(string(o)) }

// Reason is why a task was dead-lettered. Its text starts the archive
// reason operators read (asynq's last error); Label is its metric label.
type Reason string

// The dead-letter reasons.
const (
	// BadPayload: the payload cannot be decoded or opened; never sent.
	BadPayload Reason = "bad payload"
	// CodeExpired: the code expired before it could be delivered.
	CodeExpired Reason = "expired"
	// Exhausted: the last retry failed.
	Exhausted Reason = "retries exhausted"
	// ProviderRejected: the provider answered a code retrying cannot fix.
	ProviderRejected Reason = "provider rejected"
	// LikelyDelivered: a 3004 after an attempt whose outcome was unknown.
	LikelyDelivered Reason = "likely delivered by an earlier attempt"
	// Configuration: otpq is set up wrong (the provider answered a
	// redirect): retrying cannot help until an operator fixes it.
	Configuration Reason = "configuration problem"
	// NoCode: the task's code key is gone before the code's expiry: an
	// earlier attempt delivered it (and its worker died before asynq
	// recorded that) or someone deleted it. Never sent.
	NoCode Reason = "no code"
)

// Reasons lists every Reason, for pre-creating metric series.
func Reasons() []Reason {
	return []Reason{BadPayload, CodeExpired, Exhausted, ProviderRejected, LikelyDelivered, Configuration, NoCode}
}

// String returns the archive text prefix of r.
func (r Reason) String() string { return string(r) }

// LogValue logs r as a plain string.
func (r Reason) LogValue() slog.Value { return slog.StringValue(string(r)) }

// Label is r's value of the otpq_dead_letters_total "reason" label:
// bad_payload, expired, retries_exhausted, provider_rejected (a likely
// delivery included: the provider refused the attempt), configuration,
// no_code, or other.
func (r Reason) Label() string {
	switch r {
	case BadPayload:
		return "bad_payload"
	case CodeExpired:
		return "expired"
	case Exhausted:
		return "retries_exhausted"
	case ProviderRejected, LikelyDelivered:
		return "provider_rejected"
	case Configuration:
		return "configuration"
	case NoCode:
		return "no_code"
	}
	return "other"
}
