// Package asynqstore is otpq's only knowledge of asynq v0.26's private Redis
// layout: key names, the TaskMessage protobuf encoding and decoding, the
// enqueue script (asynq's own, extended to write otpq's code key in the
// same call), the result field of a task hash, the read of one task
// (asynq's Inspector.GetTaskInfo, but honouring a context) and the
// statistics of queues (Inspector.GetQueueInfo's scripts, many queues in
// one pipeline). Everything else in otpq goes through asynq's public API
// (Server, Inspector). Parity tests (asynqstore_test.go, readtask_test.go,
// stats_test.go) check that a task written here looks and behaves exactly
// like one written by asynq.Client, and that a task or a queue read here
// reads as asynq's Inspector reads it; run them when upgrading asynq.
//
// Every key of one task, asynq's and otpq's, carries the queue's hash tag
// {<queue>}, so one script can touch them all on Redis Cluster too.
package asynqstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// AllQueues is asynq's set of known queue names (asynq:queues).
const AllQueues = "asynq:queues"

// DefaultTimeout is the timeout asynq.Client gives a task that has neither
// a timeout nor a deadline.
const DefaultTimeout = 30 * time.Minute

// TaskKey is the hash asynq keeps a task in: asynq:{<queue>}:t:<id>.
func TaskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// PendingKey is the list of a queue's pending task IDs.
func PendingKey(queue string) string { return "asynq:{" + queue + "}:pending" }

// ScheduledKey is the sorted set of a queue's scheduled task IDs (score:
// process-at in unix seconds).
func ScheduledKey(queue string) string { return "asynq:{" + queue + "}:scheduled" }

// RetryKey is the sorted set of a queue's task IDs waiting for a retry
// (score: next attempt in unix seconds).
func RetryKey(queue string) string { return "asynq:{" + queue + "}:retry" }

// ActiveKey is the list of a queue's active (in-flight) task IDs.
func ActiveKey(queue string) string { return "asynq:{" + queue + "}:active" }

// LeaseKey is the sorted set of a queue's active task leases.
func LeaseKey(queue string) string { return "asynq:{" + queue + "}:lease" }

// CodeKey is otpq's key holding the code of a task (plaintext or sealed,
// see internal/task): otpq:{<queue>}:code:<id>, in the task's hash slot.
func CodeKey(queue, id string) string { return "otpq:{" + queue + "}:code:" + id }

// ReadyChannel is the sharded pub/sub channel (SPUBLISH) that hears that
// a queue has new pending tasks: otpq:{<queue>}:ready, in the queue's hash
// slot, so that only the queue's own cluster node carries it.
func ReadyChannel(queue string) string { return "otpq:{" + queue + "}:ready" }

// DequeueQueue reports whether args are those of asynq's dequeue script
// call (EVALSHA or EVAL of dequeueCmd, internal/rdb/rdb.go: KEYS pending,
// paused, active and lease of one queue) and for which queue. A Redis hook
// can so answer an empty dequeue without asking Redis.
func DequeueQueue(args []any) (queue string, ok bool) {
	if len(args) < 7 {
		return "", false
	}
	name, _ := args[0].(string)
	if !strings.EqualFold(name, "evalsha") && !strings.EqualFold(name, "eval") {
		return "", false
	}
	if n, ok := args[2].(int); !ok || n != 4 {
		return "", false
	}
	pending, _ := args[3].(string)
	rest, ok := strings.CutPrefix(pending, "asynq:{")
	if !ok {
		return "", false
	}
	queue, ok = strings.CutSuffix(rest, "}:pending")
	if !ok || args[4] != "asynq:{"+queue+"}:paused" || args[5] != ActiveKey(queue) || args[6] != LeaseKey(queue) {
		return "", false
	}
	return queue, true
}

// ResultField is the task hash field asynq's ResultWriter writes and its
// Inspector reads as TaskInfo.Result.
const ResultField = "result"

