package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/otpq/otpq/internal/shard"
)

// Exit codes of Main.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Main is the otpq-bench command: with no subcommand it runs the benchmark;
// the subcommands are the processes the benchmark starts itself
// (baseline-worker, stub-provider, tap-provider). It returns the exit code.
// The EngageLab credentials of baseline-worker come from getenv
// (ENGAGELAB_BASE_URL, ENGAGELAB_DEV_KEY, ENGAGELAB_DEV_SECRET), as the otpq
// worker reads them.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	sub := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	var err error
	switch sub {
	case "":
		err = runMain(ctx, args, stdout, stderr, getenv)
	case "baseline-worker":
		err = baselineMain(ctx, args, stderr, getenv)
	case "stub-provider":
		err = providerMain(ctx, args, stderr, "stub-provider", RunStubProvider)
	case "tap-provider":
		err = providerMain(ctx, args, stderr, "tap-provider", RunTapProvider)
	default:
		err = usageError(fmt.Sprintf("unknown subcommand %q (otpq-bench -h)", sub))
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "otpq-bench:", err)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "otpq-bench:", err)
		return exitFailure
	}
}

type usageError string

func (e usageError) Error() string { return string(e) }

func newFlags(name string, stderr io.Writer, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nFlags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError(err.Error())
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Sprintf("%s takes no arguments, got %q", fs.Name(), fs.Args()))
	}
	return nil
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlags("otpq-bench", stderr, `usage: otpq-bench [--otpq bin/otpq] [--otpq-notrace bin/otpq-notrace] [--out BENCHMARKS.md] [--scale F] [--only GROUPS] [--shards N]

Load benchmark of otpq against a hand-written asynq baseline, written as
Markdown (make bench writes BENCHMARKS.md). Starts its own redis-server on a
free port (never touching another Redis), a stub provider, the otpq and
baseline workers in their own processes, and measures enqueue rate,
end-to-end delivered/s, Redis commands and round trips per delivery, idle
cost and latency (at 1 shard and at --shards), critical latency during a
bulk drain, each master's share of a drain on a 3-master Redis Cluster of
its own, the idle cost of 1 to 8 worker processes, a capacity model
computed from the run, and the cost of tracing (off, and on at 100%)
against an otpq built without it (--otpq-notrace). --only runs some groups
(a partial report), e.g. --only tracing.`)
	otpq := fs.String("otpq", "", "the otpq executable under test (default: otpq beside this executable)")
	out := fs.String("out", "", "write the Markdown report to this file (default: standard output)")
	scale := fs.Float64("scale", 1, "multiply every workload size (0.05 for a quick smoke run)")
	goBench := fs.String("go-bench", "", "file holding `go test -bench` output to include in the report")
	redisServer := fs.String("redis-server", "redis-server", "redis-server executable")
	notrace := fs.String("otpq-notrace", "", "otpq built with -tags otpq_notrace, for the tracing group (default: the --otpq path + \"-notrace\" when it exists; else that group is skipped)")
	only := fs.String("only", "", "run only these groups, comma-separated: "+strings.Join(Groups, ", ")+" (default all)")
	shards := fs.Int("shards", DefaultShards, "shard count of the sharded cases (idle at N shards, the cluster drain, the idle fleet)")
	if err := parse(fs, args); err != nil {
		return err
	}
	var groups []string
	if *only != "" {
		groups = strings.Split(*only, ",")
		if _, err := selected(groups); err != nil {
			return usageError("--only: " + err.Error())
		}
	}
	if *shards < 2 || *shards > shard.MaxShards {
		return usageError(fmt.Sprintf("--shards: must be from 2 to %d, got %d", shard.MaxShards, *shards))
	}
	if *scale <= 0 {
		return usageError(fmt.Sprintf("--scale: must be positive, got %v", *scale))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if *otpq == "" {
		*otpq = filepath.Join(filepath.Dir(self), "otpq")
	}
	if st, err := os.Stat(*otpq); err != nil || st.IsDir() {
		return usageError(fmt.Sprintf("--otpq: %s is not an executable (go build -o bin/otpq ./cmd/otpq)", *otpq))
	}
	if *notrace == "" {
		if st, err := os.Stat(*otpq + "-notrace"); err == nil && !st.IsDir() {
			*notrace = *otpq + "-notrace"
		}
	} else if st, err := os.Stat(*notrace); err != nil || st.IsDir() {
		return usageError(fmt.Sprintf("--otpq-notrace: %s is not an executable (go build -tags otpq_notrace -o bin/otpq-notrace ./cmd/otpq)", *notrace))
	}
	cfg := Config{Otpq: *otpq, Self: self, RedisServer: *redisServer, Scale: *scale, Log: stderr,
		Only: groups, Shards: *shards, OtpqNoTrace: *notrace,
		Command: "otpq-bench " + strings.Join(args, " ")}
	if c := getenv("OTPQ_BENCH_COMMAND"); c != "" {
		cfg.Command = c
	}
	if *goBench != "" {
		data, err := os.ReadFile(*goBench)
		if err != nil {
			return usageError(fmt.Sprintf("--go-bench: %v", err))
		}
		cfg.GoBench = string(data)
	}
	report, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = fmt.Fprint(stdout, report)
		return err
	}
	return os.WriteFile(*out, []byte(report), 0o644)
}

func baselineMain(ctx context.Context, args []string, stderr io.Writer, getenv func(string) string) error {
	fs := newFlags("baseline-worker", stderr, `usage: otpq-bench baseline-worker --redis-url URL [--concurrency N] [--servers N]

The benchmark's baseline: a minimal hand-written asynq handler with asynq's
defaults. Reads ENGAGELAB_BASE_URL, ENGAGELAB_DEV_KEY, ENGAGELAB_DEV_SECRET.
Runs until SIGINT/SIGTERM.`)
	cfg := BaselineConfig{BaseURL: getenv("ENGAGELAB_BASE_URL"), DevKey: getenv("ENGAGELAB_DEV_KEY"), DevSecret: getenv("ENGAGELAB_DEV_SECRET")}
	fs.StringVar(&cfg.RedisURL, "redis-url", "redis://127.0.0.1:6379/0", "Redis URL")
	fs.IntVar(&cfg.Concurrency, "concurrency", 100, "total asynq concurrency")
	fs.IntVar(&cfg.Servers, "servers", 1, "asynq servers in the process, sharing --concurrency")
	if err := parse(fs, args); err != nil {
		return err
	}
	if cfg.BaseURL == "" {
		return usageError("ENGAGELAB_BASE_URL: must be set")
	}
	return RunBaselineWorker(ctx, cfg)
}

func providerMain(ctx context.Context, args []string, stderr io.Writer, name string, run func(context.Context, string, time.Duration) error) error {
	fs := newFlags(name, stderr, fmt.Sprintf(`usage: otpq-bench %s [--addr HOST:PORT] [--latency D]

stub-provider answers every POST /v1/codes at once (or after --latency) and
counts them (GET /_fake/stats); tap-provider is the fake EngageLab behind a
timing tap that records enqueue → provider latency (%s). Runs until
SIGINT/SIGTERM.`, name, TapPath))
	addr := fs.String("addr", "127.0.0.1:8091", "listen address")
	latency := fs.Duration("latency", 0, "latency added to every answer")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%s on http://%s\n", name, *addr)
	return run(ctx, *addr, *latency)
}
