package producer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/sealing"
	"github.com/otpq/otpq/internal/task"
)

// setupWith is setup with a Config of the test's choosing (real clock).
func setupWith(t *testing.T, mod func(*Config)) bundle {
	t.Helper()
	db := redistest.New(t)
	cfg := Config{RedisURL: db.URL()}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number})
	t.Cleanup(func() { ins.Close() })
	return bundle{p: p, db: db, ins: ins, now: time.Now()}
}

// testClock is a clock that moves only when the test advances it.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// setupClocked is setupWith on a test clock that the producer and its
// destination guard both read.
func setupClocked(t *testing.T, mod func(*Config)) (bundle, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	b := setupWith(t, func(c *Config) {
		c.Now = clock.Now
		if mod != nil {
			mod(c)
		}
	})
	require.NotNil(t, b.p.guard, "the guard is on")
	b.p.guard.now = clock.Now
	b.now = clock.Now()
	return b, clock
}

func TestDestinationGuardDefaultLimit(t *testing.T) {
	b, _ := setupClocked(t, nil)
	ctx := context.Background()
	for range DefaultDestinationLimit {
		_, err := b.p.Send(ctx, validRequest())
		require.NoError(t, err)
	}
	_, err := b.p.Send(ctx, validRequest())
	require.ErrorIs(t, err, ErrDestinationLimited)
	var dl *DestinationLimitError
	require.True(t, errors.As(err, &dl))
	require.Equal(t, DefaultDestinationLimit, dl.Limit)
	require.Equal(t, DefaultDestinationWindow, dl.Window)
	require.Equal(t, DefaultDestinationWindow, dl.RetryAfter, "no time passed since the first send")
	require.NotContains(t, err.Error(), "+8618701235678", "the destination is masked")
	require.Contains(t, err.Error(), "+861*******678")
	require.NotContains(t, err.Error(), canary)

	// Another destination has its own budget.
	other := validRequest()
	other.To = "bob@example.com"
	_, err = b.p.Send(ctx, other)
	require.NoError(t, err)

	// The key does not reveal the number.
	keys, err := b.db.Client.Keys(ctx, "otpq:dest:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 2)
	for _, k := range keys {
		require.NotContains(t, k, "8618701235678")
		require.NotContains(t, k, "bob")
	}
	n, err := b.ins.GetQueueInfo(QueueCritical)
	require.NoError(t, err)
	require.Equal(t, DefaultDestinationLimit+1, n.Pending, "the refused send enqueued nothing")
}

// TestDestinationGuardWindowSlides: a refused destination gets its next
// slot exactly when its oldest send leaves the window, by the guard's clock.
func TestDestinationGuardWindowSlides(t *testing.T) {
	b, clock := setupClocked(t, func(c *Config) { c.DestinationLimit = 2 })
	ctx := context.Background()
	_, err := b.p.Send(ctx, validRequest())
	require.NoError(t, err)
	clock.Advance(time.Minute)
	_, err = b.p.Send(ctx, validRequest())
	require.NoError(t, err)

	clock.Advance(time.Minute)
	_, err = b.p.Send(ctx, validRequest())
	var dl *DestinationLimitError
	require.True(t, errors.As(err, &dl), "the third send within the window is refused: %v", err)
	require.Equal(t, DefaultDestinationWindow-2*time.Minute, dl.RetryAfter, "the first send leaves the window 15 min after it")

	clock.Advance(dl.RetryAfter - time.Millisecond)
	_, err = b.p.Send(ctx, validRequest())
	require.True(t, errors.As(err, &dl), "1 ms before the first send leaves, still refused: %v", err)
	require.Equal(t, time.Millisecond, dl.RetryAfter)

	clock.Advance(time.Millisecond)
	_, err = b.p.Send(ctx, validRequest())
	require.NoError(t, err, "a slot frees when the oldest send leaves the window")
	_, err = b.p.Send(ctx, validRequest())
	require.True(t, errors.As(err, &dl), "the second send is still in the window: %v", err)
	require.Equal(t, time.Minute, dl.RetryAfter, "the second send leaves the window one minute after the first")
}

// TestDestinationGuardRedisClock: without a clock of its own the guard
// scores sends by Redis's TIME, so producers on hosts whose clocks differ
// share one window.
func TestDestinationGuardRedisClock(t *testing.T) {
	b := setupWith(t, func(c *Config) { c.DestinationLimit = 1 })
	require.Nil(t, b.p.guard.now)
	ctx := context.Background()
	before, err := b.db.Client.Time(ctx).Result()
	require.NoError(t, err)
	_, err = b.p.Send(ctx, validRequest())
	require.NoError(t, err)
	after, err := b.db.Client.Time(ctx).Result()
	require.NoError(t, err)
	entries, err := b.db.Client.ZRangeWithScores(ctx, destKey(validRequest().To), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, entries, 1)
	score := int64(entries[0].Score)
	require.GreaterOrEqual(t, score, before.UnixMilli())
	require.LessOrEqual(t, score, after.UnixMilli())
}

// TestDestinationGuardConcurrent: 40 concurrent sends through 4 producers
// (think 4 application servers) to one number: exactly the limit get in.
func TestDestinationGuardConcurrent(t *testing.T) {
	b := setupWith(t, func(c *Config) { c.DestinationLimit = 7 })
	ps := []*Producer{b.p}
	for range 3 {
		p, err := New(Config{RedisURL: b.db.URL(), DestinationLimit: 7})
		require.NoError(t, err)
		t.Cleanup(func() { p.Close() })
		ps = append(ps, p)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, limited := 0, 0
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ps[i%len(ps)].Send(context.Background(), validRequest())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrDestinationLimited):
				limited++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 7, ok)
	require.Equal(t, 33, limited)
}

