package producer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/sealing"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/internal/tracing"
)

// Queue names accepted by Send. Workers serve QueueCritical strictly before QueueBulk.
const (
	QueueCritical = task.QueueCritical
	QueueBulk     = task.QueueBulk
)

// Defaults used when the Config or an Option leaves a value at zero.
const (
	DefaultExpiry    = 5 * time.Minute
	DefaultRetention = time.Hour
	// DefaultMaxRetry is the retry limit stored in the task, as asynq (and
	// its web UI) sees it: the worker's default (worker.DefaultMaxRetry), so
	// that the UI shows the limit that applies. The worker applies its own
	// limit and the code's expiry on top of it; attempts throttled by the
	// provider or the rate limit do not count against either.
	DefaultMaxRetry = 8
)

// Sentinel errors. Use errors.Is.
var (
	// ErrDuplicate: a task with the same deduplication key is already
	// queued or was completed within the retention period. Send returns the
	// existing task's ID with it, in a *DuplicateError.
	ErrDuplicate = errors.New("duplicate send")
	// ErrNotFound: Status found no task with that ID.
	ErrNotFound = errors.New("task not found")
)

// Config configures a Producer. Zero values mean the documented defaults.
type Config struct {
	// RedisURL such as redis://:password@host:6379/0, rediss://… (TLS) or
	// redis-sentinel://…; default redis://127.0.0.1:6379/0. Ignored when
	// Redis is set.
	RedisURL string
	// Redis is an asynq connection option, for callers that build their own.
	Redis asynq.RedisConnOpt
	// Retention keeps completed tasks (and so their result) this long; default 1h.
	Retention time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time

	// DestinationLimit is the most sends Send enqueues for one destination
	// within DestinationWindow, counted in Redis across every producer;
	// default 5; negative turns the guard off. A refused Send returns a
	// *DestinationLimitError (errors.Is ErrDestinationLimited). A duplicate
	// or a failed enqueue gives its slot back.
	DestinationLimit int
	// DestinationWindow is the guard's sliding window; default 15 minutes.
	DestinationWindow time.Duration

	// PayloadKeys seals codes at rest (ParseKeys reads the text form of
	// OTPQ_PAYLOAD_KEY). The first key encrypts (AES-256-GCM); the worker
	// needs it (or a ring holding it) to decrypt. nil stores codes in
	// plaintext.
	PayloadKeys *Keys

	// TracerProvider makes the enqueue spans (see the README's Tracing
	// section); nil uses the global provider (otel.GetTracerProvider), a
	// no-op unless the program set one. A task carries the W3C trace
	// context of its enqueue span in its asynq headers, for the worker's
	// spans to continue the trace, only when a span is active.
	TracerProvider trace.TracerProvider

	// Shards is the number of queues per class (critical, bulk) sends are
	// spread over, for a Redis Cluster: a task goes to the shard its ID
	// (the DedupKey when given) hashes to, so a repeated DedupKey lands on
	// the same shard and Status finds a task in one lookup per class. 0 or
	// 1 is one queue per class, the layout of earlier versions. It must be
	// the count Redis records: the first call reads it, and refuses another
	// count with an error (errors.Is ErrShardMismatch) naming both; the
	// first process with Shards > 1 on a Redis without otpq queues records
	// it. See README "Scaling past one Redis".
	Shards int
}

// ErrShardMismatch: Config.Shards is not the shard count Redis records;
// the error names both and how to settle it.
var ErrShardMismatch = shard.ErrMismatch

// Producer enqueues OTP sends. It is safe for concurrent use.
type Producer struct {
	rdb       redis.UniversalClient
	published sync.Map // queue names already in asynq's queue set
	retention time.Duration
	now       func() time.Time
	keys      *sealing.Keyring
	guard     *destGuard
	tracer    tracing.Tracer
	shards    int

	layoutMu sync.Mutex
	layout   *shard.Layout // read from Redis by the first call that needs it
}

