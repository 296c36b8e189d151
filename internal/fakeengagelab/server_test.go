package fakeengagelab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	testKey    = "devkey"
	testSecret = "devsecret"
	phone      = "+8613800000001"
	phone2     = "+8613800000002"
	email      = "user@example.com"
)

// env is the bundle setup returns.
type env struct {
	srv    *Server
	ts     *httptest.Server
	client *http.Client
}

// result is one decoded API answer.
type result struct {
	status    int
	header    http.Header
	raw       string
	code      int
	message   string
	messageID string
	channel   string
}

// setup starts a fake with test credentials; mods adjust the Config.
func setup(t *testing.T, mods ...func(*Config)) *env {
	t.Helper()
	cfg := Config{DevKey: testKey, DevSecret: testSecret}
	for _, m := range mods {
		m(&cfg)
	}
	srv := New(cfg)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	client := ts.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 100
	return &env{srv: srv, ts: ts, client: client}
}

func body(to, code, tmpl string) map[string]any {
	return map[string]any{"to": to, "code": code, "template": map[string]any{"id": tmpl}}
}

// do sends a raw request and decodes whatever JSON comes back.
func (e *env) do(t *testing.T, ctx context.Context, method, path, contentType string, payload []byte, auth bool) result {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, e.ts.URL+path, bytes.NewReader(payload))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth {
		req.SetBasicAuth(testKey, testSecret)
	}
	resp, err := e.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	res := result{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		var v struct {
			Code        int    `json:"code"`
			Message     string `json:"message"`
			MessageID   string `json:"message_id"`
			SendChannel string `json:"send_channel"`
		}
		require.NoError(t, json.Unmarshal(raw, &v), "body %s", raw)
		res.code, res.message, res.messageID, res.channel = v.Code, v.Message, v.MessageID, v.SendChannel
	}
	return res
}

// send posts v as JSON to /v1/codes with valid credentials.
func (e *env) send(t *testing.T, v any) result {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return e.do(t, context.Background(), http.MethodPost, APIPath, "application/json", b, true)
}

