package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// scripted is a provider whose answer to each destination is scripted, and
// which counts the requests it gets per destination.
type scripted struct {
	mu     sync.Mutex
	calls  map[string]int
	answer func(w http.ResponseWriter, to string)
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		To string `json:"to"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	s.calls[body.To]++
	s.mu.Unlock()
	s.answer(w, body.To)
}

func (s *scripted) count(to string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[to]
}

// setupScripted is setup with the worker pointed at a scripted provider and
// its metrics in reg.
func setupScripted(t *testing.T, answer func(w http.ResponseWriter, to string)) (bundle, *scripted, *prometheus.Registry) {
	t.Helper()
	s := &scripted{calls: map[string]int{}, answer: answer}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	b := setup(t, func(c *worker.Config) { c.BaseURL, c.Registerer = srv.URL, reg })
	return b, s, reg
}

// sendsTotal reads otpq_sends_total{outcome=o}, summed over codes.
func sendsTotal(t *testing.T, reg *prometheus.Registry, o string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "otpq_sends_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == o {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// logLine returns the first JSON log line holding every fragment.
func logLine(b bundle, fragments ...string) string {
	for _, line := range strings.Split(b.logs.String(), "\n") {
		all := true
		for _, f := range fragments {
			all = all && strings.Contains(line, f)
		}
		if all {
			return line
		}
	}
	return ""
}

// TestRedirectDeadLetteredAsConfiguration: a 3xx from the provider is never
// followed (neither the code nor the Basic-auth header reaches the target,
// and a GET turned from a 301/302 cannot fake a delivery); the task is
// dead-lettered at once as a configuration problem naming the status and
// the Location host, and logged at ERROR.
func TestRedirectDeadLetteredAsConfiguration(t *testing.T) {
	var targetCalls sync.Map
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		targetCalls.Store(r.Method+" "+r.Header.Get("Authorization")+" "+string(data), true)
		io.WriteString(w, `{"message_id":"1725407449772531712","send_channel":"sms"}`)
	}))
	defer target.Close()
	port := target.Listener.Addr().(*net.TCPAddr).Port
	statuses := map[string]int{"+15550000301": 301, "+15550000302": 302, "+15550000307": 307, "+15550000308": 308}
	b, s, reg := setupScripted(t, func(w http.ResponseWriter, to string) {
		host := "127.0.0.1" // same IP as the provider, another port
		if statuses[to] >= 307 {
			host = "localhost" // another host name
		}
		w.Header().Set("Location", fmt.Sprintf("http://u:LOCPASS@%s:%d/v1/codes?q=LOCQUERY", host, port))
		w.WriteHeader(statuses[to])
	})
	for to, status := range statuses {
		id := b.send(t, to)
		info := b.waitFinal(t, producer.QueueCritical, id)
		require.Equal(t, asynq.TaskStateArchived, info.State, "HTTP %d must not complete the task", status)
		require.True(t, strings.HasPrefix(info.LastErr, "configuration problem: "), info.LastErr)
		require.Contains(t, info.LastErr, fmt.Sprintf("HTTP %d redirect", status))
		require.Contains(t, info.LastErr, fmt.Sprintf(":%d", port))
		for _, leak := range []string{"LOCPASS", "LOCQUERY", "u:", "/v1/codes"} {
			require.NotContains(t, info.LastErr, leak)
		}
		require.Equal(t, 1, s.count(to), "dead-lettered at once, not retried")
		require.Equal(t, 1, info.Retried+1)
	}
	n := 0
	targetCalls.Range(func(k, _ any) bool { n++; t.Logf("reached the redirect target: %s", k); return true })
	require.Zero(t, n, "nothing reached the redirect target")
	line := logLine(b, `"reason":"configuration problem"`, `"outcome":"dead_letter"`)
	require.NotEmpty(t, line, b.logs.String())
	require.Contains(t, line, `"level":"ERROR"`)
	require.Equal(t, 4.0, sendsTotal(t, reg, "dead_letter"))
}

// TestSuccessStatusCarryingCodeIsThatError: a 200 whose body carries an
// EngageLab code is that API error, dead-lettered like its 400 twin after
// one call, not completed with an empty message_id.
func TestSuccessStatusCarryingCodeIsThatError(t *testing.T) {
	b, s, _ := setupScripted(t, func(w http.ResponseWriter, to string) {
		io.WriteString(w, `{"code":3004,"message":"Frequency limit exceeded"}`)
	})
	id := b.send(t, "+15550003004")
	info := b.waitFinal(t, producer.QueueCritical, id)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.Equal(t, "engagelab 3004: Frequency limit exceeded", info.LastErr)
	require.Equal(t, 1, s.count("+15550003004"))
}

// TestUnreadableSuccessAcceptedUnconfirmed: a 2xx without a readable
// message_id is never sent again; the task completes with the outcome
// accepted_unconfirmed, shown in Status, the log and the metrics.
func TestUnreadableSuccessAcceptedUnconfirmed(t *testing.T) {
	b, s, reg := setupScripted(t, func(w http.ResponseWriter, to string) {
		if to == "+15550000002" {
			io.WriteString(w, `{"send_channel":"sms"}`)
			return
		}
		io.WriteString(w, "<html>OK</html>")
	})
	for _, to := range []string{"+15550000001", "+15550000002"} {
		id := b.send(t, to)
		info := b.waitFinal(t, producer.QueueCritical, id)
		require.Equal(t, asynq.TaskStateCompleted, info.State)
		require.Equal(t, 1, s.count(to), "the provider took it: exactly one call")
		require.Contains(t, string(info.Result), `"outcome":"accepted_unconfirmed"`)
		st, err := b.producer.Status(context.Background(), id)
		require.NoError(t, err)
		require.Equal(t, "accepted_unconfirmed", st.Outcome)
		require.Empty(t, st.MessageID)
	}
	line := logLine(b, `"outcome":"accepted_unconfirmed"`)
	require.Contains(t, line, `"level":"WARN"`)
	require.Contains(t, line, "unreadable body")
	require.Equal(t, 2.0, sendsTotal(t, reg, "accepted_unconfirmed"))
	require.Zero(t, sendsTotal(t, reg, "accepted"))
	b.requireNothingLeft(t)

	// An ordinary acceptance says so too.
	b2, _, _ := setupScripted(t, func(w http.ResponseWriter, to string) {
		io.WriteString(w, `{"message_id":"42","send_channel":"sms"}`)
	})
	id := b2.send(t, "+15550000003")
	b2.waitFinal(t, producer.QueueCritical, id)
	st, err := b2.producer.Status(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, "accepted", st.Outcome)
	require.Equal(t, "accepted", st.Verdict, "no receipt: the provider's acceptance is all that is known")
}

// TestProviderTextStoredSafely: a huge message_id holding a terminal escape
// is stored capped and escaped; a provider message with the code at byte
// 253 (the old cut) shows no run of the code's digits anywhere.
func TestProviderTextStoredSafely(t *testing.T) {
	const code = "918273"
	b, _, _ := setupScripted(t, func(w http.ResponseWriter, to string) {
		if to == "+15550000001" {
			io.WriteString(w, `{"message_id":"\u001b[2J\n`+strings.Repeat("7", 60<<10)+`","send_channel":"sms"}`)
			return
		}
		w.WriteHeader(400)
		io.WriteString(w, `{"code":3003,"message":"`+strings.Repeat("A", 253)+code+strings.Repeat("B", 400)+`"}`)
	})
	id := b.send(t, "+15550000001")
	b.waitFinal(t, producer.QueueCritical, id)
	st, err := b.producer.Status(context.Background(), id)
	require.NoError(t, err)
	require.LessOrEqual(t, len(st.MessageID), 128)
	require.True(t, strings.HasPrefix(st.MessageID, `\x1b[2J\n777`), st.MessageID[:20])
	require.NotContains(t, b.logs.String(), "\\u001b", "the log line holds the escaped form, not the raw escape")
	require.Less(t, len(b.logs.String()), 16<<10, "no 60 KB log line")

	id2, err := b.producer.Send(context.Background(), producer.Request{To: "+15550000002", Code: code, TemplateID: "login"})
	require.NoError(t, err)
	info := b.waitFinal(t, producer.QueueCritical, id2)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.Contains(t, info.LastErr, "[redacted]")
	var logged struct{ Error string }
	require.NoError(t, json.Unmarshal([]byte(logLine(b, `"msg":"dead-lettered"`, `"engagelab_code":3003`)), &logged))
	require.Contains(t, logged.Error, "[redacted]")
	for i := 0; i+3 <= len(code); i++ {
		require.NotContains(t, info.LastErr, code[i:i+3])
		require.NotContains(t, logged.Error, code[i:i+3])
	}
}