// New connects a Producer. It does not contact Redis until the first call.
func New(cfg Config) (*Producer, error) {
	cfg = cfg.withDefaults()
	if cfg.Shards < 0 || cfg.Shards > shard.MaxShards {
		return nil, fmt.Errorf("producer: Shards %d must be from 0 to %d", cfg.Shards, shard.MaxShards)
	}
	opt, err := redisconn.Option(cfg.RedisURL, cfg.Redis, 0)
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	rdb, err := redisconn.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	p := &Producer{
		keys:      (*sealing.Keyring)(cfg.PayloadKeys),
		rdb:       rdb,
		retention: cfg.Retention,
		now:       cfg.Now,
		tracer:    tracing.NewTracer(cfg.TracerProvider),
		shards:    cfg.Shards,
	}
	if cfg.DestinationLimit > 0 {
		p.guard = &destGuard{rdb: rdb, limit: cfg.DestinationLimit, window: cfg.DestinationWindow}
	}
	return p, nil
}

// withDefaults is cfg with each zero field set to its documented default
// (a negative DestinationLimit, the guard turned off, stays negative).
func (cfg Config) withDefaults() Config {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DestinationLimit == 0 {
		cfg.DestinationLimit = DefaultDestinationLimit
	}
	if cfg.DestinationWindow <= 0 {
		cfg.DestinationWindow = DefaultDestinationWindow
	}
	return cfg
}

// shardLayout is the shard count Redis records, read (and, the first
// time on a new Redis, recorded) by the first call that needs it; a
// *shard.MismatchError when it is not Config.Shards.
func (p *Producer) shardLayout(ctx context.Context) (shard.Layout, error) {
	p.layoutMu.Lock()
	defer p.layoutMu.Unlock()
	if p.layout != nil {
		return *p.layout, nil
	}
	l, err := shard.Check(ctx, p.rdb, p.shards)
	if err != nil {
		return shard.Layout{}, fmt.Errorf("producer: %w", err)
	}
	p.layout = &l
	return l, nil
}

// CheckShards reads the shard count Redis records (recording
// Config.Shards on a new Redis, see Config.Shards), as the first Send or
// Status would: an error wrapping ErrShardMismatch when it is not
// Config.Shards. Commands call it at start, to refuse before any work.
func (p *Producer) CheckShards(ctx context.Context) error {
	_, err := p.shardLayout(ctx)
	return err
}

// route puts t in its shard of its class under l.
func route(t *asynqstore.Task, l shard.Layout) {
	t.Msg.Queue = shard.Queue(t.Msg.Queue, t.Msg.ID, l.Count)
}

// Close releases the Redis connections.
func (p *Producer) Close() error { return p.rdb.Close() }

// Ping checks that Redis answers.
func (p *Producer) Ping(ctx context.Context) error { return p.rdb.Ping(ctx).Err() }

// Request is one OTP send: deliver Code to To with the EngageLab template
// TemplateID. Code is a secret; otpq never logs it or returns it in an error.
type Request struct {
	// To is an E.164 phone number (+8613800138000) or an e-mail address.
	To string
	// Code is the pre-generated one-time code, 1 to 32 printable characters.
	Code string
	// TemplateID is the EngageLab template ID.
	TemplateID string
	// Language is a template language the API accepts ("default", "zh_CN",
	// "zh_HK", "en", "ja", "th", "es") or empty for the template's default.
	Language string
	// Params fill the template's custom variables.
	Params map[string]string
}

// Option adjusts one Send.
type Option func(*options)

type options struct {
	queue     string
	expiresIn *time.Duration // nil: not given
	expiresAt time.Time
	dedupKey  string
	delay     time.Duration
	maxRetry  int
}

// Queue sends through the named queue: QueueCritical (the default) for
// interactive sends, QueueBulk for batch jobs.
func Queue(name string) Option { return func(o *options) { o.queue = name } }

