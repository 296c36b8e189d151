package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/internal/task"
)

// ErrCallbackExposed is returned by CheckCallbackExposure.
var ErrCallbackExposed = errors.New("refusing to receive callbacks unverified on a non-loopback address")

// CheckCallbackExposure refuses a non-loopback address for the callback
// route when c verifies nothing: anyone could then forge delivery receipts.
func CheckCallbackExposure(addr string, c receipts.Credentials) error {
	if c.Verifies() || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: %s can be reached from other machines; set OTPQ_CALLBACK_USER and OTPQ_CALLBACK_SECRET (the username/secret of the EngageLab callback), and/or OTPQ_CALLBACK_AUTHORIZATION, or listen on 127.0.0.1", ErrCallbackExposed, addr)
}

// receiptLookupTimeout bounds the receipt lookup of one shown result: the
// UI must stay usable when Redis is slow.
const receiptLookupTimeout = 500 * time.Millisecond

// formatResult is the UI's result formatter: FormatResult plus the delivery
// receipt found through the result's message_id. asynqmon gives the
// formatter no task ID or queue, so the receipt is found through the
// message_id link, looked up in every queue workers serve (each shard of
// critical and bulk) in one pipeline: one round trip on a single Redis, one
// per master holding a shard on a Cluster.
func (s *Server) formatResult(taskType string, result []byte) string {
	var r task.Result
	if json.Unmarshal(result, &r) != nil || r.MessageID == "" {
		return FormatResult(taskType, result)
	}
	ctx, cancel := context.WithTimeout(context.Background(), receiptLookupTimeout)
	defer cancel()
	queues := s.servedQueues(ctx)
	pipe := s.rdb.Pipeline()
	gets := make([]*redis.StringCmd, len(queues))
	for i, q := range queues {
		gets[i] = pipe.Get(ctx, receipts.LinkKey(q, r.MessageID))
	}
	_, _ = pipe.Exec(ctx) // each GET keeps its own answer or error
	for _, g := range gets {
		v, err := g.Result()
		if err != nil {
			continue
		}
		l, err := receipts.DecodeLink(v)
		if err != nil {
			continue
		}
		rc, err := receipts.Load(ctx, s.rdb, l.Queue, l.TaskID)
		if err != nil || rc == nil {
			break
		}
		return FormatResultReceipt(result, rc)
	}
	return FormatResult(taskType, result)
}

// servedQueuesFor is how long the ops server keeps the shard count it read
// from Redis: a count changed by otpq shards N shows in the UI this soon.
const servedQueuesFor = 30 * time.Second

// servedQueues are the queues workers serve: every shard of critical and
// bulk that Redis records as served (shard.Read), read at most every
// servedQueuesFor; critical and bulk alone, read again next time, while
// Redis fails.
func (s *Server) servedQueues(ctx context.Context) []string {
	s.servedMu.Lock()
	defer s.servedMu.Unlock()
	if s.served != nil && time.Since(s.servedAt) < servedQueuesFor {
		return s.served
	}
	l, err := shard.Read(ctx, s.rdb)
	if err != nil {
		return shard.Classes
	}
	s.served = shard.All(l.Served)
	s.servedAt = time.Now()
	return s.served
}
