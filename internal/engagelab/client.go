// Package engagelab is a client for the EngageLab Custom OTP Code API
// (POST /v1/codes). It makes exactly one HTTP request per Send: retrying is
// the worker's decision, never the client's, so that attempts are not
// multiplied by nested retry loops. It never follows a redirect: the code
// and the credentials go to the configured endpoint or nowhere.
package engagelab

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// DefaultBaseURL is the production endpoint of the API.
const DefaultBaseURL = "https://otp.api.engagelab.cc"

const (
	defaultTimeout = 10 * time.Second
	maxBodyBytes   = 64 << 10
)

// ErrConfig is wrapped by every *ConfigError.
var ErrConfig = errors.New("engagelab: invalid configuration")

// ConfigError is a Config that New refuses. Its text is built by otpq and
// never quotes the value: a URL may carry credentials.
type ConfigError struct {
	// Field is the Config field at fault: "BaseURL", "DevKey", "DevSecret".
	Field string
	// Reason says what is wrong with it.
	Reason string
}

// Error reads "engagelab: invalid BaseURL: why".
func (e *ConfigError) Error() string { return "engagelab: invalid " + e.Field + ": " + e.Reason }

// Is makes errors.Is(err, ErrConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// ParseBaseURL checks an API base URL: absolute http or https, a host, no
// userinfo (credentials belong in DevKey and DevSecret), no query or
// fragment; a path prefix is kept. Its errors are *ConfigError and never
// repeat any part of s but a valid scheme name.
func ParseBaseURL(s string) (*url.URL, error) {
	bad := func(reason string) (*url.URL, error) { return nil, &ConfigError{Field: "BaseURL", Reason: reason} }
	u, err := url.Parse(s)
	switch {
	case err != nil:
		// url.Parse's error quotes the input, password included: not wrapped.
		return bad("not a valid URL (want https://host[:port][/path])")
	case u.Scheme != "http" && u.Scheme != "https":
		if u.Scheme == "" {
			return bad("not an absolute URL (want https://host[:port][/path])")
		}
		return bad(fmt.Sprintf("scheme %q is not http or https", u.Scheme))
	case u.User != nil:
		return bad("must not carry credentials (user:password@): they belong in the dev key and dev secret")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return bad("has no host (want https://host[:port][/path])")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return bad("must not have a query or fragment")
	}
	return u, nil
}

// Config configures a Client. Zero values mean the documented defaults.
type Config struct {
	// BaseURL of the API; default DefaultBaseURL.
	BaseURL string
	// DevKey and DevSecret are the Basic-auth credentials. Required.
	DevKey, DevSecret string
	// Timeout bounds one request, connection included; default 10s.
	Timeout time.Duration
	// MaxConns sizes the connection pool (idle and total per host); it
	// should match the worker's concurrency. Default 100.
	MaxConns int
	// Transport replaces the HTTP transport (tests); when set MaxConns is ignored.
	Transport http.RoundTripper
	// TracerProvider, when set, makes a client span (HTTP semantic
	// conventions, otelhttp) of each request made inside a recording span,
	// and sends the W3C trace context with it. Requests made outside one
	// go through the plain transport, at no cost.
	TracerProvider trace.TracerProvider
}

// Client sends pre-generated OTP codes through EngageLab.
type Client struct {
	url     string
	auth    string
	timeout time.Duration
	http    *http.Client
	// traced is http with a client span per request (otelhttp), used for
	// requests made inside a recording span; nil without a TracerProvider
	// and in the otpq_notrace build.
	traced *http.Client
}

