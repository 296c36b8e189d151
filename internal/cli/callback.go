package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/httpserve"
	"github.com/otpq/otpq/internal/ops"
	"github.com/otpq/otpq/internal/ratelog"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redisconn"
	"github.com/otpq/otpq/producer"
)

// The EngageLab callback's credentials: environment or a file named by
// NAME_FILE, never flags.
const (
	envCallbackUser   = "OTPQ_CALLBACK_USER"
	envCallbackSecret = "OTPQ_CALLBACK_SECRET"
	envCallbackAuth   = "OTPQ_CALLBACK_AUTHORIZATION"
)

// envOrFile reads a secret from name or from the file name_FILE names.
func (m *Main) envOrFile(name string) (string, error) {
	v, file := m.Getenv(name), m.Getenv(name+"_FILE")
	if v != "" && file != "" {
		return "", usagef("set %s or %s_FILE, not both", name, name)
	}
	if file != "" {
		return secretFile(name+"_FILE", file)
	}
	return v, nil
}

// callbackCredentials reads OTPQ_CALLBACK_USER, _SECRET and _AUTHORIZATION.
func (m *Main) callbackCredentials() (receipts.Credentials, error) {
	var c receipts.Credentials
	var err error
	for _, f := range []struct {
		env string
		dst *string
	}{{envCallbackUser, &c.Username}, {envCallbackSecret, &c.Secret}, {envCallbackAuth, &c.Authorization}} {
		if *f.dst, err = m.envOrFile(f.env); err != nil {
			return c, err
		}
	}
	if err := c.Check(); err != nil {
		return c, usagef("%v", err)
	}
	return c, nil
}

// callbackMode is how a worker's callback receiver verifies callbacks.
// The weaker modes start only when asked for by a flag, and warn.
type callbackMode int

const (
	// callbackOff: no credentials and no --callback-unverified; the route
	// is not served (held receipts are still matched).
	callbackOff callbackMode = iota
	// callbackSigned: the X-CALLBACK-ID signature (and the Authorization
	// header when OTPQ_CALLBACK_AUTHORIZATION is set too).
	callbackSigned
	// callbackAuthorizationOnly: the static Authorization header only
	// (--callback-authorization-only). Whoever captures it once can forge
	// any callback, and no timestamp or nonce limits replays.
	callbackAuthorizationOnly
	// callbackUnverified: nothing checked, loopback addresses only
	// (--callback-unverified).
	callbackUnverified
)

// callbackModeFlags are the worker's explicit opt-ins to weaker callback
// verification.
type callbackModeFlags struct {
	authorizationOnly, unverified *bool
}

func newCallbackModeFlags(f flagSet) callbackModeFlags {
	return callbackModeFlags{
		authorizationOnly: f.Bool("callback-authorization-only", false, "accept EngageLab callbacks checked by OTPQ_CALLBACK_AUTHORIZATION alone, without the X-CALLBACK-ID signature: a static header that forges any callback once captured, with no replay check (prefer OTPQ_CALLBACK_USER/_SECRET); warns at start"),
		unverified:        f.Bool("callback-unverified", false, "serve the EngageLab callback route with no credentials, on loopback addresses only (anything that reaches it, such as a proxy on the same host, can forge receipts); warns at start"),
	}
}

// mode picks the verification mode from the credentials and the opt-in
// flags; a weaker mode without its flag, or a flag that contradicts the
// credentials, is a usage error.
func (f callbackModeFlags) mode(c receipts.Credentials) (callbackMode, error) {
	authOnly, unverified := f.authorizationOnly != nil && *f.authorizationOnly, f.unverified != nil && *f.unverified
	switch {
	case c.Secret != "":
		if authOnly || unverified {
			return 0, usagef("--callback-authorization-only and --callback-unverified are for receivers without %s; it is set, so callbacks are verified by their signature: drop the flag", envCallbackSecret)
		}
		return callbackSigned, nil
	case c.Authorization != "":
		if unverified {
			return 0, usagef("--callback-unverified: %s is set; use --callback-authorization-only to accept it without a signature", envCallbackAuth)
		}
		if !authOnly {
			return 0, usagef("%s without %s/%s checks a static header that forges any callback once captured, with no replay check: set %s and %s (the username/secret of the EngageLab callback; preferred), or pass --callback-authorization-only to accept that",
				envCallbackAuth, envCallbackUser, envCallbackSecret, envCallbackUser, envCallbackSecret)
		}
		return callbackAuthorizationOnly, nil
	case authOnly:
		return 0, usagef("--callback-authorization-only needs %s", envCallbackAuth)
	case unverified:
		return callbackUnverified, nil
	}
	return callbackOff, nil
}

