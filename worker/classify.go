package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
)

// kind is what the worker does with a failed attempt.
type kind int

// The outcomes of classify.
const (
	// kindRetry: the failure can succeed later; counts against MaxRetry.
	kindRetry kind = iota + 1
	// kindThrottle: the provider asked us to slow down (HTTP 429); retried after
	// its Retry-After without counting against MaxRetry.
	kindThrottle
	// kindPermanent: retrying cannot help; the task is dead-lettered at once.
	kindPermanent
)

// String names the kind for logs and metrics.
func (k kind) String() string {
	switch k {
	case kindRetry:
		return "retry"
	case kindThrottle:
		return "throttle"
	case kindPermanent:
		return "permanent"
	}
	return "unknown"
}

// classify is the one place that decides retry versus dead-letter for a
// failed provider call:
//   - HTTP 429 and the global rate limit (RateLimit): kindThrottle;
//   - HTTP 5xx, EngageLab codes 1000–1999 and codes in extra
//     ((*engagelab.APIError).Retryable): kindRetry;
//   - transport failures and timeouts: kindRetry;
//   - a redirect (*engagelab.RedirectError, never followed): kindPermanent,
//     a configuration problem;
//   - every other API answer (4xx with a 2000–5999 code, a 2xx whose body
//     carries a code…): kindPermanent;
//   - an error of a custom Sender wrapping ErrRejected: kindPermanent.
//
// deadLetterReason names the Reason of a kindPermanent failure.
func classify(err error, extra map[engagelab.Code]bool) kind {
	var rl *rateLimited
	if errors.As(err, &rl) {
		return kindThrottle // our own global rate limit: wait, do not count
	}
	var re *engagelab.RedirectError
	if errors.As(err, &re) {
		return kindPermanent // retrying sends to the same wrong place
	}
	var apiErr *engagelab.APIError
	if errors.As(err, &apiErr) {
		switch {
		case apiErr.StatusCode == 429:
			return kindThrottle
		case apiErr.Retryable(), extra[apiErr.Code]:
			return kindRetry
		default:
			return kindPermanent
		}
	}
	if errors.Is(err, ErrRejected) {
		return kindPermanent // a custom Sender's refusal
	}
	var te *engagelab.TransportError
	if errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded) {
		return kindRetry
	}
	// Anything unexpected (a bug, a context error) is retried rather than
	// thrown away: the expiry still bounds it.
	return kindRetry
}

// deadLetterReason is why a failure that classify calls kindPermanent is
// dead-lettered: a redirect is a configuration problem, a 3004 after an
// ambiguous attempt a likely delivery, anything else the provider's refusal.
func deadLetterReason(err error) outcome.Reason {
	var re *engagelab.RedirectError
	var ld *likelyDelivered
	switch {
	case errors.As(err, &re):
		return outcome.Configuration
	case errors.As(err, &ld):
		return outcome.LikelyAccepted
	}
	return outcome.ProviderRejected
}

// deadLetter is returned to asynq for a task that must be archived now. Its
// text is the archive reason shown to operators; errors.Is(err,
// asynq.SkipRetry) is true so that asynq archives instead of retrying.
type deadLetter struct {
	reason outcome.Reason
	text   string
	cause  error
}

func (e *deadLetter) Error() string        { return e.text }
func (e *deadLetter) Unwrap() error        { return e.cause }
func (e *deadLetter) Is(target error) bool { return target == asynq.SkipRetry }

func newDeadLetter(reason outcome.Reason, cause error, format string, args ...any) *deadLetter {
	return &deadLetter{reason: reason, cause: cause, text: fmt.Sprintf(format, args...)}
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
// that a Retry-After is never cut short. now must be the clock asynq adds
// the delay to (time.Now in production).
func retryDelay(fallback time.Duration, now func() time.Time) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		d := fallback
		var rl *retryLater
		if errors.As(err, &rl) {
			d = rl.delay
		}
		if frac := now().Add(d).Nanosecond(); frac > 0 {
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
