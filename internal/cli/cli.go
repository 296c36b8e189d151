// Package cli implements the otpq command. main hands its arguments, streams
// and environment to Main.Run, so end-to-end tests drive the same code users do.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"
	"golang.org/x/term"

	"github.com/otpq/otpq/internal/redisconn"
)

// Exit codes, stable for scripts.
const (
	ExitOK        = 0
	ExitFailure   = 1 // a runtime failure: Redis unreachable, provider down…
	ExitUsage     = 2 // bad flags, bad input, missing configuration; nothing was done
	ExitDuplicate = 3 // send: the deduplication key was already queued (its ID is printed)
	ExitRejected  = 4 // bulk: some rows were rejected, the others were enqueued
	ExitLimited   = 5 // send: the destination reached its send limit (per-destination guard); nothing enqueued
)

// Main is the otpq command with its environment.
type Main struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Getenv reads the environment; secrets come only from here.
	Getenv func(string) string
	// OnLogger, when set, receives the logger a command builds from its
	// --log-level and --log-format flags. The otpq binary makes it the
	// process's default logger, so that what libraries log through slog's
	// default (go-redis, see RedisLogger) comes out in the same format.
	// Tests leave it nil: no process-wide state changes.
	OnLogger func(*slog.Logger)

	args []string // the command line, to tell flags from environment
}

// usageError is a mistake in the invocation: reported with ExitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError carries a specific exit code with its message (may be empty).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// Run executes the command line args (without the program name) and returns
// the process exit code.
func (m *Main) Run(ctx context.Context, args []string) int {
	if m.Getenv == nil {
		m.Getenv = os.Getenv
	}
	if m.Stdin == nil {
		m.Stdin = os.Stdin
	}
	m.args = args
	root := m.root()
	err := root.ParseAndRun(ctx, args)
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(m.Stderr, "otpq:", ee.msg)
		}
		return ee.code
	case errors.As(err, &ue), errors.Is(err, ffcli.ErrUnparsed), isFlagError(err):
		fmt.Fprintln(m.Stderr, "otpq:", err)
		return ExitUsage
	default:
		fmt.Fprintln(m.Stderr, "otpq:", err)
		return ExitFailure
	}
}

func isFlagError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "flag provided but not defined") || strings.Contains(s, "invalid value") ||
		strings.Contains(s, "flag needs an argument") || strings.Contains(s, "unknown subcommand") ||
		strings.Contains(s, "error parsing commandline arguments")
}

func (m *Main) root() *ffcli.Command {
	fs := flag.NewFlagSet("otpq", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	return &ffcli.Command{
		Name:       "otpq",
		ShortUsage: "otpq <subcommand> [flags]",
		ShortHelp:  "Queue and deliver one-time-password codes through EngageLab.",
		LongHelp: `otpq queues OTP sends in Redis (asynq) and delivers them with a pool of
workers through the EngageLab Custom OTP Code API. Every flag can also be set
with an OTPQ_ environment variable (--concurrency ↔ OTPQ_CONCURRENCY).
Credentials come only from the environment: ENGAGELAB_DEV_KEY,
ENGAGELAB_DEV_SECRET, ENGAGELAB_BASE_URL. Other secrets too:
OTPQ_PAYLOAD_KEY or OTPQ_PAYLOAD_KEY_FILE (kid:base64key[,…]: codes stored
encrypted), OTPQ_REDIS_PASSWORD_FILE, OTPQ_REDIS_CA_FILE.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or input (nothing done),
3 duplicate send, 4 bulk rows rejected, 5 destination send limit reached.`,
		FlagSet: fs,
		Subcommands: []*ffcli.Command{
			m.workerCmd(), m.sendCmd(), m.statusCmd(), m.fakeCmd(), m.devCmd(), m.healthcheckCmd(), m.bulkCmd(), m.benchCmd(),
		},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("unknown subcommand %q (see otpq -h)", args[0])
			}
			return flag.ErrHelp
		},
	}
}

// newCommand builds a subcommand whose flags also read OTPQ_* variables.
func (m *Main) newCommand(name, usage, short, long string, fs *flag.FlagSet, exec func(context.Context, []string) error) *ffcli.Command {
	fs.SetOutput(m.Stderr)
	return &ffcli.Command{
		Name: name, ShortUsage: usage, ShortHelp: short, LongHelp: long, FlagSet: fs,
		Exec: func(ctx context.Context, args []string) error {
			if err := m.flagsFromEnv(fs); err != nil {
				return err
			}
			return exec(ctx, args)
		},
	}
}

// envName is the environment variable of a flag: --retry-min-delay ↔
// OTPQ_RETRY_MIN_DELAY.
func envName(flagName string) string {
	return "OTPQ_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// flagsFromEnv gives every flag not set on the command line the value of its
// OTPQ_ variable. It reads through m.Getenv (not os.Getenv, as ff's own
// option does), so tests and embedding programs control the environment.
func (m *Main) flagsFromEnv(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		key := envName(f.Name)
		v := m.Getenv(key)
		if v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = usagef("%s: invalid value for --%s: %v", key, f.Name, e)
		}
	})
	return err
}

// redisFlag registers --redis-url.
func redisFlag(fs *flag.FlagSet) *string {
	return fs.String("redis-url", redisconn.DefaultURL, "Redis URL: redis://[user:pass@]host:port/db, rediss:// for TLS, redis-sentinel://…; a password belongs in OTPQ_REDIS_URL, not on the command line")
}

// checkRedisURL refuses a password given on the command line, where every
// user of the machine can read it in ps.
func (m *Main) checkRedisURL(raw string) error {
	onCommandLine := false
	for _, a := range m.args {
		if strings.HasPrefix(strings.TrimLeft(a, "-"), "redis-url") {
			onCommandLine = true
		}
	}
	if !onCommandLine {
		return nil
	}
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			return usagef("--redis-url: a password on the command line is visible in ps; set OTPQ_REDIS_URL in the environment instead")
		}
	}
	return nil
}

// logFlags registers --log-level and --log-format.
type logFlags struct{ level, format *string }

func newLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		level:  fs.String("log-level", "info", "log level: debug, info, warn, error"),
		format: fs.String("log-format", "auto", "log format: json, text, or auto (text on a terminal, JSON otherwise)"),
	}
}

func (m *Main) logger(lf logFlags) (*slog.Logger, error) {
	l, err := m.newLogger(lf)
	if err == nil && m.OnLogger != nil {
		m.OnLogger(l)
	}
	return l, err
}

func (m *Main) newLogger(lf logFlags) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(*lf.level)); err != nil {
		return nil, usagef("--log-level: %q is not debug, info, warn or error", *lf.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch *lf.format {
	case "json":
		return slog.New(slog.NewJSONHandler(m.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(m.Stderr, opts)), nil
	case "auto":
		if f, ok := m.Stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return slog.New(slog.NewTextHandler(m.Stderr, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(m.Stderr, opts)), nil
	}
	return nil, usagef("--log-format: %q is not json, text or auto", *lf.format)
}

// durationList is a positive duration flag check.
func positive(name string, d time.Duration) error {
	if d <= 0 {
		return usagef("--%s: must be positive, got %s", name, d)
	}
	return nil
}

// RedisLogger carries go-redis's own messages (dial failures, pool errors,
// printed with the standard log package by default) to slog.Default() as
// warnings, so that a worker logging JSON does not get plain-text lines in
// its stream when Redis goes away. Install it with redis.SetLogger. Its
// messages name addresses, never passwords.
type RedisLogger struct{}

// Printf logs one go-redis message.
func (RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "go-redis")
}
