package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/otpq/otpq/internal/logsink"
	"github.com/otpq/otpq/internal/redistest"
	"github.com/otpq/otpq/producer"
)

// canary is a code no answer, log line or metric may hold.
const canary = "CANARY-398210"

// specAuth is the Authorization header printed in the EngageLab spec:
// base64("jiguangdev:dev_secret").
const specAuth = "Basic amlndWFuZ2RldjpkZXZfc2VjcmV0"

// specBody is the spec's request example, as printed.
const specBody = `{
"to": "+8618701235678",
"code": "398210",
"template": {
"id": "test-template-1",
"language": "default",
"params": {
"key1": "value1",
"key2": "value2"
}
}
}`

type bundle struct {
	db  *redistest.DB
	p   *producer.Producer
	srv *httptest.Server
	log *logsink.Buffer
	reg *prometheus.Registry
}

// setup serves the API on a database of the test's own, with the spec's
// key (jiguangdev:dev_secret, named "spec") and a second one.
func setup(t *testing.T, pcfg producer.Config) bundle {
	t.Helper()
	db := redistest.New(t)
	if pcfg.RedisURL == "" {
		pcfg.RedisURL = db.URL()
	}
	p, err := producer.New(pcfg)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	keys, err := ParseKeys(strings.NewReader("# the spec's example key\nspec:jiguangdev:dev_secret\n\nother:k2:s2:with:colons\n"))
	require.NoError(t, err)
	log := &logsink.Buffer{}
	reg := prometheus.NewRegistry()
	h, err := New(Config{Producer: p, Keys: keys, Registerer: reg, Logger: newLog(log), EnqueueTimeout: 2 * time.Second})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return bundle{db: db, p: p, srv: srv, log: log, reg: reg}
}

type reply struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

// post sends body to POST /v1/codes with the spec's key and headers.
func (b bundle) post(t *testing.T, body string, headers ...string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+PathCodes, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", specAuth)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"), r.raw)
	require.NoError(t, json.Unmarshal(raw, &r.body), r.raw)
	return r
}

func (r reply) code() int {
	if c, ok := r.body["code"].(float64); ok {
		return int(c)
	}
	return 0
}

func (b bundle) pending(t *testing.T, queue string) []*asynq.TaskInfo {
	t.Helper()
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: b.db.Addr, DB: b.db.Number})
	defer ins.Close()
	tasks, err := ins.ListPendingTasks(queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return nil // nothing was ever queued there
	}
	require.NoError(t, err, "pending tasks could not be read")
	return tasks
}

// sendBody is a valid request with the canary code.
func validBody(to string) string {
	return fmt.Sprintf(`{"to":%q,"code":%q,"template":{"id":"login"}}`, to, canary)
}

// The spec's own example request, headers and body as printed, is queued
// and answered as EngageLab answers.
func TestSpecExampleRequest(t *testing.T) {
	b := setup(t, producer.Config{})
	r := b.post(t, specBody)
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, "sms", r.body["send_channel"])
	id, _ := r.body["message_id"].(string)
	require.NotEmpty(t, id)
	require.Len(t, r.body, 2, "EngageLab's two fields: %s", r.raw)
	tasks := b.pending(t, producer.QueueCritical)
	require.Len(t, tasks, 1)
	require.Equal(t, id, tasks[0].ID)
	require.NotContains(t, r.raw, "398210")

	st, err := b.p.Status(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, producer.StatePending, st.State)

	r = b.post(t, validBody("support@example.com"))
	require.Equal(t, http.StatusOK, r.status, r.raw)
	require.Equal(t, "email", r.body["send_channel"])
}