// trySend is send without assertions, for use off the test goroutine.
func (e *env) trySend(to string) (status int, messageID string, err error) {
	b, _ := json.Marshal(body(to, "1", "t"))
	req, err := http.NewRequest(http.MethodPost, e.ts.URL+APIPath, bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(testKey, testSecret)
	resp, err := e.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var v struct {
		MessageID string `json:"message_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return resp.StatusCode, "", err
	}
	return resp.StatusCode, v.MessageID, nil
}

func (e *env) control(t *testing.T, method, path string, payload string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, strings.NewReader(payload))
	require.NoError(t, err)
	resp, err := e.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(raw)
}

func requireErr(t *testing.T, r result, status, code int) {
	t.Helper()
	require.Equal(t, status, r.status, "body %s", r.raw)
	require.Equal(t, code, r.code, "body %s", r.raw)
	require.NotEmpty(t, r.message)
	require.Equal(t, "application/json", r.header.Get("Content-Type"))
}

var messageIDRE = regexp.MustCompile(`^[1-9][0-9]{18}$`)

func TestAuth(t *testing.T) {
	e := setup(t)
	b, _ := json.Marshal(body(phone, "123456", "tpl"))

	r := e.do(t, context.Background(), http.MethodPost, APIPath, "application/json", b, true)
	require.Equal(t, http.StatusOK, r.status, r.raw)

	r = e.do(t, context.Background(), http.MethodPost, APIPath, "application/json", b, false)
	requireErr(t, r, http.StatusUnauthorized, 2001)
	require.Equal(t, DefaultMessage(2001), r.message)

	for _, hdr := range []string{"Bearer abc", "Basic !!!notbase64", "Basic " + "ZGV2a2V5Ondyb25n" /* devkey:wrong */} {
		req, err := http.NewRequest(http.MethodPost, e.ts.URL+APIPath, bytes.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", hdr)
		resp, err := e.client.Do(req)
		require.NoError(t, err)
		var v apiError
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&v))
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, hdr)
		require.Equal(t, 2001, v.Code)
		require.Equal(t, "Authentication failed. The correct token was not provided.", v.Message)
	}

	require.Equal(t, 5, e.srv.Total(), "auth failures count in Total")
	require.Equal(t, 1, e.srv.Count(phone), "auth failures are not per-destination requests")
	require.Len(t, e.srv.Receipts(), 1)
}

func TestAuthAnyCredentialsWhenUnconfigured(t *testing.T) {
	e := setup(t, func(c *Config) { c.DevKey, c.DevSecret = "", "" })
	b, _ := json.Marshal(body(phone, "1", "tpl"))
	require.Equal(t, http.StatusOK, e.do(t, context.Background(), http.MethodPost, APIPath, "application/json", b, true).status)
	requireErr(t, e.do(t, context.Background(), http.MethodPost, APIPath, "application/json", b, false), http.StatusUnauthorized, 2001)
}

func TestRouting(t *testing.T) {
	e := setup(t)
	r := e.do(t, context.Background(), http.MethodGet, APIPath, "", nil, true)
	require.Equal(t, http.StatusMethodNotAllowed, r.status)
	require.Equal(t, http.MethodPost, r.header.Get("Allow"))
	r = e.do(t, context.Background(), http.MethodPost, "/v1/other", "application/json", []byte(`{}`), true)
	require.Equal(t, http.StatusNotFound, r.status)
	require.Equal(t, 1, e.srv.Total())
}

func TestValidation(t *testing.T) {
	e := setup(t)
	ctx := context.Background()

	t.Run("3001", func(t *testing.T) {
		for name, payload := range map[string]string{
			"not json":      `{"to":`,
			"empty":         ``,
			"array":         `[]`,
			"wrong type":    `{"to":8613800000001,"code":"1","template":{"id":"t"}}`,
			"params type":   `{"to":"+8613800000001","code":"1","template":{"id":"t","params":{"a":1}}}`,
			"trailing data": `{"to":"+8613800000001","code":"1","template":{"id":"t"}} x`,
		} {
			r := e.do(t, ctx, http.MethodPost, APIPath, "application/json", []byte(payload), true)
			require.Equal(t, http.StatusBadRequest, r.status, name)
			require.Equal(t, 3001, r.code, name)
		}
		good, _ := json.Marshal(body(phone, "1", "t"))
		requireErr(t, e.do(t, ctx, http.MethodPost, APIPath, "text/plain", good, true), http.StatusBadRequest, 3001)
		requireErr(t, e.do(t, ctx, http.MethodPost, APIPath, "", good, true), http.StatusBadRequest, 3001)
		require.Equal(t, http.StatusOK, e.do(t, ctx, http.MethodPost, APIPath, "application/json; charset=utf-8", good, true).status)

		big := fmt.Sprintf(`{"to":%q,"code":"1","template":{"id":"t"},"x":%q}`, phone, strings.Repeat("a", DefaultMaxBodyBytes))
		req := httptest.NewRequest(http.MethodPost, APIPath, strings.NewReader(big))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(testKey, testSecret)
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		require.Contains(t, rec.Body.String(), `"code":3001`)
	})

	t.Run("3002", func(t *testing.T) {
		cases := map[string]struct {
			v     any
			field string
		}{
			"to":             {map[string]any{"code": "1", "template": map[string]any{"id": "t"}}, "to"},
			"empty to":       {body("", "1", "t"), "to"},
			"code":           {map[string]any{"to": phone, "template": map[string]any{"id": "t"}}, "code"},
			"template":       {map[string]any{"to": phone, "code": "1"}, "template.id"},
			"template.id":    {map[string]any{"to": phone, "code": "1", "template": map[string]any{"language": "en"}}, "template.id"},
			"bad language":   {map[string]any{"to": phone, "code": "1", "template": map[string]any{"id": "t", "language": "fr"}}, "template.language"},
			"case sensitive": {map[string]any{"to": phone, "code": "1", "template": map[string]any{"id": "t", "language": "zh_cn"}}, "template.language"},
		}
		for name, c := range cases {
			r := e.send(t, c.v)
			requireErr(t, r, http.StatusBadRequest, 3002)
			require.Contains(t, r.message, c.field, name)
		}
		for _, lang := range []string{"default", "zh_CN", "zh_HK", "en", "ja", "th", "es"} {
			v := map[string]any{"to": phone2, "code": "1", "template": map[string]any{"id": lang, "language": lang}}
			require.Equal(t, http.StatusOK, e.send(t, v).status, lang)
		}
	})

	t.Run("5011", func(t *testing.T) {
		for _, to := range []string{"8613800000001", "+123", "+1234567890123456", "+86 138", "+86138000000a1", "user@", "@example.com", "user@example", "user@example.", "hello"} {
			r := e.send(t, body(to, "1", "t"))
			requireErr(t, r, http.StatusBadRequest, 5011)
			require.Equal(t, "Invalid phone number format", r.message)
		}
		for _, to := range []string{"+12345678", "+123456789012345", "a.b+c@mail.example.org"} {
			require.Equal(t, http.StatusOK, e.send(t, body(to, "1", "t")).status, to)
		}
	})

	// Validation failures passed auth and JSON parsing, so they leave receipts.
	var n5011 int
	for _, rc := range e.srv.Receipts() {
		if rc.ErrCode == 5011 {
			n5011++
			require.Empty(t, rc.MessageID)
		}
	}
	require.Equal(t, 10, n5011)
}

func TestSuccess(t *testing.T) {
	e := setup(t)
	v := map[string]any{"to": phone, "code": "398210", "unknown": true, "template": map[string]any{
		"id": "tpl-1", "language": "en", "params": map[string]string{"name": "Bob"}, "extra": 1,
	}}
	seen := map[string]bool{}
	var last string
	for i := 0; i < 20; i++ {
		r := e.send(t, v)
		require.Equal(t, http.StatusOK, r.status, r.raw)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		require.Regexp(t, messageIDRE, r.messageID)
		require.Equal(t, "sms", r.channel)
		require.False(t, seen[r.messageID], "duplicate message_id")
		seen[r.messageID] = true
		require.Greater(t, r.messageID, last, "ids increase")
		last = r.messageID
	}
	r := e.send(t, body(email, "1", "tpl-1"))
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, "email", r.channel)
	require.Regexp(t, messageIDRE, r.messageID)

	require.Equal(t, 20, e.srv.Delivered(phone))
	require.Equal(t, 1, e.srv.Delivered(email))
	rcs := e.srv.Receipts()
	require.Len(t, rcs, 21)
	require.Equal(t, phone, rcs[0].To)
	require.Equal(t, "398210", rcs[0].Code)
	require.Equal(t, "tpl-1", rcs[0].TemplateID)
	require.Equal(t, "en", rcs[0].Language)
	require.Equal(t, map[string]string{"name": "Bob"}, rcs[0].Params)
	require.Equal(t, http.StatusOK, rcs[0].Status)
	require.NotEmpty(t, rcs[0].MessageID)
	require.False(t, rcs[0].At.IsZero())

	// Receipts is a deep copy.
	rcs[0].Params["name"] = "Eve"
	require.Equal(t, "Bob", e.srv.Receipts()[0].Params["name"])
}

func TestRuleTimes(t *testing.T) {
	e := setup(t, func(c *Config) {
		c.Rules = []Rule{{To: phone, Status: 400, Code: 5013, Times: 2}}
	})
	for i := 0; i < 2; i++ {
		r := e.send(t, body(phone, "1", "t"))
		requireErr(t, r, http.StatusBadRequest, 5013)
		require.Equal(t, "Number has been blacklisted", r.message)
	}
	require.Equal(t, http.StatusOK, e.send(t, body(phone, "1", "t")).status)
	require.Equal(t, http.StatusOK, e.send(t, body(phone2, "1", "t")).status, "other destinations unaffected")
	require.Equal(t, 3, e.srv.Count(phone))
	require.Equal(t, 1, e.srv.Delivered(phone))
	require.Equal(t, 1, e.srv.Delivered(phone2))
	require.Equal(t, 4, e.srv.Total())
	rcs := e.srv.Receipts()
	require.Equal(t, 5013, rcs[0].ErrCode)
	require.Equal(t, http.StatusBadRequest, rcs[0].Status)
	require.Empty(t, rcs[0].MessageID)

	// Reset re-arms the budget.
	e.srv.Reset()
	requireErr(t, e.send(t, body(phone, "1", "t")), http.StatusBadRequest, 5013)
}

func TestWildcardRuleAndPrecedence(t *testing.T) {
	e := setup(t)
	e.srv.SetRules(
		Rule{To: "*", Status: 500, Code: 1000},
		Rule{To: phone, Status: 400, Code: 5012, Message: "custom", Times: 1},
	)
	r := e.send(t, body(phone, "1", "t"))
	requireErr(t, r, http.StatusBadRequest, 5012)
	require.Equal(t, "custom", r.message)
	// Exact rule exhausted: falls through to "*".
	r = e.send(t, body(phone, "1", "t"))
	requireErr(t, r, http.StatusInternalServerError, 1000)
	require.Equal(t, "Internal error", r.message)
	requireErr(t, e.send(t, body(email, "1", "t")), http.StatusInternalServerError, 1000)

	// Status inferred from the code table.
	e.srv.SetRules(Rule{To: "*", Code: 2004})
	requireErr(t, e.send(t, body(phone, "1", "t")), http.StatusForbidden, 2004)
	e.srv.SetRules()
	require.Equal(t, http.StatusOK, e.send(t, body(phone, "1", "t")).status)
}

func TestProxy502HTML(t *testing.T) {
	e := setup(t, func(c *Config) { c.Rules = []Rule{{To: phone, Status: 502}} })
	r := e.send(t, body(phone, "1", "t"))
	require.Equal(t, http.StatusBadGateway, r.status)
	require.Equal(t, "text/html", r.header.Get("Content-Type"))
	require.Contains(t, r.raw, "<html>")
	require.Error(t, json.Unmarshal([]byte(r.raw), new(any)), "body must not be JSON")

	e.srv.SetRules(Rule{To: phone, Status: 502, Code: 1000})
	requireErr(t, e.send(t, body(phone, "1", "t")), http.StatusBadGateway, 1000)
}

func TestTooManyRequests(t *testing.T) {
	e := setup(t, func(c *Config) { c.Rules = []Rule{{To: phone, Status: 429, RetryAfter: 7, Times: 1}} })
	r := e.send(t, body(phone, "1", "t"))
	require.Equal(t, http.StatusTooManyRequests, r.status)
	require.Equal(t, "7", r.header.Get("Retry-After"))
	require.Equal(t, 0, r.code)
	require.JSONEq(t, `{"code":0,"message":"Too Many Requests"}`, r.raw)
	require.Equal(t, http.StatusOK, e.send(t, body(phone, "1", "t")).status)

	rule, err := ParseRule(phone + "=429:0:1")
	require.NoError(t, err)
	e.srv.SetRules(rule)
	r = e.send(t, body(phone, "1", "t"))
	require.Equal(t, http.StatusTooManyRequests, r.status)
	require.Equal(t, "1", r.header.Get("Retry-After"), "default Retry-After")
}

func TestHangReturnsOnCancel(t *testing.T) {
	e := setup(t, func(c *Config) { c.Rules = []Rule{{To: phone, Hang: true}} })

	// Over the network: the client gives up, the handler notices.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, _ := json.Marshal(body(phone, "1", "t"))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+APIPath, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(testKey, testSecret)
	errc := make(chan error, 1)
	go func() {
		resp, err := e.client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	require.Eventually(t, func() bool { return e.srv.Count(phone) == 1 }, 10*time.Second, 5*time.Millisecond)
	select {
	case err := <-errc:
		t.Fatalf("hung request answered: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("client did not return after cancel")
	}
	require.Eventually(t, func() bool { return len(e.srv.Receipts()) == 1 }, 10*time.Second, 5*time.Millisecond)
	rc := e.srv.Receipts()[0]
	require.Equal(t, 0, rc.Status, "no answer was written")
	require.Equal(t, 0, e.srv.Delivered(phone))

	// In process: ServeHTTP itself returns once the context ends.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	hreq := httptest.NewRequestWithContext(ctx2, http.MethodPost, APIPath, bytes.NewReader(b))
	hreq.Header.Set("Content-Type", "application/json")
	hreq.SetBasicAuth(testKey, testSecret)
	requireServeReturns(t, e.srv, hreq)
}

// requireServeReturns runs ServeHTTP on req and fails the test if it does
// not return within 30 s: for a request that would otherwise hang or wait
// an hour, so the bound holds on any machine.
func requireServeReturns(t *testing.T, srv *Server, req *http.Request) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ServeHTTP(httptest.NewRecorder(), req)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ServeHTTP did not return after its request's context ended")
	}
}

func TestLatency(t *testing.T) {
	e := setup(t, func(c *Config) {
		c.Latency = 30 * time.Millisecond
		c.Rules = []Rule{{To: phone, Latency: 40 * time.Millisecond}}
	})
	start := time.Now()
	require.Equal(t, http.StatusOK, e.send(t, body(phone, "1", "t")).status)
	require.GreaterOrEqual(t, time.Since(start), 70*time.Millisecond, "the server's and the rule's latency add up")

	// Both latencies removed: a send that would otherwise wait an hour
	// answers (within the client's 30 s).
	e.srv.SetLatency(time.Hour)
	e.srv.SetRules(Rule{To: phone, Latency: time.Hour})
	e.srv.SetLatency(0)
	e.srv.SetRules()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := json.Marshal(body(phone, "1", "t"))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, e.do(t, ctx, http.MethodPost, APIPath, "application/json", b, true).status)

	// Latency respects cancellation.
	e.srv.SetLatency(time.Hour)
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	requireServeReturns(t, e.srv, httptest.NewRequestWithContext(ctx, http.MethodPost, APIPath, strings.NewReader(`{}`)))
}

func TestFrequencyWindow(t *testing.T) {
	// A window far longer than the test: every send below is within it,
	// however slow the machine.
	e := setup(t, func(c *Config) { c.FrequencyWindow = time.Hour })
	require.Equal(t, http.StatusOK, e.send(t, body(phone, "1", "t")).status)
	r := e.send(t, body(phone, "2", "t"))
	requireErr(t, r, http.StatusBadRequest, 3004)
	require.True(t, strings.HasPrefix(r.message, "Frequency limit exceeded"))
	require.Equal(t, http.StatusOK, e.send(t, body(phone, "1", "other")).status, "other template")
	require.Equal(t, http.StatusOK, e.send(t, body(phone2, "1", "t")).status, "other destination")

	// Failed sends are not remembered.
	e.srv.SetRules(Rule{To: email, Status: 500, Code: 1000, Times: 1})
	requireErr(t, e.send(t, body(email, "1", "t")), http.StatusInternalServerError, 1000)
	require.Equal(t, http.StatusOK, e.send(t, body(email, "1", "t")).status)

	require.Equal(t, 2, e.srv.Delivered(phone))

	e.srv.Reset()
	require.Equal(t, http.StatusOK, e.send(t, body(phone2, "1", "t")).status, "Reset clears frequency memory")

	// Once the window has passed, the same send is accepted again (the
	// sleep is the scenario: the window is real time).
	short := setup(t, func(c *Config) { c.FrequencyWindow = 50 * time.Millisecond })
	require.Equal(t, http.StatusOK, short.send(t, body(phone, "1", "t")).status)
	time.Sleep(60 * time.Millisecond)
	require.Equal(t, http.StatusOK, short.send(t, body(phone, "1", "t")).status, "window expired")
	require.Equal(t, 2, short.srv.Delivered(phone))
}

func TestTemplates(t *testing.T) {
	e := setup(t, func(c *Config) { c.Templates = []string{"login", "signup"} })
	require.Equal(t, http.StatusOK, e.send(t, body(phone, "1", "login")).status)
	r := e.send(t, body(phone, "1", "nope"))
	requireErr(t, r, http.StatusBadRequest, 4001)
	require.Equal(t, DefaultMessage(4001), r.message)
	require.Equal(t, 2, e.srv.Count(phone))
	require.Equal(t, 1, e.srv.Delivered(phone))
}

func TestControlAPI(t *testing.T) {
	const secretCode = "424242"
	e := setup(t)
	var bodies []string
	check := func(status int, raw string) string {
		t.Helper()
		bodies = append(bodies, raw)
		require.Equal(t, http.StatusOK, status, raw)
		return raw
	}

	require.Equal(t, http.StatusOK, e.send(t, body(phone, secretCode, "t")).status)
	require.Equal(t, http.StatusOK, e.send(t, body(phone, secretCode, "t")).status)
	e.srv.SetRules(Rule{To: phone2, Status: 400, Code: 5013})
	requireErr(t, e.send(t, body(phone2, secretCode, "t")), http.StatusBadRequest, 5013)

	raw := check(e.control(t, http.MethodGet, "/_fake/stats", ""))
	require.JSONEq(t, `{"total":3,"delivered":2,"by_to":{"+8613800000001":{"requests":2,"delivered":2},"+8613800000002":{"requests":1,"delivered":0}}}`, raw)

	// Rules: PUT then GET, and they take effect.
	raw = check(e.control(t, http.MethodPut, "/_fake/rules",
		`[{"to":"+8613800000001","status":400,"code":5018,"times":1},{"to":"*","latency_ms":5,"message":"m"},{"to":"+1666","status":429,"retry_after":3,"hang":false}]`))
	require.JSONEq(t, `[{"to":"+8613800000001","status":400,"code":5018,"times":1},{"to":"*","latency_ms":5,"message":"m"},{"to":"+1666","status":429,"retry_after":3}]`, raw)
	check(e.control(t, http.MethodGet, "/_fake/rules", ""))
	requireErr(t, e.send(t, body(phone, secretCode, "t")), http.StatusBadRequest, 5018)
	require.Equal(t, http.StatusOK, e.send(t, body(phone, secretCode, "t")).status)

	for _, bad := range []string{`{}`, `[{"to":""}]`, `[{"to":"x","status":200}]`, `[{"to":"x","typo":1}]`, `[{"to":"x","latency_ms":-1}]`, `[{"to":"x","times":-1}]`} {
		st, raw := e.control(t, http.MethodPut, "/_fake/rules", bad)
		bodies = append(bodies, raw)
		require.Equal(t, http.StatusBadRequest, st, bad)
		require.Contains(t, raw, `"error"`)
	}

	// Latency.
	raw = check(e.control(t, http.MethodPut, "/_fake/latency?ms=25", ""))
	require.JSONEq(t, `{"latency_ms":25}`, raw)
	raw = check(e.control(t, http.MethodGet, "/_fake/latency", ""))
	require.JSONEq(t, `{"latency_ms":25}`, raw)
	start := time.Now()
	require.Equal(t, http.StatusOK, e.send(t, body(phone, secretCode, "t")).status)
	require.GreaterOrEqual(t, time.Since(start), 25*time.Millisecond)
	for _, q := range []string{"", "?ms=-1", "?ms=abc"} {
		st, raw := e.control(t, http.MethodPut, "/_fake/latency"+q, "")
		bodies = append(bodies, raw)
		require.Equal(t, http.StatusBadRequest, st, q)
	}
	check(e.control(t, http.MethodPut, "/_fake/latency?ms=0", ""))

	// Reset keeps rules.
	check(e.control(t, http.MethodPost, "/_fake/reset", ""))
	raw = check(e.control(t, http.MethodGet, "/_fake/stats", ""))
	require.JSONEq(t, `{"total":0,"delivered":0,"by_to":{}}`, raw)
	require.Empty(t, e.srv.Receipts())
	requireErr(t, e.send(t, body(phone, secretCode, "t")), http.StatusBadRequest, 5018)

	// Wrong method / unknown endpoint.
	st, raw := e.control(t, http.MethodPost, "/_fake/stats", "")
	bodies = append(bodies, raw)
	require.Equal(t, http.StatusMethodNotAllowed, st)
	st, raw = e.control(t, http.MethodGet, "/_fake/receipts", "")
	bodies = append(bodies, raw)
	require.Equal(t, http.StatusNotFound, st)
	require.Equal(t, 1, e.srv.Total(), "control requests are not API requests")

	// The in-process receipts hold the code; the HTTP control API never does.
	require.Equal(t, secretCode, e.srv.Receipts()[0].Code)
	for _, b := range bodies {
		require.NotContains(t, b, secretCode)
	}
}

func TestParseRule(t *testing.T) {
	good := map[string]Rule{
		"+8613800000001=400:5013": {To: "+8613800000001", Status: 400, Code: 5013},
		"*=500:1000:2":            {To: "*", Status: 500, Code: 1000, Times: 2},
		"+1555=hang":              {To: "+1555", Hang: true},
		"+1555=hang:3":            {To: "+1555", Hang: true, Times: 3},
		"+1666=429:0:1":           {To: "+1666", Status: 429, Times: 1},
		"+1666=429:0:1:5":         {To: "+1666", Status: 429, Times: 1, RetryAfter: 5},
		"*=502:0":                 {To: "*", Status: 502},
		" a=b@x.io = 400:5019 ":   {To: "a=b@x.io", Status: 400, Code: 5019},
		"*=delay:300ms":           {To: "*", Latency: 300 * time.Millisecond},
		"+1=delay:1s:4":           {To: "+1", Latency: time.Second, Times: 4},
	}
	for in, want := range good {
		got, err := ParseRule(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}

	bad := map[string]string{
		"+1555":               `missing "="`,
		"=400:5013":           "empty destination",
		"+1=":                 "empty spec",
		"+1=abc:5013":         `status "abc"`,
		"+1=200:0":            "status 200 must be 4xx or 5xx",
		"+1=400":              "missing code",
		"+1=400:x":            `code "x"`,
		"+1=400:-1":           `code "-1"`,
		"+1=400:5013:x":       `times "x"`,
		"+1=400:5013:-2":      `times "-2"`,
		"+1=400:5013:1:5":     "only allowed with status 429",
		"+1=429:0:1:x":        `retry-after "x"`,
		"+1=429:0:1:5:6":      "too many fields",
		"+1=hang:1:2":         "too many fields",
		"+1=hang:x":           `times "x"`,
		"+1=delay":            "needs a duration",
		"+1=delay:soon":       `duration "soon"`,
		"+1=delay:1s:2:3":     "too many fields",
		"+8613800000001=4xx:": `status "4xx"`,
	}
	for in, want := range bad {
		_, err := ParseRule(in)
		require.Error(t, err, in)
		require.Contains(t, err.Error(), want, in)
		require.Contains(t, err.Error(), fmt.Sprintf("%q", in), "error names the input")
	}
}

func TestDefaultMessage(t *testing.T) {
	require.Equal(t, "Internal error", DefaultMessage(1000))
	require.Equal(t, "Number not registered/invalid number", DefaultMessage(5020))
	for _, c := range []int{1000, 2001, 2002, 2004, 3001, 3002, 3003, 3004, 4001, 5001, 5011, 5012, 5013, 5014, 5015, 5016, 5017, 5018, 5019, 5020} {
		require.NotEmpty(t, DefaultMessage(c), c)
	}
	require.Empty(t, DefaultMessage(0))
	require.Empty(t, DefaultMessage(9999))
}

func TestConcurrentCounting(t *testing.T) {
	e := setup(t, func(c *Config) {
		c.Rules = []Rule{{To: phone2, Status: 500, Code: 1000, Times: 100}}
	})
	const workers, perWorker = 50, 20
	var wg sync.WaitGroup
	ids := make(chan string, workers*perWorker)
	errs := make(chan error, workers*perWorker)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				to := phone
				if (w+i)%2 == 1 {
					to = phone2
				}
				status, id, err := e.trySend(to)
				switch {
				case err != nil:
					errs <- err
				case status == http.StatusOK:
					ids <- id
				case status != http.StatusInternalServerError:
					errs <- fmt.Errorf("unexpected status %d", status)
				}
			}
		}(w)
	}
	wg.Wait()
	close(ids)
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	seen := map[string]bool{}
	for id := range ids {
		require.False(t, seen[id], "duplicate id %s", id)
		seen[id] = true
	}
	require.Equal(t, workers*perWorker, e.srv.Total())
	require.Equal(t, 500, e.srv.Count(phone))
	require.Equal(t, 500, e.srv.Count(phone2))
	require.Equal(t, 500, e.srv.Delivered(phone))
	require.Equal(t, 400, e.srv.Delivered(phone2), "exactly Times=100 failures")
	require.Len(t, seen, 900)
	require.Len(t, e.srv.Receipts(), 1000)
}

func TestMaxReceipts(t *testing.T) {
	e := setup(t, func(c *Config) { c.MaxReceipts = 3 })
	for i := 0; i < 5; i++ {
		require.Equal(t, http.StatusOK, e.send(t, body(phone, fmt.Sprint(i), "t")).status)
	}
	rcs := e.srv.Receipts()
	require.Len(t, rcs, 3)
	require.Equal(t, "0", rcs[0].Code, "oldest kept")
	require.Equal(t, 5, e.srv.Delivered(phone), "counting continues past the cap")

	none := New(Config{MaxReceipts: -1})
	req := httptest.NewRequest(http.MethodPost, APIPath, strings.NewReader(`{"to":"+8613800000001","code":"1","template":{"id":"t"}}`))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("k", "s")
	rec := httptest.NewRecorder()
	none.ServeHTTP(rec, req)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Empty(t, none.Receipts())
	require.Equal(t, 1, none.Delivered(phone))
}

// BenchmarkServeHTTP measures the in-process handler; run with
// -benchtime=1000000x to check that a 1M-request run stays bounded.
func BenchmarkServeHTTP(b *testing.B) {
	srv := New(Config{DevKey: testKey, DevSecret: testSecret})
	payloads := make([][]byte, 1000)
	for i := range payloads {
		payloads[i], _ = json.Marshal(body(fmt.Sprintf("+86138%08d", i), "123456", "t"))
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, APIPath, bytes.NewReader(payloads[i%len(payloads)]))
			req.Header.Set("Content-Type", "application/json")
			req.SetBasicAuth(testKey, testSecret)
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			i++
		}
	})
}
