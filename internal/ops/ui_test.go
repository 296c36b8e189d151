package ops_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/ops"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// listTask is one row of a UI task list.
type listTask struct {
	ID      string `json:"id"`
	Payload string `json:"payload"`
	Error   string `json:"error_message"`
	Result  string `json:"result"`
}

type taskList struct {
	Tasks []listTask `json:"tasks"`
}

// uiStates are the task lists the UI fetches for a queue.
var uiStates = []string{"active", "pending", "scheduled", "retry", "archived", "completed"}

// fetchEveryUIRoute GETs every JSON route of the UI API that shows queues,
// tasks or servers, for both queues and every task in ids, and returns the
// bodies by path. None may fail.
func fetchEveryUIRoute(t *testing.T, b bundle, ids map[string]string) map[string]string {
	t.Helper()
	bodies := map[string]string{}
	get := func(path string) { bodies[path] = b.getJSON(t, path, nil) }
	for _, p := range []string{"/queues", "/queue_stats", "/servers", "/scheduler_entries", "/redis_info"} {
		get(p)
	}
	for _, q := range []string{task.QueueCritical, task.QueueBulk} {
		get("/queues/" + q)
		get("/queues/" + q + "/groups")
		for _, s := range uiStates {
			get(fmt.Sprintf("/queues/%s/%s_tasks?page=1&page_size=100", q, s))
		}
	}
	for id, q := range ids {
		get(fmt.Sprintf("/queues/%s/tasks/%s", q, id))
	}
	_, index := b.do(t, http.MethodGet, "/monitoring/", true)
	bodies["/monitoring/"] = index
	return bodies
}

