// Package bench is otpq's load benchmark (cmd/otpq-bench, make bench): it
// runs otpq and a baseline side by side against a dedicated redis-server
// and a stub provider in their own processes, and writes BENCHMARKS.md.
//
// The baseline, measured in the same run, is what a team would write by
// hand: asynq's client for enqueueing, and a minimal asynq handler doing
// the same HTTP POST with asynq's defaults (1s poll interval,
// http.DefaultClient) for delivery, on one asynq server and on two.
//
// The benchmark lives in its own binary, not in otpq: the otpq binary
// under test runs the workers, `otpq bulk` and the fake EngageLab; this
// binary runs the baseline worker and the stub and tap providers as its
// own subcommands (see Main).
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/redisserver"
	"github.com/otpq/otpq/producer"
)

// Config configures Run. Zero values mean the documented defaults.
type Config struct {
	// Otpq is the otpq executable under test, run as worker, bulk loader
	// and fake EngageLab. Required.
	Otpq string
	// Self is the benchmark's own executable (cmd/otpq-bench), run as
	// baseline worker, stub and tap provider; default the running
	// executable.
	Self string
	// RedisServer is the redis-server executable; default "redis-server".
	RedisServer string
	// Command is the command line recorded in the report.
	Command string
	// GoBench is `go test -bench` output to include in the report.
	GoBench string
	// Scale multiplies every workload size; default 1. Use 0.05 for a
	// smoke run.
	Scale float64
	// Log receives progress lines; nil discards.
	Log io.Writer
	// Only names the groups to run (see Groups); empty runs them all.
	Only []string
	// OtpqNoTrace is the otpq executable built with -tags otpq_notrace,
	// the tracing case's "no tracing code at all"; without it the case is
	// skipped (its section says so).
	OtpqNoTrace string
	// Shards is the shard count of the sharded cases (idle at N shards,
	// the cluster drain, the idle fleet); default DefaultShards.
	Shards int
}

// DefaultShards is the shard count of the sharded cases by default.
const DefaultShards = 16

// Groups are the benchmark's groups, in the order Run runs them; a name
// is what Config.Only (otpq-bench --only) takes.
var Groups = []string{"enqueue", "providers", "e2e", "idle", "critical", "cluster", "fleet", "tracing"}

// selected is the groups of only in Groups order, all of them when only
// is empty, or an error naming an unknown group.
func selected(only []string) ([]string, error) {
	if len(only) == 0 {
		return Groups, nil
	}
	want := map[string]bool{}
	for _, g := range only {
		if !slices.Contains(Groups, g) {
			return nil, fmt.Errorf("unknown group %q (groups: %s)", g, strings.Join(Groups, ", "))
		}
		want[g] = true
	}
	var out []string
	for _, g := range Groups {
		if want[g] {
			out = append(out, g)
		}
	}
	return out, nil
}

const (
	devKey, devSecret = "bench", "bench-secret"
)

type env struct {
	cfg   Config
	dir   string
	rdb   *redis.Client
	redis *redisserver.Server
	url   string
	log   io.Writer
	rep   *report
}

// Run runs every benchmark group and returns the report in Markdown.
func Run(ctx context.Context, cfg Config) (string, error) {
	if cfg.Otpq == "" {
		return "", fmt.Errorf("bench: Config.Otpq: the otpq executable is required")
	}
	if cfg.Self == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", err
		}
		cfg.Self = exe
	}
	if cfg.Scale <= 0 {
		cfg.Scale = 1
	}
	if cfg.Shards <= 1 {
		cfg.Shards = DefaultShards
	}
	groups, err := selected(cfg.Only)
	if err != nil {
		return "", fmt.Errorf("bench: Config.Only: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	dir, err := os.MkdirTemp("", "otpq-bench-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	rs, err := redisserver.Start(ctx, redisserver.Config{Bin: cfg.RedisServer, Dir: filepath.Join(dir, "redis"),
		Args: []string{"--maxclients", "10000"}})
	if err != nil {
		return "", err
	}
	defer rs.Stop()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	e := &env{cfg: cfg, dir: dir, rdb: rdb, redis: rs, url: rs.URL(), log: cfg.Log, rep: newReport(cfg)}
	info, _ := rdb.InfoMap(ctx, "server").Result()
	e.rep.redisVersion = info["Server"]["redis_version"]

	run := map[string]func(context.Context) error{"enqueue": e.enqueue, "providers": e.providers, "e2e": e.endToEnd,
		"idle": e.idle, "critical": e.critical, "cluster": e.cluster, "fleet": e.fleet,
		"tracing": e.tracingOverhead}
	start := time.Now()
	for i, g := range groups {
		e.logf("%d/%d %s", i+1, len(groups), g)
		if err := run[g](ctx); err != nil {
			return "", fmt.Errorf("%s: %w", g, err)
		}
		e.rep.ran[g] = true
	}
	e.rep.took = time.Since(start)
	return e.rep.markdown(), nil
}

func (e *env) n(base int) int { return max(1, int(float64(base)*e.cfg.Scale)) }

// dur scales a measuring window, keeping at least min.
func (e *env) dur(base, least time.Duration) time.Duration {
	return max(least, time.Duration(float64(base)*e.cfg.Scale))
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (e *env) flush(ctx context.Context) error { return e.rdb.FlushAll(ctx).Err() }

func (e *env) usedMemory(ctx context.Context) int64 {
	info, err := e.rdb.InfoMap(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(info["Memory"]["used_memory"], 10, 64)
	return n
}

func dest(i int) string { return fmt.Sprintf("+86%011d", 13000000000+i) }

func benchRequest(i int) producer.Request {
	return producer.Request{To: dest(i), Code: fmt.Sprintf("%06d", i%1000000), TemplateID: "bench", Language: "en",
		Params: map[string]string{"name": "bench"}}
}

// preload enqueues n tasks on queue through SendBatch, guard off.
func (e *env) preload(ctx context.Context, n int, queue string) error {
	return preloadWith(ctx, producer.Config{RedisURL: e.url}, n, queue)
}

// preloadWith is preload through a producer of cfg (its Redis and shards).
func preloadWith(ctx context.Context, cfg producer.Config, n int, queue string) error {
	cfg.DestinationLimit = -1
	p, err := producer.New(cfg)
	if err != nil {
		return err
	}
	defer p.Close()
	const size = 5000
	for start := 0; start < n; start += size {
		reqs := make([]producer.Request, 0, size)
		for i := start; i < min(n, start+size); i++ {
			reqs = append(reqs, benchRequest(i))
		}
		for _, r := range p.SendBatch(ctx, reqs, producer.Queue(queue), producer.ExpiresIn(time.Hour)) {
			if r.Err != nil {
				return r.Err
			}
		}
	}
	return nil
}

// profile runs fn in this process under the CPU profiler and returns
// `go tool pprof -top` of it (extra: more pprof flags).
func (e *env) profile(name string, fn func() error, extra ...string) (string, error) {
	path := filepath.Join(e.dir, name+".cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return "", err
	}
	err = fn()
	pprof.StopCPUProfile()
	if err != nil {
		return "", err
	}
	return pprofTop(e.cfg.Self, path, extra...), nil
}

func pprofTop(bin, prof string, extra ...string) string {
	if _, err := os.Stat(prof); err != nil {
		return ""
	}
	args := append(append([]string{"tool", "pprof", "-top", "-nodecount", "30"}, extra...), bin, prof)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
