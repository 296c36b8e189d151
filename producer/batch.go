package producer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/internal/tracing"
)

// Batch tuning. A batch is cut into chunks of BatchPipelineSize sends, each
// enqueued by one Lua script call (one round trip, one script run instead
// of one per send); up to BatchPipelines chunks are in flight at once, each
// on its own Redis connection.
const (
	BatchPipelineSize = 256
	BatchPipelines    = 4
)

// ErrUnknown is wrapped by the Result of a send whose outcome Redis did not
// confirm (connection lost or context ended while its pipeline was in
// flight): it may or may not be queued. Sending it again with the same
// DedupKey is safe.
var ErrUnknown = errors.New("send outcome unknown")

// BatchItem is one send of a batch: a Request and options that apply to it
// after the batch-wide ones (typically its own DedupKey).
type BatchItem struct {
	Request Request
	Options []Option
}

// Result is the outcome of one send of a batch, at the same index as its
// request. Err is nil when the send was enqueued with task ID ID; a
// *ValidationError (errors.Is ErrInvalid) when the request is invalid and
// nothing was enqueued; ErrDuplicate with the existing task's ID when its
// DedupKey is already queued; a *DestinationLimitError when its destination
// is over Config.DestinationLimit; ErrUnknown or another error when Redis
// failed.
type Result struct {
	ID  string
	Err error
}

// SendBatch enqueues many sends with the same options, pipelining them so
// that throughput is bounded by Redis rather than by round trips. It
// returns one Result per request, in order. Each request is validated,
// counted against its destination's limit and deduplicated exactly as Send
// does it; one bad request never stops the others. Each task is written
// with its code key in the same script call, as Send does; delayed sends
// are scheduled in the same calls. Requests are enqueued in order within a
// pipeline, but pipelines run concurrently, so the queue order of a large
// batch is only roughly the request order.
func (p *Producer) SendBatch(ctx context.Context, reqs []Request, opts ...Option) []Result {
	items := make([]BatchItem, len(reqs))
	for i, r := range reqs {
		items[i] = BatchItem{Request: r}
	}
	return p.SendItems(ctx, items, opts...)
}

// SendItems is SendBatch with options per item (applied after opts), for
// example a DedupKey per send.
func (p *Producer) SendItems(ctx context.Context, items []BatchItem, opts ...Option) []Result {
	ctx, span := p.tracer.Start(ctx, tracing.SpanEnqueueBatch, enqueueSpan...)
	results := make([]Result, len(items))
	if tracing.Enabled {
		defer endBatch(span, results)
	}
	headers := tracing.Headers(ctx) // shared: only read when encoded
	var ready []pending
	for i, it := range items {
		t, err := p.prepare(it.Request, append(append([]Option(nil), opts...), it.Options...))
		if err != nil {
			results[i].Err = err
			continue
		}
		t.Msg.Headers = headers
		ready = append(ready, pending{index: i, to: it.Request.To, task: t})
	}
	if len(ready) == 0 {
		return results
	}
	l, err := p.shardLayout(ctx)
	if err != nil {
		for _, r := range ready {
			results[r.index].Err = err
		}
		return results
	}
	queues := map[string]bool{}
	for i := range ready {
		route(&ready[i].task, l)
		queues[ready[i].task.Msg.Queue] = true
	}
	if l.Count > 1 {
		// Chunks of one shard each (one script call per chunk, as with one
		// queue), the request order kept within each shard.
		slices.SortStableFunc(ready, func(a, b pending) int { return strings.Compare(a.task.Msg.Queue, b.task.Msg.Queue) })
	}
	names := make([]string, 0, len(queues))
	for q := range queues {
		names = append(names, q)
	}
	if err := p.publish(ctx, names...); err != nil {
		for _, r := range ready {
			results[r.index].Err = err
		}
		return results
	}
	chunks := make(chan []pending)
	var wg sync.WaitGroup
	for range min(BatchPipelines, (len(ready)+BatchPipelineSize-1)/BatchPipelineSize) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range chunks {
				p.pipeline(ctx, c, results, l)
			}
		}()
	}
	for start := 0; start < len(ready); start += BatchPipelineSize {
		chunks <- ready[start:min(start+BatchPipelineSize, len(ready))]
	}
	close(chunks)
	wg.Wait()
	return results
}

// endBatch ends the span of one SendItems call: its size and how many
// sends ended which way (otpq.outcome.<outcome> counts).
func endBatch(span trace.Span, results []Result) {
	if span.IsRecording() {
		counts := map[string]int{}
		for _, r := range results {
			counts[enqueueOutcome(r.Err)]++
		}
		attrs := []attribute.KeyValue{tracing.BatchSize.Int(len(results))}
		for o, n := range counts {
			attrs = append(attrs, attribute.Int(string(tracing.Outcome)+"."+o, n))
		}
		span.SetAttributes(attrs...)
	}
	span.End()
}

// pending is a validated send waiting for its pipeline.
type pending struct {
	index int
	to    string
	task  asynqstore.Task
	first int // for a repeated key: the index of its first use
}

