package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/metrics"
)

// Held-receipt defaults: a receipt whose message_id has no link yet is
// held, within these bounds, until the link appears or PendingTTL passes.
const (
	// DefaultMaxHeld caps the number of held receipts (all workers
	// together); past it new ones are dropped and counted.
	DefaultMaxHeld = 10000
	// DefaultMaxHeldBytes caps the bytes of held receipts (their stored
	// form and message_ids); past it new ones are dropped and counted.
	DefaultMaxHeldBytes = 8 << 20
	// maxHeldPerMessage caps the receipts held for one message_id.
	maxHeldPerMessage = 20
	// scanBatch is how many held message_ids one matcher pass looks up:
	// a cursor walks all of them, so at DefaultMaxHeld a receipt waits at
	// most DefaultMaxHeld/scanBatch passes for its turn, however many
	// junk receipts sort before it.
	scanBatch = 2000
	// expireBatch bounds the expired message_ids dropped per pass.
	expireBatch = 500
)

// Keys of the held receipts, in one hash slot so that scripts see them
// together: a hash message_id → its receipts (stored Events, one per line),
// a sorted set of message_ids by deadline, and the running totals (rows,
// bytes) the caps are checked against. All three expire together, a
// minute after the last receipt held would have.
const (
	heldKey     = "otpq:{receipts}:held"
	heldDueKey  = "otpq:{receipts}:held-due"
	heldSizeKey = "otpq:{receipts}:held-size"
)

// Keys of builds that held receipts in one list per message_id: drained
// into the current keys by the matcher (a rolling upgrade loses nothing).
const (
	legacyPendingSetKey    = "otpq:{receipts}:pending"
	legacyPendingRowPrefix = "otpq:{receipts}:pending:"
)

// holdScript holds receipts under the caps, atomically across workers.
//
// KEYS: held, held-due, held-size. ARGV: key ttl ms, max rows, max bytes,
// max per message_id, then triples (message_id, deadline ms, event json).
// Returns one code per triple: 0 held, 1 count cap, 2 byte cap, 3 per
// message_id cap.
var holdScript = redis.NewScript(`
local size = redis.call('HMGET', KEYS[3], 'rows', 'bytes')
local rows, bytes = tonumber(size[1] or '0'), tonumber(size[2] or '0')
local maxRows, maxBytes, perMid = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 3 do
  local mid, ev = ARGV[i], ARGV[i+2]
  local cur = redis.call('HGET', KEYS[1], mid)
  local add = #ev + 1
  if not cur then add = add + #mid end
  local code = 0
  if rows + 1 > maxRows then
    code = 1
  elseif bytes + add > maxBytes then
    code = 2
  elseif cur and select(2, string.gsub(cur, '\n', '')) >= perMid then
    code = 3
  end
  if code == 0 then
    redis.call('HSET', KEYS[1], mid, (cur or '') .. ev .. '\n')
    redis.call('ZADD', KEYS[2], 'NX', ARGV[i+1], mid)
    rows, bytes = rows + 1, bytes + add
  end
  out[#out+1] = code
end
redis.call('HSET', KEYS[3], 'rows', rows, 'bytes', bytes)
for k = 1, 3 do
  if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('PEXPIRE', KEYS[k], ARGV[1]) end
end
return out
`)

// takeScript removes message_ids and their receipts, atomically: whoever
// removes a message_id owns its receipts (every worker runs a matcher).
//
// KEYS: held, held-due, held-size. ARGV: message_ids. Returns, per
// message_id, its receipts (one per line), or "" when another worker took
// them first.
var takeScript = redis.NewScript(`
local size = redis.call('HMGET', KEYS[3], 'rows', 'bytes')
local rows, bytes = tonumber(size[1] or '0'), tonumber(size[2] or '0')
local out = {}
for i = 1, #ARGV do
  local v = ''
  if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then
    v = redis.call('HGET', KEYS[1], ARGV[i]) or ''
    redis.call('HDEL', KEYS[1], ARGV[i])
    if v ~= '' then
      rows = rows - select(2, string.gsub(v, '\n', ''))
      bytes = bytes - #v - #ARGV[i]
    end
  end
  out[#out+1] = v
end
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
elseif redis.call('EXISTS', KEYS[3]) == 1 then
  if rows < 0 then rows = 0 end
  if bytes < 0 then bytes = 0 end
  redis.call('HSET', KEYS[3], 'rows', rows, 'bytes', bytes)
end
return out
`)