// TestCanaryNeverShown feeds a canary code through every path a task can
// take (delivered, retried then delivered, retries exhausted, rejected by the
// provider, undecodable payload, expired, a panicking handler) with a canary
// EngageLab secret, and checks that neither appears in the logs, the stored
// task errors, the metrics or any UI API response, while the UI still shows
// what operators need: masked destinations, reasons, message IDs.
func TestCanaryNeverShown(t *testing.T) {
	const (
		deliveredTo = "+8613800000001"
		retriedTo   = "+8613800000002"
		exhaustTo   = "+8613800000003"
		rejectedTo  = "+8613800000004"
		badTo       = "+8613800000005"
		expiredTo   = "+8613800000006"
		panicTo     = "+8613800000007"
		bulkTo      = "+8613800000008"
	)
	var b bundle
	b = setup(t, options{worker: func(c *worker.Config) {
		c.MaxRetry = 2
		client, err := engagelab.New(engagelab.Config{BaseURL: c.BaseURL, DevKey: c.DevKey, DevSecret: c.DevSecret})
		require.NoError(t, err)
		c.Sender = panickySender{to: panicTo, next: client}
	}})
	b.fake.SetRules(
		fakeengagelab.Rule{To: retriedTo, Status: 500, Code: 1000, Times: 1},
		fakeengagelab.Rule{To: exhaustTo, Status: 500, Code: 1000},
		fakeengagelab.Rule{To: rejectedTo, Status: 400, Code: 5013},
	)
	ids := map[string]string{} // task ID → queue
	crit := func(id string) string { ids[id] = task.QueueCritical; return id }
	delivered := crit(b.send(t, deliveredTo))
	retried := crit(b.send(t, retriedTo))
	exhausted := crit(b.send(t, exhaustTo))
	rejected := crit(b.send(t, rejectedTo))
	panicked := crit(b.send(t, panicTo))
	bulk := b.send(t, bulkTo, producer.Queue(producer.QueueBulk))
	ids[bulk] = task.QueueBulk
	bad := crit(b.enqueueRaw(t, []byte(`{"v":1,"to":"`+badTo+`","code":"`+canaryCode+`","template":{"id":"login"},"expires_at":"2099-01-01T00:00:00Z","smuggled":"`+canaryCode+`"}`)))
	past := time.Now().Add(-time.Minute)
	expiredPayload, err := task.Encode(task.Payload{To: expiredTo, Code: canaryCode, Template: task.Template{ID: "login"}, ExpiresAt: past, CreatedAt: past.Add(-time.Minute)})
	require.NoError(t, err)
	expired := crit(b.enqueueRaw(t, expiredPayload))

	for id, q := range map[string]string{delivered: task.QueueCritical, retried: task.QueueCritical, bulk: task.QueueBulk} {
		b.waitState(t, q, id, asynq.TaskStateCompleted)
	}
	reasons := map[string]string{
		exhausted: "retries exhausted after 3 attempts: engagelab 1000",
		rejected:  "engagelab 5013: Number has been blacklisted",
		panicked:  "retries exhausted after 3 attempts: handler panic",
		bad:       "bad payload",
		expired:   "expired: code expired at",
	}
	for id, want := range reasons {
		info := b.waitState(t, task.QueueCritical, id, asynq.TaskStateArchived)
		require.Contains(t, info.LastErr, want)
	}

	// Stored errors: every task, every state.
	for id, q := range ids {
		info, err := b.ins.GetTaskInfo(q, id)
		require.NoError(t, err)
		require.NotContains(t, info.LastErr, canaryCode, "task %s", id)
		require.NotContains(t, info.LastErr, canarySecret, "task %s", id)
	}

	// Logs: the panic was logged, without its value.
	logs := b.logs.String()
	require.Contains(t, logs, `"msg":"handler panic"`)
	require.NotContains(t, logs, canaryCode)
	require.NotContains(t, logs, canarySecret)
	require.NotContains(t, logs, deliveredTo, "destinations are masked in logs")

	// Metrics: the outcomes are counted, no secret and no destination.
	status, metrics := b.do(t, http.MethodGet, "/metrics", false)
	require.Equal(t, http.StatusOK, status)
	require.NotContains(t, metrics, canaryCode)
	require.NotContains(t, metrics, canarySecret)
	require.NotContains(t, metrics, "+86138")
	for _, id := range []string{delivered, rejected} {
		require.NotContains(t, metrics, id, "no task ID labels")
	}
	for _, line := range []string{
		`otpq_sends_total{engagelab_code="5013",outcome="dead_letter"} 1`,
		`otpq_sends_total{engagelab_code="none",outcome="accepted"} 3`,
		`otpq_dead_letters_total{reason="bad_payload"} 1`,
		`otpq_dead_letters_total{reason="provider_rejected"} 1`,
		`otpq_dead_letters_total{reason="retries_exhausted"} 2`,
		`otpq_expired_total 1`,
		`asynq_tasks_enqueued_total{queue="critical",state="archived"} 5`,
		`asynq_tasks_enqueued_total{queue="bulk",state="completed"} 1`,
	} {
		require.Contains(t, metrics, line+"\n")
	}

	// UI: every route, no secret anywhere.
	bodies := fetchEveryUIRoute(t, b, ids)
	for path, body := range bodies {
		require.NotContains(t, body, canaryCode, "GET %s", path)
		require.NotContains(t, body, canarySecret, "GET %s", path)
		require.NotContains(t, body, deliveredTo, "GET %s", path)
	}
	// …while showing what operators need.
	var archived taskList
	b.getJSON(t, "/queues/critical/archived_tasks?page=1&page_size=100", &archived)
	require.Len(t, archived.Tasks, 5)
	for _, tk := range archived.Tasks {
		require.Contains(t, reasons, tk.ID, "unexpected archived task")
		require.Contains(t, tk.Error, reasons[tk.ID])
		require.True(t, strings.HasPrefix(unwrap(tk.Payload), "dead letter · "), "a dead letter's payload leads with its verdict:\n%s", tk.Payload)
		require.Contains(t, tk.Payload, "\nto +861*******")
		require.Contains(t, tk.Payload, " · template login")
	}
	var completed taskList
	b.getJSON(t, "/queues/critical/completed_tasks?page=1&page_size=100", &completed)
	require.Len(t, completed.Tasks, 2)
	for _, tk := range completed.Tasks {
		require.True(t, strings.HasPrefix(tk.Result, "accepted · sms"), tk.Result)
		require.Contains(t, tk.Result, "\nmessage_id: ")
	}
	detail := bodies["/queues/critical/tasks/"+delivered]
	require.Contains(t, detail, redact.Destination(deliveredTo))
	require.Contains(t, detail, `message_id`)
}

