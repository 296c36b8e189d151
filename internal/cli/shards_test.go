package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// otpq shards shows and changes the recorded count; send, status and
// bulk with another --shards (or OTPQ_SHARDS) refuse with exit 2 naming
// both counts, and enqueue nothing; with the recorded count they work and
// status finds the task in its shard.
func TestShardsCommand(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	r := b.run(t, ctx, "shards")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "shards:  1 per class (nothing recorded: one queue per class)")

	r = b.run(t, ctx, "shards", "4")
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Contains(t, r.stdout, "recorded 4 shards per class (was 1)")
	require.Contains(t, r.stdout, "shards:  4 per class (recorded in otpq:shards)")
	require.Contains(t, r.stdout, "counts:  1, 4")

	send := []string{"send", "--to", "+8618701235678", "--template", "t", "--code", canaryCode}
	r = b.run(t, ctx, send...)
	require.Equal(t, ExitUsage, r.code)
	require.Contains(t, r.stderr, "Redis records 4 shards per queue class (otpq:shards), but this process is set to 1")
	require.NotContains(t, r.stderr, canaryCode)
	require.Empty(t, r.stdout)
	for _, args := range [][]string{{"status", "x"}, {"bulk", "--shards", "2", "-"}} {
		r = b.run(t, ctx, args...)
		require.Equal(t, ExitUsage, r.code, args)
		require.Contains(t, r.stderr, "Redis records 4 shards", args)
	}
	keys, err := b.db.Client.Keys(ctx, "asynq:*").Result()
	require.NoError(t, err)
	require.Empty(t, keys, "nothing enqueued")

	b.env["OTPQ_SHARDS"] = "4"
	r = b.run(t, ctx, send...)
	require.Equal(t, ExitOK, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)
	r = b.run(t, ctx, "status", id)
	require.Equal(t, ExitOK, r.code, r.stderr)
	require.Regexp(t, `queue: +critical(-\w+)?\n`, r.stdout)

	for _, args := range [][]string{{"shards", "0"}, {"shards", "x"}, {"shards", "129"}, {"send", "--shards", "0"}, {"shards", "1", "2"}} {
		r = b.run(t, ctx, args...)
		require.Equal(t, ExitUsage, r.code, args)
	}
}