// Every row of the error table, each with EngageLab's shape, and
// never the code.
func TestErrorAnswers(t *testing.T) {
	b := setup(t, producer.Config{DestinationLimit: 1, DestinationWindow: time.Minute})
	check := func(r reply, status, code int, has string) {
		t.Helper()
		require.Equal(t, status, r.status, r.raw)
		require.Equal(t, code, r.code(), r.raw)
		require.Contains(t, r.body["message"], has)
		require.NotContains(t, r.raw, canary)
		require.NotContains(t, r.raw, "398210")
	}
	// bad or missing auth: 2001 / 401
	for _, auth := range []string{"", "Basic " + base64.StdEncoding.EncodeToString([]byte("jiguangdev:wrong")), "Bearer x", "Basic !!!"} {
		req, _ := http.NewRequest(http.MethodPost, b.srv.URL+PathCodes, strings.NewReader(validBody("+8618701235678")))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		r := do(t, req)
		check(r, http.StatusUnauthorized, 2001, "Authentication failed")
		require.NotEmpty(t, r.header.Get("WWW-Authenticate"))
	}
	// malformed JSON: 3001 / 400
	check(b.post(t, `{"to": "+8618701235678", "code": "CANARY-398210"`), 400, 3001, "ends early")
	check(b.post(t, `{"to": "+8618701235678", "code": CANARY-398210}`), 400, 3001, "malformed JSON at byte")
	// invalid field: 3002 / 400, naming it
	check(b.post(t, validBody("+86187")), 400, 3002, "invalid to:")
	check(b.post(t, `{"to":"+8618701235678","code":"CANARY-398210"}`), 400, 3002, "invalid template.id: required")
	check(b.post(t, `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"t","language":"fr"}}`), 400, 3002, "invalid template.language")
	check(b.post(t, `{"to":"+8618701235678","code":"CANARY 398210","template":{"id":"t"}}`), 400, 3002, "invalid code: contains white space")
	// body too large: 413
	check(b.post(t, `{"to":"`+strings.Repeat("1", DefaultMaxBody)+`"}`), http.StatusRequestEntityTooLarge, 3001, "larger than")
	// the destination guard refuses: 3004 / 400 with Retry-After
	ok := b.post(t, validBody("+8618701235678"))
	require.Equal(t, 200, ok.status, ok.raw)
	r := b.post(t, validBody("+8618701235678"))
	check(r, 400, 3004, "Frequency limit exceeded")
	require.Regexp(t, `^[1-9][0-9]*$`, r.header.Get("Retry-After"))
	require.LessOrEqual(t, r.header.Get("Retry-After"), "60")
	require.Len(t, b.pending(t, producer.QueueCritical), 1, "nothing queued but the first")

	// Redis unreachable: 1000 / 503, so clients retry.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	ln.Close()
	down := setup(t, producer.Config{RedisURL: "redis://" + dead + "/0"})
	r = down.post(t, validBody("+8618701235678"))
	check(r, http.StatusServiceUnavailable, 1000, "retry")
	require.Equal(t, "1", r.header.Get("Retry-After"))
	r = down.post(t, validBody("+8618701235678"), HeaderIdempotencyKey, "k1")
	check(r, http.StatusServiceUnavailable, 1000, "retry")
	req, _ := http.NewRequest(http.MethodGet, down.srv.URL+PathCodes+"/some-id", nil)
	req.Header.Set("Authorization", specAuth)
	check(do(t, req), http.StatusServiceUnavailable, 1000, "retry")

	logs := b.log.String() + down.log.String()
	require.NotContains(t, logs, canary)
	require.NotContains(t, logs, "+8618701235678")
	require.Contains(t, logs, "+861*******678")
}

