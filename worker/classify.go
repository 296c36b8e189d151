package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/otpq/otpq/internal/engagelab"
)

// Kind is what the worker does with a failed attempt.
type Kind int

// The outcomes of classify.
const (
	// Retry: the failure can succeed later; counts against MaxRetry.
	Retry Kind = iota + 1
	// Throttle: the provider asked us to slow down (HTTP 429); retried after
	// its Retry-After without counting against MaxRetry.
	Throttle
	// Permanent: retrying cannot help; the task is dead-lettered at once.
	Permanent
)

// String names the kind for logs and metrics.
func (k Kind) String() string {
	switch k {
	case Retry:
		return "retry"
	case Throttle:
		return "throttle"
	case Permanent:
		return "permanent"
	}
	return "unknown"
}

// classify is the one place that decides retry versus dead-letter for a
// failed provider call:
//   - HTTP 429 and the global rate limit (RateLimit): Throttle;
//   - HTTP 5xx, EngageLab codes 1000–1999 and codes in extra: Retry;
//   - transport failures and timeouts: Retry;
//   - every other API answer (4xx with a 2000–5999 code…): Permanent.
func classify(err error, extra map[int]bool) Kind {
	var rl *rateLimited
	if errors.As(err, &rl) {
		return Throttle // our own global rate limit: wait, do not count
	}
	var apiErr *engagelab.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.StatusCode == 429:
			return Throttle
		case apiErr.Code >= 1000 && apiErr.Code <= 1999, extra[apiErr.Code]:
			return Retry
		case apiErr.StatusCode >= 500:
			return Retry
		default:
			return Permanent
		}
	}
	var te *engagelab.TransportError
	if errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded) {
		return Retry
	}
	// Anything unexpected (a bug, a context error) is retried rather than
	// thrown away: the expiry still bounds it.
	return Retry
}

// Reason prefixes of dead-letter errors, for operators and metrics.
const (
	ReasonBadPayload = "bad payload"
	ReasonExpired    = "expired"
	ReasonExhausted  = "retries exhausted"
	ReasonProvider   = "provider rejected"
)

// deadLetter is returned to asynq for a task that must be archived now. Its
// text is the archive reason shown to operators; errors.Is(err,
// asynq.SkipRetry) is true so that asynq archives instead of retrying.
type deadLetter struct {
	category string
	text     string
	cause    error
}

func (e *deadLetter) Error() string        { return e.text }
func (e *deadLetter) Unwrap() error        { return e.cause }
func (e *deadLetter) Is(target error) bool { return target == asynq.SkipRetry }

func newDeadLetter(category string, cause error, format string, args ...any) *deadLetter {
	return &deadLetter{category: category, cause: cause, text: fmt.Sprintf(format, args...)}
}

// retryLater is returned to asynq for a task to run again after delay.
// RetryDelay reads the delay back; IsFailure tells asynq whether the
// attempt counts against the retry limit.
type retryLater struct {
	delay   time.Duration
	counted bool
	cause   error
}

func (e *retryLater) Error() string { return e.cause.Error() }
func (e *retryLater) Unwrap() error { return e.cause }

// retryDelay is asynq's RetryDelayFunc: the delay the handler decided, or
// fallback for failures the handler never saw (a lease lost in a crash).
// asynq stores the retry time in whole seconds, truncated, which would run a
// retry up to 1s early; the delay is rounded up to the next whole second so
// that a Retry-After is never cut short.
func retryDelay(fallback time.Duration) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		d := fallback
		var rl *retryLater
		if errors.As(err, &rl) {
			d = rl.delay
		}
		if frac := time.Now().Add(d).Nanosecond(); frac > 0 {
			d += time.Second - time.Duration(frac)
		}
		return d
	}
}

// isFailure is asynq's IsFailure: throttled attempts do not count.
func isFailure(err error) bool {
	var rl *retryLater
	if errors.As(err, &rl) {
		return rl.counted
	}
	return true
}
