// Package httpserve runs an http.Server for as long as a context lives: the
// ops server, the callback listener, the fake EngageLab and the benchmark's
// roles all serve this way, so every listener otpq opens has the same
// timeouts, header cap and connection bounds (Config).
package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/otpq/otpq/internal/ratelog"
)

// Grace bounds how long Serve waits, once its context is done, for requests
// in flight to finish before it closes their connections.
const Grace = 5 * time.Second

// Defaults of Config's zero values.
const (
	// DefaultReadHeaderTimeout bounds reading a request's header.
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds reading a whole request, header and body:
	// a body trickled a byte at a time is cut off after it.
	DefaultReadTimeout = 15 * time.Second
	// DefaultWriteTimeout bounds a request from the end of its header to
	// the end of its answer.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout is how long a keep-alive connection may wait for
	// its next request.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxHeaderBytes caps a request's header.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConns bounds the connections one listener holds, unless a
	// quarter of the process's file descriptor limit is lower.
	DefaultMaxConns = 1024
	// DefaultMaxConnsPerClient bounds the connections of one client
	// address (an IPv6 client is its /64).
	DefaultMaxConnsPerClient = 128
)

// Config bounds what a client can hold on a listener. Zero values mean the
// documented defaults.
type Config struct {
	// ReadHeaderTimeout bounds reading a request's header; default 5 s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request; default 15 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its header to the end
	// of its answer; default 30 s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection without a next request;
	// default 30 s.
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's header; default 64 KiB.
	MaxHeaderBytes int
	// MaxConns bounds the open connections; default 1024, or a quarter of
	// RLIMIT_NOFILE when that is lower. A new connection past it sheds the
	// oldest idle one (see Serve).
	MaxConns int
	// MaxConnsPerClient bounds the open connections of one client IP (an
	// IPv6 /64); default 128.
	MaxConnsPerClient int
	// Logger receives the (rate-limited) lines about shed connections and
	// exhausted file descriptors, and the server's own errors (TLS
	// handshakes…) at debug level; default slog.Default().
	Logger *slog.Logger
	// TLS, when set, serves HTTPS: connections are bounded before their
	// handshake, so a client that never finishes one holds a counted place
	// for at most ReadHeaderTimeout.
	TLS *tls.Config
}

// withDefaults fills in the zero values.
func (c Config) withDefaults() Config {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	set(&c.ReadTimeout, DefaultReadTimeout)
	set(&c.WriteTimeout, DefaultWriteTimeout)
	set(&c.IdleTimeout, DefaultIdleTimeout)
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxConns <= 0 {
		c.MaxConns = defaultMaxConns()
	}
	if c.MaxConnsPerClient <= 0 {
		c.MaxConnsPerClient = DefaultMaxConnsPerClient
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// defaultMaxConns is maxConnsFor the process's soft RLIMIT_NOFILE.
func defaultMaxConns() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return DefaultMaxConns
	}
	return maxConnsFor(lim.Cur)
}

// maxConnsFor is DefaultMaxConns, or a quarter of a descriptor limit of
// nofile when that is lower (at least 16): a process serving a few
// listeners keeps descriptors for Redis and everything else. 0 means
// unknown.
func maxConnsFor(nofile uint64) int {
	if nofile == 0 {
		return DefaultMaxConns
	}
	n := nofile / 4
	if n >= DefaultMaxConns {
		return DefaultMaxConns
	}
	return int(max(n, 16))
}

// Serve serves h on ln with the default Config; see Config.Serve.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	return Config{}.Serve(ctx, ln, h)
}

// Serve serves h on ln until ctx is done, then shuts the server down: new
// connections are refused at once, requests in flight get up to Grace to
// finish, and connections still open after that are closed. It returns nil
// after a shutdown, or the error that stopped serving before ctx was done.
//
// While serving, a connection that reaches MaxConns (or MaxConnsPerClient
// for its client) is still accepted: the oldest idle connection (one
// waiting for a request) of the same bound is closed to make room, or,
// when none is idle, the oldest busy one. Clients that hold connections
// open so lose them to newer ones, and a probe or callback always gets in.
// An accept that fails for lack of file descriptors (EMFILE, ENFILE) sheds
// the oldest connection and backs off instead of spinning.
func (c Config) Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	c = c.withDefaults()
	lim := newLimitListener(ln, c.MaxConns, c.MaxConnsPerClient, ratelog.New(c.Logger.With("component", "httpserve", "addr", ln.Addr().String()), 0))
	var serveLn net.Listener = lim
	if c.TLS != nil {
		serveLn = tls.NewListener(lim, c.TLS)
	}
	srv := &http.Server{
		ErrorLog:          slog.NewLogLogger(c.Logger.Handler(), slog.LevelDebug),
		Handler:           h,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ConnState:         lim.connState,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveLn) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), Grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close() // a request outlived the grace period (a hanging handler)
	}
	<-served
	return err
}