// callbacks is the worker's receiver of EngageLab status callbacks.
type callbacks struct {
	recv *receipts.Receiver
	// onOps is the handler the ops server mounts on receipts.Path; nil
	// when the route is not served there.
	onOps http.Handler
	ln    net.Listener // --callback-addr, or nil
	close func()
}

// newCallbacks builds the receiver for the ops server on httpAddr and, when
// callbackAddr is set, its own listener. Without credentials the route is
// served only with --callback-unverified (mode callbackUnverified), and
// only on loopback addresses: a non-loopback --callback-addr is a usage
// error, a non-loopback --http-addr just does not serve the route. The
// weaker modes warn at start. tp (nil: the global provider) traces the
// receipts. Metrics are registered only when the route
// is served somewhere (alerts read their presence as "served").
func (m *Main) newCallbacks(creds receipts.Credentials, mode callbackMode, opt asynq.RedisConnOpt, reg prometheus.Registerer, log *slog.Logger, httpAddr, callbackAddr string, tp trace.TracerProvider) (*callbacks, error) {
	if callbackAddr != "" {
		if mode == callbackOff {
			return nil, usagef("--callback-addr: no callback credentials: set %s and %s (the username/secret of the EngageLab callback), or pass --callback-unverified to serve it unverified on a loopback address", envCallbackUser, envCallbackSecret)
		}
		if err := ops.CheckCallbackExposure(callbackAddr, creds); err != nil {
			return nil, usagef("--callback-addr: %v", err)
		}
	}
	onOps := httpAddr != "" && mode != callbackOff && ops.CheckCallbackExposure(httpAddr, creds) == nil
	if !onOps && callbackAddr == "" {
		reg = nil
	}
	rdb, err := redisconn.NewClient(opt)
	if err != nil {
		return nil, usagef("%v", err)
	}
	recv, err := receipts.NewReceiver(receipts.Config{Redis: rdb, Credentials: creds, Registerer: reg, Logger: log, TracerProvider: tp})
	if err != nil {
		_ = rdb.Close()
		return nil, usagef("%v", err)
	}
	c := &callbacks{recv: recv, close: func() { _ = rdb.Close() }}
	if onOps {
		c.onOps = recv
	}
	switch {
	case mode == callbackOff:
		log.Info("EngageLab callbacks not served: set " + envCallbackUser + " and " + envCallbackSecret + " to receive delivery receipts (see the README, Delivery receipts)")
	case mode == callbackAuthorizationOnly:
		log.Warn("EngageLab callbacks are checked by their Authorization header only (--callback-authorization-only): whoever captures it can forge any receipt, and replays are not refused; set " + envCallbackUser + " and " + envCallbackSecret + " to verify signatures")
	case mode == callbackUnverified:
		log.Warn("EngageLab callbacks are served unverified (--callback-unverified): anything that can reach the loopback address, such as a proxy on this host, can forge receipts")
	}
	if httpAddr != "" && mode != callbackOff && !onOps {
		log.Warn("EngageLab callbacks not served on --http-addr: it is not a loopback address and "+envCallbackUser+"/"+envCallbackSecret+" (or "+envCallbackAuth+") are not set", "addr", httpAddr)
	}
	if callbackAddr != "" {
		if c.ln, err = net.Listen("tcp", callbackAddr); err != nil {
			c.close()
			return nil, usagef("--callback-addr: %v", err)
		}
	}
	return c, nil
}

