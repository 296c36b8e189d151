package receipts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/metrics"
	"github.com/otpq/otpq/internal/ratelog"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/internal/tracing"
)

// Path is where the receiver is served.
const Path = "/callbacks/engagelab"

// Receiver defaults.
const (
	// DefaultWindow is how far a signed timestamp may be from now.
	DefaultWindow = 5 * time.Minute
	// DefaultMaxBody caps a callback body.
	DefaultMaxBody = 1 << 20
	// DefaultPollInterval is how often held receipts are matched with
	// links that appeared since.
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultAnswerWithin bounds the Redis work of one request: EngageLab
	// marks the URL unavailable when it gets no answer within 3 s.
	DefaultAnswerWithin = 2500 * time.Millisecond
)

// Config configures a Receiver. Zero values mean the documented defaults.
type Config struct {
	// Redis holds links, receipts, nonces and the stream. Required.
	Redis redis.UniversalClient
	// Credentials verify callbacks; zero verifies nothing.
	Credentials Credentials
	// Queues are searched for a message_id's link; default every shard
	// of critical and bulk that workers serve (see internal/shard; read
	// from Redis once), which is critical and bulk unsharded.
	Queues []string
	// Window is the replay window: signed timestamps further from now are
	// refused, nonces are remembered this long (twice). Default 5 minutes.
	Window time.Duration
	// MaxBody caps a body; default 1 MiB.
	MaxBody int64
	// History is how many stages a receipt keeps; default 20.
	History int
	// PendingTTL is how long a receipt without a link is held; default 10 minutes.
	PendingTTL time.Duration
	// MaxHeld caps the receipts held without a link, across all workers
	// sharing the Redis; default DefaultMaxHeld (10,000). Past it, and past
	// MaxHeldBytes, new ones are dropped and counted
	// (otpq_callback_rows_dropped_total), so that receipts for unknown
	// message_ids cannot fill Redis.
	MaxHeld int
	// MaxHeldBytes caps the bytes of held receipts; default
	// DefaultMaxHeldBytes (8 MiB).
	MaxHeldBytes int64
	// PollInterval is how often held receipts are matched; default 500 ms.
	PollInterval time.Duration
	// AnswerWithin bounds the Redis work of one callback request; past it
	// the request is answered 503 and EngageLab retries. Default 2.5 s
	// (EngageLab gives up on an answer after 3 s).
	AnswerWithin time.Duration
	// StreamMaxLen bounds the receipt stream; default 100000, negative: no stream.
	StreamMaxLen int64
	// Registerer receives the receipt metrics; nil: none.
	Registerer prometheus.Registerer
	// Logger gets one line per final receipt; default slog.Default().
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// TracerProvider makes a span per receipt applied to its task, a child
	// of the delivery attempt that sent the code (see the README's Tracing
	// section); nil uses the global provider, a no-op unless set.
	TracerProvider trace.TracerProvider
}

// Receiver is the http.Handler of EngageLab's status callbacks, and the
// matcher of receipts that arrived before their link (Run).
type Receiver struct {
	cfg Config
	rdb redis.UniversalClient
	m   *metrics.Receipts
	log *slog.Logger

	tracer tracing.Tracer
	// traced serves a request inside a server span (serverSpans) when
	// tracing is on.
	traced http.Handler

	mu     sync.Mutex
	cursor int64 // where the matcher's next pass starts in the held set
	qmu    sync.Mutex
	queues []string // the shard queues once read (searched)

	// refusals logs refused callbacks and dropped held receipts at a
	// bounded rate (a sender can cause one a request); the metrics count
	// each.
	refusals *ratelog.Limiter
}