// TestRerunArchivedTaskFromUI: an archived task (the provider rejected it),
// re-run through the UI's API once the provider is fixed, goes back to
// pending and is delivered by the live worker.
//
// A dead letter keeps its code key until the code expires, so the re-run
// can deliver it; TestRerunExpiredDeadLetterNotSent shows what happens
// after expiry.
func TestRerunArchivedTaskFromUI(t *testing.T) {
	const to = "+8613811110000"
	b := setup(t, options{})
	b.fake.SetRules(fakeengagelab.Rule{To: to, Status: 401, Code: 2001})
	id := b.send(t, to)
	info := b.waitState(t, task.QueueCritical, id, asynq.TaskStateArchived)
	require.Contains(t, info.LastErr, "engagelab 2001")
	require.Equal(t, 0, b.fake.Delivered(to))

	// An operator takes a while to fix the credentials: the archived task
	// must still be deliverable then, so its code key stays until the code
	// expires (producer.DefaultExpiry after the send), not a moment less.
	ttl, err := b.db.Client.PTTL(context.Background(), asynqstore.CodeKey(task.QueueCritical, id)).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, producer.DefaultExpiry-time.Minute,
		"an archived task must keep its code until it expires, or re-running it from the UI cannot deliver it (PTTL %s; -2 ms: gone)", ttl)
	require.LessOrEqual(t, ttl, producer.DefaultExpiry+time.Minute, "the code key outlives the code")
	// Credentials fixed; the queue is paused so that "pending" can be seen
	// before the worker takes the task.
	b.fake.SetRules()
	require.NoError(t, b.ins.PauseQueue(task.QueueCritical))
	path := fmt.Sprintf("/monitoring/api/queues/critical/archived_tasks/%s:run", id)
	status, body := b.do(t, http.MethodPost, path, false)
	require.Equal(t, http.StatusUnauthorized, status, "the UI's actions need the credentials")
	status, body = b.do(t, http.MethodPost, path, true)
	require.Equal(t, http.StatusNoContent, status, body)
	b.waitState(t, task.QueueCritical, id, asynq.TaskStatePending)

	require.NoError(t, b.ins.UnpauseQueue(task.QueueCritical))
	info = b.waitState(t, task.QueueCritical, id, asynq.TaskStateCompleted)
	require.Equal(t, 1, b.fake.Delivered(to))
	require.Contains(t, string(info.Result), "message_id")
}

// TestRerunExpiredDeadLetterNotSent: a dead letter whose code expired (its
// code key is gone with it), re-run from the UI, is not sent and goes back
// to the archive with a reason saying why, rather than failing obscurely.
func TestRerunExpiredDeadLetterNotSent(t *testing.T) {
	const to = "+8613811112222"
	b := setup(t, options{})
	b.fake.SetRules(fakeengagelab.Rule{To: to, Status: 401, Code: 2001})
	id := b.send(t, to, producer.ExpiresIn(time.Second))
	b.waitState(t, task.QueueCritical, id, asynq.TaskStateArchived)
	require.Eventually(t, func() bool {
		n, err := b.db.Client.Exists(context.Background(), asynqstore.CodeKey(task.QueueCritical, id)).Result()
		return err == nil && n == 0
	}, 10*time.Second, 20*time.Millisecond, "the code key outlived the code")

	b.fake.SetRules()
	status, body := b.do(t, http.MethodPost, fmt.Sprintf("/monitoring/api/queues/critical/archived_tasks/%s:run", id), true)
	require.Equal(t, http.StatusNoContent, status, body)
	require.Eventually(t, func() bool {
		info, err := b.ins.GetTaskInfo(task.QueueCritical, id)
		return err == nil && info.State == asynq.TaskStateArchived && strings.Contains(info.LastErr, "expired")
	}, 20*time.Second, 20*time.Millisecond, "the re-run expired task did not come back with its reason")
	require.Equal(t, 1, b.fake.Count(to), "an expired task is never sent")
}

// TestReadOnlyUI: in read-only mode the UI's actions are refused and the
// task stays archived, while the views work.
func TestReadOnlyUI(t *testing.T) {
	const to = "+8613822220000"
	b := setup(t, options{ops: func(c *ops.Config) { c.User, c.Password, c.ReadOnly = "", "", true }})
	b.fake.SetRules(fakeengagelab.Rule{To: to, Status: 400, Code: 5013})
	id := b.send(t, to)
	b.waitState(t, task.QueueCritical, id, asynq.TaskStateArchived)

	status, _ := b.do(t, http.MethodPost, fmt.Sprintf("/monitoring/api/queues/critical/archived_tasks/%s:run", id), false)
	require.Equal(t, http.StatusMethodNotAllowed, status)
	status, _ = b.do(t, http.MethodDelete, fmt.Sprintf("/monitoring/api/queues/critical/archived_tasks/%s", id), false)
	require.Equal(t, http.StatusMethodNotAllowed, status)
	info, err := b.ins.GetTaskInfo(task.QueueCritical, id)
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateArchived, info.State)

	var archived taskList
	b.getJSON(t, "/queues/critical/archived_tasks", &archived)
	require.Len(t, archived.Tasks, 1)
	require.Contains(t, archived.Tasks[0].Payload, redact.Destination(to))
}

