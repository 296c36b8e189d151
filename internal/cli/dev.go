package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/ops"
	"github.com/otpq/otpq/producer"
	"github.com/otpq/otpq/worker"
)

// devSample is one of the sends otpq dev makes to show each outcome.
type devSample struct {
	label string
	to    string
	rule  *fakeengagelab.Rule
	// life is the fake-engagelab --callback lifecycle after TO= (default:
	// delivered after 200 ms).
	life string
}

var devSamples = []devSample{
	{label: "delivered", to: "+8613800138000"},
	{label: "retried, then delivered", to: "+8613800138001", rule: &fakeengagelab.Rule{Status: 500, Code: 1000, Times: 1}},
	{label: "dead-lettered (5013 blacklisted)", to: "+8613800138002", rule: &fakeengagelab.Rule{Status: 400, Code: 5013}},
	{label: "delivered by e-mail", to: "support@example.com"},
	{label: "accepted, failed on the handset (4001)", to: "+8613800138003", life: "fail:4001"},
	{label: "SMS after WhatsApp failed", to: "+8613800138004", life: "fallback"},
}

// devCallbackUser is the username of otpq dev's callbacks: the demo
// verifies signatures like production, with a secret drawn for each run.
const devCallbackUser = "dev"

func (m *Main) devCmd() *cobra.Command {
	cmd := command("dev", "Zero-setup demo: embedded Redis, fake provider, worker, sample sends, web UI.",
		`Starts an embedded Redis (miniredis), the fake EngageLab, and a worker, makes
a few sample sends and prints how each ended: delivered, retried then
delivered, dead-lettered with the provider's reason. Also serves the web UI
and metrics (--http-addr, default 127.0.0.1:8080, or a free port when that
is taken) and prints their addresses. Runs until Ctrl-C
(or, with --once, until the samples finish). Nothing to install or configure.
It logs errors only (--log-level to see more): its terminal shows every
outcome of every send, with its delivery receipt.

`+devScripted(), noArgs, nil)
	f := flagsOf(cmd)
	once := f.Bool("once", false, "exit after the sample sends have finished")
	apiAddr := apiAddrFlag(f)
	of := newOpsFlags(f)
	// Errors only: the terminal shows every outcome (retries and dead
	// letters too), and log lines would only repeat them, raw, around it.
	log := newLogFlags(f, "error")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		logger, err := m.logger(log)
		if err != nil {
			return err
		}
		return m.runDev(cmd.Context(), logger, *once, of, *apiAddr)
	}
	return cmd
}

// Dev mode's own intervals, gentler than the worker's defaults (a 10 ms
// critical poll, whose latency matters in production): on the embedded
// Redis every poll is a Lua script run by the demo's own process, and a
// demo that idles at a tenth of a core is a demo people stop.
const (
	devPollInterval     = 100 * time.Millisecond
	devIdlePollInterval = time.Second
	// devWatchInterval is how often otpq dev looks for new outcomes of
	// the user's sends.
	devWatchInterval = 500 * time.Millisecond
	// devReceiptWait is how long otpq dev waits for the receipt of a
	// completed send before it stops looking.
	devReceiptWait = 2 * time.Minute
)

// devEnv is what otpq dev runs: the embedded Redis, the fake provider, the
// worker, the ops server with the callback route, and a producer.
type devEnv struct {
	redisAddr string
	redisURL  string
	fakeAddr  string
	uiAddr    string // "" without a web UI
	reg       *prometheus.Registry
	producer  *producer.Producer
	// tp traces the worker, the producer, the receipts and the dev API
	// when the OTEL_* variables turn tracing on; nil otherwise.
	tp trace.TracerProvider
	// stops are run in reverse order by close.
	stops []func()
}

func (m *Main) runDev(ctx context.Context, logger *slog.Logger, once bool, of opsFlags, apiAddr string) error {
	env, err := m.startDev(logger, once, of)
	if err != nil {
		return err
	}
	defer env.close()
	out := &lockedWriter{w: m.Stdout}
	env.banner(out, once)
	samples, err := env.runSamples(ctx, out)
	if err != nil || once {
		return err
	}
	stopAPI, err := env.invite(out, apiAddr, logger)
	if err != nil {
		return err
	}
	defer stopAPI()
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: env.redisAddr})
	defer ins.Close()
	watchOutcomes(ctx, ins, env.producer, out, samples, devWatchInterval)
	fmt.Fprintln(out, "otpq dev: stopped; the embedded Redis and its tasks are gone.")
	return nil
}

