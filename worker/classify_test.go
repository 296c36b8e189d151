package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
)

// specCodes is every row of the spec's error-code table with its HTTP status.
var specCodes = []struct {
	code   engagelab.Code
	status int
	want   kind
}{
	{1000, 500, kindRetry},
	{2001, 401, kindPermanent},
	{2002, 401, kindPermanent},
	{2004, 403, kindPermanent},
	{3001, 400, kindPermanent},
	{3002, 400, kindPermanent},
	{3003, 400, kindPermanent},
	{3004, 400, kindPermanent},
	{4001, 400, kindPermanent},
	{5001, 400, kindPermanent},
	{5011, 400, kindPermanent},
	{5012, 400, kindPermanent},
	{5013, 400, kindPermanent},
	{5014, 400, kindPermanent},
	{5015, 400, kindPermanent},
	{5016, 400, kindPermanent},
	{5017, 400, kindPermanent},
	{5018, 400, kindPermanent},
	{5019, 400, kindPermanent},
	{5020, 400, kindPermanent},
}

func TestClassifySpecCodes(t *testing.T) {
	for _, c := range specCodes {
		err := &engagelab.APIError{StatusCode: c.status, Code: c.code, Message: "m"}
		require.Equal(t, c.want, classify(err, nil), "code %d", c.code)
		info, ok := c.code.Info()
		require.True(t, ok, "code %d is in engagelab's table", c.code)
		require.Equal(t, c.status, info.HTTPStatus, "code %d", c.code)
		require.Equal(t, outcome.ProviderRejected, deadLetterReason(err))
	}
	require.Len(t, engagelab.Codes(), len(specCodes), "engagelab's table has every code of the spec, and only those")
}

func TestClassifyOther(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		extra map[engagelab.Code]bool
		want  kind
	}{
		{"1999 on a 400", &engagelab.APIError{StatusCode: 400, Code: 1999}, nil, kindRetry},
		{"proxy 502 without code", &engagelab.APIError{StatusCode: 502}, nil, kindRetry},
		{"503 with a 5001 body", &engagelab.APIError{StatusCode: 503, Code: 5001}, nil, kindRetry},
		{"throttle", &engagelab.APIError{StatusCode: 429, RetryAfter: time.Second}, nil, kindThrottle},
		{"operator-added 5016", &engagelab.APIError{StatusCode: 400, Code: 5016}, map[engagelab.Code]bool{5016: true}, kindRetry},
		{"unknown 4xx", &engagelab.APIError{StatusCode: 404}, nil, kindPermanent},
		{"timeout", &engagelab.TransportError{Sent: true, Err: context.DeadlineExceeded}, nil, kindRetry},
		{"refused", &engagelab.TransportError{Err: &net.OpError{Op: "dial", Err: errors.New("refused")}}, nil, kindRetry},
		{"wrapped", fmt.Errorf("x: %w", &engagelab.APIError{StatusCode: 400, Code: 5013}), nil, kindPermanent},
		{"2xx carrying 3004", &engagelab.APIError{StatusCode: 200, Code: 3004}, nil, kindPermanent},
		{"2xx carrying 1000", &engagelab.APIError{StatusCode: 200, Code: 1000}, nil, kindRetry},
		{"redirect", &engagelab.RedirectError{StatusCode: 307, Host: "elsewhere:443"}, nil, kindPermanent},
		{"custom sender's refusal", fmt.Errorf("gateway: %w", ErrRejected), nil, kindPermanent},
		{"custom sender's other error", errors.New("gateway down"), nil, kindRetry},
	}
	for _, tc := range cases {
		require.Equal(t, tc.want, classify(tc.err, tc.extra), tc.name)
	}
}

func TestDeadLetterReason(t *testing.T) {
	require.Equal(t, outcome.Configuration, deadLetterReason(fmt.Errorf("x: %w", &engagelab.RedirectError{StatusCode: 301})))
	require.Equal(t, outcome.LikelyAccepted, deadLetterReason(&likelyDelivered{cause: &engagelab.APIError{StatusCode: 400, Code: 3004}}))
	require.Equal(t, outcome.ProviderRejected, deadLetterReason(&engagelab.APIError{StatusCode: 400, Code: 5013}))
}

func TestDeadLetterIsSkipRetry(t *testing.T) {
	err := newDeadLetter(outcome.ProviderRejected, nil, "engagelab 5013: Number has been blacklisted")
	require.True(t, errors.Is(err, asynq.SkipRetry))
	require.Equal(t, "engagelab 5013: Number has been blacklisted", err.Error())
}

func TestRetryDelayAndIsFailure(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 300_000_000, time.UTC)
	f := retryDelay(3*time.Second, func() time.Time { return now })
	cause := errors.New("boom")
	// Rounded up so that now+d is a whole second: asynq truncates to seconds.
	d := f(0, &retryLater{delay: 7 * time.Second, counted: true, cause: cause}, nil)
	require.Equal(t, 7700*time.Millisecond, d)
	d = f(0, asynq.ErrLeaseExpired, nil)
	require.Equal(t, 3700*time.Millisecond, d, "a failure the handler never saw: the fallback")
	now = now.Truncate(time.Second)
	require.Equal(t, 3*time.Second, f(0, cause, nil), "already whole: unchanged")
	require.True(t, isFailure(&retryLater{counted: true, cause: cause}))
	require.False(t, isFailure(&retryLater{counted: false, cause: cause}))
	require.True(t, isFailure(cause))
}

func TestBackoffBoundedAndGrowing(t *testing.T) {
	w := &Worker{cfg: Config{RetryMinDelay: time.Second, RetryMaxDelay: 20 * time.Second}}
	for n := range 12 {
		for range 50 {
			d := w.backoff(n)
			require.GreaterOrEqual(t, d, time.Second)
			require.LessOrEqual(t, d, 20*time.Second)
		}
	}
	// Retry 4 waits ~16s ±50%: always more than the first retry's 1s ±50%.
	require.Greater(t, w.backoff(4), 3*time.Second/2)
}

// Retry n+1 waits RetryMinDelay·2^n ±50% (capped): every sample of every
// retry lies in its band, so a different multiplier leaves it. Fails with
// the multiplier 1.5 (retry 4 would wait 2.5-7.6 s, not 8-24 s): checked.
func TestBackoffDoubles(t *testing.T) {
	w := &Worker{cfg: Config{RetryMinDelay: time.Second, RetryMaxDelay: time.Hour}}
	for n := range 8 {
		mid := time.Duration(1<<n) * time.Second
		for range 100 {
			d := w.backoff(n)
			require.GreaterOrEqual(t, d, max(mid/2, time.Second), "retry %d", n+1)
			require.LessOrEqual(t, d, mid*3/2, "retry %d", n+1)
		}
	}
}
