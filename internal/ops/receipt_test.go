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
	b := setup(t, options{ops: func(c *ops.Config) {
		rdb, err := redisconn.NewClient(c.Redis)
		require.NoError(t, err)
		t.Cleanup(func() { rdb.Close() })
		recv, err := receipts.NewReceiver(receipts.Config{
			Redis: rdb, Registerer: c.Registry, Logger: c.Logger,
			Credentials: receipts.Credentials{Username: "cb", Secret: "cb-secret"},
		})
		require.NoError(t, err)
		c.Callback = recv
	}})
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

	body := fmt.Sprintf(`{"total":1,"rows":[{"message_id":%q,"to":%q,"channel":"sms","itime":%d,"status":{"message_status":"delivered","status_data":{"current_send_channel":"sms"},"error_code":0}}]}`,
		res.MessageID, to, time.Now().Unix())
	req, err := http.NewRequest(http.MethodPost, b.ops.URL+receipts.Path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set(receipts.HeaderCallbackID, receipts.NewCallbackID("cb-secret", "cb", "nonce-1", time.Now()).String())
	resp, err := b.ops.Client().Do(req) // no basic auth
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	var completed taskList
	b.getJSON(t, "/queues/critical/completed_tasks?page=1&page_size=100", &completed)
	require.Len(t, completed.Tasks, 1)
	var shown struct {
		MessageID string `json:"message_id"`
		Delivery  struct {
			State   string `json:"state"`
			Final   bool   `json:"final"`
			Channel string `json:"channel"`
		} `json:"delivery"`
	}
	require.NoError(t, json.Unmarshal([]byte(completed.Tasks[0].Result), &shown), completed.Tasks[0].Result)
	require.Equal(t, res.MessageID, shown.MessageID)
	require.Equal(t, "delivered", shown.Delivery.State)
	require.True(t, shown.Delivery.Final)
	require.Equal(t, "sms", shown.Delivery.Channel)
	require.NotContains(t, completed.Tasks[0].Result, to)

	_, metrics := b.do(t, http.MethodGet, "/metrics", false)
	require.Contains(t, metrics, `otpq_receipts_total{channel="sms",status="delivered"} 1`)
	require.Contains(t, metrics, `otpq_callback_requests_total{result="ok"} 1`)

	// The UI itself still needs its credentials.
	status, _ := b.do(t, http.MethodGet, "/monitoring/", false)
	require.Equal(t, http.StatusUnauthorized, status)
}

func TestFormatResultReceipt(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	out := ops.FormatResultReceipt([]byte(`{"message_id":"m1","send_channel":"sms"}`), &receipts.Receipt{
		State: "sent_failed", RawStatus: "sent_fail", Final: true, Channel: "sms", StateAt: at,
		ErrorCode: 4001, ErrorDetail: "Invalid phone number", Cost: 0.005, Currency: "USD",
		History: []receipts.Stage{{Status: "sent_fail", Channel: "sms", At: at}},
	})
	for _, want := range []string{`"state": "sent_failed"`, `"raw_status": "sent_fail"`, `"error_code": 4001`, `"error_detail": "Invalid phone number"`, `"cost": 0.005`, `"2026-01-02T03:04:05Z sent_fail (sms)"`} {
		require.Contains(t, out, want)
	}
	require.NotContains(t, ops.FormatResult("", []byte(`{"message_id":"m1"}`)), "delivery")
}

func TestCheckCallbackExposure(t *testing.T) {
	require.ErrorIs(t, ops.CheckCallbackExposure("0.0.0.0:8080", receipts.Credentials{}), ops.ErrCallbackExposed)
	require.ErrorIs(t, ops.CheckCallbackExposure(":8080", receipts.Credentials{}), ops.ErrCallbackExposed)
	require.NoError(t, ops.CheckCallbackExposure("127.0.0.1:8080", receipts.Credentials{}))
	require.NoError(t, ops.CheckCallbackExposure("0.0.0.0:8080", receipts.Credentials{Username: "u", Secret: "s"}))
	require.NoError(t, ops.CheckCallbackExposure("0.0.0.0:8080", receipts.Credentials{Authorization: "Bearer x"}))
}
