package producer

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
)

func TestStatusShowsReceipt(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	id, err := b.p.Send(ctx, validRequest())
	require.NoError(t, err)
	st, err := b.p.Status(ctx, id)
	require.NoError(t, err)
	require.Nil(t, st.Receipt, "no callback yet")

	acc := time.Now().Add(-2 * time.Second)
	l := receipts.Link{TaskID: id, Queue: QueueCritical, To: redact.Destination("+8618701235678"), AcceptedAt: acc}
	require.NoError(t, b.db.Client.Set(ctx, receipts.LinkKey(QueueCritical, "m-1"), l.Encode(), time.Hour).Err())
	recv, err := receipts.NewReceiver(receipts.Config{Redis: b.db.Client})
	require.NoError(t, err)
	now := time.Now().Unix()
	for _, row := range []string{
		`{"message_id":"m-1","status":{"message_status":"sent","status_data":{"current_send_channel":"whatsapp"},"billing":{"cost":0.004,"currency":"USD"}},"itime":%d}`,
		`{"message_id":"m-1","status":{"message_status":"delivered","status_data":{"current_send_channel":"whatsapp"}},"itime":%d}`,
	} {
		w := httptest.NewRecorder()
		body := `{"total":1,"rows":[` + fmt.Sprintf(row, now) + `]}`
		recv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, receipts.Path, strings.NewReader(body)))
		require.Equal(t, http.StatusOK, w.Code)
	}
	st, err = b.p.Status(ctx, id)
	require.NoError(t, err)
	require.NotNil(t, st.Receipt)
	require.Equal(t, "delivered", st.Receipt.State)
	require.True(t, st.Receipt.Final)
	require.Equal(t, "whatsapp", st.Receipt.Channel)
	require.Equal(t, redact.Destination("+8618701235678"), st.Receipt.To)
	require.Equal(t, acc.UnixMilli(), st.Receipt.AcceptedAt.UnixMilli())
	require.Equal(t, time.Unix(now, 0).UTC(), st.Receipt.DeliveredAt)
	require.InDelta(t, 0.004, st.Receipt.Cost, 1e-9)
	require.Len(t, st.Receipt.History, 2)
	require.Equal(t, "delivered", st.Receipt.Verdict)
	require.Equal(t, "delivered", st.Verdict, "the receipt's verdict comes first")
	require.Equal(t, "", st.Outcome, "the task is still pending: no outcome")
	raw, err := json.Marshal(st)
	require.NoError(t, err)
	require.Contains(t, string(raw), `"receipt":{"message_id":"m-1","verdict":"delivered","state":"delivered"`)
}

// TestReceiptStagesInOrder: EngageLab's times are whole seconds; a failure
// reported in the same second as the send, arriving first, is still shown
// after it, in one spelling (raw value beside it), and a delivery reported
// in the second of acceptance is 0 after it, not negative.
func TestReceiptStagesInOrder(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	id, err := b.p.Send(ctx, validRequest())
	require.NoError(t, err)
	now := time.Now().Truncate(time.Second)
	acc := now.Add(600 * time.Millisecond) // accepted late in the second its receipts name
	l := receipts.Link{TaskID: id, Queue: QueueCritical, AcceptedAt: acc}
	require.NoError(t, b.db.Client.Set(ctx, receipts.LinkKey(QueueCritical, "m-2"), l.Encode(), time.Hour).Err())
	recv, err := receipts.NewReceiver(receipts.Config{Redis: b.db.Client})
	require.NoError(t, err)
	for _, status := range []string{"delivered_fail", "sent"} { // arrival order reversed
		w := httptest.NewRecorder()
		body := fmt.Sprintf(`{"total":1,"rows":[{"message_id":"m-2","status":{"message_status":%q,"status_data":{"current_send_channel":"sms"},"error_code":%d},"itime":%d}]}`,
			status, map[string]int{"delivered_fail": 4001}[status], now.Unix())
		recv.ServeHTTP(w, httptest.NewRequest(http.MethodPost, receipts.Path, strings.NewReader(body)))
		require.Equal(t, http.StatusOK, w.Code)
	}
	st, err := b.p.Status(ctx, id)
	require.NoError(t, err)
	require.Equal(t, "failed", st.Verdict)
	rc := st.Receipt
	require.Equal(t, "delivered_failed", rc.State)
	require.Equal(t, "delivered_fail", rc.RawStatus)
	require.Len(t, rc.History, 2)
	require.Equal(t, ReceiptStage{Status: "sent", Channel: "sms", At: now.UTC()}, rc.History[0])
	require.Equal(t, ReceiptStage{Status: "delivered_failed", RawStatus: "delivered_fail", Channel: "sms", At: now.UTC(), ErrorCode: 4001}, rc.History[1])
	_, ok := rc.DeliveredAfter()
	require.False(t, ok, "never delivered")
	rc.DeliveredAt = now
	d, ok := rc.DeliveredAfter()
	require.True(t, ok)
	require.Zero(t, d, "a delivery in the second of acceptance is 0 s after it, not -600 ms")
}
