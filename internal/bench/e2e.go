package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// ---- providers ------------------------------------------------------------

type provider struct {
	proc *proc
	url  string
}

// startProvider runs a provider process: "stub" (the stub, this binary),
// "tap" (the fake EngageLab behind a timing tap, this binary) or "fake"
// (otpq fake-engagelab).
func (e *env) startProvider(ctx context.Context, kind string, latency time.Duration) (*provider, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var p *proc
	switch kind {
	case "stub":
		p, err = start(e.dir, "stub-provider", nil, e.cfg.Self, "stub-provider", "--addr", addr, "--latency", latency.String())
	case "tap":
		p, err = start(e.dir, "tap-provider", nil, e.cfg.Self, "tap-provider", "--addr", addr, "--latency", latency.String())
	default:
		p, err = start(e.dir, "fake-engagelab", nil, e.cfg.Otpq, "fake-engagelab", "--addr", addr, "--latency", latency.String())
	}
	if err != nil {
		return nil, err
	}
	pr := &provider{proc: p, url: "http://" + addr}
	if err := waitHTTP(ctx, func() error { _, err := pr.delivered(); return err }); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s provider did not start: %w", kind, err)
	}
	return pr, nil
}

func (pr *provider) delivered() (int, error) {
	resp, err := http.Get(pr.url + statsPath)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		Delivered int `json:"delivered"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, err
	}
	return st.Delivered, nil
}

func (pr *provider) reset() error {
	resp, err := http.Post(pr.url+resetPath, "application/json", nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// capacity is a direct concurrent call loop against a provider.
type capacity struct {
	rate                 float64
	providerCPU, selfCPU float64 // cores used by the provider and by the calling loop
	lat                  []time.Duration
}

// capacity calls the provider from conc goroutines through the client the
// otpq worker uses, for d, once every goroutine has made one call (so
// that opening the connections is not counted).
func (e *env) capacity(ctx context.Context, pr *provider, conc int, d time.Duration) (capacity, error) {
	c, err := engagelab.New(engagelab.Config{BaseURL: pr.url, DevKey: devKey, DevSecret: devSecret, MaxConns: conc})
	if err != nil {
		return capacity{}, err
	}
	var n atomic.Int64
	call := func() error {
		i := int(n.Add(1))
		_, err := c.Send(ctx, engagelab.Request{To: dest(i), Code: "123456", Template: engagelab.Template{ID: "bench"}})
		return err
	}
	var firstErr atomic.Value
	var mu sync.Mutex
	var lat []time.Duration
	var warm, wg sync.WaitGroup
	begin := make(chan struct{})
	var until time.Time
	for range conc {
		warm.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := call()
			warm.Done()
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			<-begin
			var mine []time.Duration
			for s := time.Now(); s.Before(until); s = time.Now() {
				if err := call(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				mine = append(mine, time.Since(s))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	warm.Wait()
	p0, s0, t0 := cpuTime(pr.proc.cmd.Process.Pid), cpuTime(os.Getpid()), time.Now()
	until = t0.Add(d)
	close(begin)
	wg.Wait()
	el := time.Since(t0).Seconds()
	if err, _ := firstErr.Load().(error); err != nil {
		return capacity{}, fmt.Errorf("direct loop: %w", err)
	}
	slices.Sort(lat)
	return capacity{rate: float64(len(lat)) / el, lat: lat,
		providerCPU: (cpuTime(pr.proc.cmd.Process.Pid) - p0).Seconds() / el, selfCPU: (cpuTime(os.Getpid()) - s0).Seconds() / el}, nil
}

// providers measures each provider's own capacity with a direct loop.
func (e *env) providers(ctx context.Context) error {
	g := e.rep.group("2. Provider capacity: a direct concurrent call loop, no queue", "requests/s")
	d := e.dur(3*time.Second, 2*time.Second)
	for _, c := range []struct {
		kind    string
		latency time.Duration
		conc    int
		what    string
	}{
		{"stub", 0, 100, "stub provider, instant"},
		{"stub", 50 * time.Millisecond, 1000, "stub provider, 50 ms"},
		{"fake", 0, 100, "`otpq fake-engagelab` (the correctness fake), instant"},
	} {
		pr, err := e.startProvider(ctx, c.kind, c.latency)
		if err != nil {
			return err
		}
		res, err := e.capacity(ctx, pr, c.conc, d)
		pr.proc.stop()
		if err != nil {
			return err
		}
		note := fmt.Sprintf("cores used: provider %.2f, calling loop %.2f; call p50 %s, p99 %s", res.providerCPU, res.selfCPU,
			fmtDur(percentile(res.lat, 50)), fmtDur(percentile(res.lat, 99)))
		g.row(fmt.Sprintf("%s, %d concurrent callers", c.what, c.conc), fmtRate(res.rate), "engagelab.Client loop", "", "", "", note)
		if c.kind == "stub" {
			e.rep.stubCapacity[c.latency] = res.rate
		} else {
			e.rep.fakeCapacity = res.rate
		}
	}
	return nil
}

// ---- 3. end-to-end delivered/s -----------------------------------------

// side is one side of a comparison: the otpq worker with its defaults, or
// the baseline with a number of asynq servers.
type side struct {
	name    string
	servers int // baseline only
	// otpq only: --shards when above 1, and the Redis URL when not the
	// benchmark's single redis-server (the cluster's).
	shards   int
	redisURL string
	extra    []string // more worker flags
	// bin replaces Config.Otpq (the tracing case's notrace build).
	bin string
	// otlp, when set, traces the otpq worker at 100% (always_on) to this
	// OTLP/HTTP endpoint through the OTEL_* variables.
	otlp string
}

// shardedSide is the otpq worker at its defaults with --shards n.
func shardedSide(n int) side {
	return side{name: fmt.Sprintf("otpq worker (defaults, --shards %d)", n), shards: n}
}

var (
	otpqSide  = side{name: "otpq worker (defaults)"}
	base1Side = side{name: "hand-written asynq handler, 1 server", servers: 1}
	base2Side = side{name: "hand-written asynq handler, 2 servers", servers: 2}
)

// workerEnv is a worker's provider settings.
func workerEnv(baseURL string) []string {
	return []string{"ENGAGELAB_DEV_KEY=" + devKey, "ENGAGELAB_DEV_SECRET=" + devSecret, "ENGAGELAB_BASE_URL=" + baseURL}
}

// worker starts an otpq or baseline worker process.
func (e *env) worker(s side, baseURL string, concurrency int) (*proc, error) {
	envv := workerEnv(baseURL)
	if s.servers > 0 {
		return start(e.dir, "baseline-worker", envv, e.cfg.Self, "baseline-worker",
			"--redis-url", e.url, "--concurrency", strconv.Itoa(concurrency), "--servers", strconv.Itoa(s.servers))
	}
	bin := e.cfg.Otpq
	if s.bin != "" {
		bin = s.bin
	}
	if s.otlp != "" {
		envv = append(envv, "OTEL_EXPORTER_OTLP_ENDPOINT="+s.otlp, "OTEL_TRACES_SAMPLER=always_on", "OTEL_SERVICE_NAME=otpq-bench")
	}
	return start(e.dir, "otpq-worker", envv, bin, e.workerArgs(s, concurrency)...)
}

// workerArgs are the otpq worker's arguments as a user deploys it: its
// defaults, the ops server off, warn logs.
func (e *env) workerArgs(s side, concurrency int) []string {
	args := []string{"worker", "--redis-url", cmp.Or(s.redisURL, e.url),
		"--concurrency", strconv.Itoa(concurrency), "--log-level", "warn", "--http-addr", ""}
	if s.shards > 1 {
		args = append(args, "--shards", strconv.Itoa(s.shards))
	}
	return append(args, s.extra...)
}

type e2eResult struct {
	rate float64
	rss  int64
	// Cores used over the window by the worker, redis-server and the
	// provider, and by the whole machine.
	workerCPU, redisCPU, providerCPU, machine float64
	// work is Redis's work over the window, for delivered deliveries.
	work      redisWork
	delivered int
}

// machineBusy is the machine's busy CPU time so far (all processes).
func machineBusy() time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100
}

// cpuSnap is the CPU time used so far by the processes of a run.
type cpuSnap struct{ worker, redis, provider, machine time.Duration }

func (e *env) cpuSnap(w *proc, pr *provider) cpuSnap {
	return cpuSnap{cpuTime(w.cmd.Process.Pid), cpuTime(e.redis.Pid()), cpuTime(pr.proc.cmd.Process.Pid), machineBusy()}
}

// e2e preloads n tasks into queue, starts a worker and measures delivered/s,
// CPU and Redis work between 10% and 90% delivered (or 10s after 10%).
func (e *env) e2e(ctx context.Context, pr *provider, s side, queue string, n, concurrency int) (e2eResult, error) {
	if err := e.flush(ctx); err != nil {
		return e2eResult{}, err
	}
	if err := pr.reset(); err != nil {
		return e2eResult{}, err
	}
	if err := e.preload(ctx, n, queue); err != nil {
		return e2eResult{}, err
	}
	w, err := e.worker(s, pr.url, concurrency)
	if err != nil {
		return e2eResult{}, err
	}
	var t0, t1 time.Time
	var d0, d1 int
	var c0, c1 cpuSnap
	var w0, w1 redisWork
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		d, err := pr.delivered()
		if err != nil {
			continue
		}
		now := time.Now()
		if t0.IsZero() && d >= n/10 {
			t0, d0, c0 = now, d, e.cpuSnap(w, pr)
			if w0, err = e.redisWork(ctx); err != nil {
				break
			}
			continue
		}
		if !t0.IsZero() && (d >= n*9/10 || now.Sub(t0) >= 10*time.Second) {
			c1 = e.cpuSnap(w, pr)
			if w1, err = e.redisWork(ctx); err != nil {
				break
			}
			t1, d1 = now, d
			break
		}
	}
	res := e2eResult{}
	if el := t1.Sub(t0).Seconds(); !t1.IsZero() && el > 0 {
		res.rate = float64(d1-d0) / el
		res.workerCPU = (c1.worker - c0.worker).Seconds() / el
		res.redisCPU = (c1.redis - c0.redis).Seconds() / el
		res.providerCPU = (c1.provider - c0.provider).Seconds() / el
		res.machine = (c1.machine - c0.machine).Seconds() / el
		res.work, res.delivered = w1.since(w0), d1-d0
	}
	res.rss = w.stop()
	if res.rate == 0 {
		out, _ := os.ReadFile(w.log)
		return res, fmt.Errorf("%s delivered nothing measurable (log: %s)", s.name, lastLines(string(out), 10))
	}
	return res, nil
}

// median is the run with the median rate.
func median(rs []e2eResult) e2eResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b e2eResult) int { return int(a.rate - b.rate) })
	return s[len(s)/2]
}

func (r e2eResult) cores() string {
	return fmt.Sprintf("worker %.2f, redis %.2f, stub %.2f (machine %.2f of %d)", r.workerCPU, r.redisCPU, r.providerCPU, r.machine, runtime.NumCPU())
}

// cpuPerDelivery is the worker's and redis-server's CPU per delivery.
func (r e2eResult) cpuPerDelivery() (worker, redis time.Duration) {
	if r.rate <= 0 {
		return 0, 0
	}
	return time.Duration(r.workerCPU / r.rate * float64(time.Second)), time.Duration(r.redisCPU / r.rate * float64(time.Second))
}

// e2eCase is one end-to-end comparison.
type e2eCase struct {
	name        string
	queue       string
	latency     time.Duration
	concurrency int
	tasks       int
	sides       []side
	profile     bool // profile the worker in process on this case's load
}

func (e *env) endToEnd(ctx context.Context) error {
	for _, latency := range []time.Duration{0, 50 * time.Millisecond} {
		for _, queue := range []string{producer.QueueCritical, producer.QueueBulk} {
			stub := "instant stub"
			if latency > 0 {
				stub = fmtDur(latency) + " stub"
			}
			g := e.rep.group(fmt.Sprintf("3. End-to-end delivered/s, %s queue, %s", queue, stub), "delivered/s")
			for _, conc := range []int{100, 1000} {
				c := e2eCase{name: fmt.Sprintf("%s, %s queue, concurrency %d", stub, queue, conc), queue: queue, latency: latency,
					concurrency: conc, tasks: e.n(20000), sides: []side{otpqSide, base1Side},
					profile: queue == producer.QueueBulk && (latency == 0) == (conc == 100)}
				if latency == 0 && conc == 100 && queue == producer.QueueBulk {
					c.sides = append(c.sides, base2Side)
				}
				if err := e.e2eCase(ctx, g, c); err != nil {
					return err
				}
			}
		}
	}
	return e.flush(ctx)
}

// e2eCase runs three interleaved rounds of every side of c (other load on
// a shared machine moves single runs by ±20%), keeps each side's median
// run, and profiles the otpq worker in process on the same load.
func (e *env) e2eCase(ctx context.Context, g *group, c e2eCase) error {
	pr, err := e.startProvider(ctx, "stub", c.latency)
	if err != nil {
		return err
	}
	defer pr.proc.stop()
	const rounds = 3
	runs := make([][]e2eResult, len(c.sides))
	for i := range rounds {
		for j, s := range c.sides {
			e.logf("  %s: %s (%d/%d)", c.name, s.name, i+1, rounds)
			r, err := e.e2e(ctx, pr, s, c.queue, c.tasks, c.concurrency)
			if err != nil {
				return err
			}
			runs[j] = append(runs[j], r)
		}
	}
	res := e2eCaseResult{name: c.name, queue: c.queue, latency: c.latency, concurrency: c.concurrency}
	o := median(runs[0])
	for j, s := range c.sides[1:] {
		b := median(runs[j+1])
		var pairs []string
		for i := range rounds {
			pairs = append(pairs, ratio(runs[0][i].rate, runs[j+1][i].rate))
		}
		g.row(c.name+" vs "+strings.TrimPrefix(s.name, "hand-written asynq handler, "), fmtRate(o.rate), otpqSide.name, fmtRate(b.rate), s.name,
			ratio(o.rate, b.rate), fmt.Sprintf("median of %d interleaved pairs (pair ratios %s); %s; cores used: otpq %s; baseline %s",
				rounds, strings.Join(pairs, ", "), perDelivery(o, b), o.cores(), b.cores()))
		res.baselines = append(res.baselines, b)
		res.baseNames = append(res.baseNames, s.name)
	}
	res.otpq = o
	if c.profile {
		e.logf("  %s: otpq worker in process, CPU profile", c.name)
		if res.profile, err = e.profileWorker(ctx, pr, c.tasks, c.concurrency); err != nil {
			return err
		}
	}
	e.rep.e2e = append(e.rep.e2e, res)
	if c.concurrency == 1000 && c.latency > 0 && c.queue == producer.QueueBulk {
		e.rep.group5().row(fmt.Sprintf("worker peak RSS, %s", c.name), fmtBytes(o.rss), "otpq worker", fmtBytes(res.baselines[0].rss),
			res.baseNames[0], ratio(float64(res.baselines[0].rss), float64(o.rss)), "")
	}
	return nil
}

// profileWorker runs worker.New with its defaults (at concurrency) in this
// process against n preloaded tasks for 5s (scaled) under the CPU profiler
// and returns pprof's top, sorted by cumulative time.
func (e *env) profileWorker(ctx context.Context, pr *provider, n, concurrency int) (string, error) {
	if err := e.flush(ctx); err != nil {
		return "", err
	}
	if err := e.preload(ctx, n, producer.QueueBulk); err != nil {
		return "", err
	}
	w, err := worker.New(worker.Config{RedisURL: e.url, BaseURL: pr.url, DevKey: devKey, DevSecret: devSecret, Concurrency: concurrency,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		return "", err
	}
	top, err := e.profile(fmt.Sprintf("worker-%d", concurrency), func() error {
		if err := w.Start(); err != nil {
			return err
		}
		time.Sleep(e.dur(5*time.Second, time.Second))
		w.Shutdown()
		return nil
	}, "-cum")
	if err != nil {
		return "", err
	}
	return top, e.flush(ctx)
}

// perDelivery is the CPU (worker, redis-server) and Redis work (commands,
// round trips) per delivery of the otpq run o and the baseline run b.
func perDelivery(o, b e2eResult) string {
	ow, or := o.cpuPerDelivery()
	bw, br := b.cpuPerDelivery()
	oc, ot := o.work.per(float64(o.delivered))
	bc, bt := b.work.per(float64(b.delivered))
	return fmt.Sprintf("per delivery: worker CPU %s vs %s (%s), redis-server CPU %s vs %s (%s), Redis commands %.1f vs %.1f, round trips %.2f vs %.2f",
		fmtDur(ow), fmtDur(bw), ratio(float64(bw), float64(ow)), fmtDur(or), fmtDur(br), ratio(float64(br), float64(or)), oc, bc, ot, bt)
}