// startDev starts the embedded Redis, the fake provider, the callback
// receiver, the ops server (not with once: its link would be dead when
// read) and the worker, and opens a producer. On error, what started is
// stopped again.
func (m *Main) startDev(logger *slog.Logger, once bool, of opsFlags) (_ *devEnv, err error) {
	env := &devEnv{reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			env.close()
		}
	}()
	// Traced as the other commands are, by the OTEL_* variables; flushed
	// last, once the worker and the receiver have ended their spans.
	tp, err := m.tracerProvider("dev")
	if err != nil {
		return nil, err
	}
	if tp != nil {
		env.tp = tp
		env.stops = append(env.stops, func() { flushTracing(tp, logger) })
	}
	mr, err := miniredis.Run()
	if err != nil {
		return nil, fmt.Errorf("dev: embedded redis: %w", err)
	}
	env.stops = append(env.stops, mr.Close)
	env.redisAddr, env.redisURL = mr.Addr(), "redis://"+mr.Addr()+"/0"
	keys, err := m.devPayloadKeys()
	if err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("dev: fake provider: %w", err)
	}
	env.stops = append(env.stops, func() { _ = ln.Close() })
	env.fakeAddr = ln.Addr().String()
	w, err := worker.New(worker.Config{
		RedisURL: env.redisURL, BaseURL: "http://" + env.fakeAddr, DevKey: "dev", DevSecret: "dev-secret",
		Concurrency: 10, Servers: 1, PollInterval: devPollInterval, IdlePollInterval: devIdlePollInterval,
		HTTPTimeout: 5 * time.Second, Logger: logger, Registerer: env.reg, PayloadKeys: keys, TracerProvider: env.tp,
	})
	if err != nil {
		return nil, err
	}
	opsAddr := *of.addr
	if once {
		opsAddr = "" // no UI with --once: the callbacks get their own listener
	}
	cb, stopCallbacks, err := m.startDevCallbacks(opsAddr, *of.callbackAddr, env.redisURL, env.reg, logger, env.tp)
	if err != nil {
		return nil, err
	}
	env.stops = append(env.stops, stopCallbacks)
	if !once {
		uiAddr, stopOps, err := m.startDevOps(of, env.redisURL, env.reg, w.Ready, logger, cb.handler)
		if err != nil {
			return nil, err
		}
		env.uiAddr = uiAddr
		env.stops = append(env.stops, stopOps)
	}
	fake, err := newDevFake(cb.url(env.uiAddr), cb.creds)
	if err != nil {
		return nil, err
	}
	env.stops = append(env.stops, fake.Close)
	fakeCtx, stopFake := context.WithCancel(context.Background())
	env.stops = append(env.stops, stopFake)
	go fakeServeConfig().Serve(fakeCtx, ln, fake)
	if err := w.Start(); err != nil {
		return nil, err
	}
	env.stops = append(env.stops, w.Shutdown)
	if env.producer, err = producer.New(producer.Config{RedisURL: env.redisURL, PayloadKeys: keys, TracerProvider: env.tp}); err != nil {
		return nil, err
	}
	env.stops = append(env.stops, func() { _ = env.producer.Close() })
	return env, nil
}

// devPayloadKeys is otpq dev's payload key: OTPQ_PAYLOAD_KEY (or its file)
// when set, else a key drawn for this run. Codes are stored sealed, as in
// production, and the worker has no missing key to warn about: that
// warning is for deployments, not for a demo's own defaults. Sends from
// other processes without the key still work (their codes are stored in
// plaintext, which the worker reads too).
func (m *Main) devPayloadKeys() (*producer.Keys, error) {
	keys, err := m.payloadKeys()
	if err != nil || keys != nil {
		return keys, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("dev: payload key: %w", err)
	}
	return producer.ParseKeys("dev:" + base64.StdEncoding.EncodeToString(b))
}