// run matches held receipts and serves --callback-addr until ctx is done.
func (c *callbacks) run(ctx context.Context, log *slog.Logger) {
	done := make(chan struct{})
	go func() { c.recv.Run(ctx); close(done) }()
	if c.ln != nil {
		mux := http.NewServeMux()
		mux.Handle(receipts.Path, c.recv)
		log.Info("EngageLab callback listener", "url", "http://"+c.ln.Addr().String()+receipts.Path)
		// Same rules as the ops server: bounded connections, and no
		// browser on another site can post to it (an unverified
		// loopback receiver would otherwise take forged receipts).
		h := ops.SameOrigin(mux, ratelog.New(log.With("component", "receipts"), 0))
		if err := (httpserve.Config{Logger: log}).Serve(ctx, c.ln, h); err != nil {
			log.Error("callback listener", "error", err.Error())
		}
	}
	<-done
	c.close()
}

// devCallbacks is otpq dev's receiver: mounted on the ops server, or on
// its own loopback listener when --http-addr is empty.
type devCallbacks struct {
	handler http.Handler
	own     string // address of the own listener, if any
	// creds verify the fake's callbacks: a secret drawn for this run, so
	// that a dev receiver on a non-loopback --http-addr accepts no
	// callback signed with a secret anyone can read in the source.
	creds receipts.Credentials
}

// newDevCallbackCredentials draws otpq dev's callback secret.
func newDevCallbackCredentials() (receipts.Credentials, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return receipts.Credentials{}, fmt.Errorf("dev: callback secret: %w", err)
	}
	return receipts.Credentials{Username: devCallbackUser, Secret: hex.EncodeToString(b)}, nil
}

// url is where the fake provider posts callbacks, "" for nowhere.
func (d devCallbacks) url(opsAddr string) string {
	switch {
	case d.own != "":
		return "http://" + d.own + receipts.Path
	case opsAddr != "":
		return "http://" + opsAddr + receipts.Path
	}
	return ""
}

// startDevCallbacks starts otpq dev's receiver (verifying the demo's
// signature) and returns it with a func that stops it; tp (nil: off)
// traces the receipts.
func (m *Main) startDevCallbacks(opsAddr, cbAddr, redisURL string, reg prometheus.Registerer, log *slog.Logger, tp trace.TracerProvider) (devCallbacks, func(), error) {
	opt, err := redisconn.Option(redisURL, nil, 10)
	if err != nil {
		return devCallbacks{}, nil, err
	}
	if opsAddr == "" && cbAddr == "" {
		cbAddr = "127.0.0.1:0"
	}
	creds, err := newDevCallbackCredentials()
	if err != nil {
		return devCallbacks{}, nil, err
	}
	cb, err := m.newCallbacks(creds, callbackSigned, opt, reg, log, opsAddr, cbAddr, tp)
	if err != nil {
		return devCallbacks{}, nil, err
	}
	d := devCallbacks{handler: cb.onOps, creds: creds}
	if cb.ln != nil {
		d.own = cb.ln.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cb.run(ctx, log); close(done) }()
	return d, func() { cancel(); <-done }, nil
}

// newDevFake is otpq dev's provider: the samples' failure rules and
// callback lifecycles, posting callbacks signed with creds to callbackURL.
func newDevFake(callbackURL string, creds receipts.Credentials) (*fakeengagelab.Server, error) {
	cfg := fakeengagelab.Config{DevKey: "dev", DevSecret: "dev-secret", Callback: fakeengagelab.CallbackConfig{
		URL: callbackURL, Username: creds.Username, Secret: creds.Secret,
	}}
	for _, s := range devSamples {
		if s.rule != nil {
			r := *s.rule
			r.To = s.to
			cfg.Rules = append(cfg.Rules, r)
		}
		if s.life != "" {
			l, err := fakeengagelab.ParseLifecycle(s.to+"="+s.life, 0)
			if err != nil {
				return nil, err
			}
			cfg.Callback.Lifecycles = append(cfg.Callback.Lifecycles, l)
		}
	}
	return fakeengagelab.New(cfg), nil
}

