// Package api serves otpq's EngageLab-compatible HTTP API. POST /v1/codes
// takes the request of EngageLab's Custom OTP Code API (same body, same
// HTTP Basic authentication) and queues the send through the producer,
// answering as EngageLab does: {"message_id", "send_channel"} on success,
// {"code", "message"} with EngageLab's codes and statuses on failure. So an
// application in any language moves to otpq by changing one base URL.
//
// otpq's extras, which EngageLab clients can ignore: an Idempotency-Key
// header, the code's expiry and queue (body fields expires_in and queue,
// or the Otpq-Expires-In and Otpq-Queue headers), and GET
// /v1/codes/{message_id}, which answers what `otpq status --json` prints.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/producer"
)

// Routes and headers of the API.
const (
	// PathCodes is EngageLab's send endpoint; GET PathCodes + "/{message_id}"
	// answers a send's status.
	PathCodes = "/v1/codes"
	// HeaderIdempotencyKey makes a send idempotent: the same key (from the
	// same key name) answers the same message_id and queues nothing new.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderExpiresIn is the code's validity in whole seconds (the body
	// field expires_in says the same).
	HeaderExpiresIn = "Otpq-Expires-In"
	// HeaderQueue is the queue, critical or bulk (the body field queue says
	// the same).
	HeaderQueue = "Otpq-Queue"
)

// Defaults of a Config's zero values.
const (
	DefaultMaxBody        = 64 << 10
	DefaultEnqueueTimeout = 5 * time.Second
	// MaxIdempotencyKeyLen bounds an Idempotency-Key header.
	MaxIdempotencyKeyLen = 255
)

// Names that logs and metrics give a request without a key.
const (
	// NameAnonymous is the key name of requests served without
	// authentication (Config.NoAuth).
	NameAnonymous = "anonymous"
	// NameNone is the key name of requests whose credentials matched no key.
	NameNone = "none"
)

// Config configures a Handler. Zero values mean the documented defaults.
type Config struct {
	// Producer queues the sends; required. Its destination guard, payload
	// keys and retention apply to every request.
	Producer *producer.Producer
	// Keys authenticate requests (see ParseKeys); required unless NoAuth.
	Keys []Key
	// NoAuth serves without authentication. The caller makes sure that only
	// this machine can connect (otpq api allows it on loopback only).
	NoAuth bool
	// Queue is the queue of a request that names none; default
	// producer.QueueCritical.
	Queue string
	// Expiry is the code's validity when a request gives none; default
	// producer.DefaultExpiry.
	Expiry time.Duration
	// MaxBody is the largest request body accepted; default DefaultMaxBody.
	// A larger body is answered 413.
	MaxBody int64
	// EnqueueTimeout bounds the Redis work of one request; default
	// DefaultEnqueueTimeout. A request that runs out of it is answered 503
	// (code 1000), which clients retry.
	EnqueueTimeout time.Duration
	// Registerer receives the API's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Logger receives one line per request; default slog.Default().
	Logger *slog.Logger
}

// queue is what the handler needs of a producer.
type queue interface {
	Send(context.Context, producer.Request, ...producer.Option) (string, error)
	Status(context.Context, string) (*producer.Status, error)
}

// Handler serves the API. It is safe for concurrent use.
type Handler struct {
	cfg     Config
	q       queue
	keys    keyring
	mux     *http.ServeMux
	metrics *apiMetrics
	log     *slog.Logger
	locks   keyedLocks
}

// ErrConfig is wrapped by New's errors.
var ErrConfig = errors.New("api: invalid configuration")

// New checks cfg and builds a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Producer == nil:
		return nil, fmt.Errorf("%w: no producer", ErrConfig)
	case len(cfg.Keys) == 0 && !cfg.NoAuth:
		return nil, fmt.Errorf("%w: no key", ErrConfig)
	case len(cfg.Keys) > 0 && cfg.NoAuth:
		return nil, fmt.Errorf("%w: keys given and authentication turned off", ErrConfig)
	}
	if cfg.Queue == "" {
		cfg.Queue = producer.QueueCritical
	}
	if cfg.Queue != producer.QueueCritical && cfg.Queue != producer.QueueBulk {
		return nil, fmt.Errorf("%w: queue %q is not %s or %s", ErrConfig, cfg.Queue, producer.QueueCritical, producer.QueueBulk)
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = producer.DefaultExpiry
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.EnqueueTimeout <= 0 {
		cfg.EnqueueTimeout = DefaultEnqueueTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("%w: metrics: %w", ErrConfig, err)
	}
	h := &Handler{cfg: cfg, q: cfg.Producer, keys: newKeyring(cfg.Keys), metrics: m, log: cfg.Logger}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST "+PathCodes, h.route("send", h.send))
	h.mux.HandleFunc("GET "+PathCodes+"/{id}", h.route("status", h.status))
	h.mux.HandleFunc("/", h.route("other", func(r *http.Request, _ *exchange) answer {
		if r.URL.Path == PathCodes {
			return fail(http.StatusMethodNotAllowed, engagelab.CodeBadFormat, "use POST "+PathCodes)
		}
		return fail(http.StatusNotFound, engagelab.CodeNotFound, "no such endpoint; the API serves POST "+PathCodes+" and GET "+PathCodes+"/{message_id}")
	}))
	return h, nil
}

