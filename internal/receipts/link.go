// Package receipts links EngageLab delivery receipts (status callbacks) to
// otpq tasks.
//
// The link is written by the worker at delivery, inside the write the
// delivery already makes (no extra round trip): a string key in the task
// queue's hash slot, so that it can share a script with the task's own
// keys on Redis Cluster.
package receipts

import (
	"encoding/json"
	"fmt"
	"time"
)

// Link is what the worker records when EngageLab accepts a send: which task
// a message_id belongs to. It holds no code and only a masked destination.
type Link struct {
	// TaskID and Queue name the asynq task.
	TaskID string `json:"id"`
	Queue  string `json:"q"`
	// To is the destination, masked (internal/redact), for log lines.
	To string `json:"to,omitempty"`
	// AcceptedAt is when the provider accepted the send.
	AcceptedAt time.Time `json:"at"`
	// CodeFingerprint is redact.Fingerprint of the task's code: the
	// receipts' provider text is scrubbed of the code with it, after the
	// code itself is gone. Empty for links of older builds and codes too
	// short to fingerprint.
	CodeFingerprint string `json:"cf,omitempty"`
	// Trace is the W3C traceparent of the delivery attempt's span, when it
	// was recorded: the receipt's span continues it. Empty otherwise.
	Trace string `json:"tp,omitempty"`
}

// LinkKey is the Redis key of the link of messageID for a task of queue:
// otpq:{<queue>}:msg:<message_id>. Its TTL is the task's result retention.
func LinkKey(queue, messageID string) string {
	return "otpq:{" + queue + "}:msg:" + messageID
}

// Encode returns the stored form of l.
func (l Link) Encode() string {
	b, _ := json.Marshal(l) // a struct of strings and a time cannot fail
	return string(b)
}

// DecodeLink parses a stored link.
func DecodeLink(s string) (Link, error) {
	var l Link
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return Link{}, fmt.Errorf("receipts: bad link: %w", err)
	}
	if l.TaskID == "" || l.Queue == "" {
		return Link{}, fmt.Errorf("receipts: bad link: missing task id or queue")
	}
	return l, nil
}
