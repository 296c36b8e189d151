package producer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/task"
)

// setupBatch is setup with the destination guard off, so that tests can
// repeat validRequest's destination.
func setupBatch(t *testing.T) bundle {
	t.Helper()
	b := setup(t)
	p, err := New(Config{RedisURL: b.db.URL(), Now: func() time.Time { return b.now }, DestinationLimit: -1})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	b.p = p
	return b
}

// TestSendBatchStoresWhatSendStores: Send and SendItems write the same
// task (asynqstore's parity tests compare it with asynq.Client's) and the
// same code key, delayed sends included.
func TestSendBatchStoresWhatSendStores(t *testing.T) {
	b := setupBatch(t)
	ctx := context.Background()
	for _, opts := range [][]Option{{Queue(QueueBulk)}, {Delay(time.Minute), MaxRetry(2)}} {
		q := QueueBulk
		if len(opts) == 2 {
			q = QueueCritical
		}
		_, err := b.p.Send(ctx, validRequest(), append(opts, DedupKey("by-send1"))...)
		require.NoError(t, err)
		res := b.p.SendItems(ctx, []BatchItem{{Request: validRequest(), Options: []Option{DedupKey("by-batch")}}}, opts...)
		require.NoError(t, res[0].Err)
		require.Equal(t, "by-batch", res[0].ID)

		bySend, err := b.db.Client.HGetAll(ctx, asynqstore.TaskKey(q, "by-send1")).Result()
		require.NoError(t, err)
		byBatch, err := b.db.Client.HGetAll(ctx, asynqstore.TaskKey(q, "by-batch")).Result()
		require.NoError(t, err)
		require.NotEmpty(t, bySend["msg"])
		byBatch["msg"] = strings.Replace(byBatch["msg"], "by-batch", "by-send1", 1)
		delete(bySend, "pending_since") // the enqueue time in nanoseconds
		delete(byBatch, "pending_since")
		require.Equal(t, bySend, byBatch, "same fields, same message but for the ID")
		for _, id := range []string{"by-send1", "by-batch"} {
			v, err := b.db.Client.Get(ctx, asynqstore.CodeKey(q, id)).Result()
			require.NoError(t, err)
			require.Equal(t, task.CodeValue(canary), v)
		}
		queues, err := b.db.Client.SMembers(ctx, asynqstore.AllQueues).Result()
		require.NoError(t, err)
		require.Contains(t, queues, q)

		info, err := b.ins.GetTaskInfo(q, "by-batch")
		require.NoError(t, err)
		require.Equal(t, task.TypeSend, info.Type)
		require.Equal(t, DefaultRetention, info.Retention)
		require.Equal(t, DefaultExpiry-time.Duration(len(opts)-1)*time.Minute, info.Timeout)
		if len(opts) == 2 {
			require.Equal(t, asynq.TaskStateScheduled, info.State)
			require.Equal(t, 2, info.MaxRetry)
		} else {
			require.Equal(t, asynq.TaskStatePending, info.State)
			require.Equal(t, DefaultMaxRetry, info.MaxRetry)
		}
		p, err := task.Decode(info.Payload)
		require.NoError(t, err)
		require.Empty(t, p.Code)
	}
}

