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

// TestFetchLoopLayout: the default worker has one critical-only loop
// polling every PollInterval (what keeps an idle worker's critical latency
// far below asynq's 1 s poll) and Servers loops serving critical before
// bulk at IdlePollInterval; every concurrency slot is given out exactly
// once. make bench measures the latency this layout gives (BENCHMARKS.md).
func TestFetchLoopLayout(t *testing.T) {
	for _, c := range []struct{ concurrency, servers, fast int }{
		{100, 2, 10}, {1000, 2, 10}, {20, 3, 2}, {5, 8, 1}, {2, 1, 1},
	} {
		cfg, err := Config{Concurrency: c.concurrency, Servers: c.servers}.withDefaults()
		require.NoError(t, err)
		loops := fetchLoops(cfg)
		require.Equal(t, map[string]int{"critical": 1}, loops[0].queues, "first loop serves critical only")
		require.Equal(t, DefaultPollInterval, loops[0].poll)
		require.Equal(t, c.fast, loops[0].concurrency)
		require.Len(t, loops, 1+min(c.servers, c.concurrency-c.fast))
		total := loops[0].concurrency
		for _, l := range loops[1:] {
			require.Equal(t, map[string]int{"critical": 10, "bulk": 1}, l.queues)
			require.Equal(t, DefaultIdlePollInterval, l.poll)
			require.Positive(t, l.concurrency)
			total += l.concurrency
		}
		require.Equal(t, c.concurrency, total, "concurrency %d, servers %d", c.concurrency, c.servers)
	}
	cfg, err := Config{Concurrency: 1}.withDefaults()
	require.NoError(t, err)
	loops := fetchLoops(cfg)
	require.Len(t, loops, 1, "one slot: one loop for both queues")
	require.Equal(t, DefaultPollInterval, loops[0].poll)
	require.Equal(t, map[string]int{"critical": 10, "bulk": 1}, loops[0].queues)
}
