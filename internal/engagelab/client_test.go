package engagelab

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
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
			APIError{StatusCode: 400, Code: 3002, Message: "bad code [redacted] for +861*******678"}},
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

// Config.Timeout bounds the whole request, the body included, whatever the
// Transport: a provider that sends its headers and then stalls mid-body
// cannot hold a worker's slot. Send bounds it with a context deadline (the
// http.Client has no Timeout of its own), so the check covers a Transport
// of the caller's (no ResponseHeaderTimeout) and the traced one.
func TestSendTimeoutCoversTheBody(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"default transport":  func(*Config) {},
		"caller's transport": func(c *Config) { c.Transport = http.DefaultTransport.(*http.Transport).Clone() },
		"traced transport":   func(c *Config) { c.TracerProvider = tracenoop.NewTracerProvider() },
	} {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			b := setup(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, `{"message_id":`)
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}, func(c *Config) { c.Timeout = 200 * time.Millisecond; mod(c) })
			defer close(release)
			type result struct {
				resp *Response
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := b.client.Send(context.Background(), sampleRequest())
				done <- result{resp, err}
			}()
			select {
			case r := <-done:
				// The provider took the code (200) but its answer never
				// finished: a send not to repeat, never a confirmed one.
				require.NoError(t, r.err)
				require.NotEmpty(t, r.resp.Unconfirmed)
				require.Empty(t, r.resp.MessageID)
			case <-time.After(10 * time.Second):
				t.Fatal("Send still waiting on a stalled body 10 s after its 200 ms timeout")
			}
		})
	}
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

func TestSendOddSuccessBodies(t *testing.T) {
	cases := []struct {
		name, body string
		want       *Response
	}{
		{"junk", "<html>ok</html>", &Response{Unconfirmed: "HTTP 200 with an unreadable body"}},
		{"empty", "", &Response{Unconfirmed: "HTTP 200 with an unreadable body"}},
		{"no message_id", `{"send_channel":"sms"}`, &Response{SendChannel: "sms", Unconfirmed: "HTTP 200 without a message_id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, tc.body) })
			resp, err := b.client.Send(context.Background(), sampleRequest())
			require.NoError(t, err, "the provider took the request: not an error to retry")
			require.Equal(t, tc.want, resp)
			require.Equal(t, int64(1), b.calls.Load())
		})
	}
}

