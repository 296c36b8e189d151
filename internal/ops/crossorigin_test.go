package ops_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/ops"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/task"
)

// request sends method path to the ops server with hdr (and the UI
// credentials when auth) and returns the status.
func (b bundle) request(t *testing.T, method, path string, auth bool, hdr map[string]string, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, b.ops.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if auth {
		req.SetBasicAuth(uiUser, uiPassword)
	}
	resp, err := b.ops.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func (b bundle) paused(t *testing.T, queue string) bool {
	t.Helper()
	info, err := b.ins.GetQueueInfo(queue)
	require.NoError(t, err)
	return info.Paused
}

// A state change sent by a browser from another origin (issue 16 row 1) is
// refused with or without valid basic auth: pausing, deleting, archiving
// and re-running do nothing. Reads stay open, and the same requests from
// the UI's own origin, or from a non-browser client, still work.
func TestCrossOriginStateChangesRefused(t *testing.T) {
	b := setup(t, options{noWorker: true})
	id := b.send(t, "+8613811110000")
	host := strings.TrimPrefix(b.ops.URL, "http://")
	pause := "/monitoring/api/queues/" + task.QueueCritical + ":pause"
	crossSite := []map[string]string{
		// The page: <form method=POST enctype=text/plain> on evil.example.
		{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"},
		// An older browser: Origin only.
		{"Origin": "http://evil.example"},
		// Same host, other port: another origin.
		{"Origin": "http://127.0.0.1:1"},
		{"Sec-Fetch-Site": "same-site"},
	}
	for i, hdr := range crossSite {
		for _, auth := range []bool{true, false} {
			status := b.request(t, http.MethodPost, pause, auth, hdr, "x=y")
			require.Equal(t, http.StatusForbidden, status, "case %d auth=%v", i, auth)
			require.False(t, b.paused(t, task.QueueCritical), "case %d auth=%v paused the queue", i, auth)
		}
	}
	evil := map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, fmt.Sprintf("/monitoring/api/queues/%s/pending_tasks/%s:archive", task.QueueCritical, id)},
		{http.MethodDelete, fmt.Sprintf("/monitoring/api/queues/%s/pending_tasks/%s", task.QueueCritical, id)},
		{http.MethodPost, fmt.Sprintf("/monitoring/api/queues/%s/pending_tasks:archive_all", task.QueueCritical)},
		{http.MethodDelete, fmt.Sprintf("/monitoring/api/queues/%s/pending_tasks:delete_all", task.QueueCritical)},
		{http.MethodDelete, "/monitoring/api/queues/" + task.QueueCritical},
	} {
		require.Equal(t, http.StatusForbidden, b.request(t, r.method, r.path, true, evil, ""), "%s %s", r.method, r.path)
	}
	b.waitState(t, task.QueueCritical, id, asynq.TaskStatePending)

	// Reads from another origin are not state changes.
	require.Equal(t, http.StatusOK, b.request(t, http.MethodGet, "/monitoring/api/queues", true, evil, ""))
	// The UI's own requests: Sec-Fetch-Site same-origin, or an Origin
	// naming this server; and scripts without either header.
	for _, hdr := range []map[string]string{{"Sec-Fetch-Site": "same-origin", "Origin": b.ops.URL}, {"Origin": "http://" + host}, nil} {
		require.Equal(t, http.StatusNoContent, b.request(t, http.MethodPost, pause, true, hdr, ""), "%v", hdr)
		require.True(t, b.paused(t, task.QueueCritical))
		require.NoError(t, b.ins.UnpauseQueue(task.QueueCritical))
	}
	require.Contains(t, b.logs.String(), "cross-origin request refused")
}

// Re-running a dead letter from another origin (issue 16 row 1: "re-run
// anything") is refused too, one task or all of them; the same request
// without a browser's cross-site headers re-runs it.
func TestCrossOriginRerunRefused(t *testing.T) {
	b := setup(t, options{noWorker: true})
	id := b.send(t, "+8613811110002")
	b.waitState(t, task.QueueCritical, id, asynq.TaskStatePending)
	require.NoError(t, b.ins.ArchiveTask(task.QueueCritical, id))
	archived := "/monitoring/api/queues/" + task.QueueCritical + "/archived_tasks"
	evil := map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
	for _, path := range []string{archived + "/" + id + ":run", archived + ":run_all"} {
		for _, auth := range []bool{true, false} {
			require.Equal(t, http.StatusForbidden, b.request(t, http.MethodPost, path, auth, evil, "x=y"), "%s auth=%v", path, auth)
			info, err := b.ins.GetTaskInfo(task.QueueCritical, id)
			require.NoError(t, err)
			require.Equal(t, asynq.TaskStateArchived, info.State, "%s auth=%v re-ran the task", path, auth)
		}
	}
	require.Equal(t, http.StatusNoContent, b.request(t, http.MethodPost, archived+"/"+id+":run", true, nil, ""))
	b.waitState(t, task.QueueCritical, id, asynq.TaskStatePending)
}

// The rule holds without basic auth (a loopback UI) and for the callback
// route the ops server mounts: a page cannot post forged receipts through
// the operator's browser.
func TestCrossOriginRefusedWithoutAuth(t *testing.T) {
	b := setup(t, options{noWorker: true, ops: func(c *ops.Config) {
		c.User, c.Password = "", ""
		c.Callback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	}})
	b.send(t, "+8613811110001") // the queue exists
	evil := map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}
	require.Equal(t, http.StatusForbidden, b.request(t, http.MethodPost, "/monitoring/api/queues/"+task.QueueCritical+":pause", false, evil, ""))
	require.False(t, b.paused(t, task.QueueCritical))
	require.Equal(t, http.StatusForbidden, b.request(t, http.MethodPost, receipts.Path, false, evil, `{"total":0,"rows":[]}`))
	require.Equal(t, http.StatusOK, b.request(t, http.MethodPost, receipts.Path, false, nil, `{"total":0,"rows":[]}`))
}

// Wrong passwords in a loop (issue 16 row 13) are logged once per interval,
// not once each; a browser's first request without credentials is no
// failure and not logged.
func TestRefusedLoginsLoggedAtBoundedRate(t *testing.T) {
	b := setup(t, options{noWorker: true})
	require.Equal(t, http.StatusUnauthorized, b.request(t, http.MethodGet, "/monitoring/", false, nil, ""))
	require.NotContains(t, b.logs.String(), "login refused")
	for i := 0; i < 200; i++ {
		req, err := http.NewRequest(http.MethodGet, b.ops.URL+"/monitoring/api/queues", nil)
		require.NoError(t, err)
		req.SetBasicAuth(uiUser, fmt.Sprintf("guess-%d", i))
		resp, err := b.ops.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	logs := b.logs.String()
	require.Equal(t, 1, strings.Count(logs, "web UI login refused"), logs)
	require.NotContains(t, logs, "guess-")
}
