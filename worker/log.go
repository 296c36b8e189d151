package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/redact"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/task"
)

// asynqLogger routes asynq's own messages into slog. asynq logs task IDs and
// queue names, never payloads. Its messages about Redis being unreachable
// (every loop of every server logs its own, dozens a second) go to debug:
// redisWatch reports the outage in one line, and its end in another.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.log(slog.LevelInfo, fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any) {
	msg := fmt.Sprint(args...)
	if strings.HasPrefix(msg, "Retry exhausted") {
		// asynq says this of every archived task; the handler has already
		// logged the real reason (permanent code, expiry, bad payload…).
		a.l.Debug(msg, "component", "asynq")
		return
	}
	a.log(slog.LevelWarn, msg)
}
func (a asynqLogger) Error(args ...any) { a.log(slog.LevelError, fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) {
	a.l.Log(context.Background(), slog.LevelError+4, fmt.Sprint(args...), "component", "asynq")
}

func (a asynqLogger) log(level slog.Level, msg string) {
	if redisconn.IsConnFailure(msg) {
		level = slog.LevelDebug
	}
	a.l.Log(context.Background(), level, msg, "component", "asynq")
}

// redisCheckEvery is how often the worker checks that Redis answers, to
// report an outage and its end.
const redisCheckEvery = time.Second

// redisWatch logs one line when Redis stops answering (with where and how
// often it is retried) and one when it answers again.
type redisWatch struct {
	rdb   redis.UniversalClient
	log   *slog.Logger
	addr  string
	every time.Duration
	stop  chan struct{}
	done  chan struct{}
}

func newRedisWatch(rdb redis.UniversalClient, log *slog.Logger, addr string) *redisWatch {
	return &redisWatch{rdb: rdb, log: log, addr: addr, every: redisCheckEvery, stop: make(chan struct{}), done: make(chan struct{})}
}

func (r *redisWatch) start() { go r.run() }

// shutdown stops the checks; safe to call once, after start.
func (r *redisWatch) shutdown() {
	close(r.stop)
	<-r.done
}

func (r *redisWatch) run() {
	defer close(r.done)
	var downSince time.Time
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), max(r.every, 5*time.Second))
		err := r.rdb.Ping(ctx).Err()
		cancel()
		switch {
		case err != nil && downSince.IsZero():
			downSince = time.Now()
			r.log.Warn(fmt.Sprintf("cannot reach Redis at %s: %v; retrying, checked every %s", r.addr, err, r.every),
				"redis", r.addr, "retry_every", r.every.String())
		case err == nil && !downSince.IsZero():
			r.log.Info(fmt.Sprintf("Redis at %s is reachable again", r.addr),
				"redis", r.addr, "down_for", time.Since(downSince).Round(time.Millisecond).String())
			downSince = time.Time{}
		}
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
	}
}

// startAttrs are the fields of the "worker started" line: where it sends
// and from where it fetches (hosts only, never credentials), and how much.
func startAttrs(cfg Config, redisAddr string, servers int) []any {
	provider := "custom sender"
	if cfg.Sender == nil {
		base := cfg.BaseURL
		if base == "" {
			base = engagelab.DefaultBaseURL
		}
		provider = "(unparsable base URL)"
		if u, err := url.Parse(base); err == nil {
			provider = u.Host // no user info, path or query
		}
	}
	rate := "off"
	if cfg.RateLimit > 0 {
		rate = fmt.Sprintf("%g/s across all workers", cfg.RateLimit)
	}
	return []any{
		"provider", provider, "redis", redisAddr, "queues", task.QueueCritical + "," + task.QueueBulk + " (strict priority)",
		"concurrency", cfg.Concurrency, "servers", servers, "rate", rate,
		"max_retry", cfg.MaxRetry, "poll_interval", cfg.PollInterval.String(),
	}
}

// taskLog is the logger of one delivery. Unlike slog.Logger.With, which
// has the handler format the attributes at once, With here only keeps
// them: they are formatted when a line is written at an enabled level,
// so a delivery logged at a disabled level (info, under the usual warn)
// costs no formatting at all.
type taskLog struct {
	l    *slog.Logger
	args []any
}

func newTaskLog(l *slog.Logger, args ...any) taskLog { return taskLog{l: l, args: args} }

// With is t with args added to every line it writes.
func (t taskLog) With(args ...any) taskLog {
	// The full slice expression makes append copy: loggers derived from
	// t never share (and overwrite) each other's attributes.
	return taskLog{l: t.l, args: append(t.args[:len(t.args):len(t.args)], args...)}
}

func (t taskLog) Info(msg string, args ...any)  { t.log(slog.LevelInfo, msg, args) }
func (t taskLog) Warn(msg string, args ...any)  { t.log(slog.LevelWarn, msg, args) }
func (t taskLog) Error(msg string, args ...any) { t.log(slog.LevelError, msg, args) }

func (t taskLog) log(level slog.Level, msg string, args []any) {
	ctx := context.Background()
	if !t.l.Enabled(ctx, level) {
		return
	}
	t.l.Log(ctx, level, msg, append(t.args[:len(t.args):len(t.args)], args...)...)
}

// maskedTo logs a destination masked (redact.Destination), computed only
// when a line is written.
type maskedTo string

// LogValue is the masked destination.
func (m maskedTo) LogValue() slog.Value { return slog.StringValue(redact.Destination(string(m))) }
