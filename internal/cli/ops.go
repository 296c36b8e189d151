package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/otpq/otpq/internal/ops"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/worker"
)

// DefaultHTTPAddr is where the ops server (web UI, metrics, probes) listens.
const DefaultHTTPAddr = "127.0.0.1:8080"

// opsFlags are the ops server's flags; its credentials come only from the
// environment (OTPQ_UI_USER, OTPQ_UI_PASSWORD).
type opsFlags struct {
	addr, callbackAddr *string
	readOnly           *bool
}

func newOpsFlags(f flagSet) opsFlags {
	return opsFlags{
		addr:         f.String("http-addr", DefaultHTTPAddr, "address of the ops server: web UI on /monitoring/, /metrics, /healthz, /readyz; empty = off"),
		readOnly:     f.Bool("ui-read-only", false, "serve the web UI without delete/run/archive/pause actions"),
		callbackAddr: f.String("callback-addr", "", "extra listener serving only the EngageLab callback route "+receipts.Path+" (--http-addr serves it too); needs OTPQ_CALLBACK_USER/_SECRET (or an opt-in to a weaker mode: --callback-authorization-only, or --callback-unverified on a loopback address)", "none"),
	}
}

// opsServer builds the ops server from the flags and the environment; nil
// when --http-addr is empty. Configuration mistakes (an unprotected UI on a
// public address) are usage errors.
func (m *Main) opsServer(f opsFlags, redis asynq.RedisConnOpt, reg *prometheus.Registry, ready func(context.Context) error, log *slog.Logger, callback http.Handler) (*ops.Server, error) {
	if *f.addr == "" {
		return nil, nil
	}
	s, err := ops.New(ops.Config{
		Addr: *f.addr, Redis: redis, Registry: reg, Ready: ready, Logger: log, ReadOnly: *f.readOnly,
		User: m.Getenv("OTPQ_UI_USER"), Password: m.Getenv("OTPQ_UI_PASSWORD"), Callback: callback,
	})
	if err != nil {
		return nil, usagef("--http-addr: %v", err)
	}
	return s, nil
}

// runWorker runs w and, unless --http-addr is empty, the ops server beside
// it, until ctx is done.
func (m *Main) runWorker(ctx context.Context, w *worker.Worker, cfg worker.Config, reg *prometheus.Registry, f opsFlags, cf callbackModeFlags, log *slog.Logger) error {
	opt, err := workerRedis(cfg)
	if err != nil {
		return usagef("%v", err)
	}
	creds, err := m.callbackCredentials()
	if err != nil {
		return err
	}
	mode, err := cf.mode(creds)
	if err != nil {
		return err
	}
	cb, err := m.newCallbacks(creds, mode, opt, reg, log, *f.addr, *f.callbackAddr, cfg.TracerProvider)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cbDone := make(chan struct{})
	go func() { cb.run(ctx, log); close(cbDone) }()
	defer func() { cancel(); <-cbDone }()
	srv, err := m.opsServer(f, opt, reg, w.Ready, log, cb.onOps)
	if err != nil {
		return err
	}
	if srv == nil {
		return runWorker(ctx, w)
	}
	ln, err := srv.Listen()
	if err != nil {
		srv.Close()
		return err
	}
	log.Info("ops server listening", "ui", "http://"+ln.Addr().String()+ops.UIPath, "metrics", "http://"+ln.Addr().String()+"/metrics")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	err = runWorker(ctx, w)
	cancel()
	if serr := <-served; err == nil && serr != nil {
		err = fmt.Errorf("ops server: %w", serr)
	}
	return err
}

// runWorker runs w until ctx ends. A stop asked for by cancelling ctx (main
// cancels it on SIGINT/SIGTERM, with the signal as its cause) is a graceful
// stop and exits 0; worker.Run reports that cause, which is for callers that
// tell their own causes apart.
func runWorker(ctx context.Context, w *worker.Worker) error {
	err := w.Run(ctx)
	if errors.Is(ctx.Err(), context.Canceled) && errors.Is(err, context.Cause(ctx)) {
		return nil
	}
	return err
}

// workerRedis is the Redis connection the ops server shares with the worker
// configuration (a small pool: the UI and scrapes only).
func workerRedis(cfg worker.Config) (asynq.RedisConnOpt, error) {
	return redisconn.Option(cfg.RedisURL, cfg.Redis, 10)
}

// listenOrFree listens on addr, or on a free loopback port when addr is
// taken (otpq dev must start even when 8080 is busy).
func listenOrFree(s *ops.Server, addr string) (net.Listener, error) {
	ln, err := s.Listen()
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) || !ops.IsLoopback(addr) {
		return ln, err
	}
	host, _, _ := net.SplitHostPort(addr)
	return net.Listen("tcp", net.JoinHostPort(host, "0"))
}

// DefaultHealthURL is what otpq healthcheck asks by default.
const DefaultHealthURL = "http://127.0.0.1:8080/readyz"

// readyBody is what the ops server's /readyz answers when ready; any other
// 200 (a server that answers every path) is not readiness.
const readyBody = "ready"

// healthURL is the readiness URL to ask: a URL without a path means the
// server's /readyz.
func healthURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usagef("--url: %q is not an http:// or https:// URL", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/readyz"
	}
	return u.String(), nil
}

func (m *Main) healthcheckCmd() *cobra.Command {
	cmd := command("healthcheck", "Exit 0 if the ops server's /readyz says ready (for container health checks).",
		`GETs the ops server's readiness endpoint (--url; a URL without a path gets
/readyz) and exits 0 when it answers 200 with "ready", 1 otherwise, printing
the server's reason. Any other 200 (a server that answers every path) is
not readiness. For the Docker HEALTHCHECK: the image has no curl.`, noArgs, nil)
	f := flagsOf(cmd)
	rawURL := f.String("url", DefaultHealthURL, "readiness URL of the ops server (a URL without a path gets /readyz)")
	timeout := f.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := positive("timeout", *timeout); err != nil {
			return err
		}
		target, err := healthURL(*rawURL)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return usagef("--url: %v", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := strings.TrimSpace(string(body))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthcheck: %s: %s: %s", target, resp.Status, msg)
		}
		if msg != readyBody {
			return fmt.Errorf("healthcheck: %s answered 200 but not %q: not an otpq readiness endpoint (is --url the ops server's /readyz?)", target, readyBody)
		}
		fmt.Fprintln(m.Stdout, msg)
		return nil
	}
	return cmd
}

// startDevOps starts the ops server of otpq dev: on --http-addr, or a free
// port when that is taken. It returns the address it listens on ("" when
// --http-addr is empty) and a func that stops it.
func (m *Main) startDevOps(f opsFlags, redisURL string, reg *prometheus.Registry, ready func(context.Context) error, log *slog.Logger, callback http.Handler) (string, func(), error) {
	opt, err := redisconn.Option(redisURL, nil, 10)
	if err != nil {
		return "", nil, err
	}
	srv, err := m.opsServer(f, opt, reg, ready, log, callback)
	if err != nil || srv == nil {
		return "", func() {}, err
	}
	ln, err := listenOrFree(srv, *f.addr)
	if err != nil {
		srv.Close()
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ctx, ln); err != nil {
			log.Error("ops server", "error", err.Error())
		}
	}()
	return ln.Addr().String(), func() { cancel(); <-served }, nil
}
