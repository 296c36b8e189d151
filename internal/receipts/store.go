package receipts

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/outcome"
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

// ReceiptKey is the hash holding the delivery receipt of a task:
// otpq:{<queue>}:receipt:<task id>, in the queue's hash slot.
func ReceiptKey(queue, taskID string) string {
	return "otpq:{" + queue + "}:receipt:" + taskID
}

// historyKey is the list of stages of a receipt:
// otpq:{<queue>}:receipt-history:<task id>. Its own prefix, not a suffix of
// ReceiptKey: a task ID may end in anything the ID rules allow, so the
// history of task X must never be the receipt of a task named "X:h".
func historyKey(queue, taskID string) string {
	return "otpq:{" + queue + "}:receipt-history:" + taskID
}

// legacyHistoryKey is where builds before the receipt-history prefix kept
// the history: ReceiptKey + ":h". That name is also the receipt (a hash)
// of a task whose ID ends in ":h", so it is read only when it is a list.
func legacyHistoryKey(queue, taskID string) string { return ReceiptKey(queue, taskID) + ":h" }

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
	// state (detail cleaned and capped: the task's code, runs of digits and
	// addresses scrubbed).
	ErrorCode   int    `json:"error_code,omitempty"`
	ErrorDetail string `json:"error_detail,omitempty"`
	// Cost is the sum billed over the receipts (each counted once), in
	// Currency (USD).
	Cost     float64 `json:"cost,omitempty"`
	Currency string  `json:"currency,omitempty"`
	// History holds the last stages received, oldest first by their time
	// (stages of the same second in lifecycle order).
	History []Stage `json:"history,omitempty"`
}

// Verdict is the receipt's verdict: delivered, failed or pending.
func (r *Receipt) Verdict() outcome.Verdict { return StateVerdict(r.State) }

// SinceAccepted is how long after acceptance t was reported, never
// negative: EngageLab reports whole seconds, so a state reported in the
// second of acceptance can carry a time before it; that is 0. ok is false
// without an acceptance time or t.
func (r *Receipt) SinceAccepted(t time.Time) (d time.Duration, ok bool) {
	if r.AcceptedAt.IsZero() || t.IsZero() {
		return 0, false
	}
	return max(t.Sub(r.AcceptedAt), 0), true
}

