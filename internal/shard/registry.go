package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/asynqstore"
)

// Key is the Redis hash recording the shard count: fields count, served
// and counts (see the package documentation).
const Key = "otpq:shards"

// Layout is the shard count a Redis records.
type Layout struct {
	// Count is the number of shards per class producers route to.
	Count int
	// Served is the number of shards per class workers serve: the highest
	// count ever set, so that tasks queued before the count was lowered
	// are still delivered.
	Served int
	// Counts lists every count set, the current one last: a task routed
	// under any of them is found by Status.
	Counts []int
	// Recorded is false when Redis holds no record (the count is then 1).
	Recorded bool
}

// single is the layout of a Redis with no record: one shard per class.
var single = Layout{Count: 1, Served: 1, Counts: []int{1}}

// ErrMismatch is wrapped by the error of a process whose shard count is
// not the one Redis records (a *MismatchError).
var ErrMismatch = errors.New("shard count mismatch")

// MismatchError says which shard counts disagree and how to settle it.
type MismatchError struct {
	// Recorded is the count Redis records; Configured the process's.
	Recorded, Configured int
	// Unrecorded: Redis records nothing but already holds otpq queues,
	// filled with one shard per class.
	Unrecorded bool
}

// Error names both counts and the two ways out.
func (e *MismatchError) Error() string {
	if e.Unrecorded {
		return fmt.Sprintf("%s: this Redis already holds otpq queues with 1 shard per class and records no shard count, "+
			"but this process is set to %d shards: to spread the queues over %d shards, run `otpq shards %d` first "+
			"(tasks already queued keep being served)", ErrMismatch, e.Configured, e.Configured, e.Configured)
	}
	return fmt.Sprintf("%s: Redis records %d shards per queue class (%s), but this process is set to %d: "+
		"set --shards / OTPQ_SHARDS / Config.Shards to %d, or change the recorded count with `otpq shards %d`",
		ErrMismatch, e.Recorded, Key, e.Configured, e.Recorded, e.Configured)
}

// Unwrap makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Unwrap() error { return ErrMismatch }

// setScript records a shard count. ARGV[1] is the count; ARGV[2] "init"
// records it only when nothing is recorded yet (and answers the recorded
// count either way), "set" changes it. served never goes down; counts
// gains the count when it is new, last.
var setScript = redis.NewScript(`
local count = tonumber(ARGV[1])
local cur = redis.call("HGET", KEYS[1], "count")
if ARGV[2] == "init" then
	if cur then
		return cur
	end
	redis.call("HSET", KEYS[1], "count", count, "served", count, "counts", tostring(count))
	return tostring(count)
end
local served = tonumber(redis.call("HGET", KEYS[1], "served") or "1")
local counts = redis.call("HGET", KEYS[1], "counts") or "1"
local kept = {}
for c in string.gmatch(counts, "%d+") do
	if tonumber(c) ~= count then
		kept[#kept+1] = c
	end
end
kept[#kept+1] = tostring(count)
redis.call("HSET", KEYS[1], "count", count, "served", math.max(served, count), "counts", table.concat(kept, ","))
return tostring(count)
`)

// Read is the layout Redis records (one shard per class when none).
func Read(ctx context.Context, rdb redis.Cmdable) (Layout, error) {
	vals, err := rdb.HGetAll(ctx, Key).Result()
	if err != nil {
		return Layout{}, fmt.Errorf("shards: read %s: %w", Key, err)
	}
	if len(vals) == 0 {
		return single, nil
	}
	l := Layout{Recorded: true}
	if l.Count, err = strconv.Atoi(vals["count"]); err != nil || l.Count < 1 || l.Count > MaxShards {
		return Layout{}, fmt.Errorf("shards: %s holds count %q, not a shard count from 1 to %d", Key, vals["count"], MaxShards)
	}
	l.Served, err = strconv.Atoi(vals["served"])
	if err != nil || l.Served < 1 {
		l.Served = 1
	}
	l.Served = min(max(l.Served, l.Count), MaxShards)
	for _, f := range strings.Split(vals["counts"], ",") {
		if c, err := strconv.Atoi(f); err == nil && c >= 1 && c <= MaxShards && !slices.Contains(l.Counts, c) {
			l.Counts = append(l.Counts, c)
		}
	}
	l.Counts = append(slices.DeleteFunc(l.Counts, func(c int) bool { return c == l.Count }), l.Count)
	return l, nil
}

// Check is the layout of a process set to n shards per class (0 means 1),
// or a *MismatchError when Redis records another count. The first process
// with n > 1 on a Redis that records nothing and holds no otpq queue
// records n; with n = 1 and no record Check writes nothing.
func Check(ctx context.Context, rdb redis.Cmdable, n int) (Layout, error) {
	n = max(n, 1)
	if n > MaxShards {
		return Layout{}, fmt.Errorf("shards: %d shards: at most %d", n, MaxShards)
	}
	l, err := Read(ctx, rdb)
	if err != nil {
		return Layout{}, err
	}
	if !l.Recorded && n > 1 {
		queues, err := rdb.SMembers(ctx, asynqstore.AllQueues).Result()
		if err != nil {
			return Layout{}, fmt.Errorf("shards: read %s: %w", asynqstore.AllQueues, err)
		}
		if slices.ContainsFunc(queues, func(q string) bool { return ClassOf(q) != "" }) {
			return Layout{}, &MismatchError{Recorded: 1, Configured: n, Unrecorded: true}
		}
		if err := setScript.Run(ctx, rdb, []string{Key}, n, "init").Err(); err != nil {
			return Layout{}, fmt.Errorf("shards: record %d shards: %w", n, err)
		}
		if l, err = Read(ctx, rdb); err != nil { // another process may have been first
			return Layout{}, err
		}
	}
	if l.Count != n {
		return Layout{}, &MismatchError{Recorded: l.Count, Configured: n}
	}
	return l, nil
}

// Set records n shards per class (the explicit change of otpq shards N)
// and returns the new layout. Served keeps the highest count ever set, so
// workers keep serving shards that may still hold tasks.
func Set(ctx context.Context, rdb redis.Cmdable, n int) (Layout, error) {
	if n < 1 || n > MaxShards {
		return Layout{}, fmt.Errorf("shards: %d shards: must be from 1 to %d", n, MaxShards)
	}
	if err := setScript.Run(ctx, rdb, []string{Key}, n, "set").Err(); err != nil {
		return Layout{}, fmt.Errorf("shards: record %d shards: %w", n, err)
	}
	return Read(ctx, rdb)
}

// Queues are the queues of class that a task with that ID may be in under
// l: its shard under the current count first, then under each earlier
// count, each queue once.
func (l Layout) Queues(class, id string) []string {
	out := []string{Queue(class, id, l.Count)}
	for i := len(l.Counts) - 1; i >= 0; i-- {
		if q := Queue(class, id, l.Counts[i]); !slices.Contains(out, q) {
			out = append(out, q)
		}
	}
	return out
}