// TestBasicAuth: the UI needs the configured credentials; /metrics and the
// probes do not (Prometheus and the container runtime call them).
func TestBasicAuth(t *testing.T) {
	b := setup(t, options{})
	for _, tc := range []struct {
		name       string
		user, pass string
		set        bool
		want       int
	}{
		{name: "none", want: http.StatusUnauthorized},
		{name: "wrong password", user: uiUser, pass: "nope", set: true, want: http.StatusUnauthorized},
		{name: "wrong user", user: "root", pass: uiPassword, set: true, want: http.StatusUnauthorized},
		{name: "password prefix", user: uiUser, pass: uiPassword[:4], set: true, want: http.StatusUnauthorized},
		{name: "right", user: uiUser, pass: uiPassword, set: true, want: http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/monitoring/", "/monitoring/api/queues"} {
				req, err := http.NewRequest(http.MethodGet, b.ops.URL+path, nil)
				require.NoError(t, err)
				if tc.set {
					req.SetBasicAuth(tc.user, tc.pass)
				}
				resp, err := b.ops.Client().Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				require.Equal(t, tc.want, resp.StatusCode, path)
				if tc.want == http.StatusUnauthorized {
					require.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")
				}
			}
		})
	}
	for _, path := range []string{"/metrics", "/healthz", "/readyz"} {
		status, body := b.do(t, http.MethodGet, path, false)
		require.Equal(t, http.StatusOK, status, "%s: %s", path, body)
	}
}

// TestReadyz: ready with Redis up and the worker running; 503 with the
// reason when the worker has not started, has shut down, or Redis is gone.
func TestReadyz(t *testing.T) {
	b := setup(t, options{noWorker: true})
	status, body := b.do(t, http.MethodGet, "/readyz", false)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, body, "not ready: worker not started")

	require.NoError(t, b.worker.Start())
	status, body = b.do(t, http.MethodGet, "/readyz", false)
	require.Equal(t, http.StatusOK, status, body)
	status, _ = b.do(t, http.MethodGet, "/healthz", false)
	require.Equal(t, http.StatusOK, status)

	b.worker.Shutdown()
	status, body = b.do(t, http.MethodGet, "/readyz", false)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, body, "not ready: worker shutting down")

	// Redis gone: a server pointed at a port nothing listens on.
	gone := setupOpsOnly(t, asynq.RedisClientOpt{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond})
	status, body = gone.do(t, http.MethodGet, "/readyz", false)
	require.Equal(t, http.StatusServiceUnavailable, status)
	require.Contains(t, body, "not ready: redis unreachable")
	status, _ = gone.do(t, http.MethodGet, "/healthz", false)
	require.Equal(t, http.StatusOK, status, "liveness does not depend on Redis")
	status, body = gone.do(t, http.MethodGet, "/metrics", false)
	require.Equal(t, http.StatusOK, status, "a scrape still answers without Redis")
	require.Contains(t, body, "asynq_scrape_up 0\n")
}

// TestReadyzRedisStalled: a Redis that accepts connections but never answers
// fails readiness within the probe's own 2 s budget, however long the
// client's read timeout (a minute here).
func TestReadyzRedisStalled(t *testing.T) {
	b := setupOpsOnly(t, asynq.RedisClientOpt{Addr: redistest.Stalled(t), ReadTimeout: time.Minute})
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Get(b.ops.URL + "/readyz")
	require.NoError(t, err, "/readyz must answer before a probe's timeout")
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Contains(t, string(body), "not ready: redis unreachable")
}

