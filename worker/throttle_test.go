package worker

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/task"
)

// TestRateLimiterBooksOneSlotPerInterval: at 0.1/s with a burst of 2 and a
// wait of up to 25 s allowed, back-to-back bookings get the burst at once,
// then the slots 10 s and 20 s away, and the next one (30 s away) is
// refused with its wait. Counted, not timed: the bookings take
// milliseconds, far inside the 1 s tolerance and the 5 s margin of the
// refusal. Fails with the limiter letting 1.2x the rate through (slots
// 8.3 s apart: five booked, the third 8.3 s away): checked (make mutate).
func TestRateLimiterBooksOneSlotPerInterval(t *testing.T) {
	db := redistest.New(t)
	r := newRateLimiter(db.Client, 0.1, 2, 25*time.Second, time.Now)
	expires := time.Now().Add(time.Hour)
	var waits []time.Duration
	var refused *rateLimited
	for refused == nil {
		wait, err := r.reserve(context.Background(), expires)
		if !errors.As(err, &refused) {
			require.NoError(t, err)
			waits = append(waits, wait)
			require.Less(t, len(waits), 10, "bookings never refused: %v", waits)
		}
	}
	require.Len(t, waits, 4, "the burst of 2, then one slot per 10 s within the 25 s wait: %v", waits)
	for i, want := range []time.Duration{0, 0, 10 * time.Second, 20 * time.Second} {
		require.InDelta(t, want.Seconds(), waits[i].Seconds(), 1, "booking %d: %v", i+1, waits)
	}
	require.InDelta(t, 30, refused.retryAfter.Seconds(), 1, "the refused booking's slot")
	require.Equal(t, 0.1, refused.rate)
}

// TestThrottleRetriedAfterItsWait: a 429 is retried after its Retry-After,
// however long (never sooner than RetryMinDelay), and a send refused by
// the global rate limit after its slot's wait (never sooner than
// PollInterval); neither counts against MaxRetry (retries are disabled
// here, yet both are retried). The delay is the one the handler hands
// asynq, read without a clock. A Retry-After past the code's expiry
// dead-letters it as expired. Fails with the Retry-After capped at 1 s:
// checked (make mutate).
func TestThrottleRetriedAfterItsWait(t *testing.T) {
	w := &Worker{cfg: Config{RetryMinDelay: time.Second, PollInterval: 10 * time.Millisecond}, now: time.Now}
	log := newTaskLog(slog.New(slog.DiscardHandler))
	p := task.Payload{ExpiresAt: time.Now().Add(time.Hour)}
	delay := func(err error) time.Duration {
		t.Helper()
		var rl *retryLater
		require.ErrorAs(t, w.failed(log, err, p, 0), &rl)
		require.False(t, rl.counted, "a throttle does not count against MaxRetry")
		return rl.delay
	}
	for _, c := range []struct{ retryAfter, want time.Duration }{
		{0, time.Second}, {300 * time.Millisecond, time.Second}, {time.Second, time.Second},
		{7 * time.Second, 7 * time.Second}, {90 * time.Second, 90 * time.Second},
	} {
		require.Equal(t, c.want, delay(&engagelab.APIError{StatusCode: 429, RetryAfter: c.retryAfter}), "Retry-After %s", c.retryAfter)
	}
	require.Equal(t, 3*time.Second, delay(&rateLimited{retryAfter: 3 * time.Second, rate: 1}))
	require.Equal(t, 10*time.Millisecond, delay(&rateLimited{retryAfter: time.Millisecond, rate: 1}))

	p.ExpiresAt = time.Now().Add(time.Minute)
	var dl *deadLetter
	require.ErrorAs(t, w.failed(log, &engagelab.APIError{StatusCode: 429, RetryAfter: 2 * time.Minute}, p, 0), &dl)
	require.Equal(t, outcome.CodeExpired, dl.reason)
}
