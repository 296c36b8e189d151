// Package ops is otpq's operations HTTP server: the asynq web UI (asynqmon)
// under /monitoring/ with the code redacted and destinations masked,
// Prometheus metrics on /metrics, and /healthz and /readyz probes.
//
// The UI can delete and re-run tasks, so it is protected by HTTP basic auth
// (Config.User and Config.Password) or served read-only; with neither, New
// refuses any listen address that is not a loopback address. Whatever the
// auth, a request that changes state (any method but GET, HEAD and OPTIONS)
// must come from the server's own origin: a page on another site cannot
// make the operator's browser pause, delete or re-run anything (see
// http.CrossOriginProtection).
package ops

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/otpq/otpq/internal/httpserve"
	"github.com/otpq/otpq/internal/metrics"
	"github.com/otpq/otpq/internal/ratelog"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redisconn"
)

// UIPath is where the web UI is served.
const UIPath = "/monitoring/"

// ErrExposed is returned by New for an unprotected UI on a non-loopback
// address.
var ErrExposed = errors.New("refusing to serve the web UI unprotected on a non-loopback address")

// ErrConfig is wrapped by New's other configuration errors.
var ErrConfig = errors.New("ops server configuration")

// Config configures a Server.
type Config struct {
	// Addr is the listen address, host:port. Required.
	Addr string
	// Redis is the connection of the queues the UI shows. Required.
	Redis asynq.RedisConnOpt
	// User and Password enable HTTP basic auth on the UI; both or neither.
	User, Password string
	// ReadOnly serves the UI without the actions that change tasks (delete,
	// run, archive, pause).
	ReadOnly bool
	// Registry is served on /metrics; New adds the asynq queue collector and
	// Go/process collectors to it. Nil: a new registry.
	Registry *prometheus.Registry
	// Ready reports whether the worker is processing; /readyz fails with its
	// error. Nil: only Redis is checked.
	Ready func(context.Context) error
	// Logger receives server errors; default slog.Default().
	Logger *slog.Logger
	// Callback, when set, is served on receipts.Path outside the UI's basic
	// auth (it verifies EngageLab's own signature).
	Callback http.Handler
}

// Server is the ops HTTP server.
type Server struct {
	cfg     Config
	handler http.Handler
	ui      *asynqmon.HTTPHandler
	rdb     redis.UniversalClient
	log     *slog.Logger
	// refusals logs refused logins and cross-origin requests at a
	// bounded rate: a peer can cause them at will.
	refusals *ratelog.Limiter
	// bundles are the UI scripts as served, patched (see serveBundle).
	bundleMu sync.Mutex
	bundles  map[string]patchedScript
	// served are the queues workers serve, read at servedAt (see
	// servedQueues).
	servedMu sync.Mutex
	served   []string
	servedAt time.Time
}

// CheckExposure returns ErrExposed, with the way out, when addr is not a
// loopback address and the UI has neither auth nor read-only mode.
func CheckExposure(addr string, auth, readOnly bool) error {
	if auth || readOnly || IsLoopback(addr) {
		return nil
	}
	return fmt.Errorf("%w: %s can be reached from other machines and the UI can delete and re-run tasks; set OTPQ_UI_USER and OTPQ_UI_PASSWORD (basic auth), pass --ui-read-only, or listen on 127.0.0.1", ErrExposed, addr)
}

