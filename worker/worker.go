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

	"github.com/otpq/otpq/internal/asynqstore"
	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/metrics"
	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/sealing"
	"github.com/otpq/otpq/internal/task"
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
	// DefaultResultRetention is how long the receipt link of a delivered
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
	// Servers is the number of fetch loops (asynq servers) serving both
	// queues, critical strictly first; default GOMAXPROCS. On top of them
	// one more loop serves only the critical queue, with a small share of
	// Concurrency (a tenth, 1 to 10) kept for it, and is the only one that
	// polls every PollInterval while idle: the others poll every
	// IdlePollInterval, so that an idle worker costs Redis little. Under
	// load no loop waits between tasks. With Concurrency 1 there is one
	// loop, serving both queues.
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
}

// Worker delivers otp:send tasks. Create it with New, then Run it (or
// Start and Shutdown).
type Worker struct {
	cfg     Config
	log     *slog.Logger
	sender  Sender
	rdb     redis.UniversalClient
	servers []*asynq.Server
	extra   map[engagelab.Code]bool
	now     func() time.Time
	metrics *metrics.Delivery // nil: no metrics
	limiter *rateLimiter      // nil: no rate limit
	keys    *sealing.Keyring  // nil: codes in plaintext only
	watch   *redisWatch       // reports Redis outages, one line each way
	co      *coalescer        // set by Start

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
	opt, err := redisconn.Option(cfg.RedisURL, cfg.Redis, cfg.Concurrency+10*cfg.Servers)
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
		servers: newServers(rdb, cfg),
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

// newServers builds the asynq servers of the fetch loops (see fetchLoops).
func newServers(rdb redis.UniversalClient, cfg Config) []*asynq.Server {
	var servers []*asynq.Server
	for _, l := range fetchLoops(cfg) {
		servers = append(servers, asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency:              l.concurrency,
			Queues:                   l.queues,
			StrictPriority:           true,
			TaskCheckInterval:        l.poll,
			DelayedTaskCheckInterval: l.forward,
			RetryDelayFunc:           retryDelay(cfg.RetryMinDelay, time.Now), // asynq adds it to its own clock
			IsFailure:                isFailure,
			ShutdownTimeout:          cfg.ShutdownTimeout,
			Logger:                   asynqLogger{cfg.Logger},
			LogLevel:                 asynq.WarnLevel,
		}))
	}
	return servers
}