// ExpiresIn sets how long the code stays valid from now (default
// DefaultExpiry, 5 minutes; 0 means the default). An expired code is never
// sent. Giving both ExpiresIn and ExpiresAt is invalid.
func ExpiresIn(d time.Duration) Option { return func(o *options) { o.expiresIn = &d } }

// ExpiresAt sets the instant the code stops being valid. Giving both
// ExpiresIn and ExpiresAt is invalid.
func ExpiresAt(t time.Time) Option { return func(o *options) { o.expiresAt = t } }

// DedupKey makes the send idempotent: a second Send with the same key in the
// same queue, while the first is queued or retained, returns the first
// task's ID with ErrDuplicate and enqueues nothing. The key becomes the task ID.
func DedupKey(key string) Option { return func(o *options) { o.dedupKey = key } }

// Delay holds the send back for d; it must end before the code expires.
func Delay(d time.Duration) Option { return func(o *options) { o.delay = d } }

// MaxRetry caps the retries of this task after its first attempt. As
// worker.Config.MaxRetry: 0 means the default (DefaultMaxRetry, 8) and a
// negative n means no retries. The worker applies its own limit too, so
// the lower one wins.
func MaxRetry(n int) Option { return func(o *options) { o.maxRetry = n } }

// prepare validates req and opts and builds the task and code key that
// Send would store, without touching Redis.
func (p *Producer) prepare(req Request, opts []Option) (asynqstore.Task, error) {
	o := options{queue: QueueCritical}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.maxRetry == 0:
		o.maxRetry = DefaultMaxRetry
	case o.maxRetry < 0:
		o.maxRetry = 0 // retries disabled
	}
	if err := req.Validate(); err != nil {
		return asynqstore.Task{}, err
	}
	if o.queue != QueueCritical && o.queue != QueueBulk {
		return asynqstore.Task{}, invalid("queue", "%q is not %q or %q", o.queue, QueueCritical, QueueBulk)
	}
	now := p.now()
	expires := o.expiresAt
	switch {
	case o.expiresIn != nil && !expires.IsZero():
		return asynqstore.Task{}, invalid("expires_in", "and expires_at both given: set one")
	case expires.IsZero():
		d := DefaultExpiry
		if o.expiresIn != nil && *o.expiresIn != 0 {
			d = *o.expiresIn
		}
		if d < 0 {
			return asynqstore.Task{}, invalid("expires_in", "must be positive")
		}
		expires = now.Add(d)
	}
	if !expires.After(now) {
		return asynqstore.Task{}, invalid("expires_at", "the code has already expired")
	}
	if o.delay < 0 {
		return asynqstore.Task{}, invalid("delay", "must not be negative")
	}
	if o.delay > 0 && !now.Add(o.delay).Before(expires) {
		return asynqstore.Task{}, invalid("delay", "the code would expire before the send starts")
	}
	id := o.dedupKey
	if id != "" {
		if err := validateDedupKey(id); err != nil {
			return asynqstore.Task{}, err
		}
	} else {
		id = uuid.NewString()
	}
	code := task.CodeValue(req.Code)
	if p.keys.Enabled() {
		sealed, err := p.keys.Seal(req.Code, task.SealContext(req.To, id))
		if err != nil {
			return asynqstore.Task{}, fmt.Errorf("producer: seal code: %w", err)
		}
		code = task.SealedCodeValue(sealed)
	}
	payload, err := task.Encode(task.Payload{
		To:        req.To,
		Template:  task.Template{ID: req.TemplateID, Language: req.Language, Params: req.Params},
		ExpiresAt: expires.UTC(), CreatedAt: now.UTC(), RetentionSec: int64(p.retention / time.Second),
	})
	if err != nil {
		return asynqstore.Task{}, fmt.Errorf("producer: encode payload: %w", err)
	}
	start := now.Add(o.delay)
	return asynqstore.Task{
		Msg: asynqstore.Message{
			Type: task.TypeSend, Payload: payload, ID: id, Queue: o.queue,
			Retry: o.maxRetry, Timeout: attemptTimeout(start, expires), Retention: p.retention,
		},
		ProcessAt: start,
		Code:      code, CodeExpiresAt: expires,
	}, nil
}

