package worker

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"
)

// rateKey is the Redis key of the global send rate limit, shared by every
// worker on the same Redis.
const rateKey = "otpq:rate:send"

// DefaultMaxRateWait is how long a task waits inside its handler for a rate
// limit slot before it is handed back to asynq as a throttle.
const DefaultMaxRateWait = 2 * time.Second

// reserveScript is GCRA (the generic cell rate algorithm, as in
// github.com/go-redis/redis_rate) with reservations: instead of "allowed
// now or not", it books the next free slot and returns how long to wait
// for it, provided that wait is at most ARGV[3] seconds; a longer wait books
// nothing. One round trip per send and no polling, however many tasks wait.
// Time is Redis's own, so workers with skewed clocks share one schedule.
// ARGV: emission interval (s), burst, max wait (s). Returns {booked, wait}.
var reserveScript = redis.NewScript(`
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local maxwait = tonumber(ARGV[3])
local t = redis.call("TIME")
local now = (tonumber(t[1]) - 1700000000) + tonumber(t[2]) / 1000000
local tat = tonumber(redis.call("GET", KEYS[1]) or "0")
if tat < now then tat = now end
local wait = tat - (burst - 1) * interval - now
if wait < 0 then wait = 0 end
if wait > maxwait then
  return {0, tostring(wait)}
end
local newtat = tat + interval
redis.call("SET", KEYS[1], tostring(newtat), "PX", math.ceil((newtat - now) * 1000) + 1000)
return {1, tostring(wait)}
`)

// rateLimiter spaces provider calls across all workers: at most burst at
// once, then one per interval. The zero *rateLimiter (nil) allows all.
type rateLimiter struct {
	rdb      redis.UniversalClient
	rate     float64
	interval float64 // seconds between sends
	burst    int
	maxWait  time.Duration
	now      func() time.Time // the worker's clock, for the codes' expiry
}

func newRateLimiter(rdb redis.UniversalClient, rate float64, burst int, maxWait time.Duration, now func() time.Time) *rateLimiter {
	if rate <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = max(1, int(math.Ceil(rate/10)))
	}
	if maxWait <= 0 {
		maxWait = DefaultMaxRateWait
	}
	return &rateLimiter{rdb: rdb, rate: rate, interval: 1 / rate, burst: burst, maxWait: maxWait, now: now}
}

// rateLimited is the error of a send that must wait longer for a slot than
// a handler waits: a throttle (kindThrottle), retried after retryAfter without counting
// against MaxRetry.
type rateLimited struct {
	retryAfter time.Duration
	rate       float64
}

func (e *rateLimited) Error() string {
	return fmt.Sprintf("rate limited: next send slot in %s (limit %g/s across all workers)", e.retryAfter.Round(time.Millisecond), e.rate)
}

// take books a send slot and sleeps until it. It waits at most maxWait
// and never past expires; a longer wait returns a *rateLimited and books
// nothing. A booked slot is used even when ctx ends during the wait (the
// limit errs on the side of fewer sends).
func (r *rateLimiter) take(ctx context.Context, expires time.Time) error {
	if r == nil {
		return nil
	}
	wait, err := r.reserve(ctx, expires)
	if err != nil || wait <= 0 {
		return err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reserve books the next send slot and returns how long until it, or a
// *rateLimited (nothing booked) when that is more than maxWait away or
// past expires.
func (r *rateLimiter) reserve(ctx context.Context, expires time.Time) (time.Duration, error) {
	maxWait := min(r.maxWait, expires.Sub(r.now()))
	if maxWait < 0 {
		maxWait = 0
	}
	res, err := reserveScript.Run(ctx, r.rdb, []string{rateKey}, r.interval, r.burst, maxWait.Seconds()).Slice()
	if err != nil {
		return 0, fmt.Errorf("rate limit: %w", err)
	}
	booked, _ := res[0].(int64)
	var secs float64
	if s, ok := res[1].(string); ok {
		_, _ = fmt.Sscan(s, &secs)
	}
	wait := time.Duration(secs * float64(time.Second))
	if booked != 1 {
		return 0, &rateLimited{retryAfter: wait, rate: r.rate}
	}
	return wait, nil
}
