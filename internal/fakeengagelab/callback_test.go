package fakeengagelab

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/receipts"
)

type got struct {
	mu    sync.Mutex
	calls []struct {
		header string
		body   map[string]any
	}
}

func (g *got) statuses() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, c := range g.calls {
		row := c.body["rows"].([]any)[0].(map[string]any)
		st := row["status"].(map[string]any)
		ch := st["status_data"].(map[string]any)["current_send_channel"].(string)
		out = append(out, st["message_status"].(string)+"/"+ch)
	}
	return out
}

// callbackSetup runs the fake with callbacks to a recording server and
// returns a func that sends one code to "to".
func callbackSetup(t *testing.T, lifecycles ...Lifecycle) (*got, func(to string) string) {
	t.Helper()
	g := &got{}
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		g.mu.Lock()
		g.calls = append(g.calls, struct {
			header string
			body   map[string]any
		}{r.Header.Get("X-CALLBACK-ID"), m})
		g.mu.Unlock()
	}))
	t.Cleanup(rec.Close)
	fake := New(Config{Callback: CallbackConfig{URL: rec.URL, Username: "u", Secret: "s", Delay: 50 * time.Millisecond, Lifecycles: lifecycles}})
	t.Cleanup(fake.Close)
	api := httptest.NewServer(fake)
	t.Cleanup(api.Close)
	return g, func(to string) string {
		req, _ := http.NewRequest(http.MethodPost, api.URL+APIPath, strings.NewReader(`{"to":"`+to+`","code":"123456","template":{"id":"t"}}`))
		req.SetBasicAuth("k", "s")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out struct {
			MessageID string `json:"message_id"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return out.MessageID
	}
}

func TestCallbacksSignedLikeEngageLab(t *testing.T) {
	g, send := callbackSetup(t)
	mid := send("+8613800138000")
	require.Eventually(t, func() bool { return len(g.statuses()) == 2 }, 3*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"sent/sms", "delivered/sms"}, g.statuses())
	for _, c := range g.calls {
		id, err := receipts.ParseCallbackID(c.header)
		require.NoError(t, err)
		require.Equal(t, "u", id.Username)
		require.Equal(t, receipts.Sign("s", id.Timestamp, id.Nonce, id.Username), id.Signature)
		row := c.body["rows"].([]any)[0].(map[string]any)
		require.Equal(t, mid, row["message_id"])
		require.Equal(t, "+8613800138000", row["to"])
		require.NotContains(t, c.body, "123456")
	}
	require.NotEqual(t, g.calls[0].header, g.calls[1].header, "a fresh nonce per callback")
	rows, err := receipts.ParseBody(mustJSON(t, g.calls[0].body))
	require.NoError(t, err)
	e, ok := receipts.EventOf(rows[0], time.Now())
	require.True(t, ok)
	require.Equal(t, 0.005, e.Cost)
}

func TestCallbackLifecycles(t *testing.T) {
	fb, err := ParseLifecycle("+8613800000002=fallback", 50*time.Millisecond)
	require.NoError(t, err)
	fail, err := ParseLifecycle("+8613800000003=fail:4001", 50*time.Millisecond)
	require.NoError(t, err)
	dup, err := ParseLifecycle("+8613800000004=sent@0,delivered@40,dup,reverse", 0)
	require.NoError(t, err)
	require.True(t, dup.Duplicate)
	require.True(t, dup.Reverse)
	_, err = ParseLifecycle("+1=sent", 0)
	require.Error(t, err)
	_, err = ParseLifecycle("nothing", 0)
	require.Error(t, err)

	g, send := callbackSetup(t, fb, fail, dup)
	send("+8613800000002")
	require.Eventually(t, func() bool { return len(g.statuses()) == 4 }, 3*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"sent/whatsapp", "delivered_failed/whatsapp", "sent/sms", "delivered/sms"}, g.statuses())

	g.mu.Lock()
	g.calls = nil
	g.mu.Unlock()
	send("+8613800000003")
	require.Eventually(t, func() bool { return len(g.statuses()) == 2 }, 3*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"sent/sms", "delivered_fail/sms"}, g.statuses())
	st := g.calls[1].body["rows"].([]any)[0].(map[string]any)["status"].(map[string]any)
	require.Equal(t, 4001.0, st["error_code"])

	g.mu.Lock()
	g.calls = nil
	g.mu.Unlock()
	send("+8613800000004")
	require.Eventually(t, func() bool { return len(g.statuses()) == 4 }, 3*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{"delivered/sms", "delivered/sms", "sent/sms", "sent/sms"}, g.statuses(), "out of order and duplicated")
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}
