package producer

import (
	"context"
	"fmt"
	"time"

	"github.com/otpq/otpq/internal/receipts"
)

// Receipt is a task's delivery receipt: what EngageLab reported through its
// status callbacks after accepting the send (state, channel after a
// WhatsApp→SMS fallback, times, error, cost, history). It holds no code and
// only a masked destination. Workers record it when the EngageLab callback
// is configured (see README, "Delivery receipts").
type Receipt = receipts.Receipt

// ReceiptStage is one status callback in a Receipt's history.
type ReceiptStage = receipts.Stage

// ReceiptEvent is one entry of the receipt stream: a change of a task's
// delivery state. Its fields are documented on the stream format
// (ReceiptStreamKey).
type ReceiptEvent = receipts.Entry

// ReceiptStreamKey is the Redis Stream workers append receipt state changes
// to (bounded, approximately 100000 entries). Entry fields, all strings:
// task_id, queue, message_id, status (canonical), raw_status, final ("1"
// or "0"), channel, error_code ("0" for none), at (RFC 3339), to (masked).
const ReceiptStreamKey = receipts.StreamKey

// receipt reads the receipt of a task, nil when it has none.
func (p *Producer) receipt(ctx context.Context, queue, id string) (*Receipt, error) {
	rc, err := receipts.Load(ctx, p.rdb, queue, id)
	if err != nil {
		return nil, fmt.Errorf("producer: status: %w", err)
	}
	return rc, nil
}

// ReadReceipts returns up to count receipt events after the event ID after
// ("" for the oldest kept, "$" for only new ones), waiting up to block for
// one when there is none (block <= 0: no wait). Continue from the last
// event's ID. To react to failures (offer a voice call when SMS failed…),
// look at events with Final set and Status other than "delivered".
// Several consumers sharing the work can use XREADGROUP on
// ReceiptStreamKey directly.
func (p *Producer) ReadReceipts(ctx context.Context, after string, count int64, block time.Duration) ([]ReceiptEvent, error) {
	return receipts.ReadStream(ctx, p.rdb, after, count, block)
}
