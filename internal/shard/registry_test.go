package shard_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/shard"
)

// One shard on a Redis that records nothing is the old layout: accepted,
// and nothing is written.
func TestCheckOneShardWritesNothing(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	for _, n := range []int{0, 1} {
		l, err := shard.Check(ctx, db.Client, n)
		require.NoError(t, err)
		require.Equal(t, shard.Layout{Count: 1, Served: 1, Counts: []int{1}}, l)
	}
	keys, err := db.Client.Keys(ctx, "*").Result()
	require.NoError(t, err)
	require.Empty(t, keys)
}

// The first process with N > 1 records N; the same N is accepted after it,
// any other count is refused with both counts named.
func TestCheckRecordsThenRefusesAnother(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	l, err := shard.Check(ctx, db.Client, 4)
	require.NoError(t, err)
	require.Equal(t, shard.Layout{Count: 4, Served: 4, Counts: []int{4}, Recorded: true}, l)
	l, err = shard.Check(ctx, db.Client, 4)
	require.NoError(t, err)
	require.Equal(t, 4, l.Count)
	for _, n := range []int{0, 1, 16} {
		_, err = shard.Check(ctx, db.Client, n)
		var me *shard.MismatchError
		require.ErrorAs(t, err, &me)
		require.True(t, errors.Is(err, shard.ErrMismatch))
		require.Equal(t, 4, me.Recorded)
		require.Equal(t, max(n, 1), me.Configured)
		require.ErrorContains(t, err, "Redis records 4 shards per queue class")
		require.ErrorContains(t, err, "set --shards / OTPQ_SHARDS / Config.Shards to 4")
	}
}

// A Redis that already holds otpq's unsharded queues is not resharded by
// the first process that asks for more shards: only the explicit command
// changes it.
func TestCheckRefusesToShardExistingQueues(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	require.NoError(t, asynqstore.Publish(ctx, db.Client, "critical"))
	_, err := shard.Check(ctx, db.Client, 16)
	var me *shard.MismatchError
	require.ErrorAs(t, err, &me)
	require.True(t, me.Unrecorded)
	require.ErrorContains(t, err, "run `otpq shards 16` first")
	n, err := db.Client.Exists(ctx, shard.Key).Result()
	require.NoError(t, err)
	require.Zero(t, n, "nothing recorded")
	_, err = shard.Check(ctx, db.Client, 1)
	require.NoError(t, err)
	// Another application's queue does not count as otpq's.
	db2 := redistest.New(t)
	require.NoError(t, asynqstore.Publish(ctx, db2.Client, "emails"))
	_, err = shard.Check(ctx, db2.Client, 16)
	require.NoError(t, err)
}

// Set changes the count; served keeps the highest count ever set, so that
// lowering it strands nothing, and Queues lists where a task may be.
func TestSetKeepsServingEarlierShards(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	l, err := shard.Set(ctx, db.Client, 16)
	require.NoError(t, err)
	require.Equal(t, shard.Layout{Count: 16, Served: 16, Counts: []int{1, 16}, Recorded: true}, l)
	l, err = shard.Set(ctx, db.Client, 4)
	require.NoError(t, err)
	require.Equal(t, shard.Layout{Count: 4, Served: 16, Counts: []int{1, 16, 4}, Recorded: true}, l)
	_, err = shard.Check(ctx, db.Client, 16)
	require.ErrorIs(t, err, shard.ErrMismatch)
	l, err = shard.Check(ctx, db.Client, 4)
	require.NoError(t, err)
	require.Equal(t, 16, l.Served)
	// "task-1" is on shard 1 of 4, 5 of 16, 0 of 1: looked up in that order.
	require.Equal(t, []string{"critical-1dp", shard.Name("critical", 5), "critical"}, l.Queues("critical", "task-1"))
	l, err = shard.Set(ctx, db.Client, 16)
	require.NoError(t, err)
	require.Equal(t, []int{1, 4, 16}, l.Counts, "the current count last")
	_, err = shard.Set(ctx, db.Client, 0)
	require.ErrorContains(t, err, "must be from 1 to 128")
	_, err = shard.Set(ctx, db.Client, shard.MaxShards+1)
	require.Error(t, err)
}

// Two first processes with different counts racing: one records its
// count, the other is refused.
func TestCheckRaceOneWins(t *testing.T) {
	for range 8 {
		db := redistest.New(t)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, n := range []int{4, 8} {
			wg.Add(1)
			go func() { defer wg.Done(); _, errs[i] = shard.Check(context.Background(), db.Client, n) }()
		}
		wg.Wait()
		require.True(t, (errs[0] == nil) != (errs[1] == nil), "exactly one wins: %v", errs)
		for _, err := range errs {
			if err != nil {
				require.ErrorIs(t, err, shard.ErrMismatch)
			}
		}
	}
}

// A corrupt record is an error naming the key, not a silent default.
func TestReadCorruptRecord(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	require.NoError(t, db.Client.HSet(ctx, shard.Key, "count", "lots").Err())
	_, err := shard.Check(ctx, db.Client, 1)
	require.ErrorContains(t, err, `otpq:shards holds count "lots"`)
}
