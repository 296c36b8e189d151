package producer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/dest"
	"github.com/otpq/otpq/internal/redact"
)

// Defaults of the per-destination guard. EngageLab itself refuses a second
// code for the same template and user within the code's validity (3004);
// the guard bounds all templates together, so that one number cannot be
// flooded ("SMS pumping") however the sends are spread.
const (
	DefaultDestinationLimit  = 5
	DefaultDestinationWindow = 15 * time.Minute
)

// ErrDestinationLimited: the destination already had DestinationLimit sends
// within DestinationWindow; nothing was enqueued. The error is a
// *DestinationLimitError.
var ErrDestinationLimited = errors.New("destination send limit reached")

// DestinationLimitError says why a send was refused by the per-destination
// guard and when the destination can receive again. Its text masks the
// destination.
type DestinationLimitError struct {
	// To is the masked destination (+861*******678).
	To string
	// Limit sends are allowed per Window.
	Limit  int
	Window time.Duration
	// RetryAfter is when the oldest counted send leaves the window.
	RetryAfter time.Duration
}

// Error says the limit and window reached, with the destination masked.
func (e *DestinationLimitError) Error() string {
	return fmt.Sprintf("%s: %s already had %d sends in the last %s; retry after %s",
		ErrDestinationLimited, e.To, e.Limit, e.Window, e.RetryAfter.Round(time.Second))
}

// Unwrap makes errors.Is(err, ErrDestinationLimited) true.
func (e *DestinationLimitError) Unwrap() error { return ErrDestinationLimited }

// destGuardScript is a sliding-window log per destination, for each key of
// KEYS in turn: a sorted set of send tokens scored by the time in
// milliseconds. When a set holds limit (ARGV[2]) entries it drops those
// older than the window (ARGV[1] ms) and refuses if limit remain; else it
// records the key's token (ARGV[2+i]). The time is ARGV[3+#KEYS] when given
// (the guard's injected clock), else Redis's own clock, which every
// producer sharing the Redis shares. Returns a flat {counted, ms until the
// oldest entry leaves} pair per key: {1, 0} when counted. One key for Send,
// a chunk of keys for SendBatch on a single Redis (one key per call on a
// Cluster, where the keys live in different slots). destGuard.args builds
// ARGV.
var destGuardScript = redis.NewScript(`
local now = tonumber(ARGV[3 + #KEYS])
if not now then
  local t = redis.call("TIME")
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local n = redis.call("ZCARD", KEYS[i])
  if n >= limit then
    -- Only a full window needs trimming: below the limit, stale entries
    -- cannot refuse anything, and ZADD below keeps the set within limit.
    redis.call("ZREMRANGEBYSCORE", KEYS[i], "-inf", now - window)
    n = redis.call("ZCARD", KEYS[i])
  end
  if n >= limit then
    local oldest = redis.call("ZRANGE", KEYS[i], 0, 0, "WITHSCORES")
    out[2*i-1], out[2*i] = 0, tonumber(oldest[2]) + window - now
  else
    redis.call("ZADD", KEYS[i], now, ARGV[2+i])
    redis.call("PEXPIRE", KEYS[i], window)
    out[2*i-1], out[2*i] = 1, 0
  end
end
return out
`)

// destGuard counts sends per destination in Redis, so that every producer
// sharing the Redis shares the budget.
type destGuard struct {
	rdb    redis.UniversalClient
	limit  int
	window time.Duration
	// now is the guard's clock; nil means Redis's TIME, one clock for
	// every producer of the Redis whatever their hosts' clocks say.
	now func() time.Time
}

// args is the script's ARGV for the given send tokens, one per key, with
// the guard's clock reading last when it has a clock.
func (g *destGuard) args(tokens ...string) []any {
	args := make([]any, 0, 3+len(tokens))
	args = append(args, g.window.Milliseconds(), g.limit)
	for _, tok := range tokens {
		args = append(args, tok)
	}
	if g.now != nil {
		args = append(args, g.now().UnixMilli())
	}
	return args
}

// refused is the error for a send to to that the script refused, retryMS
// being its answer's milliseconds until a slot frees.
func (g *destGuard) refused(to string, retryMS int64) *DestinationLimitError {
	return &DestinationLimitError{To: redact.Destination(to), Limit: g.limit, Window: g.window,
		RetryAfter: time.Duration(max(retryMS, 0)) * time.Millisecond}
}

// newToken is a random guard entry, so that a release removes exactly the
// entry its send added.
func newToken() string {
	var tok [12]byte
	_, _ = rand.Read(tok[:])
	return hex.EncodeToString(tok[:])
}

// destKey names a destination's counter by a hash of its canonical form
// (dest.Canonical: e-mail case-folded, without plus-tag, gmail dots, in
// punycode; phone without a trunk 0), so that the spellings and aliases of
// one mailbox or handset share a budget and keys listed in Redis do not
// reveal phone numbers or e-mail addresses.
func destKey(to string) string {
	sum := sha256.Sum256([]byte("otpq/dest/" + dest.Key(to)))
	return "otpq:dest:" + hex.EncodeToString(sum[:16])
}

// take counts one send to to. It returns a release func that gives the slot
// back (for an enqueue that failed or was a duplicate), or a
// *DestinationLimitError when the budget is spent.
func (g *destGuard) take(ctx context.Context, to string) (release func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	member := newToken()
	key := destKey(to)
	res, err := destGuardScript.Run(ctx, g.rdb, []string{key}, g.args(member)...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("producer: destination guard: %w", err)
	}
	if res[0] == 0 {
		return nil, g.refused(to, res[1])
	}
	return func() {
		// Best effort on a fresh context: the caller's may be done.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		g.rdb.ZRem(ctx, key, member)
	}, nil
}
