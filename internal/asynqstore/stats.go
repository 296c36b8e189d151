package asynqstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// currentStatsScript is asynq v0.26's currentStatsCmd (internal/rdb/
// inspect.go), verbatim: the counts of a queue's states, its day's and
// lifetime processed/failed counters, whether it is paused, the time its
// oldest pending task was queued, and its groups.
//
// KEYS[1..6] -> pending, active, scheduled, retry, archived, completed
// KEYS[7..10] -> processed:<date>, failed:<date>, processed, failed
// KEYS[11] -> paused, KEYS[12] -> groups
// ARGV[1] -> task key prefix, ARGV[2] -> group key prefix
var currentStatsScript = redis.NewScript(`
local res = {}
local pendingTaskCount = redis.call("LLEN", KEYS[1])
table.insert(res, KEYS[1])
table.insert(res, pendingTaskCount)
table.insert(res, KEYS[2])
table.insert(res, redis.call("LLEN", KEYS[2]))
table.insert(res, KEYS[3])
table.insert(res, redis.call("ZCARD", KEYS[3]))
table.insert(res, KEYS[4])
table.insert(res, redis.call("ZCARD", KEYS[4]))
table.insert(res, KEYS[5])
table.insert(res, redis.call("ZCARD", KEYS[5]))
table.insert(res, KEYS[6])
table.insert(res, redis.call("ZCARD", KEYS[6]))
for i=7,10 do
    local count = 0
	local n = redis.call("GET", KEYS[i])
	if n then
	    count = tonumber(n)
	end
	table.insert(res, KEYS[i])
	table.insert(res, count)
end
table.insert(res, KEYS[11])
table.insert(res, redis.call("EXISTS", KEYS[11]))
table.insert(res, "oldest_pending_since")
if pendingTaskCount > 0 then
	local id = redis.call("LRANGE", KEYS[1], -1, -1)[1]
	table.insert(res, redis.call("HGET", ARGV[1] .. id, "pending_since"))
else
	table.insert(res, 0)
end
local group_names = redis.call("SMEMBERS", KEYS[12])
table.insert(res, "group_size")
table.insert(res, table.getn(group_names))
local aggregating_count = 0
for _, gname in ipairs(group_names) do
	aggregating_count = aggregating_count + redis.call("ZCARD", ARGV[2] .. gname)
end
table.insert(res, "aggregating_count")
table.insert(res, aggregating_count)
return res`)

// memoryUsageScript is asynq v0.26's memoryUsageCmd (internal/rdb/
// inspect.go), verbatim: a queue's approximate memory, sampling up to
// ARGV[2] tasks of each list and zset.
//
// KEYS[1..7] -> active, pending, scheduled, retry, archived, completed,
// groups; ARGV[1] -> task key prefix, ARGV[2] -> task sample size,
// ARGV[3] -> group sample size, ARGV[4] -> group key prefix
var memoryUsageScript = redis.NewScript(`
local sample_size = tonumber(ARGV[2])
if sample_size <= 0 then
    return redis.error_reply("sample size must be a positive number")
end
local memusg = 0
for i=1,2 do
    local ids = redis.call("LRANGE", KEYS[i], 0, sample_size - 1)
    local sample_total = 0
    if (table.getn(ids) > 0) then
        for _, id in ipairs(ids) do
            local bytes = redis.call("MEMORY", "USAGE", ARGV[1] .. id)
            sample_total = sample_total + bytes
        end
        local n = redis.call("LLEN", KEYS[i])
        local avg = sample_total / table.getn(ids)
        memusg = memusg + (avg * n)
    end
    local m = redis.call("MEMORY", "USAGE", KEYS[i])
    if (m) then
        memusg = memusg + m
    end
end
for i=3,6 do
    local ids = redis.call("ZRANGE", KEYS[i], 0, sample_size - 1)
    local sample_total = 0
    if (table.getn(ids) > 0) then
        for _, id in ipairs(ids) do
            local bytes = redis.call("MEMORY", "USAGE", ARGV[1] .. id)
            sample_total = sample_total + bytes
        end
        local n = redis.call("ZCARD", KEYS[i])
        local avg = sample_total / table.getn(ids)
        memusg = memusg + (avg * n)
    end
    local m = redis.call("MEMORY", "USAGE", KEYS[i])
    if (m) then
        memusg = memusg + m
    end
end
local groups = redis.call("SMEMBERS", KEYS[7])
if table.getn(groups) > 0 then
	local agg_task_count = 0
	local agg_task_sample_total = 0
	local agg_task_sample_size = 0
	for i, gname in ipairs(groups) do
		local group_key = ARGV[4] .. gname
		agg_task_count = agg_task_count + redis.call("ZCARD", group_key)
		if i <= tonumber(ARGV[3]) then
			local ids = redis.call("ZRANGE", group_key, 0, sample_size - 1)
			for _, id in ipairs(ids) do
				local bytes = redis.call("MEMORY", "USAGE", ARGV[1] .. id)
				agg_task_sample_total = agg_task_sample_total + bytes
				agg_task_sample_size = agg_task_sample_size + 1
			end
		end
	end
	local avg = agg_task_sample_total / agg_task_sample_size
	memusg = memusg + (avg * agg_task_count)
end
return memusg
`)

// Sample sizes of asynq's memoryUsage.
const (
	memTaskSample  = 20
	memGroupSample = 5
)