// Hostile and wrong input is refused naming what is wrong, and nothing is
// queued.
func TestBadInput(t *testing.T) {
	b := setup(t, producer.Config{})
	cases := []struct {
		name, body string
		status     int
		code       int
		has        string
	}{
		{"invalid UTF-8", "{\"to\":\"+8618701235678\",\"code\":\"CANARY-398210\",\"template\":{\"id\":\"l\xffogin\"}}", 400, 3001, "not valid UTF-8"},
		{"1 MB body", `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login","params":{"a":"` + strings.Repeat("x", 1<<20) + `"}}}`, 413, 3001, "larger than"},
		{"code is a number", `{"to":"+8618701235678","code":398210,"template":{"id":"login"}}`, 400, 3001, "code must be a string, not number"},
		{"template is a string", `{"to":"+8618701235678","code":"CANARY-398210","template":"login"}`, 400, 3001, "template must be an object, not string"},
		{"params value is a number", `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login","params":{"n":3}}}`, 400, 3001, "template.params must be a string, not number"},
		{"an array", `[1,2]`, 400, 3001, "must be a JSON object"},
		{"empty", ``, 400, 3001, "empty body"},
		{"trailing data", validBody("+8618701235678") + `{}`, 400, 3001, "data after the JSON object"},
		{"unknown field", `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login"},"sender":"x"}`, 400, 3002, `unknown field "sender"`},
		{"unknown template field", `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login","param_vars":{}}}`, 400, 3002, `unknown field "param_vars"`},
		{"zero-width in to", "{\"to\":\"+86187\u200b01235678\",\"code\":\"CANARY-398210\",\"template\":{\"id\":\"login\"}}", 400, 3002, "invalid to:"},
		{"control in template", `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"lo\u0007gin"}}`, 400, 3002, "invalid template.id"},
		{"code too long", `{"to":"+8618701235678","code":"CANARY-398210-` + strings.Repeat("9", 40) + `","template":{"id":"login"}}`, 400, 3002, "invalid code: longer than"},
		{"bad queue", `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login"},"queue":"urgent"}`, 400, 3002, "invalid queue"},
		{"bad expiry", `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login"},"expires_in":-5}`, 400, 3002, "invalid expires_in"},
		{"fractional expiry", `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login"},"expires_in":1.5}`, 400, 3001, "expires_in must be an integer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := b.post(t, c.body)
			require.Equal(t, c.status, r.status, r.raw)
			require.Equal(t, c.code, r.code(), r.raw)
			require.Contains(t, r.body["message"], c.has)
			require.NotContains(t, r.raw, "398210")
		})
	}
	r := b.post(t, validBody("+8618701235678"), "Content-Type", "text/plain")
	require.Equal(t, 3001, r.code(), r.raw)
	require.Contains(t, r.body["message"], "Content-Type")
	r = b.post(t, validBody("+8618701235678"), HeaderIdempotencyKey, strings.Repeat("k", MaxIdempotencyKeyLen+1))
	require.Equal(t, 3002, r.code(), r.raw)
	require.Contains(t, r.body["message"], HeaderIdempotencyKey)
	require.Empty(t, b.pending(t, producer.QueueCritical))
	require.NotContains(t, b.log.String(), "398210")
}

// Keys rotate: every line of the file authenticates, with its name in the
// logs and metrics; a key with another key's secret does not.
func TestRotatedKeys(t *testing.T) {
	db := redistest.New(t)
	p, err := producer.New(producer.Config{RedisURL: db.URL(), DestinationLimit: -1})
	require.NoError(t, err)
	defer p.Close()
	keys, err := ParseKeys(strings.NewReader("shop:old-key:old-secret\nshop:new-key:new-secret\nbilling:b-key:b-secret\n"))
	require.NoError(t, err)
	log := &logsink.Buffer{}
	reg := prometheus.NewRegistry()
	h, err := New(Config{Producer: p, Keys: keys, Registerer: reg, Logger: newLog(log)})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	send := func(key, secret string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+PathCodes, strings.NewReader(validBody("+8618701235678")))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(key, secret)
		return do(t, req).status
	}
	require.Equal(t, 200, send("old-key", "old-secret"))
	require.Equal(t, 200, send("new-key", "new-secret"))
	require.Equal(t, 200, send("b-key", "b-secret"))
	require.Equal(t, 401, send("old-key", "new-secret"), "a key with another key's secret")
	require.Equal(t, 401, send("b-key", "b-secret "))
	require.Equal(t, 401, send("", ""))
	require.Equal(t, 2.0, testutil.ToFloat64(h.metrics.requests.WithLabelValues("shop", "200", "0")))
	require.Equal(t, 1.0, testutil.ToFloat64(h.metrics.requests.WithLabelValues("billing", "200", "0")))
	require.Equal(t, 3.0, testutil.ToFloat64(h.metrics.requests.WithLabelValues(NameNone, "401", "2001")))
	logs := log.String()
	require.Contains(t, logs, `"key":"shop"`)
	require.Contains(t, logs, `"key":"billing"`)
	for _, secret := range []string{"old-secret", "new-secret", "b-secret", "old-key", "b-key"} {
		require.NotContains(t, logs, secret)
	}
	n, err := testutil.GatherAndCount(reg, "otpq_api_request_duration_seconds")
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

