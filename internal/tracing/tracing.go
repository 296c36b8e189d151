// Package tracing is what otpq's producer, worker and receipt receiver
// share about OpenTelemetry tracing: the instrumentation scope, the span
// names, the attribute keys, and the W3C trace context a task carries in
// its asynq headers (and a receipt link in Redis) across the Redis hop.
//
// It depends on the OpenTelemetry API only (no SDK, no exporter): a
// program that does not configure a TracerProvider pays for a no-op one.
//
// Built with -tags otpq_notrace, every function here is a no-op that calls
// no OpenTelemetry code (only its API types remain) and Enabled is false,
// so that the callers' `if tracing.Enabled` blocks are compiled out: the
// build that make bench measures "no tracing code at all" with. .ci/run
// checks that its hot path calls no tracing code.
package tracing

import (
	"go.opentelemetry.io/otel/attribute"
)

// Scope is the instrumentation scope (tracer name) of otpq's spans.
const Scope = "github.com/otpq/otpq"

// Span names.
const (
	// SpanEnqueue is producer.Send's span (kind producer), in the caller's trace.
	SpanEnqueue = "otpq.enqueue"
	// SpanEnqueueBatch is the span of one SendBatch/SendItems call (kind
	// producer): every task of the batch carries its context.
	SpanEnqueueBatch = "otpq.enqueue_batch"
	// SpanDeliver is one delivery attempt in the worker (kind consumer):
	// a child of the enqueue span, linked to it as well.
	SpanDeliver = "otpq.deliver"
	// SpanReceipt is a delivery receipt the callback receiver applied to
	// its task: a child of the attempt that sent the code, linked to it.
	SpanReceipt = "otpq.receipt"
)

// Attribute keys. The code is never an attribute; the destination only
// masked (redact.Destination), as in logs.
const (
	TaskID    = attribute.Key("otpq.task.id")
	Queue     = attribute.Key("otpq.queue")
	Attempt   = attribute.Key("otpq.attempt")
	Outcome   = attribute.Key("otpq.outcome")
	Reason    = attribute.Key("otpq.reason")
	Code      = attribute.Key("otpq.engagelab.code") // EngageLab's error code, never the OTP code
	MessageID = attribute.Key("otpq.message_id")
	Channel   = attribute.Key("otpq.channel")
	To        = attribute.Key("otpq.to") // masked
	Template  = attribute.Key("otpq.template")
	// QueueWait is the time from the enqueue to the start of the attempt,
	// in milliseconds: on the first attempt the queue wait (any Delay
	// included); on a retry it also holds the earlier attempts and their
	// backoff.
	QueueWait = attribute.Key("otpq.queue_wait_ms")
	// BatchSize is the number of sends of an enqueue batch.
	BatchSize = attribute.Key("otpq.batch.size")
	// ReceiptStatus is the receipt's canonical status (delivered, …).
	ReceiptStatus = attribute.Key("otpq.receipt.status")
	// ReceiptErrorCode is the receipt's error_code, when not 0.
	ReceiptErrorCode = attribute.Key("otpq.receipt.error_code")
	// ReceiptStale marks a receipt older than the one the task already
	// shows (stored in the history only).
	ReceiptStale = attribute.Key("otpq.receipt.stale")
)

// Header names of the W3C trace context in a task's headers.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)