var heldKeys = []string{heldKey, heldDueKey, heldSizeKey}

// heldRow is one receipt to hold.
type heldRow struct {
	e        Event
	deadline time.Time
}

// hold keeps receipts until their message_id's link appears (the matcher
// attaches them) or PendingTTL passes, within MaxHeld and MaxHeldBytes,
// and counts each row: pending, or dropped with its reason.
func (r *Receiver) hold(ctx context.Context, rows []heldRow) error {
	if len(rows) == 0 {
		return nil
	}
	args := []any{(r.cfg.PendingTTL + time.Minute).Milliseconds(), r.cfg.MaxHeld, r.cfg.MaxHeldBytes, maxHeldPerMessage}
	for _, h := range rows {
		b, err := json.Marshal(h.e)
		if err != nil {
			// Every field is checked by eventOf; this cannot happen.
			return fmt.Errorf("receipts: hold: %w", err)
		}
		args = append(args, h.e.MessageID, h.deadline.UnixMilli(), b)
	}
	codes, err := holdScript.Run(ctx, r.rdb, heldKeys, args...).Int64Slice()
	if err != nil {
		return fmt.Errorf("receipts: hold: %w", err)
	}
	dropped := 0
	for _, c := range codes {
		switch c {
		case 0:
			r.m.Row(metrics.RowPending)
		case 1:
			r.m.Dropped(metrics.DropHeldCount)
		case 2:
			r.m.Dropped(metrics.DropHeldBytes)
		default:
			r.m.Dropped(metrics.DropHeldMessage)
		}
		if c != 0 {
			dropped++
		}
	}
	if dropped > 0 {
		// At most a line per interval: a sender of receipts for unknown
		// message_ids can cause one per request (the metric counts each row).
		r.refusals.Warn("receipts without a linked task dropped: the held receipts are at their cap",
			slog.Int("dropped", dropped), slog.Int("max_held", r.cfg.MaxHeld), slog.Int64("max_held_bytes", r.cfg.MaxHeldBytes))
	}
	return nil
}

// take claims the held receipts of mids; nil for a message_id another
// worker claimed first.
func (r *Receiver) take(ctx context.Context, mids []string) ([][]Event, error) {
	args := make([]any, len(mids))
	for i, m := range mids {
		args[i] = m
	}
	vals, err := takeScript.Run(ctx, r.rdb, heldKeys, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("receipts: take held receipts: %w", err)
	}
	out := make([][]Event, len(vals))
	for i, v := range vals {
		for _, line := range strings.Split(v, "\n") {
			var e Event
			if line != "" && json.Unmarshal([]byte(line), &e) == nil {
				out[i] = append(out[i], e)
			}
		}
	}
	return out, nil
}

// Run attaches held receipts to links that appeared since, every
// PollInterval, until ctx is done. Every worker runs one; they agree
// through Redis (the one that removes a message_id from the held set
// attaches its receipts).
func (r *Receiver) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Debug only: a Redis outage is reported once, by the worker.
		if _, err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.log.Debug("matching held receipts", "error", err.Error())
		}
	}
}

