package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/metrics"
	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/sealing"
	"github.com/otpq/otpq/internal/shard"
	"github.com/otpq/otpq/internal/task"
	"github.com/otpq/otpq/internal/tracing"
	"github.com/otpq/otpq/producer"
)

// Defaults used when a Config field is zero.
const (
	DefaultConcurrency   = 100
	DefaultMaxRetry      = 8
	DefaultRetryMinDelay = time.Second
	DefaultRetryMaxDelay = time.Minute
	DefaultHTTPTimeout   = 10 * time.Second
	DefaultPollInterval  = 10 * time.Millisecond
	// DefaultIdlePollInterval is how often the fetch loops other than the
	// critical one look for tasks while idle.
	DefaultIdlePollInterval = 250 * time.Millisecond
	// DefaultResultRetention is how long the receipt link of an accepted
	// task is kept when its payload does not say (tasks enqueued by older
	// builds): the producer's default retention.
	DefaultResultRetention = time.Hour
)

// Config configures a Worker. Zero values mean the documented defaults.
type Config struct {
	// RedisURL as for producer.Config; ignored when Redis is set.
	RedisURL string
	// Redis is an asynq connection option, for callers that build their own.
	Redis asynq.RedisConnOpt

	// EngageLab credentials and endpoint. DevKey and DevSecret are required
	// unless Sender is set.
	BaseURL, DevKey, DevSecret string
	// HTTPTimeout bounds one provider request; default 10s.
	HTTPTimeout time.Duration

	// Concurrency is the number of sends in flight at once across the
	// process; default 100. The HTTP connection pool is sized to match.
	Concurrency int
	// Servers is the number of fetch loops (asynq servers) per queue;
	// default GOMAXPROCS. Each queue has its own loops, so that a bulk task
	// never costs an empty critical dequeue first; they share Concurrency
	// through send slots, and a freed slot goes to a waiting critical task
	// before any bulk one (critical sends keep their priority during a bulk
	// drain: they wait at most for the first send in flight to end). The
	// first critical loop is the only one that polls every PollInterval
	// while idle; the others poll every IdlePollInterval, so that an idle
	// worker costs Redis little. Under load no loop waits between tasks.
	Servers int
	// MaxRetry is the most retries of a task after its first attempt;
	// 0 means the default (8), negative disables retries, as with the
	// producer.MaxRetry option. A task's own, lower asynq
	// MaxRetry also applies.
	MaxRetry int
	// RetryMinDelay and RetryMaxDelay bound the exponential, jittered retry
	// schedule; defaults 1s and 1m.
	RetryMinDelay, RetryMaxDelay time.Duration
	// RetryCodes are EngageLab error codes to retry on top of 1000–1999
	// (for example 5016, internal sending error).
	RetryCodes []int
	// PollInterval is how often the critical fetch loop looks for new tasks
	// while idle; default 10ms, so that a code enqueued into an idle system
	// is picked up within ~15ms. asynq's own default is 1s.
	PollInterval time.Duration
	// IdlePollInterval is how often the other fetch loops look for tasks
	// while idle (the bulk queue's pick-up latency when idle); default 250ms.
	IdlePollInterval time.Duration
	// ShutdownTimeout is how long a graceful shutdown waits for in-flight
	// sends; default HTTPTimeout + 5s, so a started request always finishes.
	ShutdownTimeout time.Duration

	// Logger receives one line per delivery outcome; default slog.Default().
	Logger *slog.Logger
	// Sender replaces the EngageLab client (a test double, another
	// gateway); BaseURL, DevKey, DevSecret and HTTPTimeout are then unused.
	Sender Sender
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Registerer receives the worker's delivery metrics, listed in the
	// package documentation (Metrics); nil records none.
	Registerer prometheus.Registerer

	// RateLimit caps provider calls per second across every worker sharing
	// this Redis (GCRA in Redis); 0 = no limit. A task over the limit waits
	// for its slot inside the handler, up to MaxRateWait and never past its
	// expiry; a longer wait hands it back to asynq as a throttle, which
	// does not count against MaxRetry.
	RateLimit float64
	// RateBurst is how many calls may go at once after an idle spell;
	// default max(1, ceil(RateLimit/10)).
	RateBurst int
	// MaxRateWait bounds the in-handler wait for a rate limit slot; default 2s.
	MaxRateWait time.Duration

	// PayloadKeys opens sealed codes (producer.ParseKeys reads the text form
	// of OTPQ_PAYLOAD_KEY); every key of the ring decrypts. nil: sealed tasks
	// are retried (another worker may hold the key) until they expire, and
	// Start logs a warning.
	PayloadKeys *producer.Keys

	// TracerProvider makes a span per delivery attempt and, with the
	// EngageLab client, a client span per provider request (see the
	// README's Tracing section); nil uses the global provider
	// (otel.GetTracerProvider), a no-op unless the program set one.
	TracerProvider trace.TracerProvider

	// Shards is the number of queues per class (critical, bulk) producers
	// spread tasks over, for a Redis Cluster (see internal/shard and README
	// "Scaling past one Redis"); 0 or 1 is one queue per class. It must be
	// the count Redis records (Start refuses another with an error naming
	// both; the first process records it). The worker serves every shard
	// of each class that may hold tasks (the highest count ever recorded),
	// critical before bulk, and an idle shard costs Redis one poll per
	// second (or IdlePollInterval if longer; see gate) while new tasks wake
	// it at once, so the idle fetch cost does not grow much with the shard
	// count. Retries and delayed sends of a sharded worker are forwarded
	// every 2 s and then picked up within a second.
	Shards int
}

