package fakeengagelab

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultCallbackDelay is when the default lifecycle reports delivered,
// after the send was accepted.
const DefaultCallbackDelay = 200 * time.Millisecond

// CallbackConfig makes the fake post EngageLab status callbacks (signed
// like the real service) after each accepted send. A zero URL posts none.
type CallbackConfig struct {
	// URL receives the callbacks (otpq's /callbacks/engagelab).
	URL string
	// Username and Secret sign X-CALLBACK-ID (HMAC-SHA256 of
	// timestamp+nonce+username); empty Secret: no header.
	Username, Secret string
	// Authorization, when set, is sent as the Authorization header.
	Authorization string
	// Delay is when the default lifecycle (sent at once, then delivered)
	// reports delivered; default DefaultCallbackDelay.
	Delay time.Duration
	// Lifecycles script the callbacks per destination (exact To first,
	// then "*"); others get the default lifecycle.
	Lifecycles []Lifecycle
	// Client posts the callbacks; default a client with a 3 s timeout.
	Client *http.Client
}

// Lifecycle is the scripted sequence of status callbacks for a
// destination.
type Lifecycle struct {
	// To is the exact destination, or "*".
	To string
	// Steps are posted in order of their After.
	Steps []Step
	// Duplicate posts every step twice.
	Duplicate bool
	// Reverse posts the steps latest first (out of order), each at the
	// time of the step it swaps with.
	Reverse bool
}

// Step is one status callback.
type Step struct {
	// Status is the message_status sent verbatim (sent, delivered,
	// delivered_fail, sent_failed, target_invalid, …).
	Status string
	// Channel is current_send_channel; empty: the send's channel.
	Channel string
	// After is the delay after acceptance.
	After time.Duration
	// ErrorCode and ErrorMessage fill error_code and error_detail.
	ErrorCode    int
	ErrorMessage string
	// Cost, when positive, is billed (USD).
	Cost float64
}

// DeliveredLifecycle is the default: sent (billed) at once, delivered after d.
func DeliveredLifecycle(to string, d time.Duration) Lifecycle {
	return Lifecycle{To: to, Steps: []Step{{Status: "sent", Cost: 0.005}, {Status: "delivered", After: d}}}
}

// FailedLifecycle reports sent, then delivered_fail with code after d.
func FailedLifecycle(to string, d time.Duration, code int, msg string) Lifecycle {
	return Lifecycle{To: to, Steps: []Step{{Status: "sent", Cost: 0.005}, {Status: "delivered_fail", After: d, ErrorCode: code, ErrorMessage: msg}}}
}

// FallbackLifecycle reports a WhatsApp attempt that fails, then SMS
// delivery: sent/whatsapp, delivered_failed/whatsapp, sent/sms,
// delivered/sms, spaced by d.
func FallbackLifecycle(to string, d time.Duration) Lifecycle {
	return Lifecycle{To: to, Steps: []Step{
		{Status: "sent", Channel: "whatsapp", Cost: 0.003},
		{Status: "delivered_failed", Channel: "whatsapp", After: d, ErrorCode: 5001, ErrorMessage: "Recipient is not on WhatsApp"},
		{Status: "sent", Channel: "sms", After: d + d/4, Cost: 0.005},
		{Status: "delivered", Channel: "sms", After: 2 * d},
	}}
}

// ParseLifecycle parses the fake-engagelab --callback flag:
// TO=delivered[:MS], TO=fail[:CODE], TO=fallback, or
// TO=STATUS[/CHANNEL][:CODE]@MS,… ; a trailing ",dup" and/or ",reverse"
// posts duplicates or out of order. TO may be "*".
func ParseLifecycle(s string, d time.Duration) (Lifecycle, error) {
	fail := func(format string, args ...any) (Lifecycle, error) {
		return Lifecycle{}, fmt.Errorf("fakeengagelab: lifecycle %q: %s", s, fmt.Sprintf(format, args...))
	}
	if d <= 0 {
		d = DefaultCallbackDelay
	}
	to, spec, ok := strings.Cut(s, "=")
	to, spec = strings.TrimSpace(to), strings.TrimSpace(spec)
	if !ok || to == "" || spec == "" {
		return fail(`want TO=delivered[:MS], TO=fail[:CODE], TO=fallback or TO=STATUS[/CHANNEL][:CODE]@MS,…`)
	}
	var flags Lifecycle
	parts := strings.Split(spec, ",")
	for len(parts) > 1 {
		switch strings.TrimSpace(parts[len(parts)-1]) {
		case "dup":
			flags.Duplicate = true
		case "reverse":
			flags.Reverse = true
		default:
			goto steps
		}
		parts = parts[:len(parts)-1]
	}
steps:
	name, arg, _ := strings.Cut(parts[0], ":")
	var l Lifecycle
	switch {
	case len(parts) == 1 && name == "delivered":
		if arg != "" {
			ms, err := strconv.Atoi(arg)
			if err != nil || ms < 0 {
				return fail("delay %q is not milliseconds", arg)
			}
			d = time.Duration(ms) * time.Millisecond
		}
		l = DeliveredLifecycle(to, d)
	case len(parts) == 1 && name == "fail":
		code := 4001
		if arg != "" {
			n, err := strconv.Atoi(arg)
			if err != nil {
				return fail("code %q is not a number", arg)
			}
			code = n
		}
		l = FailedLifecycle(to, d, code, "Message could not be delivered")
	case len(parts) == 1 && name == "fallback" && arg == "":
		l = FallbackLifecycle(to, d)
	default:
		l = Lifecycle{To: to}
		for _, p := range parts {
			st, after, ok := strings.Cut(strings.TrimSpace(p), "@")
			if !ok {
				return fail("step %q: want STATUS[/CHANNEL][:CODE]@MS", p)
			}
			ms, err := strconv.Atoi(after)
			if err != nil || ms < 0 {
				return fail("step %q: %q is not milliseconds", p, after)
			}
			step := Step{After: time.Duration(ms) * time.Millisecond}
			st, code, hasCode := strings.Cut(st, ":")
			if hasCode {
				if step.ErrorCode, err = strconv.Atoi(code); err != nil {
					return fail("step %q: code %q is not a number", p, code)
				}
				step.ErrorMessage = "Message could not be delivered"
			}
			step.Status, step.Channel, _ = strings.Cut(st, "/")
			if step.Status == "" {
				return fail("step %q: empty status", p)
			}
			l.Steps = append(l.Steps, step)
		}
	}
	l.Duplicate, l.Reverse = flags.Duplicate, flags.Reverse
	return l, nil
}

