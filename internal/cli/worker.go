package cli

import (
	"errors"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/worker"
)

// engagelabEnv reads the provider credentials from the environment.
func (m *Main) engagelabEnv() (baseURL, key, secret string, err error) {
	key, secret = m.Getenv("ENGAGELAB_DEV_KEY"), m.Getenv("ENGAGELAB_DEV_SECRET")
	var missing []string
	if key == "" {
		missing = append(missing, "ENGAGELAB_DEV_KEY")
	}
	if secret == "" {
		missing = append(missing, "ENGAGELAB_DEV_SECRET")
	}
	if len(missing) > 0 {
		return "", "", "", usagef("missing EngageLab credentials: set %s in the environment (never on the command line)", strings.Join(missing, " and "))
	}
	baseURL = m.Getenv("ENGAGELAB_BASE_URL")
	if baseURL == "" {
		baseURL = engagelab.DefaultBaseURL
	}
	if _, err := engagelab.ParseBaseURL(baseURL); err != nil {
		var ce *engagelab.ConfigError
		if errors.As(err, &ce) {
			return "", "", "", usagef("ENGAGELAB_BASE_URL: %s", ce.Reason) // never the value: it may hold a password
		}
		return "", "", "", usagef("ENGAGELAB_BASE_URL is not a usable URL")
	}
	return baseURL, key, secret, nil
}

type workerFlags struct {
	redisURL                    *string
	concurrency, servers, retry *int
	retryMin, retryMax, httpTO  *time.Duration
	poll, shutdown              *time.Duration
	retryCodes                  *string
	log                         logFlags
	rate                        *float64
	rateBurst                   *int
	shards                      *int
}

func newWorkerFlags(f flagSet) *workerFlags {
	wf := &workerFlags{
		redisURL:    redisFlag(f),
		concurrency: f.Int("concurrency", worker.DefaultConcurrency, "sends in flight per process; the HTTP connection pool is sized to it"),
		servers:     f.Int("servers", 0, "fetch loops (asynq servers) per queue, sharing --concurrency send slots, critical sends first; each fetches one task per Redis round trip; while idle one critical loop polls every --poll-interval, the others every 250ms; raise it for a fast provider: see BENCHMARKS.md", "one per CPU"),
		retry:       f.Int("max-retry", worker.DefaultMaxRetry, "retries of a task after its first attempt; 0 = no retries here (in Go, producer.MaxRetry and worker.Config.MaxRetry read 0 as this default and a negative value as none)"),
		retryMin:    f.Duration("retry-min-delay", worker.DefaultRetryMinDelay, "first retry delay (exponential, jittered)"),
		retryMax:    f.Duration("retry-max-delay", worker.DefaultRetryMaxDelay, "largest retry delay"),
		httpTO:      f.Duration("http-timeout", worker.DefaultHTTPTimeout, "timeout of one provider request"),
		poll:        f.Duration("poll-interval", worker.DefaultPollInterval, "how often the critical fetch loop looks for tasks while idle (asynq's default is 1s); the other loops look every 250ms"),
		shutdown:    f.Duration("shutdown-timeout", 0, "how long SIGTERM waits for in-flight sends", "http-timeout + 5s"),
		retryCodes:  f.String("retry-codes", "", "extra EngageLab error codes to retry, comma-separated (e.g. 5016)"),
		log:         newLogFlags(f, "info"),
		rate:        f.Float64("rate", 0, "most provider sends per second across all workers on this Redis", "off"),
		rateBurst:   f.Int("rate-burst", 0, "sends allowed at once under --rate after an idle spell", "max(1, rate/10)"),
		shards:      shardsFlag(f),
	}
	f.here("servers", strconv.Itoa(runtime.GOMAXPROCS(0)))
	return wf
}

