package worker

import (
	"context"
	"errors"
	"time"

	"github.com/hibiken/asynq"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/internal/task"
)

// ambiguousKey marks a task one of whose attempts may have reached the
// provider without an answer.
func ambiguousKey(queue, id string) string { return "otpq:ambiguous:{" + queue + "}:" + id }

// likelyDelivered wraps the 3004 (engagelab.CodeFrequencyLimit: a code was
// already sent to this user for this template) of a task whose earlier
// attempt timed out after the request was sent: the code most likely
// arrived. classify sees the provider's 3004 through it (Permanent), and
// its text is the archive reason (outcome.LikelyAccepted: …).
type likelyDelivered struct{ cause error }

func (e *likelyDelivered) Error() string {
	return outcome.LikelyAccepted.String() + ": " + reasonText(e.cause)
}
func (e *likelyDelivered) Unwrap() error { return e.cause }

// ambiguity records an attempt whose outcome is unknown (the request was
// sent, no answer came back) in Redis until the code expires, and turns a
// later 3004 of the same task into a *likelyDelivered. Bookkeeping errors
// are ignored: they only cost the nicer reason.
func (w *Worker) ambiguity(ctx context.Context, queue, id string, p task.Payload, err error) error {
	if id == "" {
		return err
	}
	key := ambiguousKey(queue, id)
	var te *engagelab.TransportError
	if errors.As(err, &te) && te.Sent {
		ttl := max(p.ExpiresAt.Sub(w.now()), 0) + time.Minute // never a key without TTL
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		w.rdb.Set(bg, key, "1", ttl)
		return err
	}
	var apiErr *engagelab.APIError
	if errors.As(err, &apiErr) && apiErr.Code == engagelab.CodeFrequencyLimit {
		if n, _ := w.rdb.Exists(ctx, key).Result(); n > 0 || w.leaseLost(ctx, queue, id) {
			return &likelyDelivered{cause: err}
		}
	}
	return err
}

// leaseLost reports whether the task's previous attempt ended with its
// lease expiring (the worker was killed or cut off mid-send): that attempt
// may have reached the provider with nobody left to hear the answer. Only
// read on the rare 3004 path, within the attempt's ctx.
func (w *Worker) leaseLost(ctx context.Context, queue, id string) bool {
	info, err := asynqstore.ReadTask(ctx, w.rdb, queue, id)
	return err == nil && info.LastErr == asynq.ErrLeaseExpired.Error()
}
