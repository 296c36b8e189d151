package producer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/otpq/otpq/internal/redact"
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
// does it; one bad request never stops the others. Requests are enqueued in order within a pipeline, but pipelines
// run concurrently, so the queue order of a large batch is only roughly
// the request order.
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
	results := make([]Result, len(items))
	var direct []int // delayed sends: scheduled by Send, one by one
	var ready []pending
	for i, it := range items {
		t, aopts, err := p.prepare(it.Request, append(append([]Option(nil), opts...), it.Options...))
		if err != nil {
			results[i].Err = err
			continue
		}
		msg := messageOf(t, aopts)
		if msg.delayed {
			direct = append(direct, i)
			continue
		}
		ready = append(ready, pending{index: i, to: it.Request.To, msg: msg})
	}
	for _, i := range direct {
		results[i].ID, results[i].Err = p.Send(ctx, items[i].Request, append(append([]Option(nil), opts...), items[i].Options...)...)
	}
	if len(ready) == 0 {
		return results
	}
	if err := p.publishQueues(ctx, ready); err != nil {
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
				p.pipeline(ctx, c, results)
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

// pending is a validated send waiting for its pipeline.
type pending struct {
	index int
	to    string
	msg   message
	first int // for a repeated key: the index of its first use
}

// message is what asynq stores for a task, encoded as asynq's own client
// encodes it (internal/proto TaskMessage), so that asynq servers, the
// inspector and asynqmon read batch-enqueued tasks like any other.
type message struct {
	id, queue string
	encoded   []byte
	delayed   bool
}

// asynqDefaultTimeout is the task timeout asynq's client sets when a task
// has neither a timeout nor a deadline.
const asynqDefaultTimeout = 30 * time.Minute

// messageOf builds the stored form of t with the options Send would pass
// to asynq.Client.EnqueueContext.
func messageOf(t *asynq.Task, aopts []asynq.Option) message {
	m := message{queue: "default"}
	retry, retention := 25, time.Duration(0)
	for _, o := range aopts {
		switch o.Type() {
		case asynq.QueueOpt:
			m.queue = o.Value().(string)
		case asynq.TaskIDOpt:
			m.id = o.Value().(string)
		case asynq.MaxRetryOpt:
			retry = o.Value().(int)
		case asynq.RetentionOpt:
			retention = o.Value().(time.Duration)
		case asynq.ProcessInOpt, asynq.ProcessAtOpt:
			m.delayed = true
		}
	}
	if m.id == "" {
		m.id = uuid.NewString()
	}
	// Field numbers and order as in asynq's internal/proto/asynq.proto,
	// which protobuf-go marshals in field-number order; zero values are
	// omitted (proto3).
	var b []byte
	b = appendString(b, 1, t.Type())
	if len(t.Payload()) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, t.Payload())
	}
	b = appendString(b, 3, m.id)
	b = appendString(b, 4, m.queue)
	if retry != 0 {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(int32(retry))))
	}
	b = protowire.AppendTag(b, 8, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(asynqDefaultTimeout/time.Second))
	if s := int64(retention / time.Second); s != 0 {
		b = protowire.AppendTag(b, 12, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(s))
	}
	headers := t.Headers()
	keys := make([]string, 0, len(headers))
	for k := range headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var e []byte
		e = appendString(e, 1, k)
		e = appendString(e, 2, headers[k])
		b = protowire.AppendTag(b, 15, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	m.encoded = b
	return m
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// enqueueScript enqueues many tasks of one queue in one call, each
// exactly as asynq's own enqueue script (internal/rdb enqueueCmd) does: a
// task ID that already exists is skipped (0), otherwise the task hash gets
// msg, state and pending_since and the ID is pushed on the pending list (1).
// All keys share the queue's {hash tag}, so it also runs on Redis Cluster.
//
// KEYS[1] -> asynq:{<qname>}:pending; KEYS[1+i] -> asynq:{<qname>}:t:<id_i>
// ARGV[1] -> now in unix nsec; ARGV[2i], ARGV[2i+1] -> msg_i, id_i
var enqueueScript = redis.NewScript(`
local out = {}
for i = 2, #KEYS do
	if redis.call("EXISTS", KEYS[i]) == 1 then
		out[i-1] = 0
	else
		redis.call("HSET", KEYS[i],
		           "msg", ARGV[2*(i-1)],
		           "state", "pending",
		           "pending_since", ARGV[1])
		redis.call("LPUSH", KEYS[1], ARGV[2*(i-1)+1])
		out[i-1] = 1
	end
end
return out
`)

// publishQueues registers the batch's queues in asynq's queue set (as
// asynq's client does before its first enqueue into a queue) and loads the
// enqueue script.
func (p *Producer) publishQueues(ctx context.Context, ready []pending) error {
	queues := map[string]bool{}
	for _, r := range ready {
		queues[r.msg.queue] = true
	}
	members := make([]any, 0, len(queues))
	for q := range queues {
		members = append(members, q)
	}
	if err := p.rdb.SAdd(ctx, "asynq:queues", members...).Err(); err != nil {
		return fmt.Errorf("producer: enqueue: %w", err)
	}
	if err := enqueueScript.Load(ctx, p.rdb).Err(); err != nil {
		return fmt.Errorf("producer: enqueue: %w", err)
	}
	return nil
}

// pipeline enqueues one chunk in one round trip (one script call per
// queue) and records each outcome.
func (p *Producer) pipeline(ctx context.Context, chunk []pending, results []Result) {
	byQueue := map[string][]pending{}
	var order []string
	for _, r := range chunk {
		if _, ok := byQueue[r.msg.queue]; !ok {
			order = append(order, r.msg.queue)
		}
		byQueue[r.msg.queue] = append(byQueue[r.msg.queue], r)
	}
	for _, q := range order {
		// A key repeated within the chunk is settled by its first use,
		// without counting against the destination's limit again.
		first := map[string]int{}
		var group, repeats []pending
		for _, r := range byQueue[q] {
			if i, ok := first[r.msg.id]; ok {
				repeats = append(repeats, pending{index: r.index, to: r.to, msg: message{id: r.msg.id}, first: i})
				continue
			}
			first[r.msg.id] = r.index
			group = append(group, r)
		}
		releases := p.takeMany(ctx, group, results)
		group = slices.DeleteFunc(group, func(r pending) bool { return results[r.index].Err != nil })
		p.enqueueMany(ctx, q, group, results)
		p.releaseMany(ctx, group, releases, results)
		for _, r := range repeats {
			switch err := results[r.first].Err; {
			case err == nil || errors.Is(err, ErrDuplicate):
				results[r.index] = Result{ID: r.msg.id, Err: fmt.Errorf("%w: task %s already exists", ErrDuplicate, r.msg.id)}
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
		var tok [12]byte
		_, _ = rand.Read(tok[:])
		members[r.index] = hex.EncodeToString(tok[:])
	}
	outcome := p.guardResults(ctx, group, members)
	for i, r := range group {
		res, err := outcome(i)
		switch {
		case err != nil:
			results[r.index].Err = fmt.Errorf("producer: destination guard: %w", err)
			delete(members, r.index)
		case len(res) == 2 && res[0] == 0:
			results[r.index].Err = &DestinationLimitError{To: redact.Destination(r.to), Limit: g.limit, Window: g.window,
				RetryAfter: time.Duration(max(res[1], 0)) * time.Millisecond}
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
		args := make([]any, 0, len(group)+2)
		args = append(args, g.window.Milliseconds(), g.limit)
		for i, r := range group {
			keys[i] = destKey(r.to)
			args = append(args, members[r.index])
		}
		flat, err := destGuardScript.Run(ctx, p.rdb, keys, args...).Int64Slice()
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
		cmds[i] = destGuardScript.Eval(ctx, pipe, []string{destKey(r.to)}, g.window.Milliseconds(), g.limit, members[r.index])
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

func (p *Producer) enqueueMany(ctx context.Context, q string, group []pending, results []Result) {
	keys := make([]string, 0, len(group)+1)
	args := make([]any, 0, 2*len(group)+1)
	keys = append(keys, "asynq:{"+q+"}:pending")
	args = append(args, p.now().UnixNano())
	for _, r := range group {
		keys = append(keys, "asynq:{"+q+"}:t:"+r.msg.id)
		args = append(args, r.msg.encoded, r.msg.id)
	}
	out, err := enqueueScript.EvalSha(ctx, p.rdb, keys, args...).Int64Slice()
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		// The script cache was flushed since Load: the call did not run.
		out, err = enqueueScript.Eval(ctx, p.rdb, keys, args...).Int64Slice()
	}
	if err == nil && len(out) != len(group) {
		err = fmt.Errorf("script answered %d results for %d tasks", len(out), len(group))
	}
	for i, r := range group {
		res := &results[r.index]
		switch {
		case err != nil:
			res.Err = fmt.Errorf("producer: enqueue: %w: %w", ErrUnknown, err)
		case out[i] == 0:
			res.ID, res.Err = r.msg.id, fmt.Errorf("%w: task %s already exists", ErrDuplicate, r.msg.id)
		default:
			res.ID = r.msg.id
		}
	}
}