func TestSendBatchResultPerRequest(t *testing.T) {
	b := setupBatch(t)
	ctx := context.Background()
	_, err := b.p.Send(ctx, validRequest(), Queue(QueueBulk), DedupKey("already"))
	require.NoError(t, err)

	bad := validRequest()
	bad.To = "12345"
	badLang := validRequest()
	badLang.Language = "fr"
	items := []BatchItem{
		{Request: validRequest()},
		{Request: bad},
		{Request: validRequest(), Options: []Option{DedupKey("already")}},
		{Request: validRequest(), Options: []Option{DedupKey("fresh")}},
		{Request: validRequest(), Options: []Option{DedupKey("fresh")}}, // twice in the same batch
		{Request: badLang},
		{Request: validRequest(), Options: []Option{DedupKey("bad key")}},
		{Request: validRequest(), Options: []Option{Delay(time.Minute)}},
	}
	res := b.p.SendItems(ctx, items, Queue(QueueBulk))
	require.Len(t, res, len(items))

	require.NoError(t, res[0].Err)
	require.NotEmpty(t, res[0].ID)
	fieldOf := func(err error) string {
		var ve *ValidationError
		require.ErrorAs(t, err, &ve)
		require.ErrorIs(t, err, ErrInvalid)
		require.NotContains(t, err.Error(), canary)
		return ve.Field
	}
	require.Equal(t, "to", fieldOf(res[1].Err))
	require.ErrorIs(t, res[2].Err, ErrDuplicate)
	require.Equal(t, "already", res[2].ID)
	require.NoError(t, res[3].Err)
	require.Equal(t, "fresh", res[3].ID)
	require.ErrorIs(t, res[4].Err, ErrDuplicate)
	require.Equal(t, "fresh", res[4].ID)
	var de *DuplicateError
	require.ErrorAs(t, res[4].Err, &de, "a key repeated within the batch gets the same typed error as Send")
	require.Equal(t, "fresh", de.ID)
	require.Equal(t, "language", fieldOf(res[5].Err))
	require.Equal(t, "id", fieldOf(res[6].Err))
	require.NoError(t, res[7].Err)

	q, err := b.ins.GetQueueInfo(QueueBulk)
	require.NoError(t, err)
	require.Equal(t, 3, q.Pending, "already, the first valid request and fresh")
	require.Equal(t, 1, q.Scheduled, "the delayed one")
	info, err := b.ins.GetTaskInfo(QueueBulk, res[7].ID)
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateScheduled, info.State)
}

func TestSendBatchManyAcrossPipelines(t *testing.T) {
	b := setupBatch(t)
	ctx := context.Background()
	n := BatchPipelineSize*BatchPipelines*2 + 17
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = validRequest()
		reqs[i].To = fmt.Sprintf("+86187%08d", i)
	}
	res := b.p.SendBatch(ctx, reqs)
	ids := map[string]bool{}
	for i, r := range res {
		require.NoError(t, r.Err, i)
		ids[r.ID] = true
	}
	require.Len(t, ids, n, "one distinct task per request")
	q, err := b.ins.GetQueueInfo(QueueCritical)
	require.NoError(t, err)
	require.Equal(t, n, q.Pending)
	info, err := b.ins.GetTaskInfo(QueueCritical, res[n-1].ID)
	require.NoError(t, err)
	p, err := task.Decode(info.Payload)
	require.NoError(t, err)
	require.Equal(t, reqs[n-1].To, p.To)

	// The same batch again with keys: nothing is enqueued twice.
	items := make([]BatchItem, n)
	for i := range items {
		items[i] = BatchItem{Request: reqs[i], Options: []Option{DedupKey(fmt.Sprintf("k-%d", i))}}
	}
	for _, r := range b.p.SendItems(ctx, items, Queue(QueueBulk)) {
		require.NoError(t, r.Err)
	}
	for _, r := range b.p.SendItems(ctx, items, Queue(QueueBulk)) {
		require.ErrorIs(t, r.Err, ErrDuplicate)
	}
	q, err = b.ins.GetQueueInfo(QueueBulk)
	require.NoError(t, err)
	require.Equal(t, n, q.Pending)
}