// Message is asynq's TaskMessage (internal/proto/asynq.proto). Zero values
// are left out, as protobuf does (proto3). otpq sets the fields up to
// Retention at enqueue; asynq's server sets the others as the task runs.
type Message struct {
	Type    string
	Payload []byte
	Headers map[string]string
	ID      string
	Queue   string
	// Retry is asynq's max retry count.
	Retry int
	// Timeout bounds one attempt (whole seconds); Deadline (unix seconds)
	// bounds all of them. asynq.Client sets DefaultTimeout when both are 0.
	Timeout   time.Duration
	Deadline  time.Time
	Retention time.Duration

	// Retried counts the failed attempts that were retried; ErrorMsg and
	// LastFailedAt (unix seconds) are those of the last failed attempt.
	Retried      int
	ErrorMsg     string
	LastFailedAt time.Time
	// UniqueKey and GroupKey are set by asynq's Unique and Group options,
	// which otpq does not use.
	UniqueKey string
	GroupKey  string
	// CompletedAt (unix seconds) is when the task completed.
	CompletedAt time.Time
}

// Encode returns m as asynq's internal base.EncodeMessage does: protobuf,
// fields in field-number order (see asynq's internal/proto/asynq.proto).
// Map entries (headers) are sorted by key; protobuf accepts any order.
func (m Message) Encode() []byte {
	var b []byte
	b = appendString(b, 1, m.Type)
	if len(m.Payload) > 0 {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, m.Payload)
	}
	b = appendString(b, 3, m.ID)
	b = appendString(b, 4, m.Queue)
	b = appendVarint(b, 5, uint64(int64(int32(m.Retry))))
	b = appendVarint(b, 6, uint64(int64(int32(m.Retried))))
	b = appendString(b, 7, m.ErrorMsg)
	b = appendVarint(b, 8, uint64(int64(m.Timeout/time.Second)))
	b = appendVarint(b, 9, unixOrZero(m.Deadline))
	b = appendString(b, 10, m.UniqueKey)
	b = appendVarint(b, 11, unixOrZero(m.LastFailedAt))
	b = appendVarint(b, 12, uint64(int64(m.Retention/time.Second)))
	b = appendVarint(b, 13, unixOrZero(m.CompletedAt))
	b = appendString(b, 14, m.GroupKey)
	keys := make([]string, 0, len(m.Headers))
	for k := range m.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var e []byte
		e = appendString(e, 1, k)
		e = appendString(e, 2, m.Headers[k])
		b = protowire.AppendTag(b, 15, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

// unixOrZero is t in unix seconds, 0 for the zero time (asynq's "none").
func unixOrZero(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.Unix())
}

// timeOrZero is the inverse of unixOrZero, as asynq's fromUnixTimeOrZero.
func timeOrZero(v uint64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(int64(v), 0)
}

// DecodeMessage reads a TaskMessage as asynq's base.DecodeMessage
// (proto.Unmarshal) does: later occurrences of a field win, unknown fields
// and known fields of an unexpected wire type are skipped, strings must be
// UTF-8, and malformed bytes are an error. An empty Payload or Headers
// decodes as nil.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Message{}, decodeError(protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				if err := m.setBytes(num, v); err != nil {
					return Message{}, decodeError(err)
				}
			}
		case protowire.VarintType:
			var v uint64
			if v, n = protowire.ConsumeVarint(b); n >= 0 {
				m.setVarint(num, v)
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return Message{}, decodeError(protowire.ParseError(n))
		}
		b = b[n:]
	}
	return m, nil
}

func decodeError(err error) error { return fmt.Errorf("asynqstore: decode task message: %w", err) }

// setBytes sets the length-delimited field num (an unknown one is skipped).
func (m *Message) setBytes(num protowire.Number, v []byte) error {
	var s *string
	switch num {
	case 1:
		s = &m.Type
	case 2:
		m.Payload = append([]byte(nil), v...)
		return nil
	case 3:
		s = &m.ID
	case 4:
		s = &m.Queue
	case 7:
		s = &m.ErrorMsg
	case 10:
		s = &m.UniqueKey
	case 14:
		s = &m.GroupKey
	case 15:
		k, val, err := decodeHeader(v)
		if err != nil {
			return err
		}
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		m.Headers[k] = val
		return nil
	default:
		return nil
	}
	if !utf8.Valid(v) {
		return fmt.Errorf("string field %d is not valid UTF-8", num)
	}
	*s = string(v)
	return nil
}

