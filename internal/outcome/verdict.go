package outcome

import (
	"log/slog"
	"strings"
)

// Verdict is what happened to a task, in the one set of words that otpq
// status, producer.Status, the web UI, otpq dev, logs and metric labels
// share. A delivery receipt's verdict (Delivered, Failed, Pending) comes
// first when there is one: only a receipt says whether the code reached
// the handset. Without one the task's own state speaks (Accepted,
// AcceptedUnconfirmed, DeadLetter, Retrying, Sending, Queued).
type Verdict string

// The verdicts, receipt verdicts first.
const (
	// Delivered: EngageLab's receipt says the code reached the handset
	// (delivered, or a later stage: read, verified).
	Delivered Verdict = "delivered"
	// Failed: EngageLab's receipt says the delivery failed for good
	// (delivered_failed, sent_failed, target_invalid), on the last channel
	// it tried.
	Failed Verdict = "failed"
	// Pending: EngageLab accepted the code and reported progress (plan,
	// sent, …) but no final state yet.
	Pending Verdict = "pending"
	// VerdictAccepted: the provider accepted the code; no receipt (callbacks
	// not configured, or none arrived yet).
	VerdictAccepted Verdict = Verdict(Accepted)
	// VerdictAcceptedUnconfirmed: the provider answered 2xx without a
	// readable message_id, so no receipt can ever be matched.
	VerdictAcceptedUnconfirmed Verdict = Verdict(AcceptedUnconfirmed)
	// VerdictDeadLetter: archived, never to be sent again; the archive
	// reason says why (a provider code such as 5013, expiry, …).
	VerdictDeadLetter Verdict = Verdict(DeadLetter)
	// Retrying: an attempt failed; another is scheduled.
	Retrying Verdict = "retrying"
	// Sending: an attempt is running now.
	Sending Verdict = "sending"
	// Queued: waiting for a worker (or for its scheduled time).
	Queued Verdict = "queued"
)

// verdicts is the one table of verdicts: each with its meaning, in the
// order help texts list them.
var verdicts = []struct {
	v       Verdict
	meaning string
}{
	{Delivered, "the receipt says the code reached the handset"},
	{Failed, "the receipt says delivery failed (error code and message shown)"},
	{Pending, "accepted; the receipt has no final state yet"},
	{VerdictAccepted, "EngageLab accepted the code; no delivery receipt (yet)"},
	{VerdictAcceptedUnconfirmed, "EngageLab answered 2xx without a message_id; never re-sent, no receipt possible"},
	{VerdictDeadLetter, "not sent, or refused by EngageLab; never retried (reason shown)"},
	{Retrying, "an attempt failed; the next is scheduled"},
	{Sending, "an attempt is running"},
	{Queued, "waiting for a worker"},
}

// Verdicts lists every verdict in display order.
func Verdicts() []Verdict {
	out := make([]Verdict, len(verdicts))
	for i, e := range verdicts {
		out[i] = e.v
	}
	return out
}

// Meaning is one line explaining v ("" for an unknown verdict).
func (v Verdict) Meaning() string {
	for _, e := range verdicts {
		if e.v == v {
			return e.meaning
		}
	}
	return ""
}

// String returns the wire form of v (JSON, logs, labels).
func (v Verdict) String() string { return string(v) }

// Text is v for people: "dead letter", "accepted unconfirmed".
func (v Verdict) Text() string { return strings.ReplaceAll(string(v), "_", " ") }

// LogValue logs v as a plain string.
func (v Verdict) LogValue() slog.Value { return slog.StringValue(string(v)) }

// FromReceipt reports whether v is a receipt's verdict.
func (v Verdict) FromReceipt() bool { return v == Delivered || v == Failed || v == Pending }

// Of is a task's verdict: receipt (a receipt's verdict, "" when the task
// has none) first, else the task's asynq state (pending, scheduled,
// active, retry, archived, completed) and, for a completed task, its
// stored outcome (read with Parse: old results say "delivered").
func Of(receipt Verdict, taskState string, o Outcome) Verdict {
	if receipt != "" {
		return receipt
	}
	switch taskState {
	case "completed":
		if Parse(string(o)) == AcceptedUnconfirmed {
			return VerdictAcceptedUnconfirmed
		}
		return VerdictAccepted
	case "archived":
		return VerdictDeadLetter
	case "retry":
		return Retrying
	case "active":
		return Sending
	}
	return Queued
}
