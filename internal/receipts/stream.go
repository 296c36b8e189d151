package receipts

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Entry is one entry of the receipt stream (StreamKey): a change of a
// task's delivery state. Fields of the stored entry, all strings:
//
//	task_id      the otpq task ID
//	queue        the task's queue: critical or bulk, or a shard of one (critical-1dp…; see internal/shard, whose ClassOf gives the class)
//	message_id   EngageLab's message_id
//	status       canonical state (delivered, delivered_failed, sent_failed, target_invalid, sent, …; unknown values verbatim)
//	raw_status   the value EngageLab sent (sent_fail and sent_failed both occur)
//	final        "1" when the state ends the delivery, else "0"
//	channel      the channel of this state (current_send_channel; changes after a WhatsApp→SMS fallback)
//	error_code   the provider's error code, "0" for none
//	at           when EngageLab reported it, RFC 3339 UTC
//	to           the destination, masked (+86187****5678); never the full destination, never the code
//
// An entry is added only when a callback changes the state: duplicates and
// late earlier stages add nothing.
type Entry struct {
	// ID is the stream entry ID, the cursor for the next read.
	ID        string    `json:"id"`
	TaskID    string    `json:"task_id"`
	Queue     string    `json:"queue"`
	MessageID string    `json:"message_id"`
	Status    string    `json:"status"`
	RawStatus string    `json:"raw_status"`
	Final     bool      `json:"final"`
	Channel   string    `json:"channel,omitempty"`
	ErrorCode int       `json:"error_code,omitempty"`
	At        time.Time `json:"at"`
	To        string    `json:"to,omitempty"`
}

func (e Entry) values() []any {
	final := "0"
	if e.Final {
		final = "1"
	}
	return []any{"task_id", e.TaskID, "queue", e.Queue, "message_id", e.MessageID, "status", e.Status,
		"raw_status", e.RawStatus, "final", final, "channel", e.Channel, "error_code", strconv.Itoa(e.ErrorCode),
		"at", e.At.UTC().Format(time.RFC3339Nano), "to", e.To}
}

func entryOf(m redis.XMessage) Entry {
	s := func(k string) string { v, _ := m.Values[k].(string); return v }
	e := Entry{ID: m.ID, TaskID: s("task_id"), Queue: s("queue"), MessageID: s("message_id"), Status: s("status"),
		RawStatus: s("raw_status"), Final: s("final") == "1", Channel: s("channel"), To: s("to")}
	e.ErrorCode, _ = strconv.Atoi(s("error_code"))
	e.At, _ = time.Parse(time.RFC3339Nano, s("at"))
	return e
}

// publish appends e to the stream, trimming it to about maxLen entries.
func publish(ctx context.Context, rdb redis.Cmdable, e Entry, maxLen int64) error {
	err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: StreamKey, MaxLen: maxLen, Approx: true, Values: e.values()}).Err()
	if err != nil {
		return fmt.Errorf("receipts: stream: %w", err)
	}
	return nil
}

// ReadStream reads up to count entries of the receipt stream after the
// entry ID after ("" or "0": from the oldest kept; "$": only new ones),
// waiting up to block for one when none is there (block <= 0: no wait).
// Pass the last entry's ID as after to continue. For several consumers
// sharing the work, use XREADGROUP on StreamKey directly: the entry format
// is documented on Entry.
func ReadStream(ctx context.Context, rdb redis.Cmdable, after string, count int64, block time.Duration) ([]Entry, error) {
	if after == "" {
		after = "0"
	}
	if block <= 0 {
		block = -1 // go-redis: no BLOCK argument
	}
	res, err := rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{StreamKey, after}, Count: count, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("receipts: read stream: %w", err)
	}
	var out []Entry
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, entryOf(m))
		}
	}
	return out, nil
}
