package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/otpq/otpq/internal/bench"
	"github.com/otpq/otpq/internal/redisconn"
)

func (m *Main) benchCmd() *ffcli.Command {
	fs := flag.NewFlagSet("otpq bench", flag.ContinueOnError)
	out := fs.String("out", "", "write the Markdown report to this file (default: standard output)")
	scale := fs.Float64("scale", 1, "multiply every workload size (0.05 for a quick smoke run)")
	goBench := fs.String("go-bench", "", "file holding `go test -bench` output to include in the report")
	redisServer := fs.String("redis-server", "redis-server", "redis-server executable; the benchmark starts its own on a free port")
	cmd := m.newCommand("bench", "otpq bench [--out BENCHMARKS.md] [--scale F]",
		"Load benchmark: otpq against a hand-written asynq baseline, written as Markdown.",
		`Starts a dedicated redis-server on a free port (never touching another
Redis), the fake EngageLab and the workers in their own processes, and
measures enqueue rate, end-to-end delivered/s, idle latency, critical
latency during a bulk drain and resource use, each beside a baseline
measured in the same run. make bench runs it and writes BENCHMARKS.md.`, fs,
		func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("bench takes no arguments, got %q", args)
			}
			if *scale <= 0 {
				return usagef("--scale: must be positive, got %v", *scale)
			}
			cfg := bench.Config{RedisServer: *redisServer, Scale: *scale, Log: m.Stderr,
				Command: "otpq bench " + strings.Join(m.args[1:], " ")}
			if *goBench != "" {
				data, err := os.ReadFile(*goBench)
				if err != nil {
					return usagef("--go-bench: %v", err)
				}
				cfg.GoBench = string(data)
			}
			if c := m.Getenv("OTPQ_BENCH_COMMAND"); c != "" {
				cfg.Command = c
			}
			report, err := bench.Run(ctx, cfg)
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			if *out == "" {
				_, err = fmt.Fprint(m.Stdout, report)
				return err
			}
			return os.WriteFile(*out, []byte(report), 0o644)
		})
	cmd.Subcommands = []*ffcli.Command{m.baselineWorkerCmd(), m.tapProviderCmd()}
	return cmd
}

func (m *Main) baselineWorkerCmd() *ffcli.Command {
	fs := flag.NewFlagSet("otpq bench baseline-worker", flag.ContinueOnError)
	redisURL := fs.String("redis-url", redisconn.DefaultURL, "Redis URL")
	conc := fs.Int("concurrency", 100, "asynq concurrency")
	return m.newCommand("baseline-worker", "otpq bench baseline-worker [--redis-url …] [--concurrency N]",
		"The benchmark's baseline: a minimal hand-written asynq handler with asynq's defaults.",
		`Reads ENGAGELAB_BASE_URL, ENGAGELAB_DEV_KEY and ENGAGELAB_DEV_SECRET. Runs until
SIGINT/SIGTERM. For benchmarks only.`, fs,
		func(ctx context.Context, args []string) error {
			base, key, secret, err := m.engagelabEnv()
			if err != nil {
				return err
			}
			return bench.RunBaselineWorker(ctx, *redisURL, base, key, secret, *conc)
		})
}

func (m *Main) tapProviderCmd() *ffcli.Command {
	fs := flag.NewFlagSet("otpq bench tap-provider", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8091", "listen address")
	latency := fs.Duration("latency", 0, "latency added to every answer")
	return m.newCommand("tap-provider", "otpq bench tap-provider [--addr …] [--latency D]",
		"The fake EngageLab with a timing tap for latency benchmarks.",
		`Serves the fake EngageLab and records, for each request stamped by the
benchmark, the time from enqueue to arrival (`+bench.TapPath+`). For
benchmarks only.`, fs,
		func(ctx context.Context, args []string) error {
			fmt.Fprintf(m.Stderr, "tap provider on http://%s\n", *addr)
			return bench.RunTapProvider(ctx, *addr, *latency)
		})
}