// Worker delivers otp:send tasks. Create it with New, then Run it (or
// Start and Shutdown).
type Worker struct {
	cfg      Config
	log      *slog.Logger
	sender   Sender
	rdb      redis.UniversalClient
	servers  []*asynq.Server // set by Start
	slots    *slots          // Concurrency, shared by the fetch loops of both queues
	gate     *gate           // sharded only: holds back polls of idle shards
	unlisten func()          // stops the gate's wake-up subscriptions
	extra    map[engagelab.Code]bool
	now      func() time.Time
	metrics  *metrics.Delivery // nil: no metrics
	limiter  *rateLimiter      // nil: no rate limit
	keys     *sealing.Keyring  // nil: codes in plaintext only
	watch    *redisWatch       // reports Redis outages, one line each way
	co       *coalescer        // set by Start
	tracer   tracing.Tracer

	mu      sync.Mutex
	started bool
	stopped bool
	done    chan struct{} // closed by the first Shutdown
}

// New checks cfg and builds a Worker. It does not contact Redis: an
// invalid Config is refused before any connection is made.
func New(cfg Config) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	sender, dm, err := newSender(cfg)
	if err != nil {
		return nil, err
	}
	opt, err := redisconn.Option(cfg.RedisURL, cfg.Redis, cfg.Concurrency+20*cfg.Servers)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	rdb, err := redisconn.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	return &Worker{
		done: make(chan struct{}), cfg: cfg, log: cfg.Logger, sender: sender, rdb: rdb, now: cfg.Now,
		extra:   retryCodes(cfg.RetryCodes),
		metrics: dm,
		keys:    (*sealing.Keyring)(cfg.PayloadKeys),
		limiter: newRateLimiter(rdb, cfg.RateLimit, cfg.RateBurst, cfg.MaxRateWait, cfg.Now),
		watch:   newRedisWatch(rdb, cfg.Logger, redisconn.Addr(opt)),
		slots:   newSlots(cfg.Concurrency),
		tracer:  tracing.NewTracer(cfg.TracerProvider),
	}, nil
}