// IsLoopback reports whether the host of addr (host:port) is a loopback
// address or "localhost". An empty host (all interfaces) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// New checks cfg and builds a Server. It does not listen yet.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("%w: no listen address", ErrConfig)
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("%w: --http-addr %q is not host:port", ErrConfig, cfg.Addr)
	}
	if cfg.Redis == nil {
		return nil, fmt.Errorf("%w: no Redis connection", ErrConfig)
	}
	if (cfg.User == "") != (cfg.Password == "") {
		return nil, fmt.Errorf("%w: set both OTPQ_UI_USER and OTPQ_UI_PASSWORD, or neither", ErrConfig)
	}
	if err := CheckExposure(cfg.Addr, cfg.User != "", cfg.ReadOnly); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	rdb, err := redisconn.NewClient(cfg.Redis)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, rdb: rdb,
		refusals: ratelog.New(cfg.Logger.With("component", "ops"), 0), bundles: map[string]patchedScript{}}
	for _, c := range []prometheus.Collector{
		metrics.NewQueueCollector(rdb, cfg.Logger),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := cfg.Registry.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				_ = rdb.Close()
				return nil, fmt.Errorf("%w: metrics: %w", ErrConfig, err)
			}
		}
	}
	s.ui = asynqmon.New(asynqmon.Options{
		RootPath:         strings.TrimSuffix(UIPath, "/"),
		RedisConnOpt:     cfg.Redis,
		PayloadFormatter: asynqmon.PayloadFormatterFunc(FormatPayload),
		ResultFormatter:  asynqmon.ResultFormatterFunc(s.formatResult),
		ReadOnly:         cfg.ReadOnly,
	})
	mux := http.NewServeMux()
	mux.Handle(UIPath, s.protect(s.uiHandler()))
	mux.Handle(strings.TrimSuffix(UIPath, "/"), http.RedirectHandler(UIPath, http.StatusFound))
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{ErrorLog: slogPrinter{cfg.Logger}}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", s.readyz)
	if cfg.Callback != nil {
		mux.Handle(receipts.Path, cfg.Callback)
	}
	mux.HandleFunc("/{$}", s.index)
	s.handler = SameOrigin(mux, s.refusals)
	return s, nil
}

// SameOrigin refuses, with 403, a request to h that changes state (any
// method but GET, HEAD and OPTIONS) and that a browser reports as sent from
// another origin: its Sec-Fetch-Site is not same-origin or none, or,
// without that header, its Origin's host is not the request's Host.
// Requests with neither header (curl, EngageLab's callbacks) pass. Refusals
// are logged through log.
func SameOrigin(h http.Handler, log *ratelog.Limiter) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Warn("cross-origin request refused", slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("client", clientIP(r)))
		http.Error(w, "cross-origin request refused: changes must come from the UI's own origin", http.StatusForbidden)
	}))
	return cop.Handler(h)
}

// clientIP is the address the request came from (no port).
func clientIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// Handler is the server's HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Listen opens the configured address.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ops: listen on %s: %w", s.cfg.Addr, err)
	}
	return ln, nil
}

// Serve serves on ln until ctx is done, with httpserve's default timeouts
// and connection bounds, then shuts down (see httpserve.Config.Serve) and
// closes the server's Redis connections.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.Close()
	return httpserve.Config{Logger: s.log}.Serve(ctx, ln, s.handler)
}

// Close releases the Redis connections.
func (s *Server) Close() {
	_ = s.ui.Close()
	_ = s.rdb.Close()
}

// protect applies basic auth when configured.
func (s *Server) protect(h http.Handler) http.Handler {
	if s.cfg.User == "" {
		return h
	}
	wantUser, wantPass := sha256.Sum256([]byte(s.cfg.User)), sha256.Sum256([]byte(s.cfg.Password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		gotUser, gotPass := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
		// Both compared, always, in constant time: no early exit tells
		// which half was wrong.
		match := subtle.ConstantTimeCompare(gotUser[:], wantUser[:]) & subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || match != 1 {
			if ok { // a browser's first request, without credentials, is no failure
				// Neither the user name nor the password is logged (a
				// password typed into the user field would be).
				s.refusals.Warn("web UI login refused", slog.String("client", clientIP(r)))
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="otpq", charset="UTF-8"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// readyz answers 200 when Redis answers and the worker is processing, else
// 503 with the reason.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		http.Error(w, "not ready: redis unreachable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ready")
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "otpq operations\n\n%s  web UI\n/metrics      Prometheus metrics\n/healthz      liveness\n/readyz       readiness\n", UIPath)
	if s.cfg.Callback != nil {
		fmt.Fprintf(w, "%s  EngageLab status callbacks (POST)\n", receipts.Path)
	}
}

// slogPrinter adapts slog to promhttp's error logger.
type slogPrinter struct{ l *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.l.Warn("metrics: "+fmt.Sprint(v...), "component", "ops") }
