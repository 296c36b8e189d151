package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store defaults.
const (
	// DefaultHistory is how many stages a receipt keeps.
	DefaultHistory = 20
	// DefaultPendingTTL is how long a receipt for a message_id without a
	// link yet is kept, waiting for the worker's delivery write.
	DefaultPendingTTL = 10 * time.Minute
	// DefaultStreamMaxLen bounds the receipt stream (approximately).
	DefaultStreamMaxLen = 100000
	// MinTTL is the shortest life of a stored receipt (when the link is
	// about to expire).
	MinTTL = time.Minute
)

// StreamKey is the Redis Stream of receipt state changes (see Entry).
const StreamKey = "otpq:receipts"

// Keys of receipts not linked yet: one list per message_id and a sorted
// set of message_ids by deadline, in one hash slot.
const (
	pendingSetKey    = "otpq:{receipts}:pending"
	pendingRowPrefix = "otpq:{receipts}:pending:"
	maxPendingRows   = 20
)

// ReceiptKey is the hash holding the delivery receipt of a task:
// otpq:{<queue>}:receipt:<task id>, in the queue's hash slot.
func ReceiptKey(queue, taskID string) string {
	return "otpq:{" + queue + "}:receipt:" + taskID
}

// historyKey is the list of stages of a receipt.
func historyKey(queue, taskID string) string { return ReceiptKey(queue, taskID) + ":h" }

// Receipt is the delivery receipt of a task: what EngageLab reported after
// accepting the send. It holds no code and only a masked destination.
type Receipt struct {
	MessageID string `json:"message_id"`
	// State is the current delivery state: delivered, delivered_failed,
	// sent_failed, target_invalid, sent, … (canonical spelling), or an
	// unknown value verbatim. RawStatus is the value as EngageLab sent it.
	State     string `json:"state"`
	RawStatus string `json:"raw_status"`
	// Final is true once the state ends the delivery (delivered or a
	// failure); a later, earlier-stage callback never changes it.
	Final bool `json:"final"`
	// Channel is the channel of the current state (current_send_channel:
	// it changes after a WhatsApp→SMS fallback).
	Channel string `json:"channel,omitempty"`
	// To is the destination, masked.
	To string `json:"to,omitempty"`
	// AcceptedAt is when EngageLab accepted the send; StateAt when it
	// reported the current state; DeliveredAt when it reported delivered.
	AcceptedAt  time.Time `json:"accepted_at,omitzero"`
	StateAt     time.Time `json:"state_at,omitzero"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	// UpdatedAt is when the last callback arrived.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// ErrorCode and ErrorDetail are the provider's error of the current
	// state (detail cleaned and capped: digits runs and addresses scrubbed).
	ErrorCode   int    `json:"error_code,omitempty"`
	ErrorDetail string `json:"error_detail,omitempty"`
	// Cost is the sum billed over the receipts (each counted once), in
	// Currency (USD).
	Cost     float64 `json:"cost,omitempty"`
	Currency string  `json:"currency,omitempty"`
	// History holds the last stages received, oldest first by their time.
	History []Stage `json:"history,omitempty"`
}

// Stage is one status callback as received.
type Stage struct {
	Status    string    `json:"status"` // raw value
	Channel   string    `json:"channel,omitempty"`
	At        time.Time `json:"at"`
	ErrorCode int       `json:"error_code,omitempty"`
}

// stageJSON is the stored form of a Stage: deterministic, so that a
// duplicate callback is recognised by equality.
type stageJSON struct {
	Status    string `json:"s"`
	Channel   string `json:"c,omitempty"`
	At        int64  `json:"t"`
	ErrorCode int    `json:"e,omitempty"`
}

// applyScript records one event on a task's receipt, atomically (workers
// receive callbacks concurrently). A duplicate (same stage, channel, time
// and error as one in the history) changes nothing. The state changes only
// when the event's tier is higher, or equal with a later or equal rank and
// time: see the tier constants.
//
// KEYS: receipt hash, history list. ARGV: stage json, state, raw, rank,
// tier, at ms, channel, error code, error detail, cost, currency, now ms,
// ttl ms, history max, message_id, masked to, accepted_at ms.
// Returns {applied (0/1), duplicate (0/1), previous state}.
var applyScript = redis.NewScript(`
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #hist do
  if hist[i] == ARGV[1] then return {0, 1, ''} end
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[14]), -1)
local cur = redis.call('HMGET', KEYS[1], 'state', 'rank', 'tier', 'at')
local prev = cur[1] or ''
local rank, tier, at = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local take = false
if not cur[1] then
  take = true
else
  local crank, ctier, cat = tonumber(cur[2]), tonumber(cur[3]), tonumber(cur[4])
  if tier > ctier then
    take = true
  elseif tier == ctier then
    take = rank > crank or (rank == crank and at >= cat)
  end