// setVarint sets the varint field num (an unknown one is skipped).
func (m *Message) setVarint(num protowire.Number, v uint64) {
	switch num {
	case 5:
		m.Retry = int(int32(v))
	case 6:
		m.Retried = int(int32(v))
	case 8:
		m.Timeout = time.Duration(int64(v)) * time.Second
	case 9:
		m.Deadline = timeOrZero(v)
	case 11:
		m.LastFailedAt = timeOrZero(v)
	case 12:
		m.Retention = time.Duration(int64(v)) * time.Second
	case 13:
		m.CompletedAt = timeOrZero(v)
	}
}

// decodeHeader reads one headers map entry (key 1, value 2, both strings).
func decodeHeader(b []byte) (key, val string, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			var v []byte
			if v, n = protowire.ConsumeBytes(b); n >= 0 {
				if !utf8.Valid(v) {
					return "", "", errors.New("header is not valid UTF-8")
				}
				if num == 1 {
					key = string(v)
				} else {
					val = string(v)
				}
			}
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return "", "", protowire.ParseError(n)
		}
		b = b[n:]
	}
	return key, val, nil
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// Task is one task to enqueue with its code.
type Task struct {
	Msg Message
	// ProcessAt schedules the task (asynq's scheduled state) when it is
	// after the enqueue time; zero or earlier makes it pending at once.
	ProcessAt time.Time
	// Code is the value of the task's code key (CodeKey), which expires at
	// CodeExpiresAt. Empty writes no code key.
	Code          string
	CodeExpiresAt time.Time
}

// enqueueScript enqueues tasks of one queue, each exactly as asynq's own
// enqueueCmd (pending) or scheduleCmd (scheduled) does (the pending IDs
// pushed by one LPUSH, in the same order), and writes each new
// task's code key with its expiry in the same call, so that a task never
// exists without its code or the code without its task. A task ID that
// already exists is skipped (0) and its code key left alone; a new task
// gives 1.
//
// KEYS[1] -> asynq:{q}:pending, KEYS[2] -> asynq:{q}:scheduled,
// KEYS[2i+1], KEYS[2i+2] -> task hash, code key (i = 1..n)
// ARGV[1] -> now in unix nsec; for task i, from ARGV[5(i-1)+2]:
// msg, id, process-at unix sec (0: now), code, code expiry unix msec;
// ARGV[5n+2], when given -> the queue's ReadyChannel, published to when
// the call made tasks pending
var enqueueScript = redis.NewScript(`
local out = {}
local pending = {}
local n = (#KEYS - 2) / 2
for i = 1, n do
	local tk, ck = KEYS[2*i+1], KEYS[2*i+2]
	local a = 5*(i-1) + 2
	if redis.call("EXISTS", tk) == 1 then
		out[i] = 0
	else
		if ARGV[a+2] == "0" then
			redis.call("HSET", tk, "msg", ARGV[a], "state", "pending", "pending_since", ARGV[1])
			pending[#pending+1] = ARGV[a+1]
		else
			redis.call("HSET", tk, "msg", ARGV[a], "state", "scheduled")
			redis.call("ZADD", KEYS[2], ARGV[a+2], ARGV[a+1])
		end
		if ARGV[a+3] ~= "" then
			redis.call("SET", ck, ARGV[a+3], "PXAT", ARGV[a+4])
		end
		out[i] = 1
	end
end
-- One LPUSH of many IDs pushes them in the same order as one LPUSH each
-- (asynq's), at a fraction of the cost; unpack is bounded by Lua's stack.
for i = 1, #pending, 1000 do
	redis.call("LPUSH", KEYS[1], unpack(pending, i, math.min(i + 999, #pending)))
end
-- A wake-up channel (EnqueueWaking) hears that the queue has new pending
-- tasks; pcall: a Redis without sharded pub/sub (before 7.0) still
-- enqueues, and workers find the tasks at their next slow poll.
local wake = ARGV[5*n + 2]
if wake and #pending > 0 then
	redis.pcall("SPUBLISH", wake, "1")
end
return out
`)

