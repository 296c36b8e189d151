package producer

import (
	"context"
	"fmt"
	"time"

	"github.com/otpq/otpq/internal/receipts"
)

// Receipt is a task's delivery receipt: what EngageLab reported through its
// status callbacks after accepting the send. It holds no code and only a
// masked destination. Workers record it when the EngageLab callback is
// configured (see README, "Delivery receipts").
type Receipt struct {
	// MessageID is EngageLab's message_id of the send.
	MessageID string `json:"message_id"`
	// Verdict is what the receipt says happened: "delivered" (the code
	// reached the handset), "failed" (delivery failed for good; see
	// ErrorCode) or "pending" (no final state yet).
	Verdict string `json:"verdict"`
	// State is the current delivery state in one spelling: delivered,
	// delivered_failed, sent_failed, target_invalid, sent, plan, read,
	// verified, … (an unknown value verbatim). RawStatus is the value as
	// EngageLab sent it (delivered_fail and delivered_failed both occur).
	State     string `json:"state"`
	RawStatus string `json:"raw_status"`
	// Final is true once the state ends the delivery (delivered or a
	// failure); a later, earlier-stage callback never changes it.
	Final bool `json:"final"`
	// Channel is the channel of the current state (sms, whatsapp, email,
	// voice; it changes after a WhatsApp→SMS fallback).
	Channel string `json:"channel,omitempty"`
	// To is the destination, masked (+861*******678).
	To string `json:"to,omitempty"`
	// AcceptedAt is when EngageLab accepted the send (the worker's clock);
	// StateAt when EngageLab reported the current state and DeliveredAt
	// when it reported delivered (EngageLab's clock, whole seconds: they
	// may read up to a second before AcceptedAt).
	AcceptedAt  time.Time `json:"accepted_at,omitzero"`
	StateAt     time.Time `json:"state_at,omitzero"`
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	// UpdatedAt is when the last callback arrived.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// ErrorCode and ErrorDetail are the provider's error of the current
	// state (4001, "Message could not be delivered"); the detail is cleaned
	// and capped.
	ErrorCode   int    `json:"error_code,omitempty"`
	ErrorDetail string `json:"error_detail,omitempty"`
	// Cost is the sum billed for the send, in Currency (USD).
	Cost     float64 `json:"cost,omitempty"`
	Currency string  `json:"currency,omitempty"`
	// History holds the last status callbacks received, in time order
	// (callbacks of the same second in lifecycle order).
	History []ReceiptStage `json:"history,omitempty"`
}

// DeliveredAfter is how long after acceptance the code was reported
// delivered, never negative (a report in the second of acceptance is 0);
// ok is false when it was not reported delivered or the acceptance time is
// unknown.
func (r *Receipt) DeliveredAfter() (d time.Duration, ok bool) {
	if r.AcceptedAt.IsZero() || r.DeliveredAt.IsZero() {
		return 0, false
	}
	return max(r.DeliveredAt.Sub(r.AcceptedAt), 0), true
}

// ReceiptStage is one status callback in a Receipt.
type ReceiptStage struct {
	// Status is the stage in the spelling of Receipt.State; RawStatus the
	// value EngageLab sent, only when it differs.
	Status    string `json:"status"`
	RawStatus string `json:"raw_status,omitempty"`
	// Channel is the channel the stage is about.
	Channel string `json:"channel,omitempty"`
	// At is when EngageLab reported the stage (whole seconds).
	At time.Time `json:"at"`
	// ErrorCode is the provider's error code of a failed stage.
	ErrorCode int `json:"error_code,omitempty"`
}

