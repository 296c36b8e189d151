package engagelab

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const canaryCode = "CANARY-739184"

type bundle struct {
	client *Client
	srv    *httptest.Server
	calls  *atomic.Int64
}

func setup(t *testing.T, h http.HandlerFunc, mods ...func(*Config)) bundle {
	t.Helper()
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := Config{BaseURL: srv.URL, DevKey: "key", DevSecret: "s3cret", Timeout: 2 * time.Second}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	return bundle{client: c, srv: srv, calls: &calls}
}

func sampleRequest() Request {
	return Request{To: "+8618701235678", Code: canaryCode, Template: Template{ID: "tpl-1"}}
}

func TestSendRequestShape(t *testing.T) {
	var got map[string]any
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, http.MethodPost, r.Method)
		require.Equal(t, "/v1/codes", r.URL.Path)
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
		require.Equal(t, "Basic "+base64.StdEncoding.EncodeToString([]byte("key:s3cret")), r.Header.Get("Authorization"))
		require.NoError(t, json.NewDecoder(r.Body).Decode(&got))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"message_id":"1725407449772531712","send_channel":"sms"}`)
	})
	req := sampleRequest()
	req.Template.Language = "en"
	req.Template.Params = map[string]string{"name": "Bob"}
	resp, err := b.client.Send(context.Background(), req)
	require.NoError(t, err)
	require.Equal(t, &Response{MessageID: "1725407449772531712", SendChannel: "sms"}, resp)
	require.Equal(t, map[string]any{
		"to":   "+8618701235678",
		"code": canaryCode,
		"template": map[string]any{
			"id": "tpl-1", "language": "en", "params": map[string]any{"name": "Bob"},
		},
	}, got)
}

func TestSendOmitsEmptyOptionalFields(t *testing.T) {
	var raw string
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		raw = string(data)
		io.WriteString(w, `{"message_id":"1","send_channel":"email"}`)
	})
	_, err := b.client.Send(context.Background(), Request{To: "a@b.co", Code: "1", Template: Template{ID: "t"}})
	require.NoError(t, err)
	require.JSONEq(t, `{"to":"a@b.co","code":"1","template":{"id":"t"}}`, raw)
}

func TestSendAPIErrors(t *testing.T) {
	cases := []struct {
		name        string
		status      int
		contentType string
		body        string
		retryAfter  string
		want        APIError
	}{
		{"json error", 400, "application/json", `{"code":5013,"message":"Number has been blacklisted"}`, "",
			APIError{StatusCode: 400, Code: 5013, Message: "Number has been blacklisted"}},
		{"internal", 500, "application/json", `{"code":1000,"message":"Internal error"}`, "",
			APIError{StatusCode: 500, Code: 1000, Message: "Internal error"}},
		{"proxy html", 502, "text/html", `<html><body>Bad Gateway</body></html>`, "",
			APIError{StatusCode: 502, Message: "Bad Gateway (non-JSON text/html body)"}},
		{"empty body", 503, "", ``, "",
			APIError{StatusCode: 503, Message: "Service Unavailable"}},
		{"throttle", 429, "application/json", `{"code":0,"message":"too many requests"}`, "7",
			APIError{StatusCode: 429, Message: "too many requests", RetryAfter: 7 * time.Second}},
		{"echoed secret", 400, "application/json", `{"code":3002,"message":"bad code ` + canaryCode + ` for +8618701235678"}`, "",
			APIError{StatusCode: 400, Code: 3002, Message: "bad code [redacted] for +86187****5678"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.contentType != "" {
					w.Header().Set("Content-Type", tc.contentType)
				}
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			_, err := b.client.Send(context.Background(), sampleRequest())
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			require.Equal(t, tc.want, *apiErr)
			require.NotContains(t, err.Error(), canaryCode)
			require.NotContains(t, err.Error(), "s3cret")
			require.NotContains(t, err.Error(), "18701235678")
		})
	}
}

func TestSendLimitsBody(t *testing.T) {
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		io.WriteString(w, `{"code":3003,"message":"`+strings.Repeat("x", 1<<20)+`"}`)
	})
	_, err := b.client.Send(context.Background(), sampleRequest())
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	// Body cut at 64 KiB: the JSON is unreadable, the status still counts.
	require.Equal(t, 400, apiErr.StatusCode)
	require.Less(t, len(err.Error()), 1024)
}

func TestSendTimeoutIsOutcomeUnknown(t *testing.T) {
	release := make(chan struct{})
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, func(c *Config) { c.Timeout = 100 * time.Millisecond })
	defer close(release)
	_, err := b.client.Send(context.Background(), sampleRequest())
	var te *TransportError
	require.ErrorAs(t, err, &te)
	require.True(t, te.Sent, "a request that timed out may have been delivered")
	require.True(t, te.Timeout())
	require.Equal(t, int64(1), b.calls.Load(), "the client never retries")
}

func TestSendConnectionRefusedIsNotSent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	c, err := New(Config{BaseURL: "http://" + addr, DevKey: "k", DevSecret: "s"})
	require.NoError(t, err)
	_, err = c.Send(context.Background(), sampleRequest())
	var te *TransportError
	require.ErrorAs(t, err, &te)
	require.False(t, te.Sent)
	require.NotContains(t, err.Error(), canaryCode)
}

func TestSendCanceledContextMakesNoRequest(t *testing.T) {
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := b.client.Send(ctx, sampleRequest())
	require.True(t, errors.Is(err, context.Canceled))
	require.Zero(t, b.calls.Load())
}

func TestSendUnreadableSuccessBody(t *testing.T) {
	b := setup(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>ok</html>") })
	_, err := b.client.Send(context.Background(), sampleRequest())
	var te *TransportError
	require.ErrorAs(t, err, &te)
	require.True(t, te.Sent)
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{DevKey: "k"})
	require.ErrorContains(t, err, "dev key and dev secret are required")
	_, err = New(Config{DevKey: "k", DevSecret: "s", BaseURL: "otp.example"})
	require.ErrorContains(t, err, "must start with http")
	c, err := New(Config{DevKey: "k", DevSecret: "s"})
	require.NoError(t, err)
	require.Equal(t, DefaultBaseURL+"/v1/codes", c.url)
}

func TestPoolSizedToMaxConns(t *testing.T) {
	c, err := New(Config{DevKey: "k", DevSecret: "s", MaxConns: 321})
	require.NoError(t, err)
	tr := c.http.Transport.(*http.Transport)
	require.Equal(t, 321, tr.MaxIdleConnsPerHost)
	require.Equal(t, 321, tr.MaxConnsPerHost)
}
