package cli

import (
	"fmt"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/httpserve"
)

// rulesFlag collects repeated --fail rules.
type rulesFlag []fakeengagelab.Rule

func (r *rulesFlag) String() string { return "" }

// Type is the placeholder help shows after --fail.
func (r *rulesFlag) Type() string { return "rule" }

func (r *rulesFlag) Set(s string) error {
	rule, err := fakeengagelab.ParseRule(s)
	if err != nil {
		return err
	}
	*r = append(*r, rule)
	return nil
}

// ruleText is the --fail form of a status rule.
func ruleText(r fakeengagelab.Rule) string {
	s := fmt.Sprintf("%s=%d:%d", r.To, r.Status, r.Code)
	if r.Times > 0 {
		s += fmt.Sprintf(":%d", r.Times)
	}
	return s
}

// fakeLong explains --fail and lists the rules otpq dev scripts, generated
// from devSamples so that the two cannot drift apart.
func fakeLong() string {
	var dev strings.Builder
	for _, s := range devSamples {
		switch {
		case s.rule != nil:
			r := *s.rule
			r.To = s.to
			fmt.Fprintf(&dev, "  %-22s %s: --fail '%s'\n", s.to, s.label, ruleText(r))
		case s.life != "":
			fmt.Fprintf(&dev, "  %-22s %s: --callback '%s=%s'\n", s.to, s.label, s.to, s.life)
		default:
			fmt.Fprintf(&dev, "  %-22s %s (no rule)\n", s.to, s.label)
		}
	}
	return `Serves the EngageLab Custom OTP Code API (POST /v1/codes) for local runs and
tests. Checks Basic auth (ENGAGELAB_DEV_KEY / ENGAGELAB_DEV_SECRET when set,
any non-empty credentials otherwise) and the request body as the real API
does, and answers realistic message IDs. Control API under /_fake/ (stats,
reset, rules, latency); it never returns codes.

Every send succeeds unless a --fail rule matches its destination:

  TO=STATUS:CODE[:TIMES]         answer HTTP STATUS with EngageLab error CODE
  TO=429:CODE:TIMES:RETRY_AFTER  throttle, with a Retry-After header (seconds)
  TO=hang[:TIMES]                never answer (a hung provider)
  TO=delay:DURATION[:TIMES]      answer successfully after DURATION

TO is an exact destination (+8613800138000, a@example.com) or * for all.
STATUS is the HTTP status of the answer, 4xx or 5xx: what the worker's
classification reads together with CODE (429 is throttled; 5xx, and codes
1000-1999 with any status, are retried; other 4xx answers are dead-lettered
at once). STATUS 0 takes the status the real API gives CODE. STATUS 502
with CODE 0 answers an HTML page, like a failing proxy. TIMES limits the
rule to the first TIMES matching requests (absent or 0: always).

With --callback-url, every accepted send is followed by EngageLab status
callbacks to that URL, signed with OTPQ_CALLBACK_USER/OTPQ_CALLBACK_SECRET
(environment or _FILE, never flags) like the real service: sent at once,
then delivered after --callback-delay, unless a --callback lifecycle
matches the destination:

  TO=delivered[:MS]              sent, then delivered after MS milliseconds
  TO=fail[:CODE]                 sent, then delivered_fail with CODE (4001)
  TO=fallback                    WhatsApp sent and delivered_failed, then SMS sent and delivered
  TO=STATUS[/CHANNEL][:CODE]@MS,…  any sequence; add ,dup (each twice) and/or ,reverse (out of order)

Rules otpq dev scripts (the same fake, the same rules):
` + dev.String()
}

// fakeServeConfig serves the fake provider with httpserve's timeouts; its
// clients are worker processes, often several on one host with hundreds of
// connections each, so one client may hold as many as the whole bound.
func fakeServeConfig() httpserve.Config {
	return httpserve.Config{MaxConnsPerClient: httpserve.DefaultMaxConns}
}

func (m *Main) fakeCmd() *cobra.Command {
	cmd := command("fake-engagelab", "A fake EngageLab API for local runs and tests.", fakeLong(), noArgs, nil)
	cmd.Example = `  otpq fake-engagelab --addr 127.0.0.1:8090 \
      --fail '+8613800138001=500:1000:1' \
      --fail '+8613800138002=400:5013' \
      --fail '*=delay:300ms'
  # +8613800138001: one 500 (retried), then delivered; +8613800138002: blacklisted,
  # dead-lettered; everyone else: delivered after 300ms.`
	f := flagsOf(cmd)
	addr := f.String("addr", "127.0.0.1:8090", "listen address")
	latency := f.Duration("latency", 0, "latency added to every answer", "none")
	window := f.Duration("frequency-window", 0, "answer 3004 to a second send to the same destination and template within this window", "off")
	templates := f.String("templates", "", "known template IDs, comma-separated; others answer 4001", "all known")
	var rules rulesFlag
	f.Var(&rules, "fail", "scripted failure TO=STATUS:CODE[:TIMES], TO=429:CODE:TIMES:RETRY_AFTER, TO=hang[:TIMES], TO=delay:DURATION[:TIMES]; TO may be * (repeatable; see otpq help fake-engagelab)")
	cb := newFakeCallbackFlags(f)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg := fakeengagelab.Config{
			DevKey: m.Getenv("ENGAGELAB_DEV_KEY"), DevSecret: m.Getenv("ENGAGELAB_DEV_SECRET"),
			Latency: *latency, Rules: rules, FrequencyWindow: *window,
		}
		var err error
		if cfg.Callback, err = m.fakeCallbackConfig(cb); err != nil {
			return err
		}
		if *templates != "" {
			cfg.Templates = strings.Split(*templates, ",")
		}
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return fmt.Errorf("fake-engagelab: listen: %w", err)
		}
		fmt.Fprintf(m.Stderr, "fake EngageLab listening on http://%s\n", ln.Addr())
		fake := fakeengagelab.New(cfg)
		defer fake.Close()
		return fakeServeConfig().Serve(cmd.Context(), ln, fake)
	}
	return cmd
}
