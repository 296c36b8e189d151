package cli

import (
	"context"
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

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/httpserve"
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
	{label: "dead-lettered", to: "+8613800138002", rule: &fakeengagelab.Rule{Status: 400, Code: 5013}},
	{label: "delivered by e-mail", to: "support@example.com"},
	{label: "accepted, not delivered", to: "+8613800138003", life: "fail:4001"},
	{label: "SMS after WhatsApp failed", to: "+8613800138004", life: "fallback"},
}

// Dev callback credentials: the demo verifies signatures like production.
const devCallbackUser, devCallbackSecret = "dev", "dev-callback-secret"

func (m *Main) devCmd() *cobra.Command {
	cmd := command("dev", "Zero-setup demo: embedded Redis, fake provider, worker, sample sends, web UI.",
		`Starts an embedded Redis (miniredis), the fake EngageLab, and a worker, makes
a few sample sends and prints how each ended: delivered, retried then
delivered, dead-lettered with the provider's reason. Also serves the web UI
and metrics (--http-addr, default 127.0.0.1:8080, or a free port when that
is taken) and prints their addresses. Runs until Ctrl-C
(or, with --once, until the samples finish). Nothing to install or configure.`, noArgs, nil)
	f := flagsOf(cmd)
	once := f.Bool("once", false, "exit after the sample sends have finished")
	of := newOpsFlags(f)
	log := newLogFlags(f)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if !cmd.Flags().Changed("log-level") && m.Getenv(envName("log-level")) == "" {
			*log.level = "warn" // keep the demo's own output readable
		}
		logger, err := m.logger(log)
		if err != nil {
			return err
		}
		return m.runDev(cmd.Context(), logger, *once, of)
	}
	return cmd
}

func (m *Main) runDev(ctx context.Context, logger *slog.Logger, once bool, of opsFlags) error {
	mr, err := miniredis.Run()
	if err != nil {
		return fmt.Errorf("dev: embedded redis: %w", err)
	}
	defer mr.Close()
	redisURL := "redis://" + mr.Addr() + "/0"

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("dev: fake provider: %w", err)
	}

	reg := prometheus.NewRegistry()
	w, err := worker.New(worker.Config{
		RedisURL: redisURL, BaseURL: "http://" + ln.Addr().String(), DevKey: "dev", DevSecret: "dev-secret",
		Concurrency: 10, HTTPTimeout: 5 * time.Second, Logger: logger, Registerer: reg,
	})
	if err != nil {
		return err
	}
	opsAddr := *of.addr
	if once {
		opsAddr = "" // no UI with --once: the callbacks get their own listener
	}
	cb, stopCallbacks, err := m.startDevCallbacks(opsAddr, *of.callbackAddr, redisURL, reg, logger)
	if err != nil {
		return err
	}
	defer stopCallbacks()
	uiAddr, stopOps := "", func() {}
	if !once { // with --once the UI would be gone by the time its link is read
		if uiAddr, stopOps, err = m.startDevOps(of, redisURL, reg, w.Ready, logger, cb.handler); err != nil {
			return err
		}
	}
	defer stopOps()
	fake, err := newDevFake(cb.url(uiAddr))
	if err != nil {
		return err
	}
	defer fake.Close()
	fakeCtx, stopFake := context.WithCancel(context.Background())
	defer stopFake()
	go httpserve.Serve(fakeCtx, ln, fake)
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()
	p, err := producer.New(producer.Config{RedisURL: redisURL})
	if err != nil {
		return err
	}
	defer p.Close()

	out := &lockedWriter{w: m.Stdout}
	fmt.Fprintf(out, "otpq dev: embedded Redis at %s, fake EngageLab at http://%s\n", redisURL, ln.Addr())
	switch {
	case once:
		fmt.Fprintln(out, "Web UI:  not served with --once (it would close when the samples finish); run otpq dev without --once to browse it")
	case uiAddr != "":
		fmt.Fprintf(out, "Web UI:  http://%s%s\nMetrics: http://%s/metrics  (health: /healthz, /readyz)\n", uiAddr, ops.UIPath, uiAddr)
	}
	fmt.Fprintf(out, "Sending %d sample codes…\n", len(devSamples))
	ids := make([]string, len(devSamples))
	samples := map[string]bool{}
	for i, s := range devSamples {
		id, err := p.Send(ctx, producer.Request{To: s.to, Code: fmt.Sprintf("%06d", 100000+i*111111), TemplateID: "demo-login"})
		if err != nil {
			return fmt.Errorf("dev: send sample: %w", err)
		}
		ids[i] = id
		samples[id] = true
	}
	var receiptsBy context.Context // one deadline for every receipt, from the first finished task
	for i, s := range devSamples {
		st, err := waitFinal(ctx, p, ids[i], 30*time.Second)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("  %-26s task %s → %s after %d attempt(s)", s.label, ids[i], st.State, st.Attempts)
		if st.MessageID != "" {
			line += fmt.Sprintf(", message_id %s via %s", st.MessageID, st.SendChannel)
		}
		if st.State == producer.StateArchived {
			line += fmt.Sprintf(", reason %q", st.LastError)
		}
		fmt.Fprintln(out, line)
		if st.State == producer.StateCompleted {
			if receiptsBy == nil {
				var cancel context.CancelFunc
				receiptsBy, cancel = context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
			}
			fmt.Fprintln(out, "  "+strings.Repeat(" ", 26)+" "+devReceiptLine(waitReceipt(receiptsBy, p, ids[i])))
		}
	}
	if once {
		return nil
	}
	fmt.Fprintf(out, "Enqueue more with: OTPQ_REDIS_URL=%s OTPQ_CODE=123456 go run ./cmd/otpq send --to +8613800138000 --template demo-login\n", redisURL)
	fmt.Fprintln(out, "Every outcome of every send shows below; details: otpq status ID (with the same OTPQ_REDIS_URL).")
	fmt.Fprintln(out, "Press Ctrl-C to stop.")
	ins := asynq.NewInspector(asynq.RedisClientOpt{Addr: mr.Addr()})
	defer ins.Close()
	watchOutcomes(ctx, ins, p, out, samples)
	fmt.Fprintln(out, "otpq dev: stopped; the embedded Redis and its tasks are gone.")
	return nil
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
// samples (runDev reports those): a retry, a delivery, a dead letter, each
// once, with a pointer to otpq status.
func watchOutcomes(ctx context.Context, ins *asynq.Inspector, p *producer.Producer, out io.Writer, skip map[string]bool) {
	seen := map[string]string{} // task ID → the state and attempt count last printed
	list := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){ins.ListRetryTasks, ins.ListArchivedTasks, ins.ListCompletedTasks}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
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
					if st, err := p.Status(ctx, info.ID); err == nil {
						fmt.Fprintln(out, outcomeLine(st))
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// outcomeLine is one outcome as the dev terminal shows it.
func outcomeLine(st *producer.Status) string {
	var what string
	switch st.State {
	case producer.StateCompleted:
		what = fmt.Sprintf("delivered after %d attempt(s), message_id %s via %s", st.Attempts, st.MessageID, st.SendChannel)
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
