package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/otpq/otpq/internal/api"
	"github.com/otpq/otpq/internal/httpserve"
	"github.com/otpq/otpq/internal/ops"
	"github.com/otpq/otpq/producer"
)

// DefaultAPIAddr is where otpq api listens by default.
const DefaultAPIAddr = "127.0.0.1:8070"

// envAPIKeysFile names the API's keys file (name:key:secret per line).
const envAPIKeysFile = "OTPQ_API_KEYS_FILE"

func (m *Main) apiCmd() *cobra.Command {
	cmd := command("api", "Serve the EngageLab-compatible HTTP API: POST /v1/codes queues a send.",
		`Serves POST /v1/codes with the request of EngageLab's Custom OTP Code API
(to, code, template{id, language, params}; HTTP Basic auth) and queues the
send in Redis, answering as EngageLab does: an application changes only its
base URL. Extras: the Idempotency-Key header, expires_in (seconds) and queue
as body fields or Otpq-Expires-In / Otpq-Queue headers, and
GET /v1/codes/{message_id}, which answers what otpq status --json prints.

Keys come from the file OTPQ_API_KEYS_FILE names, one name:key:secret per
line (several lines to rotate keys); the name shows in logs and metrics.
Without keys the API is refused (exit 2), unless --insecure-no-auth on a
loopback --api-addr. TLS: --api-tls-cert and --api-tls-key, or a proxy
that terminates TLS in front of it.`, noArgs, nil)
	f := flagsOf(cmd)
	redisURL := redisFlag(f)
	addr := apiAddrFlag(f)
	certFile := f.String("api-tls-cert", "", "PEM certificate file: serve HTTPS (with --api-tls-key)", "plain HTTP")
	keyFile := f.String("api-tls-key", "", "PEM private key file of --api-tls-cert", "none")
	noAuth := f.Bool("insecure-no-auth", false, "serve without API keys; only on a loopback --api-addr")
	metricsAddr := f.String("metrics-addr", "", "address serving /metrics (Prometheus) and /healthz; empty = off", "off")
	queue := queueFlag(f, producer.QueueCritical)
	expires := expiresFlag(f)
	guard := newGuardFlags(f)
	log := newLogFlags(f, "info")
	shards := shardsFlag(f)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkRedisURL(cmd, *redisURL); err != nil {
			return err
		}
		if err := checkShards(*shards); err != nil {
			return err
		}
		if err := positive("expires-in", *expires); err != nil {
			return err
		}
		logger, err := m.logger(log)
		if err != nil {
			return err
		}
		keys, err := m.apiKeys(*addr, *noAuth)
		if err != nil {
			return err
		}
		tlsConfig, err := apiTLS(*certFile, *keyFile)
		if err != nil {
			return err
		}
		ropt, err := m.redisOption(*redisURL)
		if err != nil {
			return err
		}
		pkeys, err := m.payloadKeys()
		if err != nil {
			return err
		}
		tp, err := m.tracerProvider("api")
		if err != nil {
			return err
		}
		pcfg := producer.Config{Redis: ropt, PayloadKeys: pkeys, DestinationLimit: *guard.limit, DestinationWindow: *guard.window, Shards: *shards}
		if tp != nil {
			pcfg.TracerProvider = tp
			defer flushTracing(tp, logger)
		}
		p, err := producer.New(pcfg)
		if err != nil {
			return usagef("%v", err)
		}
		defer p.Close()
		reg := prometheus.NewRegistry()
		var h http.Handler
		h, err = api.New(api.Config{Producer: p, Keys: keys, NoAuth: *noAuth, Queue: *queue, Expiry: *expires, Registerer: reg, Logger: logger})
		if err != nil {
			return usagef("%v", err)
		}
		if tp != nil {
			h = continueTrace(h)
		}
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return usagef("--api-addr: %v", err)
		}
		scheme := "http"
		if tlsConfig != nil {
			scheme = "https"
		}
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		if *metricsAddr != "" {
			mln, err := net.Listen("tcp", *metricsAddr)
			if err != nil {
				ln.Close()
				return usagef("--metrics-addr: %v", err)
			}
			mux := http.NewServeMux()
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
			mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
			done := make(chan struct{})
			go func() { defer close(done); _ = serveAPI(ctx, mln, mux, logger, nil) }()
			defer func() { cancel(); <-done }()
		}
		if err := reach(ctx, p, ropt); err != nil {
			logger.Warn("Redis does not answer yet; sends are answered 503 (code 1000) until it does", "error", err.Error())
		} else if err := p.CheckShards(ctx); err != nil {
			return err
		}
		logger.Info("api listening", "url", scheme+"://"+ln.Addr().String()+api.PathCodes, "keys", len(keys), "auth", !*noAuth)
		return serveAPI(ctx, ln, h, logger, tlsConfig)
	}
	return cmd
}

