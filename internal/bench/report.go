package bench

import (
	"cmp"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

type row struct {
	name, otpq, otpqWhat, base, baseWhat, ratio, note string
}

type group struct {
	title, unit string
	rows        []row
}

func (g *group) row(name, otpq, otpqWhat, base, baseWhat, ratio, note string) {
	g.rows = append(g.rows, row{name, otpq, otpqWhat, base, baseWhat, ratio, note})
}

// e2eCaseResult is one end-to-end case: the otpq worker's median run, each
// baseline's, and the in-process worker profile.
type e2eCaseResult struct {
	name        string
	queue       string
	latency     time.Duration
	concurrency int
	otpq        e2eResult
	baselines   []e2eResult
	baseNames   []string
	profile     string
}

// idleResult is the otpq worker's idle cost and latency at a shard count.
type idleResult struct {
	shards   int
	cmds     float64 // Redis commands/s while idle
	top      string  // the commands most called while idle, per second
	p50, p99 time.Duration
}

type report struct {
	cfg          Config
	date         time.Time
	groups       []*group
	g5           *group
	redisVersion string
	took         time.Duration
	ran          map[string]bool // the groups run (Config.Only)
	cluster      []clusterResult // the cluster drains (section 8)
	clusterTasks int
	streamXAdd   time.Duration // redis-server CPU per receipt-stream XADD
	streamAdds   int
	fleet        []fleetResult // the idle fleet (section 9)

	stubCapacity map[time.Duration]float64 // by stub latency
	fakeCapacity float64
	e2e          []e2eCaseResult

	bulkSummary, bulkProfile  string
	bulkBound                 string // where the guarded bulk run's time went (bulkRun.bound)
	bulkRows, bulkProfileRows int
	bulkRate, bulkRateNoGuard float64
	bulkRSS                   int64
	idle                      []idleResult // the otpq worker's, at 1 shard and at Config.Shards
	criticalP99               time.Duration

	tracingReport // section 11 (tracing.go)
}

func newReport(cfg Config) *report {
	return &report{cfg: cfg, date: time.Now().UTC(), stubCapacity: map[time.Duration]float64{}, ran: map[string]bool{}}
}

func (r *report) group(title, unit string) *group {
	g := &group{title: title, unit: unit}
	r.groups = append(r.groups, g)
	return g
}

// group5 is the resources group, filled from the other groups' runs.
func (r *report) group5() *group {
	if r.g5 == nil {
		r.g5 = &group{title: "7. Resources"}
	}
	return r.g5
}

func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				cpu = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(data), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
	}
	kernel := ""
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("%s, %d cores (GOMAXPROCS %d)%s%s, %s %s/%s", cpu, runtime.NumCPU(), runtime.GOMAXPROCS(0), mem, kernel,
		runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// e2eCase returns the case of a stub latency, queue and concurrency.
func (r *report) e2eCase(latency time.Duration, queue string, concurrency int) (e2eCaseResult, bool) {
	for _, c := range r.e2e {
		if c.latency == latency && c.queue == queue && c.concurrency == concurrency {
			return c, true
		}
	}
	return e2eCaseResult{}, false
}

// target is one line of the Targets table.
type target struct {
	figure, goal, measured string
	met                    bool
	bound                  string // what bounds it, shown when missed
}

func (r *report) targets() []target {
	var ts []target
	for _, t := range []struct {
		latency     time.Duration
		queue       string
		concurrency int
		goal        float64
	}{
		{0, "critical", 100, 0.9}, {0, "bulk", 100, 0.85},
		{50 * time.Millisecond, "critical", 1000, 0.95}, {50 * time.Millisecond, "bulk", 1000, 0.95},
	} {
		c, ok := r.e2eCase(t.latency, t.queue, t.concurrency)
		if !ok || len(c.baselines) == 0 {
			continue
		}
		o, b := c.otpq, c.baselines[0]
		ts = append(ts, target{
			figure: fmt.Sprintf("e2e delivered/s, %s: `otpq worker` binary vs hand-written handler (1 server, same concurrency)", c.name),
			goal:   fmt.Sprintf("≥ %g×", t.goal), measured: fmt.Sprintf("%s (%s vs %s)", ratio(o.rate, b.rate), fmtRate(o.rate), fmtRate(b.rate)),
			met: o.rate >= t.goal*b.rate, bound: r.e2eBound(c, b),
		})
		if t.latency > 0 {
			continue
		}
		ow, or := o.cpuPerDelivery()
		bw, br := b.cpuPerDelivery()
		ts = append(ts,
			target{figure: fmt.Sprintf("worker CPU per delivery, %s, vs the handler's", c.name), goal: "≤ 1.2×",
				measured: fmt.Sprintf("%s vs %s (%.2f×)", fmtDur(ow), fmtDur(bw), float64(ow)/float64(max(bw, 1))),
				met:      bw > 0 && float64(ow) <= 1.2*float64(bw), bound: r.e2eBound(c, b)},
			target{figure: fmt.Sprintf("redis-server CPU per delivery, %s, vs the handler's", c.name), goal: "≤ 1.3×",
				measured: fmt.Sprintf("%s vs %s (%.2f×)", fmtDur(or), fmtDur(br), float64(or)/float64(max(br, 1))),
				met:      br > 0 && float64(or) <= 1.3*float64(br), bound: r.e2eBound(c, b)},
		)
	}
	if c, ok := r.e2eCase(0, "bulk", 100); ok && len(c.baselines) > 0 {
		oc, ot := c.otpq.work.per(float64(c.otpq.delivered))
		bc, bt := c.baselines[0].work.per(float64(c.baselines[0].delivered))
		ts = append(ts, target{
			figure: "Redis commands per delivered task (INFO commandstats, script calls included; instant stub run)",
			goal:   "≤ baseline + 2", measured: fmt.Sprintf("otpq %.1f (%.1f round trips), baseline %.1f (%.1f round trips)", oc, ot, bc, bt),
			met: oc <= bc+2,
			bound: fmt.Sprintf("Per delivery, otpq: %s; baseline: %s (section 6).", c.otpq.work.top(12, float64(c.otpq.delivered)),
				c.baselines[0].work.top(12, float64(c.baselines[0].delivered))),
		})
	}
	for _, i := range r.idle {
		at := ""
		if i.shards > 1 {
			at = fmt.Sprintf(", %d shards", i.shards)
		}
		ts = append(ts,
			target{figure: "idle Redis commands/s per worker process (no tasks, " + idleWindow.String() + at + ")", goal: "≤ 400",
				measured: fmt.Sprintf("%.0f", i.cmds), met: i.cmds <= 400,
				bound: "The idle worker's commands/s: " + i.top + " (section 4): each fetch loop's poll and asynq's background work."},
			target{figure: "idle enqueue → provider request p99 (10 sends/s" + at + ")", goal: "≤ 25 ms",
				measured: fmt.Sprintf("p99 %s (p50 %s)", fmtDur(i.p99), fmtDur(i.p50)), met: i.p99 > 0 && i.p99 <= 25*time.Millisecond,
				bound: "Section 4 gives the direct call's latency beside it; the rest is the wait for a fetch loop's next poll (or, sharded, for the wake-up)."})
	}
	ts = append(ts, r.clusterTargets()...)
	if r.ran["enqueue"] {
		ts = append(ts,
			target{figure: fmt.Sprintf("bulk enqueue, %s rows, guard on (`otpq bulk`)", fmtInt(r.bulkRows)), goal: "≥ 50,000 rows/s",
				measured: fmtRate(r.bulkRate) + fmt.Sprintf(" (guard off: %s)", fmtRate(r.bulkRateNoGuard)), met: r.bulkRate >= 50000,
				bound: cmp.Or(r.bulkBound, "Section 1 gives `otpq bulk`'s and redis-server's CPU time over the run; the bulk CPU profile below shows the client's share.")},
			target{figure: fmt.Sprintf("bulk peak RSS, %s rows", fmtInt(r.bulkRows)), goal: "< 100 MB", measured: fmtBytes(r.bulkRSS),
				met: r.bulkRSS > 0 && r.bulkRSS < 100<<20, bound: "The bulk CPU profile below (allocation shows there too)."},
		)
	}
	if r.ran["critical"] {
		ts = append(ts, target{figure: "critical p99 during a bulk drain", goal: "≤ 50 ms", measured: fmtDur(r.criticalP99),
			met: r.criticalP99 > 0 && r.criticalP99 <= 50*time.Millisecond, bound: "Section 5."})
	}
	ts = append(ts, r.tracingTargets()...)
	return ts
}

// e2eBound says, from what the run measured, where an end-to-end case's
// time goes: cores used, CPU and Redis work per delivery on both sides,
// and the profile to read.
func (r *report) e2eBound(c e2eCaseResult, b e2eResult) string {
	o := c.otpq
	ow, or := o.cpuPerDelivery()
	bw, br := b.cpuPerDelivery()
	oc, ot := o.work.per(float64(o.delivered))
	bc, bt := b.work.per(float64(b.delivered))
	capNote := ""
	switch sc := r.stubCapacity[c.latency]; {
	case sc >= 3*max(o.rate, b.rate):
		capNote = fmt.Sprintf(" The stub alone serves %s (section 2), %s the otpq rate: it is not the bound.", fmtRate(sc), ratio(sc, o.rate))
	case sc > 0:
		capNote = fmt.Sprintf(" **The stub alone served only %s in this run (section 2), %s the otpq rate: it may be a bound here (other load on the machine?); do not trust this row.**",
			fmtRate(sc), ratio(sc, o.rate))
	}
	return fmt.Sprintf("CPU per delivery: otpq worker %s + redis-server %s, baseline %s + %s; cores used: otpq run %s, baseline run %s. "+
		"Redis work per delivery: otpq %.1f commands in %.1f round trips, baseline %.1f in %.1f (section 6).%s "+
		"Where the worker's CPU goes: the profile \"otpq worker, %s\" below.",
		fmtDur(ow), fmtDur(or), fmtDur(bw), fmtDur(br), o.cores(), b.cores(), oc, ot, bc, bt, capNote, c.name)
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# otpq benchmarks\n\n")
	w("Generated by `%s` — do not edit by hand.\n\n", r.cfg.Command)
	if r.cfg.Scale != 1 {
		w("**Scaled run (--scale %g): every workload is %g× its full size; the figures are a smoke test of the benchmark, not results. "+
			"A BENCHMARKS.md like this is a placeholder until `make bench` runs on a quiet machine.**\n\n", r.cfg.Scale, r.cfg.Scale)
	}
	if len(r.cfg.Only) > 0 {
		w("**Partial run (--only %s): the other groups did not run; a BENCHMARKS.md like this is not a `make bench` result.**\n\n", strings.Join(r.cfg.Only, ","))
	}
	w("- **Date:** %s (the run took %s)\n", r.date.Format("2006-01-02 15:04 MST"), r.took.Round(time.Second))
	w("- **Machine:** %s\n", machine())
	w("- **Setup:** everything on this one machine, each in its own process: a dedicated `redis-server` %s (own port, no persistence) started by the benchmark; "+
		"the otpq binary under test (`otpq worker`, `otpq bulk`, `otpq fake-engagelab`); and the benchmark's own binary `otpq-bench` "+
		"(the baseline worker, the stub provider, and for latency runs the fake EngageLab behind a timing tap).%s\n", r.redisVersion, r.clusterSetup())
	w("- **Provider:** throughput runs use a stub (`otpq-bench stub-provider`) that answers `{\"message_id\",\"send_channel\"}` at once or after a fixed 50 ms and checks nothing; " +
		"section 2 measures its capacity with a direct concurrent loop, which must be far above both workers. `otpq fake-engagelab` stays the correctness fake (validation, error rules, callbacks); its capacity is in section 2 too.\n")
	w("- **Baselines, measured in the same run:** enqueue — asynq's `Client.Enqueue`; delivery — a minimal hand-written asynq handler (`otpq-bench baseline-worker`: `asynq.NewServer` with asynq's defaults, 1s poll, `http.DefaultClient`, queues critical:10 bulk:1 weighted) doing the same POST, on 1 server and on 2 servers sharing the concurrency (as the otpq worker shares it between its fetch loops).\n")
	w("- **End-to-end method:** the `otpq worker` binary runs in its own process as a user deploys it (`--concurrency N --http-addr '' --log-level warn`, every other flag at its default), against the hand-written handler in its own process at the same concurrency; each case (queue × stub latency × concurrency) runs three interleaved pairs (otpq, then each baseline) on %s tasks preloaded into the case's queue and keeps each side's median; a run is measured from 10%% to 90%% delivered (at most 10 s). The in-process profiles (section Profiles) are diagnosis only: `worker.New` in the benchmark's own process, at error level.\n", r.e2eTasks())
	w("- **Redis work:** commands per delivery are the window's `INFO commandstats` calls (a script's inner commands count, as well as the EVALSHA; the benchmark's own INFO is left out) ÷ deliveries; round trips are `INFO stats` `total_reads_processed` (Redis reads a client's socket once per request it receives, so a lone command and a pipeline each count one) ÷ deliveries.\n")
	w("- **CPU:** cores used are each process's CPU time (/proc) over the window ÷ the window; *machine* is the whole machine's busy cores: what exceeds the three processes' sum is other load, which moves single runs by up to ±20%%.\n")
	w("- **Ratios** are otpq ÷ baseline for rates and baseline ÷ otpq for latencies, sizes and costs, so > 1× always means otpq is better.\n\n")

	ts := r.targets()
	w("## Targets\n\n| figure | target | measured | met |\n| --- | --- | --- | --- |\n")
	for _, t := range ts {
		met := "yes"
		if !t.met {
			met = "**no** (see below)"
		}
		w("| %s | %s | %s | %s |\n", t.figure, t.goal, t.measured, met)
	}
	w("\n")
	var missed []target
	for _, t := range ts {
		if !t.met {
			missed = append(missed, t)
		}
	}
	if len(missed) > 0 {
		w("### What bounds the missed targets\n\n")
		for _, t := range missed {
			w("- **%s: %s, target %s.** %s\n", t.figure, t.measured, t.goal, t.bound)
		}
		w("\n")
	}

	for _, g := range r.groups {
		r.writeGroup(w, g)
		if strings.HasPrefix(g.title, "5.") {
			r.writeRedisWork(w)
		}
	}
	if len(r.group5().rows) > 0 {
		r.writeGroup(w, r.group5())
	}
	r.writeCluster(w)
	r.writeTracing(w)
	if r.bulkSummary != "" {
		w("`otpq bulk` summary of the %s-row run:\n\n```\n%s\n```\n\n", fmtInt(r.bulkRows), r.bulkSummary)
	}
	w("## Profiles\n\n")
	if r.bulkProfile != "" {
		w("### Bulk enqueue (internal/bulk + producer, guard on)\n\n`go tool pprof -top` of the same code `otpq bulk` runs, run inside `otpq-bench` on a %s-row file (the profiling stays out of the otpq binary):\n\n```\n%s\n```\n\n",
			fmtInt(r.bulkProfileRows), r.bulkProfile)
	}
	for _, c := range r.e2e {
		if c.profile == "" {
			continue
		}
		w("### otpq worker, %s\n\n`worker.New` with its defaults (at this concurrency) run inside `otpq-bench` on a preloaded bulk queue against the same stub; `go tool pprof -top -cum`:\n\n```\n%s\n```\n\n", c.name, c.profile)
	}
	if r.cfg.GoBench != "" {
		w("## Go benchmarks\n\n```\n%s\n```\n", strings.TrimSpace(r.cfg.GoBench))
	}
	return b.String()
}

// clusterSetup says, when the cluster group ran, where it ran.
func (r *report) clusterSetup() string {
	if len(r.cluster) == 0 {
		return ""
	}
	return fmt.Sprintf(" Section 8 runs on a Redis Cluster of %d masters of its own (the same redis-server in cluster mode, on this machine too).", len(r.cluster[0].cmds))
}

func (r *report) e2eTasks() string {
	if len(r.e2e) == 0 {
		return "the"
	}
	return fmtInt(max(1, int(20000*r.cfg.Scale)))
}

func (r *report) writeGroup(w func(string, ...any), g *group) {
	w("## %s\n\n", g.title)
	w("| case | otpq | baseline | ratio | notes |\n| --- | --- | --- | --- | --- |\n")
	for _, x := range g.rows {
		base := x.base
		if base != "" {
			base += " (" + x.baseWhat + ")"
		}
		w("| %s | %s (%s) | %s | %s | %s |\n", x.name, x.otpq, x.otpqWhat, base, x.ratio, x.note)
	}
	w("\n")
}

// writeRedisWork is section 6: Redis work and CPU per delivery, per side,
// from the end-to-end median runs.
func (r *report) writeRedisWork(w func(string, ...any)) {
	if len(r.e2e) == 0 {
		return
	}
	w("## 6. Redis work and CPU per delivery (end-to-end median runs)\n\n")
	w("| case | worker | delivered/s | commands / delivery | round trips / delivery | CPU / delivery: worker + redis | cores used | commands per delivery, most called first |\n")
	w("| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, c := range r.e2e {
		sides := append([]e2eResult{c.otpq}, c.baselines...)
		names := append([]string{otpqSide.name}, c.baseNames...)
		for i, s := range sides {
			cmds, trips := s.work.per(float64(s.delivered))
			wc, rc := s.cpuPerDelivery()
			w("| %s | %s | %s | %.1f | %.1f | %s + %s | %s | %s |\n", c.name, names[i], fmtRate(s.rate), cmds, trips, fmtDur(wc), fmtDur(rc),
				s.cores(), s.work.top(12, float64(s.delivered)))
		}
	}
	w("\n")
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtRate(r float64) string { return fmtInt(int(r+0.5)) + "/s" }

func fmtInt(n int) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "—"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return d.Round(time.Second).String()
	}
}