// withDefaults is cfg with each zero field set to its documented default,
// or an error naming the field that is wrong. It is pure: no connection,
// no client is made.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Servers <= 0 {
		cfg.Servers = runtime.GOMAXPROCS(0)
	}
	switch {
	case cfg.MaxRetry == 0:
		cfg.MaxRetry = DefaultMaxRetry
	case cfg.MaxRetry < 0:
		cfg.MaxRetry = 0 // retries disabled
	}
	if cfg.RetryMinDelay <= 0 {
		cfg.RetryMinDelay = DefaultRetryMinDelay
	}
	if cfg.RetryMaxDelay <= 0 {
		cfg.RetryMaxDelay = DefaultRetryMaxDelay
	}
	if cfg.RetryMaxDelay < cfg.RetryMinDelay {
		return Config{}, fmt.Errorf("worker: RetryMaxDelay %s is below RetryMinDelay %s", cfg.RetryMaxDelay, cfg.RetryMinDelay)
	}
	if cfg.HTTPTimeout <= 0 {
		cfg.HTTPTimeout = DefaultHTTPTimeout
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.IdlePollInterval <= 0 {
		cfg.IdlePollInterval = max(DefaultIdlePollInterval, cfg.PollInterval)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = cfg.HTTPTimeout + 5*time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Shards < 0 || cfg.Shards > shard.MaxShards {
		return Config{}, fmt.Errorf("worker: Shards %d must be from 0 to %d", cfg.Shards, shard.MaxShards)
	}
	if cfg.RateLimit < 0 || cfg.RateBurst < 0 {
		return Config{}, fmt.Errorf("worker: RateLimit %g and RateBurst %d must not be negative", cfg.RateLimit, cfg.RateBurst)
	}
	return cfg, nil
}

// newSender is the provider client of cfg (the EngageLab client unless
// cfg.Sender is set), timed by the delivery metrics when cfg.Registerer is
// set; dm is nil without metrics.
func newSender(cfg Config) (sender Sender, dm *metrics.Delivery, err error) {
	sender = cfg.Sender
	if sender == nil {
		c, err := engagelab.New(engagelab.Config{
			BaseURL: cfg.BaseURL, DevKey: cfg.DevKey, DevSecret: cfg.DevSecret,
			Timeout: cfg.HTTPTimeout, MaxConns: cfg.Concurrency,
			TracerProvider: tracing.Provider(cfg.TracerProvider),
		})
		if err != nil {
			return nil, nil, fmt.Errorf("worker: %w", err)
		}
		sender = engagelabSender{c}
	}
	if cfg.Registerer == nil {
		return sender, nil, nil
	}
	if dm, err = metrics.NewDelivery(cfg.Registerer); err != nil {
		return nil, nil, fmt.Errorf("worker: metrics: %w", err)
	}
	return timedSender{Sender: sender, m: dm}, dm, nil
}

// retryCodes is the set of Config.RetryCodes.
func retryCodes(codes []int) map[engagelab.Code]bool {
	set := make(map[engagelab.Code]bool, len(codes))
	for _, c := range codes {
		set[engagelab.Code(c)] = true
	}
	return set
}

// newServers builds the asynq servers of the fetch loops serving the
// first shards shards of each class (see shardedLoops).
func newServers(rdb redis.UniversalClient, cfg Config, shards int) []*asynq.Server {
	var servers []*asynq.Server
	for _, l := range shardedLoops(cfg, shards) {
		servers = append(servers, asynq.NewServerFromRedisClient(rdb, l.asynqConfig(cfg)))
	}
	return servers
}

// asynqConfig is the asynq server configuration of fetch loop l.
func (l fetchLoop) asynqConfig(cfg Config) asynq.Config {
	return asynq.Config{
		Concurrency:              l.concurrency,
		Queues:                   l.queues,
		StrictPriority:           !l.sharded,
		TaskCheckInterval:        l.poll,
		DelayedTaskCheckInterval: l.forward,
		RetryDelayFunc:           retryDelay(cfg.RetryMinDelay, time.Now), // asynq adds it to its own clock
		IsFailure:                isFailure,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		Logger:                   asynqLogger{cfg.Logger},
		LogLevel:                 asynq.WarnLevel,
	}
}

// Start starts fetching and delivering tasks in the background. It first
// reads the shard count Redis records (see Config.Shards) and refuses to
// start on a mismatch; when Redis does not answer it serves Config.Shards
// shards (and says so in a warning when that is more than one).
func (w *Worker) Start() error {
	if err := w.startable(); err != nil {
		return err
	}
	served, err := w.servedShards()
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.startableLocked(); err != nil { // a concurrent Start or Shutdown
		return err
	}
	w.servers = newServers(w.rdb, w.cfg, served)
	if served > 1 {
		queues := shard.All(served)
		if w.gate == nil { // a Start that failed may have added it
			slow := max(w.cfg.IdlePollInterval, shardSlowPoll)
			if gateSlowPoll > 0 {
				slow = gateSlowPoll
			}
			w.gate = newGate(queues, slow, time.Now)
			w.rdb.AddHook(w.gate)
		}
		w.unlisten = w.gate.listen(w.rdb, queues, w.log)
	}
	w.co = newCoalescer(w.rdb)
	mux := asynq.NewServeMux()
	mux.HandleFunc(task.TypeSend, w.processTask)
	for i, s := range w.servers {
		if err := s.Start(mux); err != nil {
			for _, started := range w.servers[:i] {
				started.Shutdown()
			}
			w.co.stop()
			if w.unlisten != nil {
				w.unlisten()
			}
			w.servers = nil
			return fmt.Errorf("worker: start: %w", err)
		}
	}
	w.started = true
	if !w.keys.Enabled() {
		w.log.Warn("OTPQ_PAYLOAD_KEY is not set: producers without a key store codes in plaintext in Redis, and sealed codes cannot be opened here")
	}
	w.watch.start()
	attrs := startAttrs(w.cfg, w.watch.addr, w.cfg.Servers)
	if served > 1 {
		attrs = append(attrs, "shards", served)
	}
	w.log.Info("worker started", attrs...)
	return nil
}

// startable is nil when Start may go on.
func (w *Worker) startable() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.startableLocked()
}

