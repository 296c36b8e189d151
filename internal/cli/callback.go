package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/otpq/otpq/internal/fakeengagelab"
	"github.com/otpq/otpq/internal/httpserve"
	"github.com/otpq/otpq/internal/ops"
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

// callbacks is the worker's receiver of EngageLab status callbacks.
type callbacks struct {
	recv *receipts.Receiver
	// onOps is the handler the ops server mounts on receipts.Path; nil
	// when the ops address faces other machines and nothing is verified.
	onOps http.Handler
	ln    net.Listener // --callback-addr, or nil
	close func()
}

// newCallbacks builds the receiver for the ops server on httpAddr and, when
// callbackAddr is set, its own listener. An unverified receiver is
// mounted only on loopback addresses: a non-loopback --callback-addr is a
// usage error, a non-loopback --http-addr just does not serve the route.
func (m *Main) newCallbacks(creds receipts.Credentials, opt asynq.RedisConnOpt, reg prometheus.Registerer, log *slog.Logger, httpAddr, callbackAddr string) (*callbacks, error) {
	if callbackAddr != "" {
		if err := ops.CheckCallbackExposure(callbackAddr, creds); err != nil {
			return nil, usagef("--callback-addr: %v", err)
		}
	}
	rdb, err := redisconn.NewClient(opt)
	if err != nil {
		return nil, usagef("%v", err)
	}
	recv, err := receipts.NewReceiver(receipts.Config{Redis: rdb, Credentials: creds, Registerer: reg, Logger: log})
	if err != nil {
		_ = rdb.Close()
		return nil, usagef("%v", err)
	}
	c := &callbacks{recv: recv, close: func() { _ = rdb.Close() }}
	if httpAddr != "" {
		if ops.CheckCallbackExposure(httpAddr, creds) == nil {
			c.onOps = recv
		} else {
			log.Warn("EngageLab callbacks not served on --http-addr: it is not a loopback address and OTPQ_CALLBACK_USER/OTPQ_CALLBACK_SECRET (or OTPQ_CALLBACK_AUTHORIZATION) are not set", "addr", httpAddr)
		}
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
		if err := httpserve.Serve(ctx, c.ln, mux); err != nil {
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
// signature) and returns it with a func that stops it.
func (m *Main) startDevCallbacks(opsAddr, cbAddr, redisURL string, reg prometheus.Registerer, log *slog.Logger) (devCallbacks, func(), error) {
	opt, err := redisconn.Option(redisURL, nil, 10)
	if err != nil {
		return devCallbacks{}, nil, err
	}
	if opsAddr == "" && cbAddr == "" {
		cbAddr = "127.0.0.1:0"
	}
	creds := receipts.Credentials{Username: devCallbackUser, Secret: devCallbackSecret}
	cb, err := m.newCallbacks(creds, opt, reg, log, opsAddr, cbAddr)
	if err != nil {
		return devCallbacks{}, nil, err
	}
	d := devCallbacks{handler: cb.onOps}
	if cb.ln != nil {
		d.own = cb.ln.Addr().String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cb.run(ctx, log); close(done) }()
	return d, func() { cancel(); <-done }, nil
}

// newDevFake is otpq dev's provider: the samples' failure rules and
// callback lifecycles, posting signed callbacks to callbackURL.
func newDevFake(callbackURL string) (*fakeengagelab.Server, error) {
	cfg := fakeengagelab.Config{DevKey: "dev", DevSecret: "dev-secret", Callback: fakeengagelab.CallbackConfig{
		URL: callbackURL, Username: devCallbackUser, Secret: devCallbackSecret,
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

// waitReceipt polls a task's receipt until it is final or ctx is done,
// and returns the last one seen (nil: none).
func waitReceipt(ctx context.Context, p *producer.Producer, id string) *producer.Receipt {
	var last *producer.Receipt
	for {
		if st, err := p.Status(ctx, id); err == nil && st.Receipt != nil {
			last = st.Receipt
			if last.Final {
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

// devReceiptLine describes a receipt for otpq dev's output.
func devReceiptLine(rc *producer.Receipt) string {
	if rc == nil {
		return "no delivery receipt yet"
	}
	line := "receipt: " + rc.State
	if rc.Channel != "" {
		line += " via " + rc.Channel
	}
	if !rc.DeliveredAt.IsZero() && !rc.AcceptedAt.IsZero() {
		line += fmt.Sprintf(" (callback %s after acceptance)", rc.UpdatedAt.Sub(rc.AcceptedAt).Round(time.Millisecond))
	}
	if rc.ErrorCode != 0 {
		line += fmt.Sprintf(", error %d %s", rc.ErrorCode, rc.ErrorDetail)
	}
	var stages []string
	for _, s := range rc.History {
		st := s.Status
		if s.Channel != "" {
			st += "/" + s.Channel
		}
		stages = append(stages, st)
	}
	if len(stages) > 1 {
		line += "; stages " + strings.Join(stages, " → ")
	}
	return line
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