// NewReceiver checks cfg and builds a Receiver.
func NewReceiver(cfg Config) (*Receiver, error) {
	if cfg.Redis == nil {
		return nil, fmt.Errorf("%w: no Redis connection", ErrConfig)
	}
	if err := cfg.Credentials.Check(); err != nil {
		return nil, err
	}

	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = DefaultPendingTTL
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if cfg.MaxHeldBytes <= 0 {
		cfg.MaxHeldBytes = DefaultMaxHeldBytes
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.AnswerWithin <= 0 {
		cfg.AnswerWithin = DefaultAnswerWithin
	}
	if cfg.StreamMaxLen == 0 {
		cfg.StreamMaxLen = DefaultStreamMaxLen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Receiver{cfg: cfg, rdb: cfg.Redis, log: cfg.Logger.With("component", "receipts"), tracer: tracing.NewTracer(cfg.TracerProvider)}
	r.refusals = ratelog.New(r.log, 0)
	if tracing.Enabled {
		r.traced = serverSpans(http.HandlerFunc(r.serve), tracing.Provider(cfg.TracerProvider))
	}
	if cfg.Registerer != nil {
		m, err := metrics.NewReceipts(cfg.Registerer, KnownStatuses())
		if err != nil {
			return nil, fmt.Errorf("%w: metrics: %w", ErrConfig, err)
		}
		r.m = m
	}
	return r, nil
}

// ServeHTTP answers a callback: 200 for everything accepted (the URL
// check, receipts, rows it ignores, unknown message_ids), 401 for a bad
// signature, authorization or a replay, 400/413 for a malformed or too
// large body, 503 when Redis fails (EngageLab then retries). With tracing
// on, each request is a server span, which the receipts it applies link to.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if tracing.Enabled && r.traced != nil && !r.tracer.Off() {
		r.traced.ServeHTTP(w, req)
		return
	}
	r.serve(w, req)
}