// startableLocked is startable with w.mu held.
func (w *Worker) startableLocked() error {
	switch {
	case w.stopped:
		return errors.New("worker: start: already shut down")
	case w.started:
		return errors.New("worker: start: already started")
	}
	return nil
}

// shardCheckTimeout bounds Start's read of the recorded shard count.
const shardCheckTimeout = 3 * time.Second

// servedShards is how many shards of each class the worker serves: the
// highest count Redis has recorded (see shard.Layout.Served). A count
// other than Config.Shards is an error (errors.Is shard.ErrMismatch);
// when Redis does not answer, Config.Shards (with a warning when above 1).
func (w *Worker) servedShards() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), shardCheckTimeout)
	defer cancel()
	l, err := shard.Check(ctx, w.rdb, w.cfg.Shards)
	if errors.Is(err, shard.ErrMismatch) {
		return 0, fmt.Errorf("worker: %w", err)
	}
	if err != nil {
		// Redis down: the outage line says so once; with shards, that the
		// count is unchecked matters enough for a warning of its own.
		n := max(w.cfg.Shards, 1)
		level := slog.LevelDebug
		if n > 1 {
			level = slog.LevelWarn
		}
		w.log.Log(context.Background(), level, "could not read the shard count from Redis; serving the configured shards", "shards", n, "error", err.Error())
		return n, nil
	}
	return l.Served, nil
}

// Shutdown stops fetching, waits up to ShutdownTimeout for in-flight sends,
// puts back what is still running and closes the Redis connections. Later
// calls wait for the first to finish; a shut down worker cannot start again.
func (w *Worker) Shutdown() {
	w.mu.Lock()
	watching := w.started && !w.stopped
	first := !w.stopped
	w.stopped = true
	co := w.co
	w.mu.Unlock()
	if !first {
		<-w.done // the first call is draining
		return
	}
	defer close(w.done)
	if watching {
		w.watch.shutdown()
	}
	var wg sync.WaitGroup
	for _, s := range w.servers {
		wg.Add(1)
		go func() { defer wg.Done(); s.Shutdown() }()
	}
	wg.Wait()
	if w.unlisten != nil {
		w.unlisten()
	}
	if co != nil {
		co.stop() // the handlers have returned
	}
	_ = w.rdb.Close()
	w.log.Info("worker stopped")
}

// Run starts the worker and blocks until ctx is done (or Shutdown is
// called), then shuts down gracefully. It returns Start's error when the
// worker could not start (already started, already shut down, an asynq
// server refusing to start). Once started, it returns nil when it was
// stopped as asked (ctx cancelled, or Shutdown), and otherwise the reason
// ctx gives for ending: its deadline (context.DeadlineExceeded) or the
// cause given to a context.WithCancelCause.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.Start(); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-w.done:
	}
	w.Shutdown()
	if cause := context.Cause(ctx); cause != nil && cause != context.Canceled {
		return cause
	}
	return nil
}

// Ping checks that Redis answers.
func (w *Worker) Ping(ctx context.Context) error { return w.rdb.Ping(ctx).Err() }

// processTask is the asynq handler of otp:send.
func (w *Worker) processTask(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	return w.process(ctx, t, id, queue, retried)
}

