package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

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
}

var devSamples = []devSample{
	{label: "delivered", to: "+8613800138000"},
	{label: "retried, then delivered", to: "+8613800138001", rule: &fakeengagelab.Rule{Status: 500, Code: 1000, Times: 1}},
	{label: "dead-lettered", to: "+8613800138002", rule: &fakeengagelab.Rule{Status: 400, Code: 5013}},
	{label: "delivered by e-mail", to: "support@example.com"},
}

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

	fake := fakeengagelab.New(fakeengagelab.Config{DevKey: "dev", DevSecret: "dev-secret"})
	var rules []fakeengagelab.Rule
	for _, s := range devSamples {
		if s.rule != nil {
			r := *s.rule
			r.To = s.to
			rules = append(rules, r)
		}
	}
	fake.SetRules(rules...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("dev: fake provider: %w", err)
	}
	fakeCtx, stopFake := context.WithCancel(context.Background())
	defer stopFake()
	go serveUntilDone(fakeCtx, ln, fake)

	reg := prometheus.NewRegistry()
	w, err := worker.New(worker.Config{
		RedisURL: redisURL, BaseURL: "http://" + ln.Addr().String(), DevKey: "dev", DevSecret: "dev-secret",
		Concurrency: 10, HTTPTimeout: 5 * time.Second, Logger: logger, Registerer: reg,
	})
	if err != nil {
		return err
	}
	uiAddr, stopOps, err := m.startDevOps(of, redisURL, reg, w.Ready, logger)
	if err != nil {
		return err
	}
	defer stopOps()
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()
	p, err := producer.New(producer.Config{RedisURL: redisURL})
	if err != nil {
		return err
	}
	defer p.Close()

	out := m.Stdout
	fmt.Fprintf(out, "otpq dev: embedded Redis at %s, fake EngageLab at http://%s\n", redisURL, ln.Addr())
	if uiAddr != "" {
		fmt.Fprintf(out, "Web UI:  http://%s%s\nMetrics: http://%s/metrics  (health: /healthz, /readyz)\n", uiAddr, ops.UIPath, uiAddr)
	}
	fmt.Fprintf(out, "Sending %d sample codes…\n", len(devSamples))
	ids := make([]string, len(devSamples))
	for i, s := range devSamples {
		id, err := p.Send(ctx, producer.Request{To: s.to, Code: fmt.Sprintf("%06d", 100000+i*111111), TemplateID: "demo-login"})
		if err != nil {
			return fmt.Errorf("dev: send sample: %w", err)
		}
		ids[i] = id
	}
	for i, s := range devSamples {
		st, err := waitFinal(ctx, p, ids[i], 30*time.Second)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("  %-26s task %s → %s after %d attempt(s)", s.label, ids[i], st.State, st.Attempts)
		if st.MessageID != "" {
			line += fmt.Sprintf(", message_id %s via %s", st.MessageID, st.SendChannel)
		}
		if st.State == "archived" {
			line += fmt.Sprintf(", reason %q", st.LastError)
		}
		fmt.Fprintln(out, line)
	}
	if once {
		return nil
	}
	fmt.Fprintf(out, "Enqueue more with: OTPQ_REDIS_URL=%s OTPQ_CODE=123456 go run ./cmd/otpq send --to +8613800138000 --template demo-login\n", redisURL)
	fmt.Fprintln(out, "Press Ctrl-C to stop.")
	<-ctx.Done()
	return nil
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
		if st != nil && (st.State == "completed" || st.State == "archived") {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dev: task %s did not finish within %s", id, limit)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
