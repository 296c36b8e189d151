package ops_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/internal/ops"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

const (
	canaryCode   = "CANARY-31337"
	canarySecret = "secret-CANARY-4242"
	uiUser       = "ops"
	uiPassword   = "pa55-word"
)

type bundle struct {
	db       *redistest.DB
	fake     *fakeengagelab.Server
	producer *producer.Producer
	worker   *worker.Worker
	ins      *asynq.Inspector
	client   *asynq.Client
	ops      *httptest.Server
	logs     *logsink.Buffer
}

// options tweak setup.
type options struct {
	worker   func(*worker.Config)
	ops      func(*ops.Config)
	noWorker bool // build the worker but do not start it
	shards   int  // the worker's and the producer's shard count (0: 1)
	cluster  bool // a Redis Cluster of 3 masters of the test's own, not a database of the shared Redis
}

// setup starts a fake provider, a worker with metrics and the ops server
// (basic auth uiUser/uiPassword) in front of a private Redis database.
func setup(t *testing.T, o options) bundle {
	t.Helper()
	var (
		db       *redistest.DB
		redisURL string
		redisOpt asynq.RedisConnOpt
	)
	if o.cluster {
		cl := redistest.StartCluster(t, 3, 0)
		redisURL = cl.URL()
		opt, err := redisconn.Option(redisURL, nil, 10)
		require.NoError(t, err)
		redisOpt = opt
	} else {
		db = redistest.New(t)
		redisURL, redisOpt = db.URL(), asynq.RedisClientOpt{Addr: db.Addr, DB: db.Number}
	}
	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "key", DevSecret: canarySecret})
	fsrv := httptest.NewServer(fake)
	t.Cleanup(fsrv.Close)
	logs := &logsink.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	cfg := worker.Config{
		RedisURL: redisURL, BaseURL: fsrv.URL, DevKey: "key", DevSecret: canarySecret, Shards: o.shards,
		Concurrency: 4, Servers: 1, RetryMinDelay: 100 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond,
		HTTPTimeout: 2 * time.Second, Logger: log, Registerer: reg,
	}
	if o.worker != nil {
		o.worker(&cfg)
	}
	w, err := worker.New(cfg)
	require.NoError(t, err)
	if !o.noWorker {
		require.NoError(t, w.Start())
	}
	t.Cleanup(w.Shutdown)

	ocfg := ops.Config{
		Addr: "127.0.0.1:0", Redis: redisOpt, Registry: reg, Ready: w.Ready, Logger: log,
		User: uiUser, Password: uiPassword,
	}
	if o.ops != nil {
		o.ops(&ocfg)
	}
	srv, err := ops.New(ocfg)
	require.NoError(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })

	p, err := producer.New(producer.Config{RedisURL: redisURL, Shards: o.shards})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	ins := asynq.NewInspector(redisOpt)
	t.Cleanup(func() { ins.Close() })
	client := asynq.NewClient(redisOpt)
	t.Cleanup(func() { client.Close() })
	t.Cleanup(func() {
		if s := logs.String(); strings.Contains(s, canaryCode) || strings.Contains(s, canarySecret) {
			t.Errorf("a secret reached the logs:\n%s", s)
		}
	})
	return bundle{db: db, fake: fake, producer: p, worker: w, ins: ins, client: client, ops: hs, logs: logs}
}

// send enqueues the canary code to to.
func (b bundle) send(t *testing.T, to string, opts ...producer.Option) string {
	t.Helper()
	id, err := b.producer.Send(context.Background(), producer.Request{
		To: to, Code: canaryCode, TemplateID: "login", Params: map[string]string{"name": "Bob"},
	}, opts...)
	require.NoError(t, err)
	return id
}

// enqueueRaw puts a payload into the critical queue as a producer of
// another (or a broken) build would.
func (b bundle) enqueueRaw(t *testing.T, payload []byte) string {
	t.Helper()
	info, err := b.client.Enqueue(asynq.NewTask(task.TypeSend, payload), asynq.Queue(task.QueueCritical), asynq.MaxRetry(3))
	require.NoError(t, err)
	return info.ID
}

// waitState waits until the task reaches state.
func (b bundle) waitState(t *testing.T, queue, id string, state asynq.TaskState) *asynq.TaskInfo {
	t.Helper()
	var info *asynq.TaskInfo
	require.Eventually(t, func() bool {
		var err error
		info, err = b.ins.GetTaskInfo(queue, id)
		return err == nil && info.State == state
	}, 20*time.Second, 10*time.Millisecond, "task %s never reached %s", id, state)
	return info
}

// do makes a request to the ops server, with the UI credentials when auth
// is true, and returns the status and body.
func (b bundle) do(t *testing.T, method, path string, auth bool) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, b.ops.URL+path, nil)
	require.NoError(t, err)
	if auth {
		req.SetBasicAuth(uiUser, uiPassword)
	}
	resp, err := b.ops.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// getJSON GETs a UI API path (under /monitoring/api) and decodes it.
func (b bundle) getJSON(t *testing.T, path string, v any) string {
	t.Helper()
	status, body := b.do(t, http.MethodGet, "/monitoring/api"+path, true)
	require.Equal(t, http.StatusOK, status, "GET %s: %s", path, body)
	if v != nil {
		require.NoError(t, json.Unmarshal([]byte(body), v), "GET %s: %s", path, body)
	}
	return body
}

// panickySender panics, with the code and the secret in the panic value,
// for one destination, and delivers through EngageLab otherwise.
type panickySender struct {
	to   string
	next *engagelab.Client
}

func (s panickySender) Send(ctx context.Context, req worker.SendRequest) (*worker.SendResponse, error) {
	if req.To == s.to {
		panic("sender exploded on code " + req.Code + " with secret " + canarySecret)
	}
	resp, err := s.next.Send(ctx, engagelab.Request{To: req.To, Code: req.Code, Template: engagelab.Template{ID: req.TemplateID, Language: req.Language, Params: req.Params}})
	if err != nil {
		return nil, err
	}
	return &worker.SendResponse{MessageID: resp.MessageID, SendChannel: resp.SendChannel, Unconfirmed: resp.Unconfirmed}, nil
}

// setupOpsOnly serves an ops server (no worker, no auth) for redisOpt.
func setupOpsOnly(t *testing.T, redisOpt asynq.RedisConnOpt) bundle {
	t.Helper()
	logs := &logsink.Buffer{}
	srv, err := ops.New(ops.Config{Addr: "127.0.0.1:0", Redis: redisOpt, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	require.NoError(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return bundle{ops: hs, logs: logs}
}