// process is processTask with what asynq keeps in ctx read out: the task's
// ID and queue and its earlier retries (the benchmark of the delivery path
// calls it directly, without asynq's servers).
func (w *Worker) process(ctx context.Context, t *asynq.Task, id, queue string, retried int) (err error) {
	if err := w.slots.acquire(ctx, shard.ClassOf(queue) != task.QueueBulk); err != nil {
		// Shutting down, or the lease is lost: asynq runs it again later.
		return &retryLater{counted: false, cause: err}
	}
	defer w.slots.release()
	attempt := retried + 1
	log := newTaskLog(w.log, "task_id", id, "attempt", attempt)
	span := tracing.NoSpan()
	if tracing.Enabled && !w.tracer.Off() {
		ctx, span = w.startAttempt(ctx, t, id, queue, attempt)
	}
	traced := tracing.Enabled && span.IsRecording()

	var p task.Payload
	done := outcome.Accepted // or AcceptedUnconfirmed or AlreadyAccepted, for record
	defer w.metrics.Begin()()
	defer func() {
		if x := recover(); x != nil {
			err = w.recovered(log, x)
			if !p.ExpiresAt.IsZero() {
				err = w.failed(log, err, p, retried)
			}
		}
		w.record(err, done, p.CreatedAt)
		if tracing.Enabled {
			endAttempt(span, err, done)
		}
	}()
	p, err = task.Decode(t.Payload())
	if err != nil {
		return deadLettered(log, outcome.BadPayload, err, "%v (not sent)", err) // err reads "bad payload: why"
	}
	log = log.With("to", maskedTo(p.To), "template", p.Template.ID)
	now := w.now()
	if traced {
		traceDecoded(span, &p, now)
	}
	if !now.Before(p.ExpiresAt) {
		log = log.With("expired_for", now.Sub(p.ExpiresAt).Round(time.Millisecond).String())
		return deadLettered(log, outcome.CodeExpired, nil, "%s: code expired at %s, before delivery (not sent)", outcome.CodeExpired, p.ExpiresAt.Format(time.RFC3339))
	}

	sealContext := p.To // versions 1 and 2: sealed inline, bound to the destination
	if p.V == task.VersionCodeKey {
		if err := w.loadCodeWaiting(ctx, queue, id, &p); errors.Is(err, redis.Nil) {
			earlier, err := w.earlierAcceptance(ctx, queue, id)
			if err != nil { // Redis failed: try again later
				return w.failed(log, err, p, retried)
			}
			if earlier != nil {
				// An earlier attempt's send was accepted and recorded, but
				// asynq never heard the task was done: complete it now.
				done = outcome.AlreadyAccepted
				log.Info("accepted by an earlier attempt; not sent again", "outcome", done, "accepted_attempt", earlier.Attempts, "message_id", earlier.MessageID)
				return nil
			}
			return deadLettered(log, outcome.NoCode, nil, "%s: code expired or deleted; not sent", outcome.NoCode)
		} else if errors.Is(err, task.ErrBadPayload) {
			return deadLettered(log, outcome.BadPayload, err, "%v (not sent)", err)
		} else if err != nil { // Redis failed: try again later
			return w.failed(log, err, p, retried)
		}
		sealContext = task.SealContext(p.To, id)
	}
	if p.Sealed != "" {
		if p.Code, err = w.keys.Open(p.Sealed, sealContext); errors.Is(err, sealing.ErrOpen) {
			return deadLettered(log, outcome.BadPayload, err, "%s: %v (not sent)", outcome.BadPayload, err)
		} else if err != nil { // a key this worker lacks: another may have it
			return w.failed(log, err, p, retried)
		}
	}
	if err := w.limiter.take(ctx, p.ExpiresAt); err != nil {
		return w.failed(log, err, p, retried)
	}

	start := time.Now()
	resp, err := w.send(ctx, p)
	latency := time.Since(start)
	log = log.With("latency_ms", latency.Milliseconds())
	if err == nil {
		if resp.Unconfirmed != "" {
			// The provider took it (2xx) without confirming: never re-sent.
			done = outcome.AcceptedUnconfirmed
		}
		if traced {
			traceAccepted(span, resp)
		}
		store := func() error { return w.accepted(ctx, queue, id, p, resp, attempt, done) }
		if werr := store(); werr != nil {
			// The code went out; losing the result must not send it again.
			log.Warn("could not store result", "error", werr.Error())
			w.keepStoring(log, p.ExpiresAt, store)
		}
		if done == outcome.AcceptedUnconfirmed {
			log.Warn("accepted, unconfirmed", "outcome", done, "engagelab_code", 0, "reason", resp.Unconfirmed, "send_channel", resp.SendChannel)
			return nil
		}
		log.Info("accepted", "outcome", done, "engagelab_code", 0, "message_id", resp.MessageID, "send_channel", resp.SendChannel)
		return nil
	}
	return w.failed(log, w.ambiguity(ctx, queue, id, p, err), p, retried)
}