// ServeHTTP serves one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// answer is what a request gets: an EngageLab-shaped body and its status.
type answer struct {
	status     int
	code       engagelab.Code // 0 on success
	body       any
	retryAfter time.Duration // > 0: a Retry-After header
}

// errorBody is EngageLab's error shape.
type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func fail(status int, code engagelab.Code, msg string) answer {
	return answer{status: status, code: code, body: errorBody{Code: int(code), Message: msg}}
}

// The answers of the table.
var (
	errAuth        = fail(http.StatusUnauthorized, engagelab.CodeAuthFailed, "Authentication failed. The correct token was not provided.")
	errUnavailable = func(what string) answer {
		a := fail(http.StatusServiceUnavailable, engagelab.CodeInternal, "the queue is unavailable ("+what+"); nothing was queued for certain: retry, with the same Idempotency-Key to be safe")
		a.retryAfter = time.Second
		return a
	}
)

// exchange is what the log line and the metrics learn of a request.
type exchange struct {
	key       string
	to        string // masked
	messageID string
	idem      bool
}

// route wraps a route's function: authentication first, then the answer
// written, counted and logged once.
func (h *Handler) route(name string, serve func(*http.Request, *exchange) answer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		x := &exchange{key: NameAnonymous}
		var a answer
		if !h.cfg.NoAuth {
			x.key = NameNone
			if key, secret, ok := r.BasicAuth(); ok {
				if n := h.keys.match(key, secret); n != "" {
					x.key = n
				}
			}
		}
		if x.key == NameNone {
			a = errAuth
			w.Header().Set("WWW-Authenticate", `Basic realm="otpq"`)
		} else {
			a = serve(r, x)
		}
		write(w, a)
		took := time.Since(start)
		h.metrics.observe(name, x.key, a, took)
		h.logRequest(r, name, x, a, took)
	}
}

func write(w http.ResponseWriter, a answer) {
	b, err := json.Marshal(a.body)
	if err != nil {
		a = fail(http.StatusInternalServerError, engagelab.CodeInternal, "answer not encodable")
		b, _ = json.Marshal(a.body)
	}
	w.Header().Set("Content-Type", "application/json")
	if a.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((a.retryAfter+time.Second-1)/time.Second), 10))
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(append(b, '\n'))
}

func (h *Handler) logRequest(r *http.Request, route string, x *exchange, a answer, took time.Duration) {
	attrs := []slog.Attr{
		slog.String("route", route), slog.String("method", r.Method), slog.String("key", x.key),
		slog.Int("status", a.status), slog.Duration("took", took), slog.String("remote", r.RemoteAddr),
	}
	if x.to != "" {
		attrs = append(attrs, slog.String("to", x.to))
	}
	if x.messageID != "" {
		attrs = append(attrs, slog.String("message_id", x.messageID))
	}
	if x.idem {
		attrs = append(attrs, slog.Bool("idempotency_key", true))
	}
	level := slog.LevelInfo
	if eb, ok := a.body.(errorBody); ok {
		attrs = append(attrs, slog.Int("code", eb.Code), slog.String("error", eb.Message))
		if a.status >= 500 {
			level = slog.LevelWarn
		}
	}
	h.log.LogAttrs(r.Context(), level, "api request", attrs...)
}

// sendBody is the body of POST /v1/codes: EngageLab's fields, then otpq's.
type sendBody struct {
	To       string        `json:"to"`
	Code     string        `json:"code"`
	Template *templateBody `json:"template"`
	// ExpiresIn is the code's validity in seconds (otpq).
	ExpiresIn *int64 `json:"expires_in"`
	// Queue is critical or bulk (otpq).
	Queue *string `json:"queue"`
}