// A batch-enqueued task is fetched and handled by a stock asynq server.
func TestSendBatchTasksAreProcessedByAsynq(t *testing.T) {
	b := setupBatch(t)
	ctx := context.Background()
	res := b.p.SendBatch(ctx, []Request{validRequest(), validRequest()}, Queue(QueueBulk))
	got := make(chan string, 2)
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: b.db.Addr, DB: b.db.Number}, asynq.Config{
		Queues: map[string]int{QueueBulk: 1}, TaskCheckInterval: 10 * time.Millisecond, LogLevel: asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(task.TypeSend, func(ctx context.Context, at *asynq.Task) error {
		p, err := task.Decode(at.Payload())
		if err != nil {
			return err
		}
		id, _ := asynq.GetTaskID(ctx)
		got <- id + " " + p.To
		return nil
	})
	require.NoError(t, srv.Start(mux))
	defer srv.Shutdown()
	var seen []string
	for range 2 {
		select {
		case s := <-got:
			seen = append(seen, s)
		case <-time.After(10 * time.Second):
			t.Fatal("asynq did not process the batch-enqueued tasks")
		}
	}
	require.ElementsMatch(t, []string{res[0].ID + " " + validRequest().To, res[1].ID + " " + validRequest().To}, seen)
}

// The per-destination guard counts batch sends as it counts Send's, and a
// duplicate gives its slot back.
func TestSendBatchDestinationLimit(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	p, err := New(Config{RedisURL: b.db.URL(), DestinationLimit: 3})
	require.NoError(t, err)
	defer p.Close()
	items := make([]BatchItem, 5)
	for i := range items {
		items[i] = BatchItem{Request: validRequest(), Options: []Option{DedupKey(fmt.Sprintf("g-%d", i))}}
	}
	items[1].Options = items[0].Options // a duplicate: must not use up the budget
	res := p.SendItems(ctx, items)
	require.NoError(t, res[0].Err)
	require.ErrorIs(t, res[1].Err, ErrDuplicate)
	var limited []int
	for i, r := range res[2:] {
		if errors.Is(r.Err, ErrDestinationLimited) {
			limited = append(limited, i+2)
			require.NotContains(t, r.Err.Error(), validRequest().To, "destination is masked")
		} else {
			require.NoError(t, r.Err)
		}
	}
	require.Len(t, limited, 1, "3 of 4 distinct sends fit the limit of 3: %v", res)
	_, err = p.Send(ctx, validRequest())
	require.ErrorIs(t, err, ErrDestinationLimited, "Send and SendItems share the budget")
}

func TestSendBatchRedisDown(t *testing.T) {
	p, err := New(Config{RedisURL: "redis://127.0.0.1:1/0"})
	require.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bad := validRequest()
	bad.Code = ""
	res := p.SendBatch(ctx, []Request{validRequest(), bad})
	require.Error(t, res[0].Err)
	require.False(t, errors.Is(res[0].Err, ErrInvalid))
	require.NotContains(t, res[0].Err.Error(), canary)
	require.ErrorIs(t, res[1].Err, ErrInvalid)
}

func BenchmarkSendBatch(b *testing.B) {
	p, err := New(Config{RedisURL: redistest.New(b).URL(), DestinationLimit: -1})
	require.NoError(b, err)
	defer p.Close()
	reqs := make([]Request, 1000)
	for i := range reqs {
		reqs[i] = validRequest()
	}
	b.ResetTimer()
	for range b.N / len(reqs) {
		for _, r := range p.SendBatch(context.Background(), reqs, Queue(QueueBulk)) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
}

// BenchmarkSendBatchGuarded is SendBatch with the default per-destination
// guard, one destination per request (as in a bulk campaign).
func BenchmarkSendBatchGuarded(b *testing.B) {
	p, err := New(Config{RedisURL: redistest.New(b).URL()})
	require.NoError(b, err)
	defer p.Close()
	reqs := make([]Request, 1000)
	b.ResetTimer()
	n := 0
	for range b.N / len(reqs) {
		for i := range reqs {
			reqs[i] = validRequest()
			reqs[i].To = fmt.Sprintf("+1555%07d", n)
			n++
		}
		for _, r := range p.SendBatch(context.Background(), reqs, Queue(QueueBulk)) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
}

func BenchmarkSend(b *testing.B) {
	p, err := New(Config{RedisURL: redistest.New(b).URL(), DestinationLimit: -1})
	require.NoError(b, err)
	defer p.Close()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := p.Send(context.Background(), validRequest(), Queue(QueueBulk)); err != nil {
				b.Error(err)
			}
		}
	})
}