// loadCode reads the code key of a version 3 task into p.Code (plaintext)
// or p.Sealed, in a pipeline shared with concurrent deliveries (see
// coalescer). redis.Nil: there is no code key (expired, or deleted by the
// delivery of an earlier attempt).
func (w *Worker) loadCode(ctx context.Context, queue, id string, p *task.Payload) error {
	var get *redis.StringCmd
	if err := w.co.do(ctx, func(ctx context.Context, pipe redis.Pipeliner) {
		get = pipe.Get(ctx, asynqstore.CodeKey(queue, id))
	}); err != nil {
		return err
	}
	v, err := get.Result()
	if err != nil {
		return err
	}
	p.Code, p.Sealed, err = task.ParseCodeValue(v)
	return err
}

// earlierAcceptance reads the result an earlier attempt of the task stored
// when its send was accepted (see accepted): nil when there is none. A
// task whose code key is gone and that holds such a result was sent; the
// attempt that sent it did not reach asynq's completion (its worker died
// after the pipeline, or asynq could not mark the task complete, and the
// recoverer handed the task back when its lease ran out).
func (w *Worker) earlierAcceptance(ctx context.Context, queue, id string) (*task.Result, error) {
	v, err := w.rdb.HGet(ctx, asynqstore.TaskKey(queue, id), asynqstore.ResultField).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, nil
	case err != nil:
		return nil, err
	}
	var r task.Result
	if json.Unmarshal(v, &r) != nil {
		return nil, nil // not a result this worker wrote
	}
	switch outcome.Parse(string(r.Outcome)) {
	case outcome.Accepted, outcome.AcceptedUnconfirmed:
		return &r, nil
	}
	return nil, nil
}

