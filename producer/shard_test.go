package producer

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/shard"
)

// With Shards 4, Send and SendItems put each task in the shard its ID
// routes to, a repeated DedupKey is refused on its shard (within a batch
// and across calls), and Status finds every task; the shard queues are
// published for the UI.
func TestShardedSendAndStatus(t *testing.T) {
	db := redistest.New(t)
	ctx := context.Background()
	p, err := New(Config{RedisURL: db.URL(), Shards: 4, DestinationLimit: -1})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	var items []BatchItem
	for i := range 64 {
		req := validRequest()
		req.To = fmt.Sprintf("+1555%07d", i)
		items = append(items, BatchItem{Request: req, Options: []Option{DedupKey(fmt.Sprintf("k%d", i))}})
	}
	items = append(items, BatchItem{Request: validRequest(), Options: []Option{DedupKey("k3")}})
	res := p.SendItems(ctx, items, Queue(QueueBulk))
	for i, r := range res[:64] {
		require.NoError(t, r.Err, i)
	}
	require.ErrorIs(t, res[64].Err, ErrDuplicate)
	id, err := p.Send(ctx, validRequest(), DedupKey("k5"), Queue(QueueBulk))
	require.ErrorIs(t, err, ErrDuplicate)
	require.Equal(t, "k5", id)
	total := int64(0)
	for _, q := range shard.Names(QueueBulk, 4) {
		n, err := db.Client.LLen(ctx, asynqstore.PendingKey(q)).Result()
		require.NoError(t, err)
		require.Positive(t, n, "shard %s holds tasks", q)
		total += n
	}
	require.EqualValues(t, 64, total)
	for i := range 64 {
		st, err := p.Status(ctx, fmt.Sprintf("k%d", i))
		require.NoError(t, err)
		require.Equal(t, shard.Queue(QueueBulk, st.ID, 4), st.Queue)
		require.Equal(t, StatePending, st.State)
	}
	id, err = p.Send(ctx, validRequest())
	require.NoError(t, err)
	st, err := p.Status(ctx, id)
	require.NoError(t, err)
	require.Equal(t, shard.Queue(QueueCritical, id, 4), st.Queue)
	queues, err := db.Client.SMembers(ctx, asynqstore.AllQueues).Result()
	require.NoError(t, err)
	require.Subset(t, append(shard.Names(QueueBulk, 4), shard.Names(QueueCritical, 4)...), queues)
	require.Contains(t, queues, st.Queue)

	// A producer with another count refuses before enqueueing anything.
	p8, err := New(Config{RedisURL: db.URL(), Shards: 8})
	require.NoError(t, err)
	t.Cleanup(func() { p8.Close() })
	_, err = p8.Send(ctx, validRequest())
	require.ErrorIs(t, err, ErrShardMismatch)
	for _, r := range p8.SendBatch(ctx, []Request{validRequest()}) {
		require.ErrorIs(t, r.Err, ErrShardMismatch)
	}
	_, err = p8.Status(ctx, id)
	require.ErrorIs(t, err, ErrShardMismatch)
	_, err = New(Config{RedisURL: db.URL(), Shards: shard.MaxShards + 1})
	require.ErrorContains(t, err, "Shards 129")
}
