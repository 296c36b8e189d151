package worker

import (
	"errors"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/internal/tracing"
)

// deliverSpan are the start options of a delivery attempt's span.
var deliverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}

// endAttempt ends the span of one attempt with what processTask returned
// to asynq: its outcome, the dead letter's reason and the EngageLab error
// code. A failed attempt's status says its outcome and reason, never the
// error's text (provider text is not for spans).
func endAttempt(span trace.Span, err error, done outcome.Outcome) {
	if span.IsRecording() {
		o, reason, code := attemptOutcome(err, done)
		span.SetAttributes(tracing.Outcome.String(string(o)))
		if reason != "" {
			span.SetAttributes(tracing.Reason.String(string(reason)))
		}
		if code != 0 {
			span.SetAttributes(tracing.Code.Int(int(code)))
		}
		switch o {
		case outcome.Accepted, outcome.AcceptedUnconfirmed, outcome.AlreadyAccepted, outcome.AcceptedLikely:
		default:
			desc := string(o)
			if reason != "" {
				desc += ": " + string(reason)
			}
			span.SetStatus(codes.Error, desc)
		}
	}
	span.End()
}

// attemptOutcome reads the outcome of an attempt from the error processTask
// returns (nil: done): the one reading the attempt's span and the metrics
// (record) share.
func attemptOutcome(err error, done outcome.Outcome) (outcome.Outcome, outcome.Reason, engagelab.Code) {
	var code engagelab.Code
	var apiErr *engagelab.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.Code
	}
	var dl *deadLetter
	var rl *retryLater
	switch {
	case err == nil:
		return done, "", 0
	case errors.As(err, &dl):
		return deadLetterOutcome(dl.reason), dl.reason, code
	case errors.As(err, &rl) && !rl.counted:
		return outcome.Throttle, "", code
	}
	return outcome.Retry, "", code
}
