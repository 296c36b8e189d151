// Package outcome names how a delivery attempt ended, why a task was
// dead-lettered, and the verdict every view shows for a task: one set of
// values shared by the worker's log lines, its metrics labels, the archive
// reasons operators read, otpq status, producer.Status and the web UI.
//
// Words: the worker only knows whether EngageLab accepted a code (an HTTP
// 2xx): that is Accepted. Whether the code reached the handset —
// delivered, failed, pending — comes only from EngageLab's delivery
// receipts (see Verdict).
package outcome

import "log/slog"

// Outcome is how one delivery attempt ended: the "outcome" of the worker's
// log line and of the otpq_sends_total metric.
type Outcome string

// The outcomes of an attempt.
const (
	// Accepted: the provider accepted the code (HTTP 2xx) and returned its
	// message_id. Whether it reached the handset is the receipt's verdict.
	// Results of builds before this word read "delivered": see Parse.
	Accepted Outcome = "accepted"
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
	// AcceptedLikely: archived on a 3004 that follows an attempt whose
	// outcome was unknown: the provider most likely accepted the code on
	// that attempt (logs only; its metric outcome is DeadLetter).
	AcceptedLikely Outcome = "accepted_likely"
	// AlreadyAccepted: the attempt found the task's code key gone and its
	// stored result showing that an earlier attempt's send was accepted
	// (that attempt's completion was lost: its worker died after recording
	// the acceptance, or asynq could not mark the task complete). The task
	// completes without a provider call; the acceptance itself was the
	// earlier attempt's.
	AlreadyAccepted Outcome = "already_accepted"
)

// legacyDelivered is what builds before Accepted wrote for a 2xx.
const legacyDelivered = "delivered"

// Parse reads a stored result's outcome: "delivered", written by builds
// that predate Accepted, and "" (builds that predate outcomes) both mean
// Accepted.
func Parse(s string) Outcome {
	switch s {
	case "", legacyDelivered:
		return Accepted
	}
	return Outcome(s)
}

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
	// LikelyAccepted: a 3004 after an attempt whose outcome was unknown.
	LikelyAccepted Reason = "likely accepted by an earlier attempt"
	// Configuration: otpq is set up wrong (the provider answered a
	// redirect): retrying cannot help until an operator fixes it.
	Configuration Reason = "configuration problem"
	// NoCode: the task's code key is gone before the code's expiry and no
	// earlier attempt's acceptance is recorded (an acceptance completes the
	// task as AlreadyAccepted instead): the key expired on Redis's clock
	// before the worker's clock passed the code's expiry, or someone deleted
	// it. Never sent.
	NoCode Reason = "no code"
)

// Reasons lists every Reason, for pre-creating metric series.
func Reasons() []Reason {
	return []Reason{BadPayload, CodeExpired, Exhausted, ProviderRejected, LikelyAccepted, Configuration, NoCode}
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
	case ProviderRejected, LikelyAccepted:
		return "provider_rejected"
	case Configuration:
		return "configuration"
	case NoCode:
		return "no_code"
	}
	return "other"
}