// ReceiptEvent is one entry of the receipt stream (ReceiptStreamKey): a
// change of a task's delivery state. Only changes are appended: duplicate
// callbacks and late earlier stages add nothing.
type ReceiptEvent struct {
	// ID is the stream entry ID, the cursor for the next ReadReceipts.
	ID string `json:"id"`
	// TaskID and Queue identify the task (see Status). Queue is the
	// task's asynq queue, as in Status.Queue: with Config.Shards > 1, a
	// shard of the class ("critical-3a"), not the class.
	TaskID string `json:"task_id"`
	Queue  string `json:"queue"`
	// MessageID is EngageLab's message_id.
	MessageID string `json:"message_id"`
	// Status is the new state (spelled as Receipt.State), RawStatus as
	// EngageLab sent it.
	Status    string `json:"status"`
	RawStatus string `json:"raw_status"`
	// Final is true when the state ends the delivery.
	Final bool `json:"final"`
	// Verdict is "delivered", "failed" or "pending", as Receipt.Verdict.
	Verdict string `json:"verdict"`
	// Channel is the channel of this state.
	Channel string `json:"channel,omitempty"`
	// ErrorCode is the provider's error code, 0 for none.
	ErrorCode int `json:"error_code,omitempty"`
	// At is when EngageLab reported the state.
	At time.Time `json:"at"`
	// To is the destination, masked.
	To string `json:"to,omitempty"`
}

// ReceiptStreamKey is the Redis Stream workers append receipt state changes
// to (bounded, approximately 100000 entries). Entry fields, all strings:
// task_id, queue, message_id, status (canonical), raw_status, final ("1"
// or "0"), channel, error_code ("0" for none), at (RFC 3339), to (masked).
const ReceiptStreamKey = receipts.StreamKey

// receiptOf converts the stored receipt.
func receiptOf(rc *receipts.Receipt) *Receipt {
	if rc == nil {
		return nil
	}
	r := &Receipt{
		MessageID: rc.MessageID, Verdict: rc.Verdict().String(), State: rc.State, RawStatus: rc.RawStatus,
		Final: rc.Final, Channel: rc.Channel, To: rc.To, AcceptedAt: rc.AcceptedAt, StateAt: rc.StateAt,
		DeliveredAt: rc.DeliveredAt, UpdatedAt: rc.UpdatedAt, ErrorCode: rc.ErrorCode, ErrorDetail: rc.ErrorDetail,
		Cost: rc.Cost, Currency: rc.Currency,
	}
	for _, s := range rc.History {
		r.History = append(r.History, ReceiptStage{Status: s.Status, RawStatus: s.RawStatus, Channel: s.Channel, At: s.At, ErrorCode: s.ErrorCode})
	}
	return r
}

// receipt reads the receipt of a task, nil when it has none.
func (p *Producer) receipt(ctx context.Context, queue, id string) (*Receipt, error) {
	rc, err := receipts.Load(ctx, p.rdb, queue, id)
	if err != nil {
		return nil, fmt.Errorf("producer: status: %w", err)
	}
	return receiptOf(rc), nil
}

// ReadReceipts returns up to count receipt events after the event ID after
// ("" for the oldest kept, "$" for only new ones), waiting up to block for
// one when there is none (block <= 0: no wait). Continue from the last
// event's ID. To react to failures (offer a voice call when SMS failed…),
// look at events whose Verdict is "failed". Several consumers sharing the
// work can use XREADGROUP on ReceiptStreamKey directly.
func (p *Producer) ReadReceipts(ctx context.Context, after string, count int64, block time.Duration) ([]ReceiptEvent, error) {
	es, err := receipts.ReadStream(ctx, p.rdb, after, count, block)
	if err != nil {
		return nil, err
	}
	out := make([]ReceiptEvent, len(es))
	for i, e := range es {
		out[i] = ReceiptEvent{ID: e.ID, TaskID: e.TaskID, Queue: e.Queue, MessageID: e.MessageID, Status: e.Status,
			RawStatus: e.RawStatus, Final: e.Final, Verdict: receipts.StateVerdict(e.Status).String(), Channel: e.Channel,
			ErrorCode: e.ErrorCode, At: e.At, To: e.To}
	}
	return out, nil
}