// The UI's script, as the ops server serves it, shows custom task IDs
// whole: asynqmon's uuidPrefix (which cut "myid-1" to "myid") is replaced.
// A new asynqmon whose script no longer holds that function fails here,
// loudly, instead of shortening IDs again unnoticed.
func TestUIScriptShowsCustomIDsWhole(t *testing.T) {
	b := setup(t, options{noWorker: true})
	_, index := b.do(t, http.MethodGet, "/monitoring/", true)
	src := regexp.MustCompile(`/monitoring/static/js/main\.[0-9a-f]+\.chunk\.js`).FindString(index)
	require.NotEmpty(t, src, "the UI's index names no main script:\n%s", index)
	status, js := b.do(t, http.MethodGet, src, true)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, js, `.test(`, "served unpatched")
	require.NotContains(t, b.logs.String(), "custom task IDs show cut")
	_, err := ops.PatchUIBundle([]byte(js))
	require.ErrorIs(t, err, ops.ErrUIBundle, "the served script still holds asynqmon's uuidPrefix")

	// The replacement, in place (TestBrowserTaskSummaries sees it show
	// "myid-1" whole in chromium).
	patched := regexp.MustCompile(`function [\w$]+\(([\w$]+)\)\{return/\^\[0-9a-f\]\{8\}-\[0-9a-f\]\{4\}-\[0-9a-f\]\{4\}-\[0-9a-f\]\{4\}-\[0-9a-f\]\{12\}\$/i\.test\(([\w$]+)\)\?([\w$]+)\.substr\(0,8\):([\w$]+)\}`)
	m := patched.FindStringSubmatch(js)
	require.NotNil(t, m, "the replacement uuidPrefix is not in the served script")
	require.Equal(t, []string{m[1], m[1], m[1]}, m[2:])
}

func TestPatchUIBundle(t *testing.T) {
	js := []byte(`a();function cn(e){var t=e.indexOf("-");return-1===t?e:e.substr(0,t)}function sn(e,t){}`)
	out, err := ops.PatchUIBundle(js)
	require.NoError(t, err)
	require.Equal(t, `a();function cn(e){return/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(e)?e.substr(0,8):e}function sn(e,t){}`, string(out))
	for _, bad := range []string{
		`function cn(e){return e}`, // gone
		`function cn(e){var t=e.indexOf("-");return-1===t?e:e.substr(0,t)}function dn(e){var t=e.indexOf("-");return-1===t?e:e.substr(0,t)}`, // which one?
		`function cn(e){var t=x.indexOf("-");return-1===t?e:e.substr(0,t)}`,                                                                  // another function
	} {
		_, err := ops.PatchUIBundle([]byte(bad))
		require.ErrorIs(t, err, ops.ErrUIBundle, bad)
	}
}

// The task lists and a task's details lead each task without a result
// with its verdict's summary, in otpq status's words, before its payload.
func TestUITaskSummaries(t *testing.T) {
	const rejectedTo = "+8613800000021"
	b := setup(t, options{})
	b.fake.SetRules(fakeengagelab.Rule{To: rejectedTo, Status: 400, Code: 5013})
	rejected := b.send(t, rejectedTo)
	b.waitState(t, task.QueueCritical, rejected, asynq.TaskStateArchived)
	want := "dead letter · engagelab 5013: Number has been blacklisted\n\nto +861*******021 · template login\n"

	var archived taskList
	b.getJSON(t, "/queues/critical/archived_tasks?page=1&page_size=100", &archived)
	require.Len(t, archived.Tasks, 1)
	require.True(t, strings.HasPrefix(unwrap(archived.Tasks[0].Payload), want), archived.Tasks[0].Payload)
	var detail struct {
		State   string `json:"state"`
		Payload string `json:"payload"`
		Error   string `json:"error_message"`
	}
	b.getJSON(t, "/queues/critical/tasks/"+rejected, &detail)
	require.Equal(t, "archived", detail.State)
	require.True(t, strings.HasPrefix(unwrap(detail.Payload), want), detail.Payload)
	require.Equal(t, "engagelab 5013: Number has been blacklisted", detail.Error, "the rest of the answer is asynqmon's")

	// A queued task says so; an unknown task is asynqmon's 404.
	require.NoError(t, b.ins.PauseQueue(task.QueueCritical))
	queued := b.send(t, "+8613800000022")
	var pending taskList
	b.getJSON(t, "/queues/critical/pending_tasks?page=1&page_size=100", &pending)
	require.Len(t, pending.Tasks, 1)
	require.Equal(t, queued, pending.Tasks[0].ID)
	require.True(t, strings.HasPrefix(pending.Tasks[0].Payload, "queued\n\nto +861*******022"), pending.Tasks[0].Payload)
	status, _ := b.do(t, http.MethodGet, "/monitoring/api/queues/critical/tasks/nope", true)
	require.Equal(t, http.StatusNotFound, status)
}

// unwrap joins the lines the UI's formatter wrapped.
func unwrap(s string) string {
	return strings.NewReplacer("\n· ", " · ", "\n  ", " ").Replace(s)
}