// close stops what startDev started, in reverse order.
func (env *devEnv) close() {
	for i := len(env.stops) - 1; i >= 0; i-- {
		env.stops[i]()
	}
	env.stops = nil
}

// banner is what otpq dev prints first: where things are, and which
// destinations the fake provider scripts.
func (env *devEnv) banner(out io.Writer, once bool) {
	fmt.Fprintf(out, "otpq dev: embedded Redis at %s, fake EngageLab at http://%s\n", env.redisURL, env.fakeAddr)
	switch {
	case once:
		fmt.Fprintln(out, "Web UI:  not served with --once (it would close when the samples finish); run otpq dev without --once to browse it")
	case env.uiAddr != "":
		fmt.Fprintf(out, "Web UI:  http://%s%s\nMetrics: http://%s/metrics  (health: /healthz, /readyz)\n", env.uiAddr, ops.UIPath, env.uiAddr)
	}
	if env.tp != nil {
		fmt.Fprintln(out, "Tracing: on (OTEL_* variables); every send's spans go out over OTLP/HTTP, flushed when otpq dev stops")
	}
	fmt.Fprint(out, devScripted())
}

// runSamples sends the sample codes and prints how each ended, in the
// words of otpq status (the receipt's verdict when it arrives within 3 s);
// it returns the samples' task IDs.
func (env *devEnv) runSamples(ctx context.Context, out io.Writer) (map[string]bool, error) {
	p := env.producer
	fmt.Fprintf(out, "Sending %d sample codes…\n", len(devSamples))
	ids := make([]string, len(devSamples))
	samples := map[string]bool{}
	for i, s := range devSamples {
		id, err := p.Send(ctx, producer.Request{To: s.to, Code: fmt.Sprintf("%06d", 100000+i*111111), TemplateID: "demo-login"})
		if err != nil {
			return nil, fmt.Errorf("dev: send sample: %w", err)
		}
		ids[i] = id
		samples[id] = true
	}
	var receiptsBy context.Context // one deadline for every receipt, from the first finished task
	for i, s := range devSamples {
		st, err := waitFinal(ctx, p, ids[i], 30*time.Second)
		if err != nil {
			return nil, err
		}
		if st.State == producer.StateCompleted {
			if receiptsBy == nil {
				var cancel context.CancelFunc
				receiptsBy, cancel = context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
			}
			if waitReceipt(receiptsBy, p, ids[i]) != nil {
				if withReceipt, err := p.Status(ctx, ids[i]); err == nil {
					st = withReceipt
				}
			}
		}
		fmt.Fprintln(out, sampleLine(s.label, st))
	}
	return samples, nil
}

// invite tells how to send more (otpq send, or curl against the dev API,
// which it starts) and returns a func that stops the API.
func (env *devEnv) invite(out io.Writer, apiAddr string, logger *slog.Logger) (func(), error) {
	fmt.Fprintf(out, "Enqueue more with: OTPQ_REDIS_URL=%s OTPQ_CODE=123456 go run ./cmd/otpq send --to +8613800138000 --template demo-login\n", env.redisURL)
	apiURL, stopAPI, err := startDevAPI(apiAddr, env.producer, env.reg, logger, env.tp != nil)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "or over HTTP, as EngageLab's API (any language): %s\n", devCurl(apiURL))
	fmt.Fprintln(out, "Every outcome of every send shows below, its delivery receipt too; details: otpq status ID (with the same OTPQ_REDIS_URL).")
	fmt.Fprintln(out, "Press Ctrl-C to stop.")
	return stopAPI, nil
}

// devScripted lists the destinations the dev fake provider treats
// specially, so that a send to one of them surprises nobody.
func devScripted() string {
	var b strings.Builder
	b.WriteString("The fake provider scripts these destinations (any other is accepted, then delivered):\n")
	for _, s := range devSamples {
		if s.rule == nil && s.life == "" {
			continue
		}
		fmt.Fprintf(&b, "  %-16s %s\n", s.to, s.label)
	}
	return b.String()
}

