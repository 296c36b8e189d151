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
