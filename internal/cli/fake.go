package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/otpq/otpq/internal/fakeengagelab"
)

// rulesFlag collects repeated --fail rules.
type rulesFlag []fakeengagelab.Rule

func (r *rulesFlag) String() string { return "" }

func (r *rulesFlag) Set(s string) error {
	rule, err := fakeengagelab.ParseRule(s)
	if err != nil {
		return err
	}
	*r = append(*r, rule)
	return nil
}

func (m *Main) fakeCmd() *ffcli.Command {
	fs := flag.NewFlagSet("otpq fake-engagelab", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8090", "listen address")
	latency := fs.Duration("latency", 0, "latency added to every answer")
	window := fs.Duration("frequency-window", 0, "answer 3004 to a second send to the same destination and template within this window (0 = off)")
	templates := fs.String("templates", "", "known template IDs, comma-separated; others answer 4001 (empty = all known)")
	var rules rulesFlag
	fs.Var(&rules, "fail", "scripted failure TO=STATUS:CODE[:TIMES], TO=hang, TO=429:0:TIMES:RETRY_AFTER; TO may be * (repeatable)")
	return m.newCommand("fake-engagelab", "otpq fake-engagelab [--addr …] [--fail …]…",
		"Serve a fake EngageLab API for local runs and tests.",
		`Checks Basic auth (ENGAGELAB_DEV_KEY / ENGAGELAB_DEV_SECRET when set, any
non-empty credentials otherwise) and the request body as the real API does,
and answers realistic message IDs. Control API under /_fake/ (stats, reset,
rules, latency); it never returns codes.`, fs,
		func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return usagef("fake-engagelab takes no arguments, got %q", args)
			}
			cfg := fakeengagelab.Config{
				DevKey: m.Getenv("ENGAGELAB_DEV_KEY"), DevSecret: m.Getenv("ENGAGELAB_DEV_SECRET"),
				Latency: *latency, Rules: rules, FrequencyWindow: *window,
			}
			if *templates != "" {
				cfg.Templates = strings.Split(*templates, ",")
			}
			ln, err := net.Listen("tcp", *addr)
			if err != nil {
				return fmt.Errorf("fake-engagelab: listen: %w", err)
			}
			fmt.Fprintf(m.Stderr, "fake EngageLab listening on http://%s\n", ln.Addr())
			return serveUntilDone(ctx, ln, fakeengagelab.New(cfg))
		})
}

// serveUntilDone serves h on ln until ctx ends, then shuts down gracefully.
func serveUntilDone(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