// TestDestinationGuardRefunds: a duplicate and a failed enqueue give their
// slot back; so the budget counts only what was really enqueued.
func TestDestinationGuardRefunds(t *testing.T) {
	b := setupWith(t, func(c *Config) { c.DestinationLimit = 2 })
	ctx := context.Background()
	_, err := b.p.Send(ctx, validRequest(), DedupKey("k1"))
	require.NoError(t, err)
	for range 5 {
		_, err = b.p.Send(ctx, validRequest(), DedupKey("k1"))
		require.ErrorIs(t, err, ErrDuplicate)
	}
	// A failed enqueue: the queue's task hash key is taken by a string, so
	// asynq's enqueue script fails after the guard counted the send.
	require.NoError(t, b.db.Client.Set(ctx, asynqstore.TaskKey(QueueCritical, "k2"), "junk", 0).Err())
	_, err = b.p.Send(ctx, validRequest(), DedupKey("k2"))
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrDestinationLimited))

	_, err = b.p.Send(ctx, validRequest())
	require.NoError(t, err, "duplicates and failures did not use the budget")
	_, err = b.p.Send(ctx, validRequest())
	require.ErrorIs(t, err, ErrDestinationLimited)
}

func TestDestinationGuardOff(t *testing.T) {
	b := setupWith(t, func(c *Config) { c.DestinationLimit = -1 })
	for range DefaultDestinationLimit + 3 {
		_, err := b.p.Send(context.Background(), validRequest())
		require.NoError(t, err)
	}
	keys, err := b.db.Client.Keys(context.Background(), "otpq:dest:*").Result()
	require.NoError(t, err)
	require.Empty(t, keys)
}

func TestPayloadSealedAtRest(t *testing.T) {
	key, err := sealing.GenerateKey("k1")
	require.NoError(t, err)
	ring, err := ParseKeys(key)
	require.NoError(t, err)
	b := setupWith(t, func(c *Config) { c.PayloadKeys = ring })
	ctx := context.Background()
	id, err := b.p.Send(ctx, validRequest())
	require.NoError(t, err)

	// Nothing stored in Redis holds the code; without a key, the same scan
	// finds it (so the scan can fail).
	require.NotContains(t, redisText(t, b), canary)
	plain := setupWith(t, nil)
	_, err = plain.p.Send(ctx, validRequest())
	require.NoError(t, err)
	require.Contains(t, redisText(t, plain), canary)
	info, err := b.ins.GetTaskInfo(QueueCritical, id)
	require.NoError(t, err)
	p, err := task.Decode(info.Payload)
	require.NoError(t, err)
	require.Equal(t, task.VersionCodeKey, p.V)
	require.Empty(t, p.Code)
	require.Empty(t, p.Sealed)
	v, err := b.db.Client.Get(ctx, asynqstore.CodeKey(QueueCritical, id)).Result()
	require.NoError(t, err)
	_, sealed, err := task.ParseCodeValue(v)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(sealed, "k1:"))
	kr, err := sealing.Parse(key)
	require.NoError(t, err)
	code, err := kr.Open(sealed, task.SealContext(p.To, id))
	require.NoError(t, err)
	require.Equal(t, canary, code)
	_, err = kr.Open(sealed, p.To)
	require.Error(t, err, "the sealed code is bound to its task, not only its destination")
}

func TestParseKeys(t *testing.T) {
	_, err := ParseKeys("k1:c2hvcnQ=")
	require.ErrorIs(t, err, sealing.ErrBadKeyring)
	require.Contains(t, err.Error(), "payload keys")
	require.NotContains(t, err.Error(), "c2hvcnQ=")
	ring, err := ParseKeys("")
	require.NoError(t, err)
	require.Nil(t, ring, "no text, no keys: codes in plaintext")
}

// redisText is every key and value of the test's database, as text.
func redisText(t *testing.T, b bundle) string {
	t.Helper()
	ctx := context.Background()
	c := b.db.Client
	keys, err := c.Keys(ctx, "*").Result()
	require.NoError(t, err)
	var sb strings.Builder
	for _, k := range keys {
		sb.WriteString(k + "\n")
		typ, err := c.Type(ctx, k).Result()
		require.NoError(t, err)
		var vals []string
		switch typ {
		case "string":
			vals = []string{c.Get(ctx, k).Val()}
		case "hash":
			for f, v := range c.HGetAll(ctx, k).Val() {
				vals = append(vals, f, v)
			}
		case "list":
			vals = c.LRange(ctx, k, 0, -1).Val()
		case "set":
			vals = c.SMembers(ctx, k).Val()
		case "zset":
			vals = c.ZRange(ctx, k, 0, -1).Val()
		}
		sb.WriteString(strings.Join(vals, "\n") + "\n")
	}
	return sb.String()
}

// TestDestinationGuardBatchOnClock: SendBatch counts by the guard's clock
// as Send does, so its refusal says when the slot frees by that clock.
func TestDestinationGuardBatchOnClock(t *testing.T) {
	b, clock := setupClocked(t, func(c *Config) { c.DestinationLimit = 1 })
	ctx := context.Background()
	res := b.p.SendBatch(ctx, []Request{validRequest()})
	require.NoError(t, res[0].Err)
	clock.Advance(time.Minute)
	res = b.p.SendBatch(ctx, []Request{validRequest()})
	var dl *DestinationLimitError
	require.ErrorAs(t, res[0].Err, &dl)
	require.Equal(t, DefaultDestinationWindow-time.Minute, dl.RetryAfter, "measured on the guard's clock, not Redis's")
	clock.Advance(dl.RetryAfter)
	res = b.p.SendBatch(ctx, []Request{validRequest()})
	require.NoError(t, res[0].Err, "the slot frees when the guard's clock says so")
}