// waitReceipt polls a task's receipt until it is final and holds its
// "sent" stage, or ctx is done,
// and returns the last one seen (nil: none).
func waitReceipt(ctx context.Context, p *producer.Producer, id string) *producer.Receipt {
	var last *producer.Receipt
	for {
		if st, err := p.Status(ctx, id); err == nil && st.Receipt != nil {
			last = st.Receipt
			if last.Final && hasStage(last, "sent") {
				return last
			}
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// hasStage reports whether a receipt's history holds a stage of status.
// Every lifecycle of the dev fake starts with a billed "sent" posted at
// acceptance, usually before the worker has stored the receipt link: the
// receiver holds that row and attaches it on its next pass (≤ 500 ms), so
// the final row can be attached first. Waiting for both keeps the sample
// lines complete (the cost comes with "sent"); CI once printed the first
// sample without its cost.
func hasStage(rc *producer.Receipt, status string) bool {
	for _, s := range rc.History {
		if s.Status == status {
			return true
		}
	}
	return false
}

// lifecyclesFlag collects repeated fake-engagelab --callback lifecycles.
type lifecyclesFlag struct{ list []string }

func (l *lifecyclesFlag) String() string { return "" }

// Type is the placeholder help shows after --callback.
func (l *lifecyclesFlag) Type() string { return "lifecycle" }

func (l *lifecyclesFlag) Set(s string) error {
	if _, err := fakeengagelab.ParseLifecycle(s, 0); err != nil {
		return err
	}
	l.list = append(l.list, s)
	return nil
}

type fakeCallbackFlags struct {
	url   *string
	delay *time.Duration
	life  *lifecyclesFlag
}

func newFakeCallbackFlags(fs flagSet) fakeCallbackFlags {
	f := fakeCallbackFlags{
		url:   fs.String("callback-url", "", "post signed status callbacks to this URL (a worker's "+receipts.Path+")", "none"),
		delay: fs.Duration("callback-delay", fakeengagelab.DefaultCallbackDelay, "when the default lifecycle reports delivered, after acceptance"),
		life:  &lifecyclesFlag{},
	}
	fs.Var(f.life, "callback", "callback lifecycle TO=delivered[:MS], TO=fail[:CODE], TO=fallback, TO=STATUS[/CHANNEL][:CODE]@MS,…[,dup][,reverse]; TO may be * (repeatable; see otpq help fake-engagelab)")
	return f
}

// fakeCallbackConfig builds the fake's callback configuration from its
// flags and OTPQ_CALLBACK_USER / _SECRET / _AUTHORIZATION.
func (m *Main) fakeCallbackConfig(f fakeCallbackFlags) (fakeengagelab.CallbackConfig, error) {
	if *f.url == "" {
		if len(f.life.list) > 0 {
			return fakeengagelab.CallbackConfig{}, usagef("--callback needs --callback-url")
		}
		return fakeengagelab.CallbackConfig{}, nil
	}
	if !strings.HasPrefix(*f.url, "http://") && !strings.HasPrefix(*f.url, "https://") {
		return fakeengagelab.CallbackConfig{}, usagef("--callback-url: %q is not an http:// or https:// URL", *f.url)
	}
	if err := positive("callback-delay", *f.delay); err != nil {
		return fakeengagelab.CallbackConfig{}, err
	}
	creds, err := m.callbackCredentials()
	if err != nil {
		return fakeengagelab.CallbackConfig{}, err
	}
	cfg := fakeengagelab.CallbackConfig{URL: *f.url, Username: creds.Username, Secret: creds.Secret,
		Authorization: creds.Authorization, Delay: *f.delay}
	for _, s := range f.life.list {
		l, err := fakeengagelab.ParseLifecycle(s, *f.delay)
		if err != nil {
			return cfg, usagef("--callback: %v", err)
		}
		cfg.Lifecycles = append(cfg.Lifecycles, l)
	}
	return cfg, nil
}