func TestParseKeys(t *testing.T) {
	for _, bad := range []string{"", "# only a comment\n", "name-only\n", "n:k\n", ":k:s\n", "n::s\n", "n:k:\n", "bad name:k:s\n", "n:k k:s\n", "n:k:s\x01x\n"} {
		_, err := ParseKeys(strings.NewReader(bad))
		require.ErrorIs(t, err, ErrKeys, "%q", bad)
		require.NotContains(t, err.Error(), "s\x01x")
	}
	keys, err := ParseKeys(strings.NewReader("a:k:s:t\r\n"))
	require.NoError(t, err)
	require.Equal(t, []Key{{Name: "a", Key: "k", Secret: "s:t"}}, keys)
	_, err = ParseKeys(strings.NewReader("a:k:SECRET-CANARY x\n"))
	require.Error(t, err)
	require.NotContains(t, err.Error(), "SECRET-CANARY")
}

// 20 concurrent retries of one request with one Idempotency-Key queue one
// task and all answer 200 with its message_id, though the destination's
// limit (5) is below 20; a later retry does too, and another key name's
// same Idempotency-Key is another send.
func TestIdempotencyUnderConcurrentRetries(t *testing.T) {
	b := setup(t, producer.Config{})
	const n = 20
	var wg sync.WaitGroup
	replies := make([]reply, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = b.post(t, validBody("+8618701235678"), HeaderIdempotencyKey, "order-42/login")
		}()
	}
	wg.Wait()
	id := replies[0].body["message_id"]
	require.NotEmpty(t, id)
	for _, r := range replies {
		require.Equal(t, 200, r.status, r.raw)
		require.Equal(t, id, r.body["message_id"])
	}
	require.Len(t, b.pending(t, producer.QueueCritical), 1)
	r := b.post(t, validBody("+8618701235678"), HeaderIdempotencyKey, "order-42/login")
	require.Equal(t, id, r.body["message_id"])
	require.Len(t, b.pending(t, producer.QueueCritical), 1)
	n2, err := b.db.Client.ZCard(context.Background(), b.db.Client.Keys(context.Background(), "otpq:dest:*").Val()[0]).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n2, "one slot of the destination's limit")

	req, _ := http.NewRequest(http.MethodPost, b.srv.URL+PathCodes, strings.NewReader(validBody("+8618701235678")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderIdempotencyKey, "order-42/login")
	req.SetBasicAuth("k2", "s2:with:colons")
	other := do(t, req)
	require.Equal(t, 200, other.status, other.raw)
	require.NotEqual(t, id, other.body["message_id"], "keys are scoped by key name")
}

// A retry of a queued request answers its message_id even after the
// destination has reached its limit (5) since: the retry finds its task
// and queues and counts nothing. Fails with the retry not looking its task
// up first (queued again, refused by the destination guard): checked
// (make mutate).
func TestIdempotentRetryAfterDestinationFull(t *testing.T) {
	b := setup(t, producer.Config{})
	const to = "+8618701235678"
	first := b.post(t, validBody(to), HeaderIdempotencyKey, "order-7/login")
	require.Equal(t, 200, first.status, first.raw)
	for range 4 {
		r := b.post(t, validBody(to))
		require.Equal(t, 200, r.status, r.raw)
	}
	full := b.post(t, validBody(to))
	require.Equal(t, 400, full.status, full.raw)
	require.Equal(t, 3004, full.code(), full.raw)
	again := b.post(t, validBody(to), HeaderIdempotencyKey, "order-7/login")
	require.Equal(t, 200, again.status, again.raw)
	require.Equal(t, first.body["message_id"], again.body["message_id"])
	require.Len(t, b.pending(t, producer.QueueCritical), 5)
}

