// Package engagelab is a client for the EngageLab Custom OTP Code API
// (POST /v1/codes). It makes exactly one HTTP request per Send: retrying is
// the worker's decision, never the client's, so that attempts are not
// multiplied by nested retry loops.
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
	"strconv"
	"strings"
	"time"

	"github.com/otpq/otpq/internal/redact"
)

// DefaultBaseURL is the production endpoint of the API.
const DefaultBaseURL = "https://otp.api.engagelab.cc"

const (
	defaultTimeout = 10 * time.Second
	maxBodyBytes   = 64 << 10
	maxErrorText   = 256
)

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
}

// Client sends pre-generated OTP codes through EngageLab.
type Client struct {
	url     string
	auth    string
	timeout time.Duration
	http    *http.Client
}

// New returns a Client. It fails when a credential is missing or the base
// URL is not an absolute http(s) URL.
func New(cfg Config) (*Client, error) {
	if cfg.DevKey == "" || cfg.DevSecret == "" {
		return nil, errors.New("engagelab: dev key and dev secret are required")
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("engagelab: base URL %q must start with http:// or https://", base)
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
	return &Client{
		url:     strings.TrimRight(base, "/") + "/v1/codes",
		auth:    "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.DevKey+":"+cfg.DevSecret)),
		timeout: timeout,
		http:    &http.Client{Transport: rt, Timeout: timeout},
	}, nil
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

// Response is the API's answer to a successful send.
type Response struct {
	MessageID   string `json:"message_id"`
	SendChannel string `json:"send_channel"`
}

// APIError is a non-2xx answer from the API. Code and Message come from the
// JSON error body when there is one; Code is 0 when the body was not the
// API's (a proxy's HTML page, an empty body).
type APIError struct {
	StatusCode int
	Code       int
	Message    string
	// RetryAfter is the parsed Retry-After header (0 when absent).
	RetryAfter time.Duration
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

// Send makes one request. Errors are *APIError, *TransportError, or a
// context error when ctx ended before the request was made; their text
// contains neither the code nor the credentials nor the full destination.
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
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, &TransportError{Sent: !neverSent(err), Err: scrubbedError{text: scrub(err.Error(), req), err: err}}
	}
	defer func() {
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyBytes))
		resp.Body.Close()
	}()
	if err := checkResponse(resp); err != nil {
		err.Message = scrub(err.Message, req)
		return nil, err
	}
	var out Response
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBodyBytes)).Decode(&out); err != nil {
		// The provider accepted the send but its answer is unreadable: the
		// code was most likely delivered, so this is not a plain failure.
		return nil, &TransportError{Sent: true, Err: fmt.Errorf("decode success body: %w", err)}
	}
	return &out, nil
}

// checkResponse turns a non-2xx response into an *APIError.
func checkResponse(resp *http.Response) *APIError {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	e := &APIError{StatusCode: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes))
	var body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &body) == nil && (body.Code != 0 || body.Message != "") {
		e.Code, e.Message = body.Code, clip(body.Message)
	} else {
		e.Message = http.StatusText(resp.StatusCode)
		if ct := resp.Header.Get("Content-Type"); ct != "" && len(data) > 0 {
			e.Message += " (non-JSON " + clip(strings.SplitN(ct, ";", 2)[0]) + " body)"
		}
	}
	return e
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

// scrub removes the code and the full destination from text that may echo
// the request (a provider message, a transport error). Credentials never
// appear: they travel in a header, not in the URL.
func scrub(text string, req Request) string {
	if req.Code != "" {
		text = strings.ReplaceAll(text, req.Code, "[redacted]")
	}
	if req.To != "" {
		text = strings.ReplaceAll(text, req.To, redact.Destination(req.To))
	}
	return text
}

// scrubbedError keeps an error's chain for errors.Is/As while replacing its
// text with a scrubbed copy.
type scrubbedError struct {
	text string
	err  error
}

func (e scrubbedError) Error() string { return e.text }
func (e scrubbedError) Unwrap() error { return e.err }

func clip(s string) string {
	if len(s) > maxErrorText {
		return s[:maxErrorText] + "…"
	}
	return s
}