// serve is ServeHTTP without the server span.
func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), r.cfg.AnswerWithin)
	defer cancel()
	now := r.cfg.Now()
	id, err := r.cfg.Credentials.verify(req.Header.Get(HeaderCallbackID), req.Header.Get("Authorization"))
	if err == nil && id.Timestamp != "" {
		err = checkTime(id, now, r.cfg.Window)
	}
	if err != nil {
		r.refuse(w, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBody))
	if err != nil {
		r.m.Request(metrics.CallbackMalformed)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("body over %d bytes", r.cfg.MaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	rows, err := ParseBody(body)
	if err != nil {
		r.m.Request(metrics.CallbackMalformed)
		http.Error(w, "malformed body: not the {\"total\":…,\"rows\":[…]} envelope", http.StatusBadRequest)
		return
	}
	if id.Nonce != "" {
		fresh, err := r.rdb.SetNX(ctx, nonceKey(id), "1", 2*r.cfg.Window).Result()
		if err != nil {
			r.fail(w, err)
			return
		}
		if !fresh {
			r.refuse(w, refuse(ErrReplay, "nonce already seen"))
			return
		}
	}
	if len(rows) == 0 {
		r.m.Request(metrics.CallbackCheck)
		w.WriteHeader(http.StatusOK)
		return
	}
	result, err := r.handle(ctx, rows, now)
	if err != nil {
		r.fail(w, err)
		return
	}
	r.m.Request(result)
	w.WriteHeader(http.StatusOK)
}

func (r *Receiver) refuse(w http.ResponseWriter, err error) {
	result := metrics.CallbackBadSignature
	switch {
	case errors.Is(err, ErrReplay):
		result = metrics.CallbackReplay
	case errors.Is(err, ErrUnauthorized):
		result = metrics.CallbackUnauthorized
	}
	r.m.Request(result)
	r.refusals.Warn("callback refused: "+result, slog.String("result", result), slog.String("reason", err.Error()))
	http.Error(w, "unauthorized", http.StatusUnauthorized)
}

func (r *Receiver) fail(w http.ResponseWriter, err error) {
	r.m.Request(metrics.CallbackError)
	r.log.Error("callback not recorded; EngageLab will retry", "error", err.Error())
	http.Error(w, "temporarily unavailable", http.StatusServiceUnavailable)
}

// nonceKey is the replay marker of a signed callback.
func nonceKey(id CallbackID) string {
	h := sha256.Sum256([]byte(id.Username + "\x00" + id.Nonce))
	return "otpq:callback:nonce:" + hex.EncodeToString(h[:16])
}

// dropReason is the metric reason of a row eventOf refused.
func dropReason(err error) string {
	switch {
	case errors.Is(err, errBadTime):
		return metrics.DropBadTime
	case errors.Is(err, errBadCost):
		return metrics.DropBadCost
	}
	return metrics.DropBadType
}

// handle records the rows of one request and returns its result label.
// A row that cannot be stored (out of range, wrong type, over the held
// caps) is skipped and counted; only a Redis failure fails the request.
func (r *Receiver) handle(ctx context.Context, rows []Row, now time.Time) (string, error) {
	var events []Event
	for _, row := range rows {
		e, err := eventOf(row, now)
		switch {
		case errors.Is(err, errNotReceipt):
			r.m.Row(metrics.RowIgnored)
			continue
		case err != nil:
			r.m.Dropped(dropReason(err))
			continue
		}
		events = append(events, e)
	}
	if len(events) == 0 {
		return metrics.CallbackIgnored, nil
	}
	mids := make([]string, len(events))
	for i, e := range events {
		mids[i] = e.MessageID
	}
	links, err := r.lookup(ctx, mids)
	if err != nil {
		return "", err
	}
	result := metrics.CallbackUnknownMessage
	var held []heldRow
	for _, e := range events {
		l, ok := links[e.MessageID]
		if !ok {
			held = append(held, heldRow{e: e, deadline: now.Add(r.cfg.PendingTTL)})
			continue
		}
		label, err := r.record(ctx, l, e, now)
		if err != nil {
			return "", err
		}
		r.m.Row(label)
		result = metrics.CallbackOK
	}
	if err := r.hold(ctx, held); err != nil {
		return "", err
	}
	return result, nil
}

// searched is the queues lookup searches: Config.Queues, else every
// shard of each class that workers serve, as Redis records them (read
// once; critical and bulk, read again next time, while Redis fails).
func (r *Receiver) searched(ctx context.Context) []string {
	if len(r.cfg.Queues) > 0 {
		return r.cfg.Queues
	}
	r.qmu.Lock()
	defer r.qmu.Unlock()
	if r.queues != nil {
		return r.queues
	}
	l, err := shard.Read(ctx, r.rdb)
	if err != nil {
		return []string{task.QueueCritical, task.QueueBulk}
	}
	r.queues = shard.All(l.Served)
	return r.queues
}

// linked is a link with its remaining life.
type linked struct {
	Link
	ttl time.Duration
}

// lookup finds the links of message ids in every queue: one MGET per queue
// (a queue's links share its hash slot), then the remaining life of those
// found, in two round trips whatever the number of ids.
func (r *Receiver) lookup(ctx context.Context, mids []string) (map[string]linked, error) {
	queues := r.searched(ctx)
	pipe := r.rdb.Pipeline()
	gets := make([]*redis.SliceCmd, len(queues))
	for i, q := range queues {
		keys := make([]string, len(mids))
		for j, mid := range mids {
			keys[j] = LinkKey(q, mid)
		}
		gets[i] = pipe.MGet(ctx, keys...)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("receipts: look up links: %w", err)
	}
	out := make(map[string]linked, len(mids))
	var found, keys []string
	for i, q := range queues {
		for j, v := range gets[i].Val() {
			s, ok := v.(string)
			if _, done := out[mids[j]]; done || !ok {
				continue
			}
			l, err := DecodeLink(s)
			if err != nil {
				r.log.Warn("undecodable link", "queue", q, "message_id", mids[j], "error", err.Error())
				continue
			}
			out[mids[j]] = linked{Link: l}
			found, keys = append(found, mids[j]), append(keys, LinkKey(q, mids[j]))
		}
	}
	if len(found) == 0 {
		return out, nil
	}
	pipe = r.rdb.Pipeline()
	ttls := make([]*redis.DurationCmd, len(found))
	for i, k := range keys {
		ttls[i] = pipe.PTTL(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("receipts: look up links: %w", err)
	}
	for i, mid := range found {
		l := out[mid]
		l.ttl = ttls[i].Val()
		out[mid] = l
	}
	return out, nil
}

// record applies e to l's task and reports the row's result label.
func (r *Receiver) record(ctx context.Context, l linked, e Event, now time.Time) (string, error) {
	e.ErrorDetail = detailText(e.ErrorDetail, l.CodeFingerprint)
	if e.MaskedTo != "" && l.To != "" && e.MaskedTo != l.To {
		r.log.Warn("receipt destination differs from the task's; dropped", "task_id", l.TaskID, "message_id", e.MessageID, "to", l.To, "receipt_to", e.MaskedTo)
		return metrics.RowMismatch, nil
	}
	a, err := apply(ctx, r.rdb, l.Link, e, l.ttl, r.cfg.History, now)
	if err != nil {
		return "", err
	}
	if a.Duplicate {
		return metrics.RowDuplicate, nil
	}
	r.traceReceipt(ctx, l.Link, e, !a.Taken)
	r.m.Received(e.Status, e.Channel)
	if !a.Taken {
		return metrics.RowStale, nil
	}
	final := IsFinal(e.Status)
	if e.Status == StatusDelivered && a.Prev != StatusDelivered {
		r.m.Delivered(l.AcceptedAt, e.Received)
	}
	if final && a.Prev != e.Status {
		r.log.Info("delivery receipt", "task_id", l.TaskID, "queue", l.Queue, "message_id", e.MessageID,
			"status", e.Status, "raw_status", e.Raw, "channel", e.Channel, "to", l.To,
			"error_code", e.ErrorCode, "error_detail", e.ErrorDetail, "accepted_at", l.AcceptedAt)
	}
	if r.cfg.StreamMaxLen > 0 {
		ent := Entry{TaskID: l.TaskID, Queue: l.Queue, MessageID: e.MessageID, Status: e.Status, RawStatus: e.Raw,
			Final: final, Channel: e.Channel, ErrorCode: e.ErrorCode, At: e.At, To: l.To}
		if ent.To == "" {
			ent.To = e.MaskedTo
		}
		if err := publish(ctx, r.rdb, ent, r.cfg.StreamMaxLen); err != nil {
			// The receipt is stored; only the stream lacks it. Answering
			// an error would make EngageLab retry a duplicate.
			r.log.Error("receipt not published to the stream", "task_id", l.TaskID, "error", err.Error())
		}
	}
	return metrics.RowApplied, nil
}

// receiptSpan are the start options of a receipt's span.
var receiptSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer)}