// pipeline enqueues one chunk in one round trip (one script call per
// queue) and records each outcome.
func (p *Producer) pipeline(ctx context.Context, chunk []pending, results []Result, l shard.Layout) {
	byQueue := map[string][]pending{}
	var order []string
	for _, r := range chunk {
		if _, ok := byQueue[r.task.Msg.Queue]; !ok {
			order = append(order, r.task.Msg.Queue)
		}
		byQueue[r.task.Msg.Queue] = append(byQueue[r.task.Msg.Queue], r)
	}
	for _, q := range order {
		// A key repeated within the chunk is settled by its first use,
		// without counting against the destination's limit again.
		first := map[string]int{}
		var group, repeats []pending
		for _, r := range byQueue[q] {
			if i, ok := first[r.task.Msg.ID]; ok {
				repeats = append(repeats, pending{index: r.index, to: r.to, task: r.task, first: i})
				continue
			}
			first[r.task.Msg.ID] = r.index
			group = append(group, r)
		}
		releases := p.takeMany(ctx, group, results)
		group = slices.DeleteFunc(group, func(r pending) bool { return results[r.index].Err != nil })
		p.enqueueMany(ctx, q, group, results, enqueueFunc(l))
		p.releaseMany(ctx, group, releases, results)
		for _, r := range repeats {
			switch err := results[r.first].Err; {
			case err == nil || errors.Is(err, ErrDuplicate):
				results[r.index] = Result{ID: r.task.Msg.ID, Err: duplicate(r.task.Msg.ID)}
			default:
				results[r.index].Err = err
			}
		}
	}
}

// takeMany counts each send against its destination's guard (see
// Config.DestinationLimit) in one pipeline. A refused send gets its
// *DestinationLimitError as its Result. It returns the guard members taken,
// by result index, for releaseMany.
func (p *Producer) takeMany(ctx context.Context, group []pending, results []Result) map[int]string {
	g := p.guard
	if g == nil {
		return nil
	}
	members := make(map[int]string, len(group))
	for _, r := range group {
		members[r.index] = newToken()
	}
	outcome := p.guardResults(ctx, group, members)
	for i, r := range group {
		res, err := outcome(i)
		switch {
		case err != nil:
			results[r.index].Err = fmt.Errorf("producer: destination guard: %w", err)
			delete(members, r.index)
		case len(res) == 2 && res[0] == 0:
			results[r.index].Err = g.refused(r.to, res[1])
			delete(members, r.index)
		}
	}
	return members
}

// guardResults counts a group against the guard: in one script call on a
// single Redis, or (Redis Cluster, where destination keys live in
// different slots) one pipelined call per destination. It returns each
// send's {counted, retry ms} pair.
func (p *Producer) guardResults(ctx context.Context, group []pending, members map[int]string) func(i int) ([]int64, error) {
	g := p.guard
	if _, cluster := p.rdb.(*redis.ClusterClient); !cluster {
		keys := make([]string, len(group))
		tokens := make([]string, len(group))
		for i, r := range group {
			keys[i] = destKey(r.to)
			tokens[i] = members[r.index]
		}
		flat, err := destGuardScript.Run(ctx, p.rdb, keys, g.args(tokens...)...).Int64Slice()
		if err == nil && len(flat) != 2*len(group) {
			err = fmt.Errorf("guard answered %d values for %d sends", len(flat), len(group))
		}
		return func(i int) ([]int64, error) {
			if err != nil {
				return nil, err
			}
			return flat[2*i : 2*i+2], nil
		}
	}
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(group))
	for i, r := range group {
		cmds[i] = destGuardScript.Eval(ctx, pipe, []string{destKey(r.to)}, g.args(members[r.index])...)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command
	return func(i int) ([]int64, error) { return cmds[i].Int64Slice() }
}

// releaseMany gives back the guard slots of sends that were not enqueued
// (duplicates, failures), as Send does.
func (p *Producer) releaseMany(ctx context.Context, group []pending, members map[int]string, results []Result) {
	if len(members) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	pipe := p.rdb.Pipeline()
	for _, r := range group {
		if m, ok := members[r.index]; ok && results[r.index].Err != nil {
			pipe.ZRem(ctx, destKey(r.to), m)
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // best effort, like Send's release
	}
}

func (p *Producer) enqueueMany(ctx context.Context, q string, group []pending, results []Result,
	enqueue func(context.Context, redis.Scripter, string, time.Time, []asynqstore.Task) ([]bool, error)) {
	if len(group) == 0 {
		return
	}
	tasks := make([]asynqstore.Task, len(group))
	for i, r := range group {
		tasks[i] = r.task
	}
	created, err := enqueue(ctx, p.rdb, q, p.now(), tasks)
	for i, r := range group {
		res := &results[r.index]
		switch {
		case err != nil:
			res.Err = fmt.Errorf("producer: enqueue: %w: %w", ErrUnknown, err)
		case !created[i]:
			res.ID, res.Err = r.task.Msg.ID, duplicate(r.task.Msg.ID)
		default:
			res.ID = r.task.Msg.ID
		}
	}
}