// Publish registers queues in asynq's queue set, as asynq's client does
// before its first enqueue into a queue (the Inspector and the web UI list
// queues from it).
func Publish(ctx context.Context, rdb redis.Cmdable, queues ...string) error {
	members := make([]any, len(queues))
	for i, q := range queues {
		members[i] = q
	}
	return rdb.SAdd(ctx, AllQueues, members...).Err()
}

// Enqueue writes tasks of one queue in one script call (one round trip)
// and reports, per task, whether it was created (false: its ID already
// exists). The queue must have been published (Publish).
func Enqueue(ctx context.Context, rdb redis.Scripter, queue string, now time.Time, tasks []Task) ([]bool, error) {
	return enqueue(ctx, rdb, queue, now, tasks, false)
}

// EnqueueWaking is Enqueue that also publishes to the queue's ReadyChannel
// (SPUBLISH, in the same script call) when it made a task pending, so that
// workers holding back their polls of an idle shard (see DequeueQueue)
// fetch it at once.
func EnqueueWaking(ctx context.Context, rdb redis.Scripter, queue string, now time.Time, tasks []Task) ([]bool, error) {
	return enqueue(ctx, rdb, queue, now, tasks, true)
}

func enqueue(ctx context.Context, rdb redis.Scripter, queue string, now time.Time, tasks []Task, wake bool) ([]bool, error) {
	keys := make([]string, 0, 2+2*len(tasks))
	args := make([]any, 0, 1+5*len(tasks))
	keys = append(keys, PendingKey(queue), ScheduledKey(queue))
	args = append(args, now.UnixNano())
	for _, t := range tasks {
		if t.Msg.Queue != queue {
			return nil, fmt.Errorf("asynqstore: task %s is for queue %q, not %q", t.Msg.ID, t.Msg.Queue, queue)
		}
		at := int64(0)
		if t.ProcessAt.After(now) {
			at = t.ProcessAt.Unix()
		}
		keys = append(keys, TaskKey(queue, t.Msg.ID), CodeKey(queue, t.Msg.ID))
		args = append(args, t.Msg.Encode(), t.Msg.ID, at, t.Code, t.CodeExpiresAt.UnixMilli())
	}
	if wake {
		args = append(args, ReadyChannel(queue))
	}
	out, err := enqueueScript.Run(ctx, rdb, keys, args...).Int64Slice()
	if err != nil {
		return nil, err
	}
	if len(out) != len(tasks) {
		return nil, fmt.Errorf("asynqstore: enqueue answered %d results for %d tasks", len(out), len(tasks))
	}
	created := make([]bool, len(out))
	for i, v := range out {
		created[i] = v == 1
	}
	return created, nil
}

// Delivered queues, on pipe, the writes that follow a delivery: the task's
// result (what asynq's ResultWriter would write) and the deletion of its
// code key. Run with the caller's other writes in one round trip; the
// commands are returned for their errors.
func Delivered(ctx context.Context, pipe redis.Pipeliner, queue, id string, result []byte) []redis.Cmder {
	return []redis.Cmder{
		pipe.HSet(ctx, TaskKey(queue, id), ResultField, result),
		pipe.Del(ctx, CodeKey(queue, id)),
	}
}

// ErrTaskNotFound is ReadTask's error for a task that does not exist.
var ErrTaskNotFound = errors.New("asynqstore: task not found")

