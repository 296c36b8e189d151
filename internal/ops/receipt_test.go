package ops_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/ops"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/task"
)

// TestCallbackRouteAndUIReceipt: the callback route is served outside the
// UI's basic auth, and the UI's completed-task result shows the receipt.
func TestCallbackRouteAndUIReceipt(t *testing.T) {
	const to = "+8613800000009"
	b := setup(t, options{ops: withReceipts(t)})
	id := b.send(t, to)
	info := b.waitState(t, task.QueueCritical, id, asynq.TaskStateCompleted)
	var res task.Result
	require.NoError(t, json.Unmarshal(info.Result, &res))
	// The worker's delivery write recorded the message_id → task link.
	raw, err := b.db.Client.Get(context.Background(), receipts.LinkKey(task.QueueCritical, res.MessageID)).Result()
	require.NoError(t, err)
	l, err := receipts.DecodeLink(raw)
	require.NoError(t, err)
	require.Equal(t, id, l.TaskID)

	b.postReceipt(t, res.MessageID, to, "delivered", 0) // no basic auth

	var completed taskList
	b.getJSON(t, "/queues/critical/completed_tasks?page=1&page_size=100", &completed)
	require.Len(t, completed.Tasks, 1)
	shown := completed.Tasks[0].Result
	require.True(t, strings.HasPrefix(shown, "delivered · sms"), "the result leads with the receipt's verdict:\n%s", shown)
	require.Contains(t, shown, "\nmessage_id: "+res.MessageID+"\n")
	require.Contains(t, shown, "\nreceipt: delivered\n")
	require.NotContains(t, completed.Tasks[0].Result, to)

	_, metrics := b.do(t, http.MethodGet, "/metrics", false)
	require.Contains(t, metrics, `otpq_receipts_total{channel="sms",status="delivered"} 1`)
	require.Contains(t, metrics, `otpq_callback_requests_total{result="ok"} 1`)

	// The UI itself still needs its credentials.
	status, _ := b.do(t, http.MethodGet, "/monitoring/", false)
	require.Equal(t, http.StatusUnauthorized, status)
}

// withReceipts serves the callback route on the ops server, verifying
// the callback credentials cb / cb-secret.
func withReceipts(t *testing.T) func(*ops.Config) {
	return func(c *ops.Config) {
		rdb, err := redisconn.NewClient(c.Redis)
		require.NoError(t, err)
		t.Cleanup(func() { rdb.Close() })
		recv, err := receipts.NewReceiver(receipts.Config{
			Redis: rdb, Registerer: c.Registry, Logger: c.Logger,
			Credentials: receipts.Credentials{Username: "cb", Secret: "cb-secret"},
		})
		require.NoError(t, err)
		c.Callback = recv
	}
}

// postReceipt posts EngageLab's status callback of messageID, signed as
// withReceipts expects and without the UI's basic auth.
func (b bundle) postReceipt(t *testing.T, messageID, to, status string, errCode int) {
	t.Helper()
	body := fmt.Sprintf(`{"total":1,"rows":[{"message_id":%q,"to":%q,"channel":"sms","itime":%d,"status":{"message_status":%q,"status_data":{"current_send_channel":"sms"},"error_code":%d}}]}`,
		messageID, to, time.Now().Unix(), status, errCode)
	req, err := http.NewRequest(http.MethodPost, b.ops.URL+receipts.Path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set(receipts.HeaderCallbackID, receipts.NewCallbackID("cb-secret", "cb", "nonce-"+messageID+"-"+status, time.Now()).String())
	resp, err := b.ops.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// The UI's result of a send with a receipt leads with the verdict of
// otpq status, then the fields that matter in seconds: delivered, and
// failed on the handset (EngageLab's spelling kept apart).
func TestFormatResultReceipt(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	result := []byte(`{"message_id":"m1","send_channel":"sms","attempts":1,"sent_at":"2026-01-02T03:04:05.123456789Z","outcome":"accepted"}`)
	out := ops.FormatResultReceipt(result, &receipts.Receipt{
		State: "delivered", Final: true, Channel: "sms", AcceptedAt: at, StateAt: at.Add(1200 * time.Millisecond),
		DeliveredAt: at.Add(1200 * time.Millisecond), Cost: 0.005, Currency: "USD",
		History: []receipts.Stage{{Status: "sent", Channel: "sms", At: at}, {Status: "delivered", Channel: "sms", At: at.Add(1200 * time.Millisecond)}},
	})
	require.Equal(t, `delivered · sms · 1.2 s after acceptance
· 0.005 USD

message_id: m1
attempts: 1
accepted_at: 2026-01-02T03:04:05Z
receipt: delivered
delivered_at: 2026-01-02T03:04:06Z
stages:
  +0 s sent
  +1.2 s delivered`, out)

	out = ops.FormatResultReceipt(result, &receipts.Receipt{
		State: "delivered_failed", RawStatus: "delivered_fail", Final: true, Channel: "sms", AcceptedAt: at, StateAt: at.Add(2 * time.Second),
		ErrorCode: 4001, ErrorDetail: "Message could not be delivered",
		History: []receipts.Stage{{Status: "sent", Channel: "whatsapp", At: at}, {Status: "delivered_failed", RawStatus: "delivered_fail", Channel: "sms", At: at.Add(2 * time.Second), ErrorCode: 4001}},
	})
	require.Equal(t, `failed · sms
· 4001 Message could not be delivered
· 2 s after acceptance

message_id: m1
attempts: 1
accepted_at: 2026-01-02T03:04:05Z
receipt: delivered_failed
raw_status: delivered_fail
reported_at: 2026-01-02T03:04:07Z
stages:
  +0 s sent (whatsapp)
  +2 s delivered_failed 4001`, out)
	require.NotContains(t, ops.FormatResult("", result), "receipt")
}

func TestCheckCallbackExposure(t *testing.T) {
	require.ErrorIs(t, ops.CheckCallbackExposure("0.0.0.0:8080", receipts.Credentials{}), ops.ErrCallbackExposed)
	require.ErrorIs(t, ops.CheckCallbackExposure(":8080", receipts.Credentials{}), ops.ErrCallbackExposed)
	require.NoError(t, ops.CheckCallbackExposure("127.0.0.1:8080", receipts.Credentials{}))
	require.NoError(t, ops.CheckCallbackExposure("0.0.0.0:8080", receipts.Credentials{Username: "u", Secret: "s"}))
	require.NoError(t, ops.CheckCallbackExposure("0.0.0.0:8080", receipts.Credentials{Authorization: "Bearer x"}))
}