type templateBody struct {
	ID       string            `json:"id"`
	Language string            `json:"language"`
	Params   map[string]string `json:"params"`
}

// sendAnswer is EngageLab's success body.
type sendAnswer struct {
	MessageID   string `json:"message_id"`
	SendChannel string `json:"send_channel"`
}

func (h *Handler) send(r *http.Request, x *exchange) answer {
	body, a, ok := h.readBody(r)
	if !ok {
		return a
	}
	var in sendBody
	if a, ok := decode(body, &in); !ok {
		return a
	}
	x.to = redact.Destination(in.To)
	req := producer.Request{To: in.To, Code: in.Code}
	if in.Template != nil {
		req.TemplateID, req.Language, req.Params = in.Template.ID, in.Template.Language, in.Template.Params
	}
	opts, a, ok := h.options(r, in)
	if !ok {
		return a
	}
	if err := req.Validate(); err != nil {
		return invalidAnswer(err)
	}
	channel := "sms"
	if strings.Contains(in.To, "@") {
		channel = "email"
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.EnqueueTimeout)
	defer cancel()
	idem := r.Header.Get(HeaderIdempotencyKey)
	if idem != "" {
		x.idem = true
		if len(idem) > MaxIdempotencyKeyLen || !utf8.ValidString(idem) || strings.ContainsFunc(idem, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
			return fail(http.StatusBadRequest, engagelab.CodeBadParams, fmt.Sprintf("invalid %s: at most %d printable characters", HeaderIdempotencyKey, MaxIdempotencyKeyLen))
		}
		id := idempotentID(x.key, idem)
		// Requests with one key wait for each other in this process, and
		// a repeat finds the task its first request queued: concurrent
		// retries queue one task and count once against the destination's
		// limit.
		defer h.locks.lock(id)()
		switch _, err := h.q.Status(ctx, id); {
		case err == nil:
			x.messageID = id
			return answer{status: http.StatusOK, body: sendAnswer{MessageID: id, SendChannel: channel}}
		case !errors.Is(err, producer.ErrNotFound):
			return errUnavailable("Redis did not answer")
		}
		opts = append(opts, producer.DedupKey(id))
	}
	id, err := h.q.Send(ctx, req, opts...)
	var limited *producer.DestinationLimitError
	switch {
	case err == nil, errors.Is(err, producer.ErrDuplicate):
		x.messageID = id
		return answer{status: http.StatusOK, body: sendAnswer{MessageID: id, SendChannel: channel}}
	case errors.Is(err, producer.ErrInvalid):
		return invalidAnswer(err)
	case errors.As(err, &limited):
		a := fail(http.StatusBadRequest, engagelab.CodeFrequencyLimit, fmt.Sprintf(
			"Frequency limit exceeded: this destination already had %d sends in the last %s; retry after %s",
			limited.Limit, limited.Window, max(time.Second, limited.RetryAfter.Round(time.Second))))
		a.retryAfter = max(time.Second, limited.RetryAfter)
		return a
	default:
		return errUnavailable("Redis did not answer")
	}
}

// options reads otpq's extras from the body and the headers.
func (h *Handler) options(r *http.Request, in sendBody) ([]producer.Option, answer, bool) {
	queue := h.cfg.Queue
	if v := r.Header.Get(HeaderQueue); v != "" {
		queue = v
	}
	if in.Queue != nil {
		if v := r.Header.Get(HeaderQueue); v != "" && v != *in.Queue {
			return nil, fail(http.StatusBadRequest, engagelab.CodeBadParams, "invalid queue: the body and the "+HeaderQueue+" header disagree"), false
		}
		queue = *in.Queue
	}
	if queue != producer.QueueCritical && queue != producer.QueueBulk {
		return nil, fail(http.StatusBadRequest, engagelab.CodeBadParams, fmt.Sprintf("invalid queue: %.40q is not %s or %s", queue, producer.QueueCritical, producer.QueueBulk)), false
	}
	expiry := h.cfg.Expiry
	var secs *int64
	if v := r.Header.Get(HeaderExpiresIn); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fail(http.StatusBadRequest, engagelab.CodeBadParams, "invalid "+HeaderExpiresIn+": want whole seconds"), false
		}
		secs = &n
	}
	if in.ExpiresIn != nil {
		if secs != nil && *secs != *in.ExpiresIn {
			return nil, fail(http.StatusBadRequest, engagelab.CodeBadParams, "invalid expires_in: the body and the "+HeaderExpiresIn+" header disagree"), false
		}
		secs = in.ExpiresIn
	}
	if secs != nil {
		if *secs <= 0 || *secs > int64(24*time.Hour/time.Second) {
			return nil, fail(http.StatusBadRequest, engagelab.CodeBadParams, "invalid expires_in: want 1 to 86400 seconds"), false
		}
		expiry = time.Duration(*secs) * time.Second
	}
	return []producer.Option{producer.Queue(queue), producer.ExpiresIn(expiry)}, answer{}, true
}