// New returns a Client. It fails with a *ConfigError when a credential is
// missing or the base URL fails ParseBaseURL.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.DevKey == "":
		return nil, &ConfigError{Field: "DevKey", Reason: "dev key and dev secret are required"}
	case cfg.DevSecret == "":
		return nil, &ConfigError{Field: "DevSecret", Reason: "dev key and dev secret are required"}
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := ParseBaseURL(base)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	rt := cfg.Transport
	if rt == nil {
		n := cfg.MaxConns
		if n <= 0 {
			n = 100
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = n
		t.MaxIdleConnsPerHost = n
		t.MaxConnsPerHost = n
		t.IdleConnTimeout = 90 * time.Second
		t.ResponseHeaderTimeout = timeout
		rt = t
	}
	c := &Client{
		url:     strings.TrimRight(u.String(), "/") + "/v1/codes",
		auth:    "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.DevKey+":"+cfg.DevSecret)),
		timeout: timeout,
		// No Client.Timeout: Send bounds each request (connection, answer
		// and body) with a context deadline of timeout instead. With
		// Client.Timeout set and a Transport other than *http.Transport
		// (the traced one), net/http cancels the old way, starting a
		// goroutine and a timer per request: 6% of a delivery's
		// instructions with tracing off (make bench section 11).
		http: &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error {
			// A redirect would carry the code (307/308) and the Basic-auth
			// header (same host) elsewhere, or turn the POST into a GET
			// whose 200 looks like a delivery (301/302): Send turns the
			// 3xx itself into a *RedirectError.
			return http.ErrUseLastResponse
		}},
	}
	if cfg.TracerProvider != nil {
		c.traced = tracedClient(c.http, cfg.TracerProvider)
	}
	return c, nil
}