// TestSendSuccessStatusWithErrorCode: a 2xx whose body carries a code is
// that API error, not a delivery with an empty message_id.
func TestSendSuccessStatusWithErrorCode(t *testing.T) {
	b := setup(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"code":3004,"message":"Frequency limit exceeded"}`)
	})
	resp, err := b.client.Send(context.Background(), sampleRequest())
	require.Nil(t, resp)
	var apiErr *APIError
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, APIError{StatusCode: 200, Code: CodeFrequencyLimit, Message: "Frequency limit exceeded"}, *apiErr)
	require.False(t, apiErr.Retryable())
}

// TestSendNeverFollowsRedirects: whatever the status and wherever the
// Location points (same host on another port, another host), the code and
// the Authorization header go to the configured endpoint only, and the 3xx
// is a *RedirectError naming the status and the Location host alone.
func TestSendNeverFollowsRedirects(t *testing.T) {
	var elsewhere atomic.Int64
	var leakedAuth, leakedBody atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		leakedAuth.Store(r.Header.Get("Authorization"))
		data, _ := io.ReadAll(r.Body)
		leakedBody.Store(string(data))
		// A GET turned from a 301/302 POST would read this as a delivery.
		io.WriteString(w, `{"message_id":"999","send_channel":"sms"}`)
	}))
	defer other.Close()
	otherPort := other.Listener.Addr().(*net.TCPAddr).Port
	targets := map[string]string{
		// Same IP, another port: a followed redirect would carry the Basic auth.
		"same host other port": fmt.Sprintf("http://127.0.0.1:%d/v1/codes", otherPort),
		// Another host name (resolves to the same listener): a followed
		// 307/308 would POST the code there.
		"other host": fmt.Sprintf("http://user:LOCSECRET@localhost:%d/v1/codes?token=QSECRET", otherPort),
	}
	for _, status := range []int{301, 302, 303, 307, 308} {
		for name, loc := range targets {
			t.Run(fmt.Sprintf("%d %s", status, name), func(t *testing.T) {
				b := setup(t, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Location", loc)
					w.WriteHeader(status)
				})
				resp, err := b.client.Send(context.Background(), sampleRequest())
				require.Nil(t, resp)
				var re *RedirectError
				require.ErrorAs(t, err, &re)
				require.Equal(t, status, re.StatusCode)
				u, _ := url.Parse(loc)
				require.Equal(t, u.Host, re.Host)
				require.Contains(t, err.Error(), fmt.Sprintf("HTTP %d", status))
				require.Contains(t, err.Error(), u.Host)
				for _, secret := range []string{"LOCSECRET", "QSECRET", "user", "/v1/codes", canaryCode, "s3cret"} {
					require.NotContains(t, err.Error(), secret)
				}
				require.Equal(t, int64(1), b.calls.Load())
			})
		}
	}
	require.Zero(t, elsewhere.Load(), "no request reached the redirect target (auth %v, body %v)", leakedAuth.Load(), leakedBody.Load())
}

// TestProviderTextIsBoundedAndEscaped: provider strings are stored capped
// and escaped, and the code is redacted before the cut, so no part of it
// survives at the edge.
func TestProviderTextIsBoundedAndEscaped(t *testing.T) {
	t.Run("huge message_id", func(t *testing.T) {
		b := setup(t, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"message_id":"`+strings.Repeat("7", 60<<10)+`","send_channel":"`+strings.Repeat("s", 1000)+`"}`)
		})
		resp, err := b.client.Send(context.Background(), sampleRequest())
		require.NoError(t, err)
		require.LessOrEqual(t, len(resp.MessageID), MaxIDText)
		require.LessOrEqual(t, len(resp.SendChannel), MaxIDText)
		require.True(t, strings.HasSuffix(resp.MessageID, "…"))
		require.True(t, utf8.ValidString(resp.MessageID))
	})
	t.Run("escape sequence in message_id", func(t *testing.T) {
		b := setup(t, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"message_id":"17\u001b[2J\nX\u202eY","send_channel":"sms\r"}`)
		})
		resp, err := b.client.Send(context.Background(), sampleRequest())
		require.NoError(t, err)
		require.Equal(t, `17\x1b[2J\nX\u202eY`, resp.MessageID)
		require.Equal(t, `sms\r`, resp.SendChannel)
	})
	t.Run("code at the cut", func(t *testing.T) {
		req := Request{To: "+8618701235678", Code: "918273", Template: Template{ID: "t"}}
		for _, at := range []int{250, 253, 505, 508, 510} {
			b := setup(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(400)
				io.WriteString(w, `{"code":3003,"message":"`+strings.Repeat("A", at)+req.Code+strings.Repeat("B", 600)+`"}`)
			})
			_, err := b.client.Send(context.Background(), req)
			var apiErr *APIError
			require.ErrorAs(t, err, &apiErr)
			require.LessOrEqual(t, len(apiErr.Message), MaxMessageText)
			for i := 0; i+3 <= len(req.Code); i++ {
				require.NotContains(t, err.Error(), req.Code[i:i+3], "code cut at byte %d", at)
			}
		}
	})
	t.Run("invalid UTF-8 and multi-byte cut", func(t *testing.T) {
		b := setup(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(400)
			io.WriteString(w, "{\"code\":5001,\"message\":\"\xff"+strings.Repeat("é", 600)+"\"}")
		})
		_, err := b.client.Send(context.Background(), sampleRequest())
		var apiErr *APIError
		require.ErrorAs(t, err, &apiErr)
		require.True(t, utf8.ValidString(apiErr.Message))
		require.LessOrEqual(t, len(apiErr.Message), MaxMessageText)
	})
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{DevKey: "k"})
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, "dev key and dev secret are required")
	_, err = New(Config{DevKey: "k", DevSecret: "s", BaseURL: "otp.example"})
	require.ErrorContains(t, err, "not an absolute URL")
	c, err := New(Config{DevKey: "k", DevSecret: "s"})
	require.NoError(t, err)
	require.Equal(t, DefaultBaseURL+"/v1/codes", c.url)
	c, err = New(Config{DevKey: "k", DevSecret: "s", BaseURL: "http://[::1]:8080/prefix/"})
	require.NoError(t, err)
	require.Equal(t, "http://[::1]:8080/prefix/v1/codes", c.url)
}

// TestBaseURLRefusedWithoutEcho: a bad base URL is refused at construction
// with a reason built by otpq, never quoting the URL's credentials.
func TestBaseURLRefusedWithoutEcho(t *testing.T) {
	for bad, reason := range map[string]string{
		"http://urluser:URLSECRET4@[::1": "not a valid URL",
		"ftp://u:SECRET@h":               `scheme "ftp" is not http or https`,
		"http://u:p@host":                "must not carry credentials",
		"https://u:SECRET@host/x":        "must not carry credentials",
		"http://u:SECRET%zz@host":        "not a valid URL",
		"https://host/v?SECRET=1":        "query or fragment",
		"https://host/v#SECRET":          "query or fragment",
		"https:///SECRET":                "has no host",
		"https:SECRET":                   "has no host",
		"SECRET":                         "not an absolute URL",
	} {
		_, err := New(Config{DevKey: "k", DevSecret: "s", BaseURL: bad})
		require.ErrorIs(t, err, ErrConfig, bad)
		var ce *ConfigError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, "BaseURL", ce.Field)
		require.Contains(t, err.Error(), reason, bad)
		require.NotContains(t, err.Error(), "SECRET", bad)
		require.NotContains(t, err.Error(), "urluser", bad)
	}
}

func TestPoolSizedToMaxConns(t *testing.T) {
	c, err := New(Config{DevKey: "k", DevSecret: "s", MaxConns: 321})
	require.NoError(t, err)
	tr := c.http.Transport.(*http.Transport)
	require.Equal(t, 321, tr.MaxIdleConnsPerHost)
	require.Equal(t, 321, tr.MaxConnsPerHost)
}