// config checks the flags and builds a worker.Config (credentials excluded).
func (f *workerFlags) config() (worker.Config, error) {
	if *f.concurrency <= 0 {
		return worker.Config{}, usagef("--concurrency: must be positive, got %d", *f.concurrency)
	}
	if *f.servers < 0 {
		return worker.Config{}, usagef("--servers: must not be negative, got %d", *f.servers)
	}
	if *f.retry < 0 {
		return worker.Config{}, usagef("--max-retry: must not be negative, got %d", *f.retry)
	}
	for name, d := range map[string]time.Duration{"retry-min-delay": *f.retryMin, "retry-max-delay": *f.retryMax, "http-timeout": *f.httpTO, "poll-interval": *f.poll} {
		if err := positive(name, d); err != nil {
			return worker.Config{}, err
		}
	}
	if *f.retryMax < *f.retryMin {
		return worker.Config{}, usagef("--retry-max-delay %s is below --retry-min-delay %s", *f.retryMax, *f.retryMin)
	}
	if *f.rate < 0 {
		return worker.Config{}, usagef("--rate: must not be negative, got %g", *f.rate)
	}
	if *f.rateBurst < 0 {
		return worker.Config{}, usagef("--rate-burst: must not be negative, got %d", *f.rateBurst)
	}
	if err := checkShards(*f.shards); err != nil {
		return worker.Config{}, err
	}
	codes, err := parseCodes(*f.retryCodes)
	if err != nil {
		return worker.Config{}, err
	}
	maxRetry := *f.retry
	if maxRetry == 0 {
		maxRetry = -1 // explicit "no retries" is not "default"
	}
	cfg := worker.Config{
		RedisURL: *f.redisURL, Concurrency: *f.concurrency, Servers: *f.servers,
		MaxRetry: maxRetry, RetryMinDelay: *f.retryMin, RetryMaxDelay: *f.retryMax,
		HTTPTimeout: *f.httpTO, PollInterval: *f.poll, ShutdownTimeout: *f.shutdown, RetryCodes: codes,
		RateLimit: *f.rate, RateBurst: *f.rateBurst, Shards: *f.shards,
	}
	return cfg, nil
}

func parseCodes(s string) ([]int, error) {
	var codes []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil || !engagelab.Code(n).Valid() {
			return nil, usagef("--retry-codes: %q is not a 4-digit EngageLab error code", part)
		}
		codes = append(codes, n)
	}
	return codes, nil
}

func (m *Main) workerCmd() *cobra.Command {
	cmd := command("worker", "Run the delivery worker pool until SIGINT/SIGTERM (graceful: in-flight sends finish).",
		`Fetches otp:send tasks from the critical queue, then the bulk queue (strict
priority), and delivers them through EngageLab. Needs ENGAGELAB_DEV_KEY and
ENGAGELAB_DEV_SECRET in the environment (exit 2 without them, before Redis is
touched). ENGAGELAB_BASE_URL overrides the endpoint.

Serves the ops endpoints on --http-addr (default 127.0.0.1:8080): the web UI
on /monitoring/, Prometheus metrics on /metrics, /healthz and /readyz. The UI
can delete and re-run tasks: set OTPQ_UI_USER and OTPQ_UI_PASSWORD in the
environment for basic auth, or pass --ui-read-only; with neither, a
non-loopback --http-addr is refused (exit 2).

Receives EngageLab's delivery status callbacks on POST /callbacks/engagelab
(on --http-addr, outside the UI's basic auth, and on --callback-addr when
set). OTPQ_CALLBACK_USER and OTPQ_CALLBACK_SECRET (environment or _FILE)
verify their X-CALLBACK-ID signature; without them the route is not served.
Weaker modes need a flag and warn at start: --callback-authorization-only
(OTPQ_CALLBACK_AUTHORIZATION alone, a static header) and
--callback-unverified (no credentials, loopback addresses only).`, noArgs, nil)
	f := newWorkerFlags(flagsOf(cmd))
	of := newOpsFlags(flagsOf(cmd))
	cf := newCallbackModeFlags(flagsOf(cmd))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkRedisURL(cmd, *f.redisURL); err != nil {
			return err
		}
		cfg, err := f.config()
		if err != nil {
			return err
		}
		log, err := m.logger(f.log)
		if err != nil {
			return err
		}
		cfg.BaseURL, cfg.DevKey, cfg.DevSecret, err = m.engagelabEnv()
		if err != nil {
			return err
		}
		cfg.Logger = log
		if cfg.Redis, err = m.redisOption(cfg.RedisURL); err != nil {
			return err
		}
		if cfg.PayloadKeys, err = m.payloadKeys(); err != nil {
			return err
		}
		tp, err := m.tracerProvider("worker")
		if err != nil {
			return err
		}
		if tp != nil {
			cfg.TracerProvider = tp
			defer flushTracing(tp, log) // after the worker's shutdown: its last spans go too
		}
		reg := prometheus.NewRegistry()
		cfg.Registerer = reg
		w, err := worker.New(cfg)
		if err != nil {
			return usagef("%v", err)
		}
		return m.runWorker(cmd.Context(), w, cfg, reg, of, cf, log)
	}
	return cmd
}