// Template selects the message template of a send.
type Template struct {
	ID       string            `json:"id"`
	Language string            `json:"language,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
}

// Request is one send. Code is the secret; it is written to the request body
// and nowhere else.
type Request struct {
	To       string   `json:"to"`
	Code     string   `json:"code"`
	Template Template `json:"template"`
}

// Response is the API's answer to a successful send. Its strings are
// capped at MaxIDText bytes with control characters escaped.
type Response struct {
	MessageID   string `json:"message_id"`
	SendChannel string `json:"send_channel"`
	// Unconfirmed, when not empty, says why this 2xx answer does not
	// confirm the send (a body that is not JSON, or lacks message_id): the
	// provider accepted the request, so the code must not be sent again,
	// but there is no message ID to show for it.
	Unconfirmed string `json:"-"`
}

// APIError is an error answer from the API: a 4xx or 5xx, or a 2xx whose
// body carries a non-zero code. Code and Message come from the JSON error
// body when there is one; Code is 0 when the body was not the API's (a
// proxy's HTML page, an empty body). Message is redacted, escaped and
// capped at MaxMessageText bytes.
type APIError struct {
	StatusCode int
	Code       Code
	Message    string
	// RetryAfter is the parsed Retry-After header (0 when absent).
	RetryAfter time.Duration
}

// Retryable reports whether the answer may succeed later: a code of the
// 1000 class, or an HTTP 5xx whatever its code. (HTTP 429 is a throttle,
// which the worker handles on its own.)
func (e *APIError) Retryable() bool { return e.Code.Retryable() || e.StatusCode >= 500 }

// RedirectError is a 3xx answer. The client never follows one, so the code
// and the credentials never leave for another address: a redirect means
// the endpoint is misconfigured (or something on the way is hostile).
type RedirectError struct {
	StatusCode int
	// Host is the Location header's host[:port], escaped and capped; never
	// its userinfo, path or query. Empty when there was no usable Location.
	Host string
}

// Error names the status and the Location host only.
func (e *RedirectError) Error() string {
	to := "no usable Location"
	if e.Host != "" {
		to = "Location host " + e.Host
	}
	return fmt.Sprintf("engagelab HTTP %d redirect (%s) not followed: check ENGAGELAB_BASE_URL", e.StatusCode, to)
}

// Error reads "engagelab CODE: MESSAGE (HTTP STATUS)", or names only the HTTP
// status when the body held no EngageLab error; never the code or destination.
func (e *APIError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("engagelab %d: %s (HTTP %d)", e.Code, e.Message, e.StatusCode)
	}
	if e.Message != "" {
		return fmt.Sprintf("engagelab HTTP %d: %s", e.StatusCode, e.Message)
	}
	return fmt.Sprintf("engagelab HTTP %d", e.StatusCode)
}

// TransportError is a failure to get any HTTP answer. Sent tells whether the
// request may have reached the provider: false only when the connection was
// provably never made (refused, DNS), so re-sending cannot duplicate a code.
type TransportError struct {
	Sent bool
	Err  error
}

// Error describes the transport failure, scrubbed of secrets.
func (e *TransportError) Error() string {
	if e.Sent {
		return "engagelab: outcome unknown: " + e.Err.Error()
	}
	return "engagelab: not sent: " + e.Err.Error()
}

// Unwrap returns the underlying network or context error.
func (e *TransportError) Unwrap() error { return e.Err }

// Timeout reports whether the error was a timeout.
func (e *TransportError) Timeout() bool {
	var ne net.Error
	return errors.Is(e.Err, context.DeadlineExceeded) || (errors.As(e.Err, &ne) && ne.Timeout())
}

// Send makes one request. Errors are *APIError, *RedirectError,
// *TransportError, or a context error when ctx ended before the request was
// made; their text contains neither the code nor the credentials nor the
// full destination, and no control character. A 2xx without a readable
// message_id is a Response with Unconfirmed set, not an error: the provider
// took the code.
func (c *Client) Send(ctx context.Context, req Request) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("engagelab: encode request: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("engagelab: build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("Authorization", c.auth)
	resp, err := c.client(ctx).Do(hreq)
	if err != nil {
		return nil, &TransportError{Sent: !neverSent(err), Err: scrubbedError{text: providerText(err.Error(), req, MaxMessageText), err: err}}
	}
	defer func() {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyBytes))
		resp.Body.Close()
	}()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, &RedirectError{StatusCode: resp.StatusCode, Host: locationHost(resp, req)}
	case resp.StatusCode < 200 || resp.StatusCode >= 300:
		return nil, errorAnswer(resp, req)
	}
	return successAnswer(resp, req)
}

// body is the union of the API's success and error bodies.
type body struct {
	MessageID   string `json:"message_id"`
	SendChannel string `json:"send_channel"`
	Code        Code   `json:"code"`
	Message     string `json:"message"`
}

// successAnswer reads a 2xx. A body with a non-zero code is that API error;
// a body that is not JSON or lacks message_id is an unconfirmed acceptance.
func successAnswer(resp *http.Response, req Request) (*Response, error) {
	var b body
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBodyBytes)).Decode(&b); err != nil {
		return &Response{Unconfirmed: fmt.Sprintf("HTTP %d with an unreadable body", resp.StatusCode)}, nil
	}
	if b.Code != 0 {
		return nil, &APIError{StatusCode: resp.StatusCode, Code: b.Code, Message: providerText(b.Message, req, MaxMessageText)}
	}
	out := &Response{MessageID: idText(b.MessageID, req), SendChannel: idText(b.SendChannel, req)}
	if out.MessageID == "" {
		out.Unconfirmed = fmt.Sprintf("HTTP %d without a message_id", resp.StatusCode)
	}
	return out, nil
}

// errorAnswer turns a 4xx or 5xx into an *APIError.
func errorAnswer(resp *http.Response, req Request) *APIError {
	e := &APIError{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	var b body
	if json.Unmarshal(data, &b) == nil && (b.Code != 0 || b.Message != "") {
		e.Code, e.Message = b.Code, providerText(b.Message, req, MaxMessageText)
	} else {
		e.Message = http.StatusText(resp.StatusCode)
		if ct := resp.Header.Get("Content-Type"); ct != "" && len(data) > 0 {
			e.Message += " (non-JSON " + providerText(strings.SplitN(ct, ";", 2)[0], req, MaxIDText) + " body)"
		}
	}
	return e
}

// locationHost is the host[:port] a 3xx points to, resolved against the
// request URL; never the userinfo, path or query.
func locationHost(resp *http.Response, req Request) string {
	loc, err := resp.Location()
	if err != nil || loc.Host == "" {
		return ""
	}
	return providerText(loc.Host, req, MaxIDText)
}

func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

// neverSent reports whether err proves that no byte of the request reached
// the provider: the connection was refused or the host did not resolve.
func neverSent(err error) bool {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// scrubbedError keeps an error's chain for errors.Is/As while replacing its
// text with a scrubbed copy.
type scrubbedError struct {
	text string
	err  error
}

func (e scrubbedError) Error() string { return e.text }
func (e scrubbedError) Unwrap() error { return e.err }