// loadCodeWaiting is loadCode that waits out a Redis unavailable for now
// (down, failing over, migrating the task's slot: redisconn.Unavailable),
// asking again with a growing pause (50 ms to 1 s) until it answers, the
// code expires, ctx ends (asynq ends it when the task's lease expires) or
// the worker stops. Failing the attempt instead needs Redis to schedule
// the retry, and asynq does not retry that write (see keepStoring): the
// task then waits for its lease to expire and for asynq's recoverer,
// 30-90 s. With a master killed mid-drain, tasks whose code read met the
// failover were sent 61 s after the kill (TestCluster/MasterKilledDuringDrain).
func (w *Worker) loadCodeWaiting(ctx context.Context, queue, id string, p *task.Payload) error {
	wait := 50 * time.Millisecond
	for {
		err := w.loadCode(ctx, queue, id, p)
		if !redisconn.Unavailable(err) || ctx.Err() != nil || !w.now().Add(wait).Before(p.ExpiresAt) {
			return err
		}
		select {
		case <-w.done:
			return err
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// accepted records an accepted send in one pipeline, shared with concurrent
// deliveries (see coalescer): the task's result (read by producer.Status,
// otpq status and the web UI), the deletion of its code key (the code can
// never go out again, whatever happens to this attempt from now on) and
// the receipt link message_id → task (internal/receipts). It runs even if
// ctx ended: the code went out.
func (w *Worker) accepted(ctx context.Context, queue, id string, p task.Payload, resp *SendResponse, attempt int, done outcome.Outcome) error {
	now := w.now().UTC()
	res, _ := json.Marshal(task.Result{MessageID: resp.MessageID, SendChannel: resp.SendChannel, Attempts: attempt, SentAt: now, Outcome: done})
	ttl := DefaultResultRetention
	if p.RetentionSec > 0 {
		ttl = time.Duration(p.RetentionSec) * time.Second
	}
	// The receipt's span continues this attempt's. Off first: untraced,
	// no walk up the attempt's context chain.
	var tp string
	if tracing.Enabled && !w.tracer.Off() {
		if span := trace.SpanFromContext(ctx); span.IsRecording() {
			tp = tracing.TraceParent(span.SpanContext())
		}
	}
	var cmds []redis.Cmder
	_ = w.co.do(context.WithoutCancel(ctx), func(ctx context.Context, pipe redis.Pipeliner) {
		cmds = asynqstore.Delivered(ctx, pipe, queue, id, res)
		if resp.MessageID != "" {
			link := receipts.Link{TaskID: id, Queue: queue, To: redact.Destination(p.To), AcceptedAt: now, CodeFingerprint: redact.Fingerprint(p.Code), Trace: tp}
			cmds = append(cmds, pipe.Set(ctx, receipts.LinkKey(queue, resp.MessageID), link.Encode(), ttl))
		}
	})
	for _, c := range cmds {
		if err := c.Err(); err != nil {
			return err
		}
	}
	return nil
}

// keepStoring retries store (the accepted send's pipeline: result, code
// key deletion, receipt link) until it succeeds, the code expires or the
// worker shuts down. Until the code key is deleted, an attempt that asynq
// runs again would send the code again, and asynq may well run it again
// after an outage: a completion it could not write is retried by its
// syncer with a context already cancelled (asynq v0.26 processor.go
// markAsComplete), so the task stays active until its lease expires and
// the recoverer hands it back (the fault suite's TestRedisUnreachable saw
// that duplicate). Once the code has expired, a later attempt refuses to
// send it anyway.
func (w *Worker) keepStoring(log taskLog, expiresAt time.Time, store func() error) {
	wait := 100 * time.Millisecond
	for tries := 2; w.now().Before(expiresAt); tries++ {
		select {
		case <-w.done:
			log.Error("result not stored before shutdown: a later attempt may send the code again", "tries", tries-1)
			return
		case <-time.After(wait):
		}
		if err := store(); err == nil {
			log.Info("result stored after retrying", "tries", tries)
			return
		}
		wait = min(2*wait, 2*time.Second)
	}
	log.Error("result not stored before the code expired: a later attempt finds it expired and does not send it")
}

// fetchLoop is the configuration of one asynq server of the worker.
type fetchLoop struct {
	queues        map[string]int
	concurrency   int
	poll, forward time.Duration
	// sharded: the loop serves several shard queues of its class, asked in
	// a random order at each dequeue (asynq's weighted order with equal
	// weights) so that no shard waits for the others to drain.
	sharded bool
}

// fetchLoops lays out the worker's asynq servers for Config.Shards shards
// (see shardedLoops).
func fetchLoops(cfg Config) []fetchLoop { return shardedLoops(cfg, max(cfg.Shards, 1)) }

// Forwarding intervals of a sharded worker's loops: asynq's forwarder
// moves due retries and delayed sends into the pending list of each queue
// of its loop, one script call per queue and state, so a sharded worker
// forwards less often than the critical loop of a single queue does.
// The first loop of each class forwards every 2 s; the others, which
// forward the same queues, every 30 s (a fallback if the first is stuck).
const (
	shardedForward      = 2 * time.Second
	shardedOtherForward = 30 * time.Second
	// shardSlowPoll is the least interval at which the fetch gate asks an
	// idle shard (see gate), so that 2×16 idle shards cost Redis 32
	// dequeues/s.
	shardSlowPoll = time.Second
)

// shardedLoops lays out the worker's asynq servers (see Config.Servers):
// for each class, min(Servers, Concurrency) loops serving that class alone
// (each loop all of its first shards shards) and sharing Concurrency among
// them; the first critical loop polls every PollInterval while idle, every
// other loop every IdlePollInterval. Concurrency bounds the tasks each
// class's loops hold at once; the send slots (see slots) bound them across
// both classes, critical first.
func shardedLoops(cfg Config, shards int) []fetchLoop {
	n := min(cfg.Servers, cfg.Concurrency)
	loops := make([]fetchLoop, 0, 2*n)
	for _, class := range shard.Classes {
		for i := range n {
			queues := map[string]int{}
			for _, q := range shard.Names(class, shards) {
				queues[q] = 1
			}
			l := fetchLoop{queues: queues, concurrency: cfg.Concurrency / n, poll: cfg.IdlePollInterval, forward: time.Second, sharded: shards > 1}
			if i < cfg.Concurrency%n {
				l.concurrency++
			}
			if class == task.QueueCritical && i == 0 {
				l.poll, l.forward = cfg.PollInterval, 250*time.Millisecond
			}
			if l.sharded {
				l.forward = shardedForward
				if i > 0 {
					l.forward = shardedOtherForward
				}
			}
			loops = append(loops, l)
		}
	}
	return loops
}

// failed turns a failed attempt into asynq's next step: a dead letter or a
// retry at a time the handler chose.
func (w *Worker) failed(log taskLog, err error, p task.Payload, retried int) error {
	var apiErr *engagelab.APIError
	var code engagelab.Code
	if errors.As(err, &apiErr) {
		code = apiErr.Code
		log = log.With("http_status", apiErr.StatusCode)
	}
	log = log.With("engagelab_code", code)
	kind := classify(err, w.extra)
	if kind == kindPermanent {
		switch reason := deadLetterReason(err); reason {
		case outcome.LikelyAccepted:
			return deadLettered(log, reason, err, "%s", err.Error())
		case outcome.Configuration:
			return deadLettered(log, reason, err, "%s: %s", reason, err.Error())
		default:
			return deadLettered(log, reason, err, "%s", reasonText(err))
		}
	}
	now := w.now()
	var delay time.Duration
	if rl := (*rateLimited)(nil); errors.As(err, &rl) {
		delay = max(rl.retryAfter, w.cfg.PollInterval)
	} else if kind == kindThrottle {
		delay = max(apiErr.RetryAfter, w.cfg.RetryMinDelay)
	} else {
		if retried >= w.cfg.MaxRetry {
			return deadLettered(log, outcome.Exhausted, err, "%s after %d attempts: %s", outcome.Exhausted, retried+1, reasonText(err))
		}
		delay = w.backoff(retried)
	}
	if !now.Add(delay).Before(p.ExpiresAt) {
		return deadLettered(log, outcome.CodeExpired, err, "%s: code expires before the next attempt would start: %s", outcome.CodeExpired, reasonText(err))
	}
	retry := outcome.Retry
	if kind == kindThrottle {
		retry = outcome.Throttle
	}
	log.Warn("will retry", "outcome", retry, "retry_in_ms", delay.Milliseconds(), "error", err.Error())
	return &retryLater{delay: delay, counted: kind == kindRetry, cause: err}
}

// deadLettered logs a task's one "dead-lettered" line and returns its dead
// letter (the archive's text is format and args). Every dead letter goes
// through here, so the line's outcome and level follow from the reason in
// one place: expired and likely-delivered have outcomes of their own;
// a bad payload (a producer bug or tampering) and a configuration problem
// (otpq set up wrong) are errors an operator must fix, the rest warnings.
// The cause, when there is one, is logged as "error".
func deadLettered(log taskLog, reason outcome.Reason, cause error, format string, args ...any) error {
	o, level := deadLetterOutcome(reason), slog.LevelWarn
	switch reason {
	case outcome.BadPayload, outcome.Configuration:
		level = slog.LevelError
	}
	attrs := []any{"outcome", o, "reason", reason}
	if cause != nil {
		attrs = append(attrs, "error", cause.Error())
	}
	log.log(level, "dead-lettered", attrs)
	return newDeadLetter(reason, cause, format, args...)
}

// deadLetterOutcome is the outcome of a task dead-lettered for reason:
// expired and likely-accepted have outcomes of their own.
func deadLetterOutcome(reason outcome.Reason) outcome.Outcome {
	switch reason {
	case outcome.CodeExpired:
		return outcome.Expired
	case outcome.LikelyAccepted:
		return outcome.AcceptedLikely
	}
	return outcome.DeadLetter
}

// reasonText is the provider's code and message, the form operators read in
// the archive: "engagelab 5013: Number has been blacklisted".
func reasonText(err error) string {
	var apiErr *engagelab.APIError
	if errors.As(err, &apiErr) && apiErr.Code != 0 {
		return fmt.Sprintf("engagelab %d: %s", apiErr.Code, apiErr.Message)
	}
	return err.Error()
}

// backoff is the delay before retry n+1: exponential from RetryMinDelay,
// doubling, ±50% jitter, capped at RetryMaxDelay.
func (w *Worker) backoff(n int) time.Duration {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(w.cfg.RetryMinDelay),
		backoff.WithMaxInterval(w.cfg.RetryMaxDelay),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0),
	)
	d := b.NextBackOff()
	for range n {
		d = b.NextBackOff()
	}
	return min(max(d, w.cfg.RetryMinDelay), w.cfg.RetryMaxDelay)
}

// send makes the provider call, retrying inside this attempt only failures
// that provably never reached the provider (connection refused, DNS), at
// most three times within ~0.5s and never past the code's expiry. A request
// whose outcome is unknown is never re-sent here.
func (w *Worker) send(ctx context.Context, p task.Payload) (*SendResponse, error) {
	req := SendRequest{To: p.To, Code: p.Code, TemplateID: p.Template.ID, Language: p.Template.Language, Params: p.Template.Params}
	ctx, cancel := context.WithDeadline(ctx, p.ExpiresAt)
	defer cancel()
	quick := backoff.WithContext(backoff.WithMaxRetries(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(250*time.Millisecond),
	), 3), ctx)
	return backoff.RetryWithData(func() (*SendResponse, error) {
		resp, err := w.sender.Send(ctx, req)
		var te *engagelab.TransportError
		if err != nil && !(errors.As(err, &te) && !te.Sent) {
			return nil, backoff.Permanent(err)
		}
		return resp, err
	}, quick)
}