// Start starts fetching and delivering tasks in the background.
func (w *Worker) Start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.stopped:
		return errors.New("worker: start: already shut down")
	case w.started:
		return errors.New("worker: start: already started")
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
			return fmt.Errorf("worker: start: %w", err)
		}
	}
	w.started = true
	if !w.keys.Enabled() {
		w.log.Warn("OTPQ_PAYLOAD_KEY is not set: producers without a key store codes in plaintext in Redis, and sealed codes cannot be opened here")
	}
	w.watch.start()
	w.log.Info("worker started", startAttrs(w.cfg, w.watch.addr, w.cfg.Servers)...)
	return nil
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
func (w *Worker) processTask(ctx context.Context, t *asynq.Task) (err error) {
	id, _ := asynq.GetTaskID(ctx)
	queue, _ := asynq.GetQueueName(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	attempt := retried + 1
	log := w.log.With("task_id", id, "attempt", attempt)

	var p task.Payload
	done := outcome.Delivered // or AcceptedUnconfirmed, for record
	defer w.metrics.Begin()()
	defer func() {
		if x := recover(); x != nil {
			err = w.recovered(log, x)
			if !p.ExpiresAt.IsZero() {
				err = w.failed(log, err, p, retried)
			}
		}
		w.record(err, done, p.CreatedAt)
	}()
	p, err = task.Decode(t.Payload())
	if err != nil {
		log.Error("dead-lettered", "outcome", outcome.DeadLetter, "reason", outcome.BadPayload, "error", err.Error())
		return newDeadLetter(outcome.BadPayload, err, "%v (not sent)", err) // err reads "bad payload: why"
	}
	log = log.With("to", redact.Destination(p.To), "template", p.Template.ID)
	now := w.now()
	if !now.Before(p.ExpiresAt) {
		log.Warn("dead-lettered", "outcome", outcome.Expired, "reason", outcome.CodeExpired, "expired_for", now.Sub(p.ExpiresAt).Round(time.Millisecond).String())
		return newDeadLetter(outcome.CodeExpired, nil, "%s: code expired at %s, before delivery (not sent)", outcome.CodeExpired, p.ExpiresAt.Format(time.RFC3339))
	}

	sealContext := p.To // versions 1 and 2: sealed inline, bound to the destination
	if p.V == task.VersionCodeKey {
		if err := w.loadCode(ctx, queue, id, &p); errors.Is(err, redis.Nil) {
			log.Warn("dead-lettered", "outcome", outcome.DeadLetter, "reason", outcome.NoCode)
			return newDeadLetter(outcome.NoCode, nil, "%s: code expired or already delivered; not sent", outcome.NoCode)
		} else if errors.Is(err, task.ErrBadPayload) {
			log.Error("dead-lettered", "outcome", outcome.DeadLetter, "reason", outcome.BadPayload, "error", err.Error())
			return newDeadLetter(outcome.BadPayload, err, "%v (not sent)", err)
		} else if err != nil { // Redis failed: try again later
			return w.failed(log, err, p, retried)
		}
		sealContext = task.SealContext(p.To, id)
	}
	if p.Sealed != "" {
		if p.Code, err = w.keys.Open(p.Sealed, sealContext); errors.Is(err, sealing.ErrOpen) {
			log.Error("dead-lettered", "outcome", outcome.DeadLetter, "reason", outcome.BadPayload, "error", err.Error())
			return newDeadLetter(outcome.BadPayload, err, "%s: %v (not sent)", outcome.BadPayload, err)
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
		if werr := w.delivered(ctx, queue, id, p, resp, attempt, done); werr != nil {
			// The code went out; losing the result must not send it again.
			log.Warn("could not store result", "error", werr.Error())
		}
		if done == outcome.AcceptedUnconfirmed {
			log.Warn("accepted, unconfirmed", "outcome", done, "engagelab_code", 0, "reason", resp.Unconfirmed, "send_channel", resp.SendChannel)
			return nil
		}
		log.Info("delivered", "outcome", done, "engagelab_code", 0, "message_id", resp.MessageID, "send_channel", resp.SendChannel)
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

// delivered records a delivery in one pipeline, shared with concurrent
// deliveries (see coalescer): the task's result (read by producer.Status,
// otpq status and the web UI), the deletion of its code key (the code can
// never go out again, whatever happens to this attempt from now on) and
// the receipt link message_id → task (internal/receipts). It runs even if
// ctx ended: the code went out.
func (w *Worker) delivered(ctx context.Context, queue, id string, p task.Payload, resp *SendResponse, attempt int, done outcome.Outcome) error {
	now := w.now().UTC()
	res, _ := json.Marshal(task.Result{MessageID: resp.MessageID, SendChannel: resp.SendChannel, Attempts: attempt, SentAt: now, Outcome: done})
	ttl := DefaultResultRetention
	if p.RetentionSec > 0 {
		ttl = time.Duration(p.RetentionSec) * time.Second
	}
	var cmds []redis.Cmder
	_ = w.co.do(context.WithoutCancel(ctx), func(ctx context.Context, pipe redis.Pipeliner) {
		cmds = asynqstore.Delivered(ctx, pipe, queue, id, res)
		if resp.MessageID != "" {
			link := receipts.Link{TaskID: id, Queue: queue, To: redact.Destination(p.To), AcceptedAt: now}
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

// fetchLoop is the configuration of one asynq server of the worker.
type fetchLoop struct {
	queues        map[string]int
	concurrency   int
	poll, forward time.Duration
}

// fetchLoops lays out the worker's asynq servers (see Config.Servers): one
// critical-only loop polling every PollInterval, and Servers loops serving
// critical then bulk, polling every IdlePollInterval while idle.
func fetchLoops(cfg Config) []fetchLoop {
	both := map[string]int{task.QueueCritical: 10, task.QueueBulk: 1}
	if cfg.Concurrency < 2 {
		return []fetchLoop{{queues: both, concurrency: cfg.Concurrency, poll: cfg.PollInterval, forward: 250 * time.Millisecond}}
	}
	fast := min(max(cfg.Concurrency/10, 1), 10)
	loops := []fetchLoop{{queues: map[string]int{task.QueueCritical: 1}, concurrency: fast, poll: cfg.PollInterval, forward: 250 * time.Millisecond}}
	rest := cfg.Concurrency - fast
	n := min(cfg.Servers, rest)
	for i := range n {
		c := rest / n
		if i < rest%n {
			c++
		}
		loops = append(loops, fetchLoop{queues: both, concurrency: c, poll: cfg.IdlePollInterval, forward: time.Second})
	}
	return loops
}

// failed turns a failed attempt into asynq's next step: a dead letter or a
// retry at a time the handler chose.
func (w *Worker) failed(log *slog.Logger, err error, p task.Payload, retried int) error {
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
		case outcome.LikelyDelivered:
			log.Warn("dead-lettered", "outcome", outcome.DeliveredLikely, "reason", reason, "error", err.Error())
			return newDeadLetter(reason, err, "%s", err.Error())
		case outcome.Configuration:
			log.Error("dead-lettered", "outcome", outcome.DeadLetter, "reason", reason, "error", err.Error())
			return newDeadLetter(reason, err, "%s: %s", reason, err.Error())
		default:
			log.Warn("dead-lettered", "outcome", outcome.DeadLetter, "reason", reason, "error", err.Error())
			return newDeadLetter(reason, err, "%s", reasonText(err))
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
			log.Warn("dead-lettered", "outcome", outcome.DeadLetter, "reason", outcome.Exhausted, "error", err.Error())
			return newDeadLetter(outcome.Exhausted, err, "%s after %d attempts: %s", outcome.Exhausted, retried+1, reasonText(err))
		}
		delay = w.backoff(retried)
	}
	if !now.Add(delay).Before(p.ExpiresAt) {
		log.Warn("dead-lettered", "outcome", outcome.Expired, "reason", outcome.CodeExpired, "error", err.Error())
		return newDeadLetter(outcome.CodeExpired, err, "%s: code expires before the next attempt would start: %s", outcome.CodeExpired, reasonText(err))
	}
	retry := outcome.Retry
	if kind == kindThrottle {
		retry = outcome.Throttle
	}
	log.Warn("will retry", "outcome", retry, "retry_in_ms", delay.Milliseconds(), "error", err.Error())
	return &retryLater{delay: delay, counted: kind == kindRetry, cause: err}
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