// attemptTimeout is the timeout stored for asynq (and shown in its web UI):
// the code's remaining life when the task becomes due, in whole seconds
// rounded up. The worker never lets an attempt outlive the code (the
// provider request and any rate-limit wait end at its expiry), so asynq's
// own timeout never cuts an attempt short; the provider request itself is
// bounded by the worker's HTTP timeout.
func attemptTimeout(start, expires time.Time) time.Duration {
	d := expires.Sub(start)
	return max(time.Second, (d+time.Second-1)/time.Second*time.Second)
}

// Send validates req and enqueues it, returning the task ID. Invalid input
// returns a *ValidationError (errors.Is ErrInvalid) and enqueues nothing; a
// repeated DedupKey returns the existing ID and ErrDuplicate; a destination
// over its DestinationLimit returns a *DestinationLimitError (errors.Is
// ErrDestinationLimited) and enqueues nothing. The task and its code key
// are written in one script call: a task never exists without its code.
func (p *Producer) Send(ctx context.Context, req Request, opts ...Option) (id string, err error) {
	ctx, span := p.tracer.Start(ctx, tracing.SpanEnqueue, enqueueSpan...)
	t, err := p.prepare(req, opts)
	if tracing.Enabled {
		defer func() { endEnqueue(span, t.Msg, err) }()
	}
	if err != nil {
		return "", err
	}
	t.Msg.Headers = tracing.Headers(ctx)
	l, err := p.shardLayout(ctx)
	if err != nil {
		return "", err
	}
	route(&t, l)
	// Count first, enqueue second, give the slot back when nothing was
	// enqueued: concurrent sends can never overshoot the limit.
	release, err := p.guard.take(ctx, req.To)
	if err != nil {
		return "", err
	}
	id, err = p.enqueue(ctx, t, l)
	if err != nil {
		release()
	}
	return id, err
}

// enqueueSpan are the start options of an enqueue span.
var enqueueSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer)}

// endEnqueue ends the span of one Send: the task (when prepare built one)
// and how the send ended. Errors other than a duplicate mark the span
// failed with their kind only: a validation error may quote the input.
func endEnqueue(span trace.Span, m asynqstore.Message, err error) {
	if span.IsRecording() {
		if m.ID != "" {
			span.SetAttributes(tracing.TaskID.String(m.ID), tracing.Queue.String(m.Queue))
		}
		span.SetAttributes(tracing.Outcome.String(enqueueOutcome(err)))
		if err != nil && !errors.Is(err, ErrDuplicate) {
			span.SetStatus(codes.Error, enqueueOutcome(err))
		}
	}
	span.End()
}

// enqueueOutcome names how a send ended, for its span.
func enqueueOutcome(err error) string {
	switch {
	case err == nil:
		return "enqueued"
	case errors.Is(err, ErrDuplicate):
		return "duplicate"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrDestinationLimited):
		return "destination_limited"
	case errors.Is(err, ErrUnknown):
		return "unknown"
	}
	return "error"
}

// enqueueFunc is asynqstore's Enqueue, or EnqueueWaking when workers hold
// back their polls of idle shards (more than one shard served).
func enqueueFunc(l shard.Layout) func(context.Context, redis.Scripter, string, time.Time, []asynqstore.Task) ([]bool, error) {
	if l.Served > 1 {
		return asynqstore.EnqueueWaking
	}
	return asynqstore.Enqueue
}