// callbacker posts the callbacks of accepted sends.
type callbacker struct {
	cfg       CallbackConfig
	ctx       context.Context
	cancel    context.CancelFunc
	sent      atomic.Int64
	failed    atomic.Int64
	lifecycle func(to string) Lifecycle
}

func newCallbacker(cfg CallbackConfig) *callbacker {
	if cfg.URL == "" {
		return nil
	}
	if cfg.Delay <= 0 {
		cfg.Delay = DefaultCallbackDelay
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 3 * time.Second}
	}
	c := &callbacker{cfg: cfg}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.lifecycle = func(to string) Lifecycle {
		var star *Lifecycle
		for i := range cfg.Lifecycles {
			l := &cfg.Lifecycles[i]
			if l.To == to {
				return *l
			}
			if l.To == "*" && star == nil {
				star = l
			}
		}
		if star != nil {
			return *star
		}
		return DeliveredLifecycle(to, cfg.Delay)
	}
	return c
}

// accepted schedules the lifecycle of one accepted send.
func (c *callbacker) accepted(messageID, to, channel, template string, at time.Time) {
	l := c.lifecycle(to)
	steps := slices.Clone(l.Steps)
	slices.SortStableFunc(steps, func(a, b Step) int { return int(a.After - b.After) })
	if l.Reverse {
		times := make([]time.Duration, len(steps))
		for i, s := range steps {
			times[i] = s.After
		}
		slices.Reverse(steps)
		for i := range steps {
			steps[i].After = times[i]
		}
	}
	go func() {
		for _, st := range steps {
			if wait := time.Until(at.Add(st.After)); wait > 0 {
				select {
				case <-time.After(wait):
				case <-c.ctx.Done():
					return
				}
			}
			body := c.body(messageID, to, channel, template, at, st)
			n := 1
			if l.Duplicate {
				n = 2
			}
			for range n {
				if c.post(body) {
					c.sent.Add(1)
				} else {
					c.failed.Add(1)
				}
			}
		}
	}()
}

// body is the callback of one step, in EngageLab's envelope.
func (c *callbacker) body(messageID, to, channel, template string, at time.Time, st Step) []byte {
	ch := st.Channel
	if ch == "" {
		ch = channel
	}
	status := map[string]any{
		"message_status": st.Status,
		"status_data": map[string]any{
			"msg_time": at.Unix(), "message_id": messageID, "current_send_channel": ch,
			"template_key": template, "business_id": "1",
		},
		"error_code": st.ErrorCode,
	}
	if st.ErrorCode != 0 {
		status["error_detail"] = map[string]string{"message": st.ErrorMessage}
	}
	if st.Cost > 0 {
		status["billing"] = map[string]any{"cost": st.Cost, "currency": "USD"}
	}
	row := map[string]any{
		"message_id": messageID, "to": to, "server": "otp", "channel": ch,
		"itime": time.Now().Unix(), "status": status,
	}
	b, _ := json.Marshal(map[string]any{"total": 1, "rows": []any{row}})
	return b
}

// post delivers one callback, retrying a failure twice like EngageLab
// retries an unacknowledged callback (sooner, for tests).
func (c *callbacker) post(body []byte) bool {
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			case <-c.ctx.Done():
				return false
			}
		}
		req, err := http.NewRequestWithContext(c.ctx, http.MethodPost, c.cfg.URL, bytes.NewReader(body))
		if err != nil {
			return false
		}
		req.Header.Set("Content-Type", "application/json")
		if c.cfg.Secret != "" {
			req.Header.Set("X-CALLBACK-ID", callbackID(c.cfg.Username, c.cfg.Secret, time.Now()))
		}
		if c.cfg.Authorization != "" {
			req.Header.Set("Authorization", c.cfg.Authorization)
		}
		resp, err := c.cfg.Client.Do(req)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNoContent {
			return true
		}
	}
	return false
}

// callbackID is EngageLab's header: timestamp=…;nonce=…;username=…;signature=…
// with signature = hex(HMAC-SHA256(secret, timestamp+nonce+username)).
func callbackID(username, secret string, at time.Time) string {
	var nb [12]byte
	_, _ = rand.Read(nb[:])
	ts, nonce := strconv.FormatInt(at.Unix(), 10), hex.EncodeToString(nb[:])
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + nonce + username))
	return "timestamp=" + ts + ";nonce=" + nonce + ";username=" + username + ";signature=" + hex.EncodeToString(m.Sum(nil))
}

// CallbacksSent returns how many callbacks were acknowledged (200/204),
// and how many failed after retries.
func (s *Server) CallbacksSent() (ok, failed int) {
	if s.cb == nil {
		return 0, 0
	}
	return int(s.cb.sent.Load()), int(s.cb.failed.Load())
}

// Close stops posting callbacks (pending ones are dropped).
func (s *Server) Close() {
	if s.cb != nil {
		s.cb.cancel()
	}
}
