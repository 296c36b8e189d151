package worker

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/internal/tracing"
)

// deliverSpan are the start options of a delivery attempt's span.
var deliverSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}

// The span work of an attempt lives in these functions, out of line, and
// process calls them only when tracing is on: their attribute arrays and
// locals then take no room in process's frame. Inlined there, they made it
// 2,472 bytes instead of 1,832, and every delivery's goroutine grew (and
// copied) its stack once more: tracing off cost 18% more instructions per
// delivery than the otpq_notrace build (cachegrind, make bench section 11).

// startAttempt starts the span of attempt of task t (id, queue): a child
// of the enqueue span whose context the task carries, linked to it.
//
//go:noinline
func (w *Worker) startAttempt(ctx context.Context, t *asynq.Task, id, queue string, attempt int) (context.Context, trace.Span) {
	ctx, opts := tracing.Follows(ctx, tracing.FromHeaders(t.Headers()), deliverSpan)
	ctx, span := w.tracer.Start(ctx, tracing.SpanDeliver, opts...)
	if span.IsRecording() {
		span.SetAttributes(tracing.TaskID.String(id), tracing.Queue.String(queue), tracing.Attempt.Int(attempt))
	}
	return ctx, span
}

// traceDecoded adds what the payload tells to the attempt's span: the
// masked destination, the template and the time the task waited.
//
//go:noinline
func traceDecoded(span trace.Span, p *task.Payload, now time.Time) {
	span.SetAttributes(tracing.To.String(redact.Destination(p.To)), tracing.Template.String(p.Template.ID))
	if !p.CreatedAt.IsZero() {
		span.SetAttributes(tracing.QueueWait.Int64(now.Sub(p.CreatedAt).Milliseconds()))
	}
}

// traceAccepted adds the provider's answer to the attempt's span.
//
//go:noinline
func traceAccepted(span trace.Span, resp *SendResponse) {
	span.SetAttributes(tracing.MessageID.String(resp.MessageID), tracing.Channel.String(resp.SendChannel))
}

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