func (p *Producer) enqueue(ctx context.Context, t asynqstore.Task, l shard.Layout) (string, error) {
	if err := p.publish(ctx, t.Msg.Queue); err != nil {
		return "", err
	}
	created, err := enqueueFunc(l)(ctx, p.rdb, t.Msg.Queue, p.now(), []asynqstore.Task{t})
	if err != nil {
		return "", fmt.Errorf("producer: enqueue: %w", err)
	}
	if !created[0] {
		return t.Msg.ID, duplicate(t.Msg.ID)
	}
	return t.Msg.ID, nil
}

// DuplicateError is the error of a send whose DedupKey names a task that
// is already queued or retained: nothing was enqueued. errors.Is(err,
// ErrDuplicate) is true.
type DuplicateError struct {
	// ID is the existing task's ID (the DedupKey).
	ID string
}

// Error reads "duplicate send: task ID already exists".
func (e *DuplicateError) Error() string {
	return ErrDuplicate.Error() + ": task " + e.ID + " already exists"
}

// Unwrap makes errors.Is(err, ErrDuplicate) true.
func (e *DuplicateError) Unwrap() error { return ErrDuplicate }

// duplicate is the error of a send whose task id already exists.
func duplicate(id string) error { return &DuplicateError{ID: id} }

// publish registers queues in asynq's queue set once per Producer, as
// asynq's own client does.
func (p *Producer) publish(ctx context.Context, queues ...string) error {
	var missing []string
	for _, q := range queues {
		if _, ok := p.published.Load(q); !ok {
			missing = append(missing, q)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := asynqstore.Publish(ctx, p.rdb, missing...); err != nil {
		return fmt.Errorf("producer: enqueue: %w", err)
	}
	for _, q := range missing {
		p.published.Store(q, true)
	}
	return nil
}

// State is a task's state as asynq stores it (and its web UI shows it).
type State string

// The states of a task.
const (
	// StatePending: waiting for a worker.
	StatePending State = "pending"
	// StateActive: an attempt is running.
	StateActive State = "active"
	// StateScheduled: delayed (Delay) until NextProcess.
	StateScheduled State = "scheduled"
	// StateRetry: an attempt failed; the next runs at NextProcess.
	StateRetry State = "retry"
	// StateArchived: dead-lettered; LastError says why.
	StateArchived State = "archived"
	// StateCompleted: the provider accepted the code (see Outcome and
	// Verdict), kept for the retention period.
	StateCompleted State = "completed"
)

// Final reports whether the task will not change state any more (completed
// or archived).
func (s State) Final() bool { return s == StateCompleted || s == StateArchived }

// Status describes a task as Status finds it.
type Status struct {
	ID string `json:"id"`
	// Queue is the task's asynq queue: its class ("critical", "bulk"), or
	// with Config.Shards > 1 the class's shard it went to ("critical-3a").
	Queue string `json:"queue"`
	// Verdict is what happened, in the words otpq status and the web UI
	// use. The receipt's verdict first when there is one: "delivered" (the
	// code reached the handset), "failed" (EngageLab could not deliver it;
	// see Receipt.ErrorCode), "pending" (accepted, no final receipt yet).
	// Without a receipt, the task's: "accepted" (EngageLab took the code;
	// whether it arrived only a receipt says), "accepted_unconfirmed",
	// "dead_letter" (see LastError), "retrying", "sending" or "queued".
	Verdict string `json:"verdict"`
	// State is the task's asynq state: StatePending, StateActive,
	// StateScheduled, StateRetry, StateArchived (dead-lettered) or
	// StateCompleted.
	State State `json:"state"`
	// Attempts is the number of delivery attempts made so far (attempts
	// throttled by the provider are not counted).
	Attempts int `json:"attempts"`
	// Outcome of a completed task: "accepted" (the provider answered 2xx
	// with a message_id; results of older workers, which said "delivered",
	// read as "accepted"), or "accepted_unconfirmed" when the provider
	// answered 2xx without a readable message_id (the code was taken and is
	// never sent again, but there is no message_id). Empty for a task that
	// has not completed.
	Outcome     string    `json:"outcome,omitempty"`
	MessageID   string    `json:"message_id,omitempty"`
	SendChannel string    `json:"send_channel,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	NextProcess time.Time `json:"next_process_at,omitzero"`
	CompletedAt time.Time `json:"completed_at,omitzero"`
	// InProgress: an attempt is running now (state active); Attempts
	// counts the attempts finished before it, LastError is the last of those.
	InProgress bool `json:"in_progress,omitempty"`
	// LastFailedAt is when the last failed attempt ended.
	LastFailedAt time.Time `json:"last_failed_at,omitzero"`
	// DeadLetteredAt is when an archived task was dead-lettered.
	DeadLetteredAt time.Time `json:"dead_lettered_at,omitzero"`
	// Receipt is the delivery receipt, once EngageLab reported on the send.
	Receipt *Receipt `json:"receipt,omitempty"`
}

// Status looks a task up in every otpq queue. It returns ErrNotFound when
// no queue holds it (never enqueued, or deleted after its retention), and
// ctx's error when ctx ends first: every Redis call it makes honours ctx.
func (p *Producer) Status(ctx context.Context, id string) (*Status, error) {
	l, err := p.shardLayout(ctx)
	if err != nil {
		return nil, err
	}
	// Each queue the task may be in, one round trip each: its shard of
	// each class, under the current shard count, then under earlier ones
	// (asynqstore.ReadTask reads the task as asynq's Inspector would, but
	// with ctx).
	var queues []string
	for _, class := range shard.Classes {
		queues = append(queues, l.Queues(class, id)...)
	}
	for _, q := range queues {
		info, err := asynqstore.ReadTask(ctx, p.rdb, q, id)
		if errors.Is(err, asynqstore.ErrTaskNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("producer: status: %w", err)
		}
		st := statusOf(info)
		if st.Receipt, err = p.receipt(ctx, q, id); err != nil {
			return nil, err
		}
		var rv outcome.Verdict
		if st.Receipt != nil {
			rv = outcome.Verdict(st.Receipt.Verdict)
		}
		st.Verdict = outcome.Of(rv, string(st.State), outcome.Outcome(st.Outcome)).String()
		return st, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// maxErrorText caps Status.LastError: above any archive reason otpq writes
// (a provider message is capped at engagelab.MaxMessageText).
const maxErrorText = 2048

// statusOf builds a Status (its verdict without the receipt) from asynq's view of a task (as ReadTask gives
// it). Its strings are printable: control characters escaped, lengths
// capped.
func statusOf(info *asynq.TaskInfo) *Status {
	s := &Status{
		ID: info.ID, Queue: info.Queue, State: State(info.State.String()),
		Attempts: info.Retried, LastError: engagelab.Printable(info.LastErr, maxErrorText), CompletedAt: info.CompletedAt,
		LastFailedAt: info.LastFailedAt,
	}
	switch info.State {
	case asynq.TaskStateScheduled, asynq.TaskStateRetry:
		s.NextProcess = info.NextProcessAt
	case asynq.TaskStateActive:
		s.InProgress = true
	case asynq.TaskStateArchived:
		s.Attempts++ // asynq does not count the attempt that dead-lettered the task
		s.DeadLetteredAt = info.LastFailedAt
	}
	if len(info.Result) > 0 {
		var r task.Result
		if json.Unmarshal(info.Result, &r) == nil {
			// Workers store provider text escaped and capped; escaped again
			// here for results written before they did.
			s.MessageID = engagelab.Printable(r.MessageID, engagelab.MaxIDText)
			s.SendChannel = engagelab.Printable(r.SendChannel, engagelab.MaxIDText)
			s.Attempts = r.Attempts
			if r.Outcome != "" || info.State == asynq.TaskStateCompleted {
				s.Outcome = outcome.Parse(string(r.Outcome)).String() // older workers: "" or "delivered"
			}
		}
	}
	s.Verdict = outcome.Of("", string(s.State), outcome.Outcome(s.Outcome)).String()
	return s
}
