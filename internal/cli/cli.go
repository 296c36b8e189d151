// Package cli implements the otpq command. main hands its arguments, streams
// and environment to Main.Run, so end-to-end tests drive the same code users do.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/internal/shard"
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

	// buildInfo reads the binary's build information; default
	// debug.ReadBuildInfo (tests set it).
	buildInfo func() (*debug.BuildInfo, bool)
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
	if m.Stdout == nil {
		m.Stdout = io.Discard
	}
	if m.Stderr == nil {
		m.Stderr = io.Discard
	}
	root := m.root()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(m.Stderr, "otpq:", ee.msg)
		}
		return ee.code
	case errors.Is(err, shard.ErrMismatch): // configuration: the message says what to change
		fmt.Fprintln(m.Stderr, "otpq:", err)
		return ExitUsage
	case errors.As(err, &ue):
		fmt.Fprintln(m.Stderr, "otpq:", err)
		if cmd != nil {
			fmt.Fprintf(m.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		return ExitUsage
	default:
		fmt.Fprintln(m.Stderr, "otpq:", err)
		return ExitFailure
	}
}

// rootLong is the top-level help text; the variables read only from the
// environment and the exit codes are listed after it.
const rootLong = `otpq queues OTP sends in Redis (asynq) and delivers them with a pool of
workers through the EngageLab Custom OTP Code API.

Every flag can also be set with the OTPQ_ environment variable its help
names (--concurrency ↔ OTPQ_CONCURRENCY); the command line wins. Secrets
never go in flags (ps shows them to every user of the machine).`

func (m *Main) root() *cobra.Command {
	root := &cobra.Command{
		Use:     "otpq",
		Short:   "Queue and deliver one-time-password codes through EngageLab.",
		Long:    rootLong,
		Version: m.version(),
		// Bare otpq prints this help on standard output and exits 0, as
		// kubectl, gh and docker do.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				msg := fmt.Sprintf("unknown command %q", args[0])
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
				}
				return usagef("%s", msg)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return m.flagsFromEnv(cmd)
		},
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetIn(m.Stdin)
	root.SetOut(m.Stdout)
	root.SetErr(m.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{msg: err.Error()}
	})
	root.SetHelpFunc(func(cmd *cobra.Command, _ []string) {
		fmt.Fprint(cmd.OutOrStdout(), helpText(cmd, true))
	})
	root.SetUsageFunc(func(cmd *cobra.Command) error {
		_, err := fmt.Fprint(cmd.OutOrStderr(), helpText(cmd, true))
		return err
	})
	root.SetVersionTemplate("{{.Version}}\n")
	root.SuggestionsMinimumDistance = 2
	root.AddCommand(
		m.workerCmd(), m.sendCmd(), m.statusCmd(), m.bulkCmd(), m.apiCmd(), m.devCmd(),
		m.fakeCmd(), m.healthcheckCmd(), m.versionCmd(), m.docsCmd(), m.shardsCmd(),
	)
	// cobra adds these when it executes; adding them now makes the tree
	// complete for the README generator and the tests that walk it.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

// command builds a subcommand: fixed arguments checked with a usage error,
// flags registered by the caller through flagsOf.
func command(use, short, long string, args cobra.PositionalArgs, run func(*cobra.Command, []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Long: long, Args: args, RunE: run}
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.Name(), args)
	}
	return nil
}

// exactArgs wants n arguments, described by what.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes exactly %s, got %d arguments", cmd.Name(), what, len(args))
		}
		return nil
	}
}

// redisFlag registers --redis-url.
func redisFlag(f flagSet) *string {
	return f.String("redis-url", redisconn.DefaultURL, "Redis URL: redis://[user:pass@]host:port/db (ACL user and password), rediss://… (TLS), redis-sentinel://[user:pass@]s1:26379,s2:26379[/db]?master=NAME, redis-cluster://[user:pass@]n1:6379,n2:6379 (seed nodes); a password belongs in OTPQ_REDIS_URL, not on the command line")
}

// shardsFlag registers --shards.
func shardsFlag(f flagSet) *int {
	return f.Int("shards", 1, "queues per class (critical, bulk) spread over a Redis Cluster's masters; every process on one Redis must use the count it records (the first one records it; otpq shards N changes it): see Scaling past one Redis")
}

// checkShards refuses a shard count out of range.
func checkShards(n int) error {
	if n < 1 || n > shard.MaxShards {
		return usagef("--shards: must be from 1 to %d, got %d", shard.MaxShards, n)
	}
	return nil
}

// checkRedisURL refuses a password given on the command line, where every
// user of the machine can read it in ps.
func checkRedisURL(cmd *cobra.Command, raw string) error {
	if !cmd.Flags().Changed("redis-url") {
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

// newLogFlags registers the log flags with level as --log-level's default,
// so that help and the README show each command's real default.
func newLogFlags(f flagSet, level string) logFlags {
	return logFlags{
		level:  f.String("log-level", level, "log level: debug, info, warn, error"),
		format: f.String("log-format", "auto", "log format: json, text, or auto (text on a terminal, JSON otherwise)"),
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
// printed with the standard log package by default) to slog, so that a
// worker logging JSON does not get plain-text lines in its stream. Install
// it with redis.SetLogger. Messages about Redis being unreachable go to
// debug: go-redis repeats them for every connection it tries, while the
// worker reports an outage once (and send, status and bulk in their
// error). Its messages name addresses, never passwords.
type RedisLogger struct {
	// Logger receives the messages; nil means slog.Default().
	Logger *slog.Logger
}

// Printf logs one go-redis message.
func (r RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	l := r.Logger
	if l == nil {
		l = slog.Default()
	}
	msg := strings.TrimSpace(fmt.Sprintf(format, v...))
	level := slog.LevelWarn
	if redisconn.IsConnFailure(msg) {
		level = slog.LevelDebug
	}
	l.Log(ctx, level, msg, "component", "go-redis")
}

// pinger is what reach needs of a producer.
type pinger interface{ Ping(context.Context) error }

// reach checks that Redis answers before a command uses it, so that an
// outage reads "cannot reach Redis at HOST:PORT: why", once, rather than
// the first failing call's internals (the destination guard, asynq's
// UNKNOWN codes).
func reach(ctx context.Context, p pinger, opt asynq.RedisConnOpt) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := p.Ping(ctx); err != nil {
		return fmt.Errorf("cannot reach Redis at %s: %w", redisconn.Addr(opt), err)
	}
	return nil
}

// reachOr is err, unless Redis stopped answering meanwhile: then it says so.
func reachOr(ctx context.Context, p pinger, opt asynq.RedisConnOpt, err error) error {
	if rerr := reach(ctx, p, opt); rerr != nil {
		return rerr
	}
	return err
}