// traceReceipt records a receipt applied to l's task as a span: a child of
// the delivery attempt the link names (and linked to it), so that the
// send's trace holds its receipt; when it is applied inside the callback
// request's server span, a link to that span too (one request may carry
// the receipts of many sends, each in its own trace: the request's span
// cannot be the parent of them all). Without an attempt to follow, it is
// a child of the request's span (or a root span for a held receipt
// matched later). Its attributes hold no provider text: the error detail
// may quote the code before it is scrubbed.
func (r *Receiver) traceReceipt(ctx context.Context, l Link, e Event, stale bool) {
	if !tracing.Enabled {
		return
	}
	request := trace.SpanContextFromContext(ctx)
	attempt := tracing.ParseTraceParent(l.Trace)
	ctx, opts := tracing.Follows(ctx, attempt, receiptSpan)
	if attempt.IsValid() && request.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: request}))
	}
	_, span := r.tracer.Start(ctx, tracing.SpanReceipt, opts...)
	if span.IsRecording() {
		span.SetAttributes(tracing.TaskID.String(l.TaskID), tracing.Queue.String(l.Queue),
			tracing.MessageID.String(e.MessageID), tracing.ReceiptStatus.String(e.Status))
		if e.Channel != "" {
			span.SetAttributes(tracing.Channel.String(e.Channel))
		}
		if e.ErrorCode != 0 {
			span.SetAttributes(tracing.ReceiptErrorCode.Int(e.ErrorCode))
		}
		if stale {
			span.SetAttributes(tracing.ReceiptStale.Bool(true))
		}
		if l.To != "" {
			span.SetAttributes(tracing.To.String(l.To)) // masked when linked
		}
	}
	span.End()
}
