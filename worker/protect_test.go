package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/sealing"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// maxInWindow is the most receipts within any window of length d.
func maxInWindow(rc []fakeengagelab.Receipt, d time.Duration) int {
	at := make([]time.Time, len(rc))
	for i, r := range rc {
		at[i] = r.At
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	best, j := 0, 0
	for i := range at {
		for at[j].Add(d).Before(at[i]) || at[j].Add(d).Equal(at[i]) {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// TestRateLimitSharedAcrossWorkers: three workers on one Redis with a
// global limit of 50/s: the provider never sees more than limit + burst in
// any one-second window, and no task spends a retry on waiting.
func TestRateLimitSharedAcrossWorkers(t *testing.T) {
	const limit, burst, n = 50, 5, 200
	var cfg worker.Config
	b := setupStopped(t, func(c *worker.Config) {
		c.RateLimit, c.RateBurst, c.MaxRetry = limit, burst, -1 // a counted retry would dead-letter
		cfg = *c
	})
	ws := []*worker.Worker{b.worker}
	for range 2 {
		w, err := worker.New(cfg)
		require.NoError(t, err)
		t.Cleanup(w.Shutdown)
		ws = append(ws, w)
	}
	var ids []string
	for i := range n {
		ids = append(ids, b.send(t, fmt.Sprintf("+1555100%04d", i)))
	}
	for _, w := range ws {
		require.NoError(t, w.Start())
	}
	for _, id := range ids {
		require.Equal(t, asynq.TaskStateCompleted, b.waitFinal(t, producer.QueueCritical, id).State)
	}
	rc := b.fake.Receipts()
	require.Len(t, rc, n, "exactly one provider call per task")
	peak := maxInWindow(rc, time.Second)
	span := rc[len(rc)-1].At.Sub(rc[0].At)
	t.Logf("rate limit %d/s burst %d, 3 workers x 8: %d sends in %s = %.1f/s; busiest 1s window %d",
		limit, burst, n, span.Round(time.Millisecond), float64(n-1)/span.Seconds(), peak)
	// The limiter spaces the starts of requests; the provider stamps their
	// arrival, which scheduling and network jitter (tens of ms on a loaded
	// 2-core machine under -race) can bunch up. Allowed: limit + burst, plus
	// what 100ms of jitter can add (limit/10).
	require.LessOrEqual(t, peak, limit+burst+limit/10)
	// Over the whole run the provider saw the limit, not the workers' speed
	// (3 x 8 in flight against a fake answering at once would be >1000/s).
	require.Less(t, float64(n-1)/span.Seconds(), 1.25*limit)
}

// TestRateLimitThrottleDoesNotSpendRetries: with a slow limit and a short
// in-handler wait, tasks go back to asynq as throttles; with retries
// disabled, every one is still delivered, on its first counted attempt.
func TestRateLimitThrottleDoesNotSpendRetries(t *testing.T) {
	b := setupStopped(t, func(c *worker.Config) {
		c.RateLimit, c.RateBurst, c.MaxRateWait, c.MaxRetry = 4, 1, 50*time.Millisecond, -1
	})
	var ids []string
	for i := range 6 {
		ids = append(ids, b.send(t, fmt.Sprintf("+1555200%04d", i)))
	}
	require.NoError(t, b.worker.Start())
	for _, id := range ids {
		require.Equal(t, asynq.TaskStateCompleted, b.waitFinal(t, producer.QueueCritical, id).State)
		st, err := b.producer.Status(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, 1, st.Attempts)
	}
	require.Equal(t, 6, b.fake.Total())
	require.Contains(t, b.logs.String(), `"outcome":"throttle"`)
	require.Contains(t, b.logs.String(), "rate limited: next send slot in")
}

func TestRateLimitConfigChecked(t *testing.T) {
	_, err := worker.New(worker.Config{DevKey: "k", DevSecret: "s", RateLimit: -1})
	require.ErrorContains(t, err, "RateLimit")
}

// keyedProducer is a producer of b's Redis that seals with keys.
func keyedProducer(t *testing.T, b bundle, keys string) *producer.Producer {
	t.Helper()
	p, err := producer.New(producer.Config{RedisURL: b.db.URL(), PayloadKeys: keys})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	return p
}

func TestSealedCodeDeliveredAcrossKeyRotation(t *testing.T) {
	k1, err := sealing.GenerateKey("k1")
	require.NoError(t, err)
	k2, err := sealing.GenerateKey("k2")
	require.NoError(t, err)
	// The worker already rotated to k2 and keeps k1 to open old tasks.
	b := setup(t, func(c *worker.Config) { c.PayloadKeys = k2 + "," + k1 })
	ctx := context.Background()
	for _, keys := range []string{k1, k2} {
		p := keyedProducer(t, b, keys)
		to := "+15553" + keys[1:2] + "00001"
		id, err := p.Send(ctx, producer.Request{To: to, Code: canaryCode, TemplateID: "login"})
		require.NoError(t, err)
		require.Equal(t, asynq.TaskStateCompleted, b.waitFinal(t, producer.QueueCritical, id).State)
		require.Equal(t, 1, b.fake.Delivered(to))
	}
	for _, r := range b.fake.Receipts() {
		require.Equal(t, canaryCode, r.Code, "the provider gets the plaintext code")
	}
	require.NotContains(t, b.logs.String(), "OTPQ_PAYLOAD_KEY is not set")
}

// TestSealedCodeWithoutKey: a worker lacking the key does not dead-letter
// the task at once (another worker may hold the key): it retries until the
// code expires, and never sends. It warns at start.
func TestSealedCodeWithoutKey(t *testing.T) {
	k1, err := sealing.GenerateKey("k1")
	require.NoError(t, err)
	b := setup(t, nil)
	id, err := keyedProducer(t, b, k1).Send(context.Background(), producer.Request{To: "+15554000001", Code: canaryCode, TemplateID: "login"},
		producer.ExpiresIn(1500*time.Millisecond))
	require.NoError(t, err)
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.Contains(t, info.LastErr, "expired")
	require.Contains(t, b.logs.String(), `unknown payload key \"k1\"`)
	require.Contains(t, b.logs.String(), `"outcome":"retry"`)
	require.Zero(t, b.fake.Total())
	require.Contains(t, b.logs.String(), "OTPQ_PAYLOAD_KEY is not set")
}

// TestSealedCodeTampered: a sealed code moved to another destination's
// payload fails authentication: dead-lettered as a bad payload, not sent.
func TestSealedCodeTampered(t *testing.T) {
	k1, err := sealing.GenerateKey("k1")
	require.NoError(t, err)
	kr, err := sealing.Parse(k1)
	require.NoError(t, err)
	b := setup(t, func(c *worker.Config) { c.PayloadKeys = k1 })
	sealed, err := kr.Seal(canaryCode, "+15555000001")
	require.NoError(t, err)
	payload, err := task.Encode(task.Payload{To: "+15555000002", Sealed: sealed, Template: task.Template{ID: "t"},
		ExpiresAt: time.Now().Add(time.Minute), CreatedAt: time.Now()})
	require.NoError(t, err)
	final := b.enqueueRaw(t, payload)
	require.Equal(t, asynq.TaskStateArchived, final.State)
	require.Contains(t, final.LastErr, "bad payload")
	require.Contains(t, final.LastErr, "authentication")
	require.Zero(t, b.fake.Total())
}

// storedMsg is the raw asynq message of a task as stored in Redis.
func storedMsg(t *testing.T, b bundle, queue, id string) string {
	t.Helper()
	s, err := b.db.Client.HGet(context.Background(), "asynq:{"+queue+"}:t:"+id, "msg").Result()
	require.NoError(t, err)
	return s
}

// TestScrubFinishedTasks: a delivered task loses its code at once, a dead
// letter when its code expires (not before: an operator may still re-run
// it); the rest of the stored task (destination, archive reason, result)
// stays for operators, and a re-run of a scrubbed dead letter cannot send.
func TestScrubFinishedTasks(t *testing.T) {
	b := setup(t, func(c *worker.Config) { c.ScrubInterval = 50 * time.Millisecond })
	// As after a Redis restart: the scrub script is not cached on the server.
	require.NoError(t, b.db.Client.ScriptFlush(context.Background()).Err())
	b.fake.SetRules(fakeengagelab.Rule{To: "+15556000001", Code: 5013}, fakeengagelab.Rule{To: "+15556000003", Code: 5013})
	const shortLife = 3 * time.Second
	dead := b.send(t, "+15556000001", producer.ExpiresIn(shortLife))
	sent := time.Now()
	live := b.send(t, "+15556000003") // default expiry: 5 minutes
	ok := b.send(t, "+15556000002")
	require.Equal(t, asynq.TaskStateArchived, b.waitFinal(t, producer.QueueCritical, dead).State)
	require.Equal(t, asynq.TaskStateArchived, b.waitFinal(t, producer.QueueCritical, live).State)
	require.Equal(t, asynq.TaskStateCompleted, b.waitFinal(t, producer.QueueCritical, ok).State)

	require.Eventually(t, func() bool { return !strings.Contains(storedMsg(t, b, producer.QueueCritical, ok), canaryCode) },
		5*time.Second, 20*time.Millisecond, "the delivered task keeps its code")
	if time.Since(sent) < shortLife-500*time.Millisecond {
		require.Contains(t, storedMsg(t, b, producer.QueueCritical, dead), canaryCode, "a dead letter loses its code before it expires")
	}
	require.Eventually(t, func() bool { return !strings.Contains(storedMsg(t, b, producer.QueueCritical, dead), canaryCode) },
		shortLife+5*time.Second, 20*time.Millisecond, "the dead letter keeps its code after expiry")
	require.Contains(t, storedMsg(t, b, producer.QueueCritical, live), canaryCode, "a dead letter whose code is live keeps it for a re-run")

	for _, id := range []string{dead, ok} {
		info, err := b.ins.GetTaskInfo(producer.QueueCritical, id)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(info.Payload, &m))
		require.Equal(t, true, m["scrubbed"])
		require.NotEmpty(t, m["to"])
	}
	info, err := b.ins.GetTaskInfo(producer.QueueCritical, dead)
	require.NoError(t, err)
	require.Contains(t, info.LastErr, "engagelab 5013", "the archive reason survives scrubbing")
	st, err := b.producer.Status(context.Background(), ok)
	require.NoError(t, err)
	require.NotEmpty(t, st.MessageID, "the result survives scrubbing")

	// An operator re-runs the scrubbed dead letter: it cannot go out again.
	require.NoError(t, b.ins.RunTask(producer.QueueCritical, dead))
	require.Eventually(t, func() bool {
		info, err := b.ins.GetTaskInfo(producer.QueueCritical, dead)
		return err == nil && info.State == asynq.TaskStateArchived && strings.Contains(info.LastErr, "scrubbed")
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 1, b.fake.Count("+15556000001"))
}

// TestScrubSweepAtStart: tasks finished while no worker scrubbed them (an
// operator archived them, a worker died) are found by the next worker's
// start-up sweep: an expired dead letter is scrubbed at once, a live one
// when its code expires.
func TestScrubSweepAtStart(t *testing.T) {
	b := setupStopped(t, func(c *worker.Config) { c.ScrubInterval = 50 * time.Millisecond })
	expired := b.send(t, "+15557000001", producer.ExpiresIn(time.Second))
	soon := b.send(t, "+15557000002", producer.ExpiresIn(4*time.Second))
	soonSent := time.Now()
	for _, id := range []string{expired, soon} {
		require.NoError(t, b.ins.ArchiveTask(producer.QueueCritical, id))
		require.Contains(t, storedMsg(t, b, producer.QueueCritical, id), canaryCode)
	}
	time.Sleep(1100 * time.Millisecond)
	require.NoError(t, b.worker.Start())
	require.Eventually(t, func() bool { return !strings.Contains(storedMsg(t, b, producer.QueueCritical, expired), canaryCode) },
		5*time.Second, 20*time.Millisecond)
	if time.Since(soonSent) < 3500*time.Millisecond {
		require.Contains(t, storedMsg(t, b, producer.QueueCritical, soon), canaryCode, "a live dead letter is scrubbed before it expires")
	}
	require.Eventually(t, func() bool { return !strings.Contains(storedMsg(t, b, producer.QueueCritical, soon), canaryCode) },
		10*time.Second, 20*time.Millisecond, "the live dead letter found by the sweep is scrubbed when it expires")
	require.Zero(t, b.fake.Total())
}

// TestAmbiguousThen3004: the first attempt times out after the request was
// sent; the retry gets 3004 (a code was already sent to this user): the
// task is dead-lettered as likely delivered, not as a plain failure.
func TestAmbiguousThen3004(t *testing.T) {
	b := setup(t, func(c *worker.Config) { c.HTTPTimeout = 300 * time.Millisecond })
	to := "+15558000001"
	b.fake.SetRules(fakeengagelab.Rule{To: to, Hang: true, Times: 1}, fakeengagelab.Rule{To: to, Code: 3004})
	id := b.send(t, to)
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.True(t, strings.HasPrefix(info.LastErr, "likely delivered by an earlier attempt: engagelab 3004: "), info.LastErr)
	require.Contains(t, b.logs.String(), `"outcome":"delivered_likely"`)
	require.Equal(t, 2, b.fake.Count(to))

	// Without an ambiguous attempt before it, 3004 is a plain rejection.
	other := "+15558000002"
	b.fake.SetRules(fakeengagelab.Rule{To: other, Code: 3004})
	info = b.waitFinal(t, producer.QueueCritical, b.send(t, other))
	require.True(t, strings.HasPrefix(info.LastErr, "engagelab 3004: "), info.LastErr)
}

// crash leaves task id as a worker killed mid-send would: active, with a
// lease that ran out a minute ago (asynq's recoverer waits 30s past it).
func crash(t *testing.T, b bundle, id string) {
	t.Helper()
	ctx := context.Background()
	q := "asynq:{" + producer.QueueCritical + "}:"
	c := b.db.Client
	require.EqualValues(t, 1, c.LRem(ctx, q+"pending", 0, id).Val())
	require.NoError(t, c.LPush(ctx, q+"active", id).Err())
	require.NoError(t, c.ZAdd(ctx, q+"lease", redis.Z{Score: float64(time.Now().Add(-time.Minute).Unix()), Member: id}).Err())
	require.NoError(t, c.HSet(ctx, q+"t:"+id, "state", "active").Err())
}

// TestCrashRedelivery: a task whose worker died mid-send is retried by the
// next worker after RetryMinDelay (not asynq's exponential default), and a
// code that expired meanwhile is not sent.
func TestCrashRedelivery(t *testing.T) {
	b := setupStopped(t, func(c *worker.Config) { c.RetryMinDelay, c.RetryMaxDelay = 100*time.Millisecond, time.Minute })
	live := b.send(t, "+15559000001")
	stale := b.send(t, "+15559000002", producer.ExpiresIn(300*time.Millisecond))
	crash(t, b, live)
	crash(t, b, stale)
	time.Sleep(400 * time.Millisecond) // stale's code expires while nobody holds it
	require.NoError(t, b.worker.Start())
	// The recoverer schedules the retry with the short delay: asynq's own
	// default would be 15-45s away.
	var retry *asynq.TaskInfo
	require.Eventually(t, func() bool {
		info, err := b.ins.GetTaskInfo(producer.QueueCritical, live)
		if err == nil && info.State == asynq.TaskStateRetry {
			retry = info
		}
		return retry != nil
	}, 10*time.Second, 2*time.Millisecond)
	require.Contains(t, retry.LastErr, "lease expired")
	require.Less(t, time.Until(retry.NextProcessAt), 3*time.Second)
	info := b.waitFinal(t, producer.QueueCritical, live)
	require.Equal(t, asynq.TaskStateCompleted, info.State)
	require.Equal(t, 1, b.fake.Count("+15559000001"))
	info = b.waitFinal(t, producer.QueueCritical, stale)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.Contains(t, info.LastErr, "expired")
	require.Zero(t, b.fake.Count("+15559000002"), "an expired code is never sent")
}