// readTaskScript reads a task as asynq's getTaskInfoCmd (internal/rdb/
// inspect.go) does, in one atomic call: message, state, result, and for a
// scheduled or retry task its score, the next attempt. The zsets are named
// in KEYS (asynq builds their names in the script), all in the queue's
// hash slot. A missing task is nil.
//
// KEYS[1] -> task hash, KEYS[2] -> scheduled zset, KEYS[3] -> retry zset
// ARGV[1] -> task ID
var readTaskScript = redis.NewScript(`
if redis.call("EXISTS", KEYS[1]) == 0 then
	return nil
end
local msg, state, result = unpack(redis.call("HMGET", KEYS[1], "msg", "state", "result"))
local at = false
if state == "scheduled" then
	at = redis.call("ZSCORE", KEYS[2], ARGV[1])
elseif state == "retry" then
	at = redis.call("ZSCORE", KEYS[3], ARGV[1])
end
return {msg, state, at, result}
`)

// taskState is asynq's state of a state name (base.TaskStateFromString).
func taskState(name string) (asynq.TaskState, bool) {
	switch name {
	case "active":
		return asynq.TaskStateActive, true
	case "pending":
		return asynq.TaskStatePending, true
	case "scheduled":
		return asynq.TaskStateScheduled, true
	case "retry":
		return asynq.TaskStateRetry, true
	case "archived":
		return asynq.TaskStateArchived, true
	case "completed":
		return asynq.TaskStateCompleted, true
	case "aggregating":
		return asynq.TaskStateAggregating, true
	}
	return 0, false
}

// ReadTask reads one task of queue in one round trip that honours ctx,
// giving what asynq's Inspector.GetTaskInfo gives (which takes no
// context), with one exception: NextProcessAt of a pending task is zero,
// where the Inspector reports the moment of reading (a pending task is
// due now). NextProcessAt of a scheduled or retry task is its score, of
// any other state zero; IsOrphaned is false, as the Inspector leaves it.
// Unlike the Inspector, ReadTask does not check that the queue is in
// AllQueues (a key outside the queue's hash slot). A missing task is
// ErrTaskNotFound.
func ReadTask(ctx context.Context, rdb redis.Scripter, queue, id string) (*asynq.TaskInfo, error) {
	keys := []string{TaskKey(queue, id), ScheduledKey(queue), RetryKey(queue)}
	vals, err := readTaskScript.Run(ctx, rdb, keys, id).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: %s in queue %s", ErrTaskNotFound, id, queue)
	}
	if err != nil {
		return nil, fmt.Errorf("asynqstore: read task: %w", err)
	}
	if len(vals) != 4 {
		return nil, fmt.Errorf("asynqstore: read task: %d values, want 4", len(vals))
	}
	encoded, _ := vals[0].(string)
	if encoded == "" {
		return nil, fmt.Errorf("asynqstore: read task %s: no message", id)
	}
	msg, err := DecodeMessage([]byte(encoded))
	if err != nil {
		return nil, err
	}
	stateName, _ := vals[1].(string)
	state, ok := taskState(stateName)
	if !ok {
		return nil, fmt.Errorf("asynqstore: read task %s: unknown state %q", id, stateName)
	}
	var next time.Time
	if score, ok := vals[2].(string); ok {
		sec, err := strconv.ParseFloat(score, 64)
		if err != nil {
			return nil, fmt.Errorf("asynqstore: read task %s: score %q: %w", id, score, err)
		}
		next = timeOrZero(uint64(int64(sec)))
	}
	var result []byte
	if r, _ := vals[3].(string); r != "" {
		result = []byte(r)
	}
	return &asynq.TaskInfo{
		ID: msg.ID, Queue: msg.Queue, Type: msg.Type, Payload: msg.Payload, Headers: msg.Headers,
		State: state, MaxRetry: msg.Retry, Retried: msg.Retried, LastErr: msg.ErrorMsg,
		LastFailedAt: msg.LastFailedAt, Timeout: msg.Timeout, Deadline: msg.Deadline, Group: msg.GroupKey,
		NextProcessAt: next, Retention: msg.Retention, CompletedAt: msg.CompletedAt, Result: result,
	}, nil
}