// queuePrefix is the prefix of every key of queue.
func queuePrefix(queue string) string { return "asynq:{" + queue + "}:" }

// dateKey is asynq's per-day counter key (processed or failed) of t's UTC day.
func dateKey(queue, counter string, t time.Time) string {
	return queuePrefix(queue) + counter + ":" + t.UTC().Format("2006-01-02")
}

// QueueStats reads the statistics of queues as asynq's
// Inspector.GetQueueInfo reads each one (the same two scripts), but all in
// one pipeline: one round trip on a single Redis, one per master holding
// any of the queues on a Cluster (go-redis splits a cluster pipeline by
// node), whatever the number of queues. Unlike the Inspector it does not
// check that a queue is in AllQueues: a queue never used reads as zeros.
// The answers are in the order of queues.
func QueueStats(ctx context.Context, rdb redis.Cmdable, queues []string, now time.Time) ([]*asynq.QueueInfo, error) {
	if len(queues) == 0 {
		return nil, nil
	}
	stats, mem, err := runStats(ctx, rdb, queues, now, false)
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		// The scripts are not cached on some node (first reading, or
		// after SCRIPT FLUSH or a failover): send their bodies.
		stats, mem, err = runStats(ctx, rdb, queues, now, true)
	}
	if err != nil {
		return nil, fmt.Errorf("asynqstore: queue stats: %w", err)
	}
	out := make([]*asynq.QueueInfo, len(queues))
	for i, q := range queues {
		in, err := parseStats(q, stats[i].Val(), now)
		if err != nil {
			return nil, err
		}
		in.MemoryUsage, err = mem[i].Int64()
		if err != nil {
			return nil, fmt.Errorf("asynqstore: queue stats of %s: memory usage: %w", q, err)
		}
		out[i] = in
	}
	return out, nil
}

// runStats queues both scripts of every queue on one pipeline (EVALSHA, or
// EVAL when eval) and runs it.
func runStats(ctx context.Context, rdb redis.Cmdable, queues []string, now time.Time, eval bool) ([]*redis.Cmd, []*redis.Cmd, error) {
	pipe := rdb.Pipeline()
	run := func(s *redis.Script, keys []string, args ...any) *redis.Cmd {
		if eval {
			return s.Eval(ctx, pipe, keys, args...)
		}
		return s.EvalSha(ctx, pipe, keys, args...)
	}
	stats := make([]*redis.Cmd, len(queues))
	mem := make([]*redis.Cmd, len(queues))
	for i, q := range queues {
		p := queuePrefix(q)
		stats[i] = run(currentStatsScript, []string{
			p + "pending", p + "active", p + "scheduled", p + "retry", p + "archived", p + "completed",
			dateKey(q, "processed", now), dateKey(q, "failed", now), p + "processed", p + "failed",
			p + "paused", p + "groups",
		}, p+"t:", p+"g:")
		mem[i] = run(memoryUsageScript, []string{
			p + "active", p + "pending", p + "scheduled", p + "retry", p + "archived", p + "completed", p + "groups",
		}, p+"t:", memTaskSample, memGroupSample, p+"g:")
	}
	_, err := pipe.Exec(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, err
	}
	return stats, mem, nil
}

// parseStats reads currentStatsScript's answer as asynq's CurrentStats does.
func parseStats(queue string, v any, now time.Time) (*asynq.QueueInfo, error) {
	data, ok := v.([]any)
	if !ok || len(data)%2 != 0 {
		return nil, fmt.Errorf("asynqstore: queue stats of %s: unexpected answer %T", queue, v)
	}
	p := queuePrefix(queue)
	in := &asynq.QueueInfo{Queue: queue, Timestamp: now}
	for i := 0; i < len(data); i += 2 {
		key, _ := data[i].(string)
		val, err := statInt(data[i+1])
		if err != nil {
			return nil, fmt.Errorf("asynqstore: queue stats of %s: %s: %w", queue, key, err)
		}
		switch key {
		case p + "pending":
			in.Pending = val
		case p + "active":
			in.Active = val
		case p + "scheduled":
			in.Scheduled = val
		case p + "retry":
			in.Retry = val
		case p + "archived":
			in.Archived = val
		case p + "completed":
			in.Completed = val
		case dateKey(queue, "processed", now):
			in.Processed = val
		case dateKey(queue, "failed", now):
			in.Failed = val
		case p + "processed":
			in.ProcessedTotal = val
		case p + "failed":
			in.FailedTotal = val
		case p + "paused":
			in.Paused = val != 0
		case "oldest_pending_since":
			if val != 0 {
				in.Latency = now.Sub(time.Unix(0, int64(val)))
			}
		case "group_size":
			in.Groups = val
		case "aggregating_count":
			in.Aggregating = val
		}
	}
	in.Size = in.Pending + in.Active + in.Scheduled + in.Retry + in.Archived + in.Completed + in.Aggregating
	return in, nil
}

// statInt is a script value as an int: Lua numbers come back as integers,
// pending_since (read by HGET) as a string.
func statInt(v any) (int, error) {
	switch x := v.(type) {
	case int64:
		return int(x), nil
	case string:
		var n int64
		if _, err := fmt.Sscan(x, &n); err != nil {
			return 0, fmt.Errorf("not a number: %q", x)
		}
		return int(n), nil
	case nil:
		return 0, nil
	}
	return 0, fmt.Errorf("unexpected %T", v)
}