// apiKeys reads the keys file OTPQ_API_KEYS_FILE names. Without one the
// API is refused, unless noAuth on a loopback address.
func (m *Main) apiKeys(addr string, noAuth bool) ([]api.Key, error) {
	path := m.Getenv(envAPIKeysFile)
	switch {
	case path != "" && noAuth:
		return nil, usagef("--insecure-no-auth and %s both set: choose one", envAPIKeysFile)
	case noAuth && !ops.IsLoopback(addr):
		return nil, usagef("--insecure-no-auth: %s can be reached from other machines; set %s (name:key:secret per line) or listen on 127.0.0.1", addr, envAPIKeysFile)
	case noAuth:
		return nil, nil
	case path == "":
		return nil, usagef("no API keys: set %s to a file of name:key:secret lines (or, on a loopback --api-addr only, pass --insecure-no-auth)", envAPIKeysFile)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("%s: %v", envAPIKeysFile, err)
	}
	defer f.Close()
	keys, err := api.ParseKeys(f)
	if err != nil {
		return nil, usagef("%s: %v", envAPIKeysFile, err)
	}
	return keys, nil
}

// apiTLS loads the certificate and key, or returns nil for plain HTTP.
func apiTLS(cert, key string) (*tls.Config, error) {
	switch {
	case cert == "" && key == "":
		return nil, nil
	case cert == "" || key == "":
		return nil, usagef("--api-tls-cert and --api-tls-key go together")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, usagef("--api-tls-cert/--api-tls-key: %v", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// serveAPI serves h on ln (HTTPS with tlsConfig) until ctx ends, with the
// timeouts, header cap and connection bounds every otpq listener has
// (httpserve.Config); the bounds count connections before their TLS
// handshake.
func serveAPI(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, tlsConfig *tls.Config) error {
	return httpserve.Config{Logger: log, TLS: tlsConfig}.Serve(ctx, ln, h)
}

// apiAddrFlag registers --api-addr (otpq api, otpq dev).
func apiAddrFlag(f flagSet) *string {
	return f.String("api-addr", DefaultAPIAddr, "address of the EngageLab-compatible API (POST /v1/codes)")
}

// The key otpq dev's API accepts; its curl line uses it.
const devAPIKey, devAPISecret = "dev-key", "dev-secret"

// startDevAPI serves the API of otpq dev on addr, or on a free loopback
// port when addr is taken, with the dev key. It returns the base URL and a
// func that stops it. traced: continue the caller's trace, as otpq api.
func startDevAPI(addr string, p *producer.Producer, reg prometheus.Registerer, log *slog.Logger, traced bool) (string, func(), error) {
	var h http.Handler
	h, err := api.New(api.Config{Producer: p, Keys: []api.Key{{Name: "dev", Key: devAPIKey, Secret: devAPISecret}}, Registerer: reg, Logger: log})
	if err != nil {
		return "", nil, err
	}
	if traced {
		h = continueTrace(h)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) && ops.IsLoopback(addr) {
		host, _, _ := net.SplitHostPort(addr)
		ln, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return "", nil, usagef("--api-addr: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = serveAPI(ctx, ln, h, log, nil) }()
	return "http://" + ln.Addr().String(), func() { cancel(); <-done }, nil
}

// devCurl is the curl line otpq dev prints: it works as pasted.
func devCurl(base string) string {
	return fmt.Sprintf(`curl -sS -u %s:%s -H 'Content-Type: application/json' -d '{"to": "+8613800138009", "code": "123456", "template": {"id": "demo-login"}}' %s%s`,
		devAPIKey, devAPISecret, base, api.PathCodes)
}