// idempotentID is the task ID of an Idempotency-Key: scoped by the key's
// name, so two clients cannot reach each other's sends by choosing the same
// key, and hashed, so the ID holds only characters a task ID may hold.
func idempotentID(name, key string) string {
	sum := sha256.Sum256([]byte("otpq/api/idempotency\x00" + name + "\x00" + key))
	return "idem-" + hex.EncodeToString(sum[:16])
}

// apiField is the API's name of a producer.Request field.
var apiField = map[string]string{"template": "template.id", "language": "template.language", "params": "template.params"}

// invalidAnswer is 3002 naming the field; the producer's reasons never hold
// the code.
func invalidAnswer(err error) answer {
	var ve *producer.ValidationError
	if !errors.As(err, &ve) {
		return fail(http.StatusBadRequest, engagelab.CodeBadParams, "invalid request")
	}
	field := ve.Field
	if f, ok := apiField[field]; ok {
		field = f
	}
	return fail(http.StatusBadRequest, engagelab.CodeBadParams, "invalid "+field+": "+ve.Reason)
}

// readBody reads a JSON body of at most MaxBody bytes.
func (h *Handler) readBody(r *http.Request) ([]byte, answer, bool) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return nil, fail(http.StatusBadRequest, engagelab.CodeBadFormat, "Content-Type must be application/json"), false
	}
	tooLarge := fail(http.StatusRequestEntityTooLarge, engagelab.CodeBadFormat, fmt.Sprintf("the body is larger than %d bytes", h.cfg.MaxBody))
	if r.ContentLength > h.cfg.MaxBody {
		return nil, tooLarge, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, h.cfg.MaxBody))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, tooLarge, false
	case err != nil:
		return nil, fail(http.StatusBadRequest, engagelab.CodeBadFormat, "the body could not be read"), false
	case !utf8.Valid(body):
		// encoding/json would replace the bad bytes silently.
		return nil, fail(http.StatusBadRequest, engagelab.CodeBadFormat, "the body is not valid UTF-8"), false
	}
	return body, answer{}, true
}

// decode reads one JSON object into v, refusing unknown fields and
// trailing data. Its messages name the field and never quote the body
// (the code is in it).
func decode(body []byte, v any) (answer, bool) {
	bad := func(format string, args ...any) (answer, bool) {
		return fail(http.StatusBadRequest, engagelab.CodeBadFormat, "Invalid request parameter format: "+fmt.Sprintf(format, args...)), false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case err == nil:
		if _, err := dec.Token(); err != io.EOF {
			return bad("data after the JSON object")
		}
		return answer{}, true
	case errors.Is(err, io.EOF):
		return bad("empty body")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("the JSON ends early")
	case errors.As(err, &syn):
		return bad("malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return bad("the body must be a JSON object")
		}
		want := "a string"
		switch typ.Type.Kind().String() {
		case "map", "struct", "ptr":
			want = "an object"
		case "int64":
			want = "an integer"
		}
		return bad("%s must be %s, not %s", typ.Field, want, typ.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fail(http.StatusBadRequest, engagelab.CodeBadParams, "invalid request: unknown field "+engagelab.Printable(name, 70)), false
	}
	return bad("not the expected JSON")
}

func (h *Handler) status(r *http.Request, x *exchange) answer {
	id := r.PathValue("id")
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.EnqueueTimeout)
	defer cancel()
	st, err := h.q.Status(ctx, id)
	switch {
	case errors.Is(err, producer.ErrNotFound):
		return fail(http.StatusNotFound, engagelab.CodeNotFound, "no send with this message_id (never queued, or deleted after its retention)")
	case err != nil:
		return errUnavailable("Redis did not answer")
	}
	x.messageID = st.ID
	return answer{status: http.StatusOK, body: st}
}

// keyedLocks serialises the requests of one idempotency key.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// lock takes key's lock and returns its release.
func (k *keyedLocks) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