end
if take then
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'raw', ARGV[3], 'rank', ARGV[4], 'tier', ARGV[5],
    'at', ARGV[6], 'channel', ARGV[7], 'error_code', ARGV[8], 'error_detail', ARGV[9])
  if ARGV[2] == 'delivered' then redis.call('HSETNX', KEYS[1], 'delivered_at', ARGV[6]) end
end
local cost = tonumber(ARGV[10])
if cost and cost > 0 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'cost', ARGV[10])
  redis.call('HSET', KEYS[1], 'currency', ARGV[11])
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[12], 'message_id', ARGV[15])
if ARGV[16] ~= '' then redis.call('HSET', KEYS[1], 'to', ARGV[16]) end
if ARGV[17] ~= '0' then redis.call('HSETNX', KEYS[1], 'accepted_at', ARGV[17]) end
redis.call('PEXPIRE', KEYS[1], ARGV[13])
redis.call('PEXPIRE', KEYS[2], ARGV[13])
if take then return {1, 0, prev} end
return {0, 0, prev}
`)

// applied is the outcome of recording one event.
type applied struct {
	Taken, Duplicate bool
	Prev             string
}

// apply records e on the receipt of l's task.
func apply(ctx context.Context, rdb redis.Cmdable, l Link, e Event, ttl time.Duration, history int, now time.Time) (applied, error) {
	_, tier, rank := classify(e.Raw)
	stage, _ := json.Marshal(stageJSON{Status: e.Raw, Channel: e.Channel, At: e.At.UnixMilli(), ErrorCode: e.ErrorCode})
	if ttl < MinTTL {
		ttl = MinTTL
	}
	acc := int64(0)
	if !l.AcceptedAt.IsZero() {
		acc = l.AcceptedAt.UnixMilli()
	}
	to := l.To
	if to == "" {
		to = e.MaskedTo
	}
	res, err := applyScript.Run(ctx, rdb, []string{ReceiptKey(l.Queue, l.TaskID), historyKey(l.Queue, l.TaskID)},
		string(stage), e.Status, e.Raw, rank, tier, e.At.UnixMilli(), e.Channel, e.ErrorCode, e.ErrorDetail,
		strconv.FormatFloat(e.Cost, 'f', -1, 64), e.Currency, now.UnixMilli(), ttl.Milliseconds(), history,
		e.MessageID, to, acc).Slice()
	if err != nil {
		return applied{}, fmt.Errorf("receipts: record: %w", err)
	}
	if len(res) != 3 {
		return applied{}, fmt.Errorf("receipts: record: unexpected script answer %v", res)
	}
	n := func(v any) bool { i, _ := v.(int64); return i == 1 }
	prev, _ := res[2].(string)
	return applied{Taken: n(res[0]), Duplicate: n(res[1]), Prev: prev}, nil
}

// Load reads the receipt of a task; nil, nil when there is none (no
// callback yet, callbacks not configured, or expired).
func Load(ctx context.Context, rdb redis.Cmdable, queue, taskID string) (*Receipt, error) {
	pipe := rdb.Pipeline()
	hc := pipe.HGetAll(ctx, ReceiptKey(queue, taskID))
	lc := pipe.LRange(ctx, historyKey(queue, taskID), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("receipts: load: %w", err)
	}
	h := hc.Val()
	if len(h) == 0 || h["state"] == "" {
		return nil, nil
	}
	ms := func(k string) time.Time {
		v, err := strconv.ParseInt(h[k], 10, 64)
		if err != nil || v == 0 {
			return time.Time{}
		}
		return time.UnixMilli(v).UTC()
	}
	r := &Receipt{
		MessageID: h["message_id"], State: h["state"], RawStatus: h["raw"], Channel: h["channel"], To: h["to"],
		AcceptedAt: ms("accepted_at"), StateAt: ms("at"), DeliveredAt: ms("delivered_at"), UpdatedAt: ms("updated_at"),
		ErrorDetail: h["error_detail"], Currency: h["currency"],
	}
	tier, _ := strconv.Atoi(h["tier"])
	r.Final = tier >= tierFailed
	r.ErrorCode, _ = strconv.Atoi(h["error_code"])
	r.Cost, _ = strconv.ParseFloat(h["cost"], 64)
	for _, s := range lc.Val() {
		var sj stageJSON
		if json.Unmarshal([]byte(s), &sj) == nil {
			r.History = append(r.History, Stage{Status: sj.Status, Channel: sj.Channel, At: time.UnixMilli(sj.At).UTC(), ErrorCode: sj.ErrorCode})
		}
	}
	slices.SortStableFunc(r.History, func(a, b Stage) int { return a.At.Compare(b.At) })
	return r, nil
}