// Reconcile makes one pass over the held receipts: it looks up the links
// of the next scanBatch message_ids after its cursor (wrapping around, so
// every held receipt is looked at within MaxHeld/scanBatch passes, however
// many sort before it) and of those past their deadline. Receipts whose
// link now exists are recorded; those held past PendingTTL are dropped
// (counted as expired). It returns how many message_ids were attached.
func (r *Receiver) Reconcile(ctx context.Context) (int, error) {
	if err := r.drainLegacy(ctx); err != nil {
		return 0, err
	}
	now := r.cfg.Now()
	r.mu.Lock()
	off := r.cursor
	r.mu.Unlock()
	pipe := r.rdb.Pipeline()
	win := pipe.ZRange(ctx, heldDueKey, off, off+scanBatch-1)
	due := pipe.ZRangeByScore(ctx, heldDueKey, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: expireBatch})
	size := pipe.HMGet(ctx, heldSizeKey, "rows", "bytes")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("receipts: held receipts: %w", err)
	}
	next := off + int64(len(win.Val()))
	if len(win.Val()) < scanBatch {
		next = 0
	}
	r.mu.Lock()
	r.cursor = next
	r.mu.Unlock()
	if v := size.Val(); len(v) == 2 {
		n := func(x any) int64 { s, _ := x.(string); i, _ := strconv.ParseInt(s, 10, 64); return i }
		r.m.Held(n(v[0]), n(v[1]))
	}
	expired := map[string]bool{}
	mids := win.Val()
	for _, m := range due.Val() {
		if !expired[m] {
			expired[m] = true
			mids = append(mids, m)
		}
	}
	if len(mids) == 0 {
		return 0, nil
	}
	links, err := r.lookup(ctx, mids)
	if err != nil {
		return 0, err
	}
	var claim []string
	seen := map[string]bool{}
	for _, m := range mids {
		if _, found := links[m]; (found || expired[m]) && !seen[m] {
			seen[m] = true
			claim = append(claim, m)
		}
	}
	if len(claim) == 0 {
		return 0, nil
	}
	taken, err := r.take(ctx, claim)
	if err != nil {
		return 0, err
	}
	attached, dropped := 0, 0
	for i, mid := range claim {
		l, found := links[mid]
		if !found {
			for range taken[i] {
				r.m.Row(metrics.RowExpired)
				dropped++
			}
			continue
		}
		for _, e := range taken[i] {
			if _, err := r.record(ctx, l, e, now); err != nil {
				// Claimed but not recorded: hold it again rather than lose it.
				rest := []heldRow{}
				for _, e := range taken[i] {
					rest = append(rest, heldRow{e: e, deadline: now.Add(r.cfg.PendingTTL)})
				}
				_ = r.hold(context.WithoutCancel(ctx), rest)
				return attached, err
			}
			r.m.Row(metrics.RowAttached)
		}
		if len(taken[i]) > 0 {
			attached++
		}
	}
	if dropped > 0 {
		r.log.Info("receipts for unknown message_ids dropped after waiting for their task", "receipts", dropped, "waited", r.cfg.PendingTTL)
	}
	return attached, nil
}

// drainLegacy moves receipts held by builds before the held caps (one list
// per message_id) into the current keys, a batch per pass.
func (r *Receiver) drainLegacy(ctx context.Context) error {
	zs, err := r.rdb.ZPopMin(ctx, legacyPendingSetKey, expireBatch).Result()
	if err != nil || len(zs) == 0 {
		if errors.Is(err, redis.Nil) {
			err = nil
		}
		return err
	}
	pipe := r.rdb.TxPipeline()
	lists := make([]*redis.StringSliceCmd, len(zs))
	for i, z := range zs {
		mid, _ := z.Member.(string)
		lists[i] = pipe.LRange(ctx, legacyPendingRowPrefix+mid, 0, -1)
		pipe.Del(ctx, legacyPendingRowPrefix+mid)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("receipts: drain held receipts of an earlier build: %w", err)
	}
	var rows []heldRow
	for i, z := range zs {
		for _, s := range lists[i].Val() {
			var e Event
			if json.Unmarshal([]byte(s), &e) == nil && e.MessageID != "" {
				rows = append(rows, heldRow{e: e, deadline: time.UnixMilli(int64(z.Score))})
			}
		}
	}
	return r.hold(ctx, rows)
}