// GET /v1/codes/{id} answers what otpq status --json prints; the extras
// choose queue and expiry.
func TestStatusAndExtras(t *testing.T) {
	b := setup(t, producer.Config{})
	r := b.post(t, `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login"},"queue":"bulk","expires_in":90}`)
	require.Equal(t, 200, r.status, r.raw)
	id := r.body["message_id"].(string)
	r2 := b.post(t, validBody("+8618701235679"), HeaderQueue, "bulk", HeaderExpiresIn, "120")
	require.Equal(t, 200, r2.status, r2.raw)
	require.Len(t, b.pending(t, producer.QueueBulk), 2)
	require.Empty(t, b.pending(t, producer.QueueCritical))
	bad := b.post(t, `{"to":"+8618701235678","code":"CANARY-398210","template":{"id":"login"},"queue":"bulk"}`, HeaderQueue, "critical")
	require.Equal(t, 3002, bad.code(), bad.raw)
	bad = b.post(t, validBody("+8618701235678"), HeaderExpiresIn, "2m")
	require.Equal(t, 3002, bad.code(), bad.raw)
	require.Contains(t, bad.body["message"], HeaderExpiresIn)

	st, err := b.p.Status(context.Background(), id)
	require.NoError(t, err)
	want, err := json.Marshal(st)
	require.NoError(t, err)
	req, _ := http.NewRequest(http.MethodGet, b.srv.URL+PathCodes+"/"+id, nil)
	req.Header.Set("Authorization", specAuth)
	got := do(t, req)
	require.Equal(t, 200, got.status, got.raw)
	require.JSONEq(t, string(want), got.raw)
	require.Equal(t, "bulk", got.body["queue"])

	req, _ = http.NewRequest(http.MethodGet, b.srv.URL+PathCodes+"/no-such-id", nil)
	req.Header.Set("Authorization", specAuth)
	nf := do(t, req)
	require.Equal(t, 404, nf.status)
	require.Equal(t, 4001, nf.code())
	req, _ = http.NewRequest(http.MethodGet, b.srv.URL+PathCodes+"/"+id, nil)
	require.Equal(t, 401, do(t, req).status, "status needs a key too")
	req, _ = http.NewRequest(http.MethodGet, b.srv.URL+PathCodes, nil)
	req.Header.Set("Authorization", specAuth)
	require.Equal(t, 405, do(t, req).status)

	ttl := b.pending(t, producer.QueueBulk)
	require.Len(t, ttl, 2)
	for _, ti := range ttl {
		want := 120.0 // the header's expiry
		if ti.ID == id {
			want = 90 // the body's
		}
		require.InDelta(t, want, ti.Timeout.Seconds(), 2, "the attempt timeout is the code's life")
	}
}

// One log line per request, destination masked, never the code.
func TestOneLogLinePerRequest(t *testing.T) {
	b := setup(t, producer.Config{})
	b.post(t, validBody("+8618701235678"))
	b.post(t, validBody("+86"))
	lines := strings.Split(strings.TrimSpace(b.log.String()), "\n")
	require.Len(t, lines, 2)
	var first, second map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &first))
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &second))
	require.Equal(t, "api request", first["msg"])
	require.Equal(t, "spec", first["key"])
	require.Equal(t, "+861*******678", first["to"])
	require.NotEmpty(t, first["message_id"])
	require.EqualValues(t, 200, first["status"])
	require.EqualValues(t, 3002, second["code"])
	require.NotContains(t, b.log.String(), "398210")
}

func TestNewRefusesBadConfig(t *testing.T) {
	p, err := producer.New(producer.Config{RedisURL: "redis://127.0.0.1:1/0"})
	require.NoError(t, err)
	defer p.Close()
	for _, cfg := range []Config{{}, {Producer: p}, {Producer: p, NoAuth: true, Keys: []Key{{"a", "b", "c"}}}, {Producer: p, NoAuth: true, Queue: "urgent"}} {
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrConfig)
	}
	h, err := New(Config{Producer: p, NoAuth: true})
	require.NoError(t, err)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nope", bytes.NewReader(nil)))
	require.Equal(t, 404, rec.Code)
}

func newLog(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }
