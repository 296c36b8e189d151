package worker

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConfigWithDefaults: the zero Config reads as the documented defaults,
// and a bad Config is refused by the pure step, before any Redis client.
func TestConfigWithDefaults(t *testing.T) {
	cfg, err := Config{}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, DefaultConcurrency, cfg.Concurrency)
	require.Equal(t, runtime.GOMAXPROCS(0), cfg.Servers)
	require.Equal(t, DefaultMaxRetry, cfg.MaxRetry)
	require.Equal(t, DefaultRetryMinDelay, cfg.RetryMinDelay)
	require.Equal(t, DefaultRetryMaxDelay, cfg.RetryMaxDelay)
	require.Equal(t, DefaultHTTPTimeout, cfg.HTTPTimeout)
	require.Equal(t, DefaultPollInterval, cfg.PollInterval)
	require.Equal(t, DefaultIdlePollInterval, cfg.IdlePollInterval)
	require.Equal(t, DefaultHTTPTimeout+5*time.Second, cfg.ShutdownTimeout)
	require.NotNil(t, cfg.Logger)
	require.NotNil(t, cfg.Now)

	cfg, err = Config{MaxRetry: -1}.withDefaults()
	require.NoError(t, err)
	require.Zero(t, cfg.MaxRetry, "negative: no retries")

	for field, bad := range map[string]Config{
		"RetryMaxDelay": {RetryMinDelay: time.Minute, RetryMaxDelay: time.Second},
		"RateLimit":     {RateLimit: -1},
		"RateBurst":     {RateBurst: -1},
	} {
		_, err := bad.withDefaults()
		require.ErrorContains(t, err, field)
		_, err = New(bad)
		require.ErrorContains(t, err, field, "New refuses it before opening Redis")
	}
}

// TestFetchLoopLayout: the default worker has Servers loops per queue,
// each serving its queue alone; the first critical loop polls every
// PollInterval (what keeps an idle worker's critical latency far below
// asynq's 1 s poll), every other loop at IdlePollInterval; each queue's
// loops share Concurrency, every slot given out exactly once. make bench
// measures the latency this layout gives (BENCHMARKS.md).
func TestFetchLoopLayout(t *testing.T) {
	for _, c := range []struct{ concurrency, servers, loops int }{
		{100, 2, 2}, {1000, 2, 2}, {20, 3, 3}, {5, 8, 5}, {2, 1, 1}, {1, 4, 1},
	} {
		cfg, err := Config{Concurrency: c.concurrency, Servers: c.servers}.withDefaults()
		require.NoError(t, err)
		loops := fetchLoops(cfg)
		require.Len(t, loops, 2*c.loops)
		total := map[string]int{}
		for i, l := range loops {
			require.Len(t, l.queues, 1, "one queue per loop")
			q := "critical"
			if i >= c.loops {
				q = "bulk"
			}
			require.Equal(t, map[string]int{q: 1}, l.queues)
			poll := DefaultIdlePollInterval
			if i == 0 {
				poll = DefaultPollInterval
			}
			require.Equal(t, poll, l.poll, "loop %d", i)
			require.Positive(t, l.concurrency)
			total[q] += l.concurrency
		}
		require.Equal(t, map[string]int{"critical": c.concurrency, "bulk": c.concurrency}, total,
			"concurrency %d, servers %d", c.concurrency, c.servers)
	}
}

// The critical loop's poll is the documented 10 ms, and asynq gets it as
// the interval at which an idle loop looks for a task (the design target
// is ~15 ms idle latency; TestIdleLatency's bound is far looser). Fails
// with the critical loop polling at 250 ms (DefaultPollInterval or the
// loop's TaskCheckInterval): checked.
func TestCriticalLoopPollsEvery10ms(t *testing.T) {
	require.Equal(t, 10*time.Millisecond, DefaultPollInterval)
	require.Equal(t, 250*time.Millisecond, DefaultIdlePollInterval)
	cfg, err := Config{Concurrency: 100}.withDefaults()
	require.NoError(t, err)
	loops := fetchLoops(cfg)
	require.Equal(t, 10*time.Millisecond, loops[0].asynqConfig(cfg).TaskCheckInterval)
	for _, l := range loops[1:] {
		require.Equal(t, 250*time.Millisecond, l.asynqConfig(cfg).TaskCheckInterval)
	}
	for _, l := range loops {
		ac := l.asynqConfig(cfg)
		require.True(t, ac.StrictPriority)
		require.Equal(t, l.concurrency, ac.Concurrency)
		require.Equal(t, l.queues, ac.Queues)
	}
}
