package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/task"
)

// ErrCallbackExposed is returned by CheckCallbackExposure.
var ErrCallbackExposed = errors.New("refusing to receive callbacks unverified on a non-loopback address")

// CheckCallbackExposure refuses a non-loopback address for the callback
// route when c verifies nothing: anyone could then forge delivery receipts.
func CheckCallbackExposure(addr string, c receipts.Credentials) error {
	if c.Verifies() || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: %s can be reached from other machines; set OTPQ_CALLBACK_USER and OTPQ_CALLBACK_SECRET (the username/secret of the EngageLab callback), and/or OTPQ_CALLBACK_AUTHORIZATION, or listen on 127.0.0.1", ErrCallbackExposed, addr)
}

// receiptLookupTimeout bounds the receipt lookup of one shown result: the
// UI must stay usable when Redis is slow.
const receiptLookupTimeout = 500 * time.Millisecond

// formatResult is the UI's result formatter: FormatResult plus the delivery
// receipt found through the result's message_id. asynqmon gives the
// formatter no task ID or queue, so the receipt is found through the
// message_id link in each queue.
func (s *Server) formatResult(taskType string, result []byte) string {
	var r task.Result
	if json.Unmarshal(result, &r) != nil || r.MessageID == "" {
		return FormatResult(taskType, result)
	}
	ctx, cancel := context.WithTimeout(context.Background(), receiptLookupTimeout)
	defer cancel()
	for _, q := range []string{task.QueueCritical, task.QueueBulk} {
		v, err := s.rdb.Get(ctx, receipts.LinkKey(q, r.MessageID)).Result()
		if err != nil {
			continue
		}
		l, err := receipts.DecodeLink(v)
		if err != nil {
			continue
		}
		rc, err := receipts.Load(ctx, s.rdb, l.Queue, l.TaskID)
		if err != nil || rc == nil {
			break
		}
		return FormatResultReceipt(result, rc)
	}
	return FormatResult(taskType, result)
}

// receiptFields is what the UI shows of a receipt.
func receiptFields(rc *receipts.Receipt) ordered {
	out := ordered{{"state", rc.State}, {"final", rc.Final}}
	add := func(k string, v any, ok bool) {
		if ok {
			out = append(out, kv{k, v})
		}
	}
	add("raw_status", rc.RawStatus, rc.RawStatus != rc.State)
	add("channel", rc.Channel, rc.Channel != "")
	add("accepted_at", rc.AcceptedAt, !rc.AcceptedAt.IsZero())
	add("state_at", rc.StateAt, !rc.StateAt.IsZero())
	add("delivered_at", rc.DeliveredAt, !rc.DeliveredAt.IsZero())
	add("error_code", rc.ErrorCode, rc.ErrorCode != 0)
	add("error_detail", rc.ErrorDetail, rc.ErrorDetail != "")
	add("cost", rc.Cost, rc.Cost != 0)
	add("currency", rc.Currency, rc.Currency != "")
	stages := make([]string, len(rc.History))
	for i, st := range rc.History {
		stages[i] = st.At.Format(time.RFC3339) + " " + st.Status
		if st.Channel != "" {
			stages[i] += " (" + st.Channel + ")"
		}
	}
	add("history", stages, len(stages) > 0)
	return out
}
