package worker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/metrics"
	"github.com/otpq/otpq/internal/outcome"
)

// timedSender observes the duration of every provider request.
type timedSender struct {
	Sender
	m *metrics.Delivery
}

func (s timedSender) Send(ctx context.Context, req SendRequest) (*SendResponse, error) {
	start := time.Now()
	resp, err := s.Sender.Send(ctx, req)
	result := metrics.ResultOK
	if err != nil {
		result = metrics.ResultTransport
		var apiErr *engagelab.APIError
		var re *engagelab.RedirectError
		if errors.As(err, &apiErr) || errors.As(err, &re) {
			result = metrics.ResultAPIError
		}
	}
	s.m.ProviderRequest(result, time.Since(start))
	return resp, err
}

// record counts the outcome of one attempt from the error processTask
// returns to asynq (nil: completed, as done says: outcome.Accepted,
// outcome.AcceptedUnconfirmed or outcome.AlreadyAccepted). It is the one place that turns outcomes into
// metrics, so that processTask and failed need no metric calls.
func (w *Worker) record(err error, done outcome.Outcome, createdAt time.Time) {
	if w.metrics == nil {
		return
	}
	o, reason, code := attemptOutcome(err, done) // as the attempt's span reads it
	switch {
	case err == nil:
		w.metrics.Completed(done, createdAt, w.now())
	case reason != "": // dead-lettered: every deadLetter carries an outcome.Reason
		w.metrics.DeadLettered(reason, code)
	default: // outcome.Retry, or outcome.Throttle for a wait that does not count
		w.metrics.Retried(o, code)
	}
}

// errPanic is the cause of an attempt whose handler panicked.
var errPanic = errors.New("handler panic")

// recovered turns a panic in the handler into an ordinary failed attempt.
// asynq would store the panic value as the task's error and log it; the
// value may hold the code (a panic inside the provider client, say), so it
// is withheld: the log line has the panic's type and the stack trace (Go
// prints argument words in hex, never string contents).
func (w *Worker) recovered(log taskLog, x any) error {
	log.Error("handler panic", "panic_type", fmt.Sprintf("%T", x), "stack", string(debug.Stack()))
	return fmt.Errorf("%w (%T; value withheld, it may hold the code)", errPanic, x)
}

// Ready reports whether the worker is processing: started, not shut down,
// and Redis answers. The error says which is not the case.
func (w *Worker) Ready(ctx context.Context) error {
	w.mu.Lock()
	started, stopped := w.started, w.stopped
	w.mu.Unlock()
	switch {
	case !started:
		return errors.New("worker not started")
	case stopped:
		return errors.New("worker shutting down")
	}
	if err := w.Ping(ctx); err != nil {
		return fmt.Errorf("redis unreachable: %w", err)
	}
	return nil
}