// Stage is one status callback as received.
type Stage struct {
	// Status is the canonical spelling (as Receipt.State); RawStatus the
	// value EngageLab sent, set only when it differs (delivered_fail).
	Status    string    `json:"status"`
	RawStatus string    `json:"raw_status,omitempty"`
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
// A history still under its legacy name (a list at KEYS[3]; a hash there is
// another task's receipt) is moved to KEYS[2] first, so duplicates recorded
// before an upgrade are still recognised.
//
// KEYS: receipt hash, history list, legacy history. ARGV: stage json, state, raw, rank,
// tier, at ms, channel, error code, error detail, cost, currency, now ms,
// ttl ms, history max, message_id, masked to, accepted_at ms, history entry.
//
// A history entry is the stage json, then "|" and the millisecond the
// callback arrived (entries of earlier builds have no suffix); duplicates are
// recognised by the stage json alone.
// Returns {applied (0/1), duplicate (0/1), previous state}.
var applyScript = redis.NewScript(`
if redis.call('TYPE', KEYS[3]).ok == 'list' and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('RENAME', KEYS[3], KEYS[2])
end
local hist = redis.call('LRANGE', KEYS[2], 0, -1)
local dup = ARGV[1] .. '|'
for i = 1, #hist do
  if hist[i] == ARGV[1] or string.sub(hist[i], 1, #dup) == dup then return {0, 1, ''} end
end
redis.call('RPUSH', KEYS[2], ARGV[18])
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
	entry := string(stage)
	if !e.Received.IsZero() {
		entry += "|" + strconv.FormatInt(e.Received.UnixMilli(), 10)
	}
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
	res, err := applyScript.Run(ctx, rdb, []string{ReceiptKey(l.Queue, l.TaskID), historyKey(l.Queue, l.TaskID), legacyHistoryKey(l.Queue, l.TaskID)},
		string(stage), e.Status, e.Raw, rank, tier, e.At.UnixMilli(), e.Channel, e.ErrorCode, e.ErrorDetail,
		strconv.FormatFloat(e.Cost, 'f', -1, 64), e.Currency, now.UnixMilli(), ttl.Milliseconds(), history,
		e.MessageID, to, acc, entry).Slice()
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
// callback yet, callbacks not configured, or expired). Values stored by
// earlier builds that cannot be shown (a time past year 9999, a cost that
// is not a finite positive number) read as absent, so a receipt never makes
// a status unreadable.
func Load(ctx context.Context, rdb redis.Cmdable, queue, taskID string) (*Receipt, error) {
	pipe := rdb.Pipeline()
	hc := pipe.HGetAll(ctx, ReceiptKey(queue, taskID))
	lc := pipe.LRange(ctx, historyKey(queue, taskID), 0, -1)
	tc := pipe.Type(ctx, legacyHistoryKey(queue, taskID))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("receipts: load: %w", err)
	}
	h := hc.Val()
	if len(h) == 0 || h["state"] == "" {
		return nil, nil
	}
	stages := lc.Val()
	if len(stages) == 0 && tc.Val() == "list" {
		old, err := rdb.LRange(ctx, legacyHistoryKey(queue, taskID), 0, -1).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("receipts: load: %w", err)
		}
		stages = old
	}
	ms := func(k string) time.Time {
		v, err := strconv.ParseInt(h[k], 10, 64)
		if err != nil {
			return time.Time{}
		}
		return showable(v)
	}
	r := &Receipt{
		MessageID: h["message_id"], State: h["state"], RawStatus: h["raw"], Channel: h["channel"], To: h["to"],
		AcceptedAt: ms("accepted_at"), StateAt: ms("at"), DeliveredAt: ms("delivered_at"), UpdatedAt: ms("updated_at"),
		ErrorDetail: h["error_detail"], Currency: h["currency"],
	}
	tier, _ := strconv.Atoi(h["tier"])
	r.Final = tier >= tierFailed
	r.ErrorCode, _ = strconv.Atoi(h["error_code"])
	if c, err := strconv.ParseFloat(h["cost"], 64); err == nil && c > 0 && !math.IsInf(c, 0) {
		r.Cost = c
	}
	type arrived struct {
		st   Stage
		recv int64 // ms the callback arrived; 0: not recorded
	}
	all := make([]arrived, 0, len(stages))
	for _, s := range stages {
		js, recv := s, int64(0)
		if i := strings.LastIndexByte(s, '}'); i >= 0 && strings.HasPrefix(s[i+1:], "|") {
			js = s[:i+1]
			recv, _ = strconv.ParseInt(s[i+2:], 10, 64)
		}
		var sj stageJSON
		if json.Unmarshal([]byte(js), &sj) == nil {
			st := Stage{Status: sj.Status, Channel: sj.Channel, At: showable(sj.At), ErrorCode: sj.ErrorCode}
			if c, known := Canonical(sj.Status); known && c != sj.Status {
				st.Status, st.RawStatus = c, sj.Status
			}
			all = append(all, arrived{st, recv})
		}
	}
	// EngageLab's times are whole seconds: stages within one second are
	// put in lifecycle order (sent before delivered_failed), then in the
	// order they arrived. The list itself is in the order they were
	// recorded, and a callback that came before its task's receipt link was
	// stored is recorded later, when the matcher attaches it: otpq dev once
	// showed "sent via sms → sent via whatsapp" for that reason.
	slices.SortStableFunc(all, func(a, b arrived) int {
		if c := a.st.At.Compare(b.st.At); c != 0 {
			return c
		}
		_, _, ra := classify(a.st.Status)
		_, _, rb := classify(b.st.Status)
		if ra != rb {
			return ra - rb
		}
		if a.recv != 0 && b.recv != 0 {
			return cmp.Compare(a.recv, b.recv)
		}
		return 0
	})
	for _, a := range all {
		r.History = append(r.History, a.st)
	}
	return r, nil
}

// showable is the time of a stored Unix millisecond value, zero when it is
// 0 or outside the years JSON (RFC 3339) can show.
func showable(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	t := time.UnixMilli(ms).UTC()
	if t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}
	}
	return t
}