// lockedWriter serialises the dev terminal's writers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// watchOutcomes prints, until ctx ends, every outcome of every send but the
// samples (runDev reports those): a retry, an acceptance, a dead letter,
// each once, with a pointer to otpq status; then, for an accepted send,
// its delivery receipt's verdict each time it changes (pending, then
// delivered or failed), for up to devReceiptWait. It looks every interval.
func watchOutcomes(ctx context.Context, ins *asynq.Inspector, p *producer.Producer, out io.Writer, skip map[string]bool, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	watchOutcomesAt(ctx, ins, p, out, skip, tick.C)
}

// watchOutcomesAt is watchOutcomes looking once at once, then once at each
// tick (a test drives the looks one by one).
func watchOutcomesAt(ctx context.Context, ins *asynq.Inspector, p *producer.Producer, out io.Writer, skip map[string]bool, tick <-chan time.Time) {
	seen := map[string]string{} // task ID → the state and attempt count last printed
	type awaited struct {
		verdict string
		until   time.Time
	}
	receipts := map[string]*awaited{} // accepted task ID → the verdict last printed
	list := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){ins.ListRetryTasks, ins.ListArchivedTasks, ins.ListCompletedTasks}
	for {
		for _, q := range []string{producer.QueueCritical, producer.QueueBulk} {
			for _, l := range list {
				infos, _ := l(q, asynq.PageSize(1000)) // a queue not created yet lists nothing
				for _, info := range infos {
					key := fmt.Sprintf("%s/%d", info.State, info.Retried)
					if skip[info.ID] || seen[info.ID] == key {
						continue
					}
					seen[info.ID] = key
					st, err := p.Status(ctx, info.ID)
					if err != nil {
						continue
					}
					fmt.Fprintln(out, outcomeLine(st))
					if st.State == producer.StateCompleted && (st.Receipt == nil || !st.Receipt.Final) {
						receipts[st.ID] = &awaited{verdict: st.Verdict, until: time.Now().Add(devReceiptWait)}
					}
				}
			}
		}
		for id, a := range receipts {
			st, err := p.Status(ctx, id)
			switch {
			case err != nil || time.Now().After(a.until):
				delete(receipts, id)
			case st.Verdict != a.verdict:
				a.verdict = st.Verdict
				fmt.Fprintln(out, outcomeLine(st))
				if st.Receipt != nil && st.Receipt.Final {
					delete(receipts, id)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
	}
}

// sampleLine is how a sample send ended: its label, then the verdict's
// summary as otpq status prints it, and the receipt's stages when there
// were more than sent and a final one (the WhatsApp→SMS fallback).
func sampleLine(label string, st *producer.Status) string {
	line := fmt.Sprintf("  %-40s task %s → %s", label, st.ID, factsOf(st).Summary())
	if st.MessageID != "" {
		line += ", message_id " + st.MessageID
	}
	if rc := st.Receipt; rc != nil && len(rc.History) > 2 {
		stages := make([]string, len(rc.History))
		for i, s := range rc.History {
			stages[i] = s.Status
			if s.Channel != "" {
				stages[i] += " via " + s.Channel
			}
		}
		line += "\n  " + strings.Repeat(" ", 40) + " stages: " + strings.Join(stages, " → ")
	}
	return line
}

// outcomeLine is one outcome as the dev terminal shows it.
func outcomeLine(st *producer.Status) string {
	var what string
	switch st.State {
	case producer.StateCompleted:
		what = fmt.Sprintf("%s, message_id %s", factsOf(st).Summary(), st.MessageID)
	case producer.StateArchived:
		what = fmt.Sprintf("dead-lettered after %d attempt(s): %s", st.Attempts, st.LastError)
	case producer.StateRetry:
		what = fmt.Sprintf("attempt %d failed (%s); next attempt at %s", st.Attempts, st.LastError, st.NextProcess.Format(time.TimeOnly))
	default:
		what = string(st.State)
	}
	return fmt.Sprintf("  task %s → %s  (otpq status %s)", st.ID, what, st.ID)
}

// waitFinal polls a task until it is completed or archived.
func waitFinal(ctx context.Context, p *producer.Producer, id string, limit time.Duration) (*producer.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		st, err := p.Status(ctx, id)
		if err != nil && !errors.Is(err, producer.ErrNotFound) {
			return nil, err
		}
		if st != nil && st.State.Final() {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dev: task %s did not finish within %s", id, limit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
