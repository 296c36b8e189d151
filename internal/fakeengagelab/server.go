// Package fakeengagelab is a realistic, scriptable in-process fake of the
// EngageLab Custom OTP Code API (POST /v1/codes), for local runs and tests.
//
// A Server is an http.Handler. It checks Basic authentication, the JSON body
// and its fields the way the real API does, answers the spec's error codes,
// and on success returns a unique 19-digit message_id with send_channel
// "sms" (phone numbers) or "email" (e-mail addresses). Failures, latency and
// hangs can be scripted per destination with Rules, in process (Config.Rules,
// SetRules) or over HTTP through a small control API under /_fake/:
//
//	GET  /_fake/stats          {"total":N,"delivered":N,"by_to":{"<to>":{"requests":N,"delivered":N}}}
//	POST /_fake/reset          same as Reset
//	GET  /_fake/rules          the current rules
//	PUT  /_fake/rules          JSON array of {"to","status","code","message","times","latency_ms","hang","retry_after"}
//	GET  /_fake/latency        {"latency_ms":N}
//	PUT  /_fake/latency?ms=N   same as SetLatency
//
// The control API never exposes OTP codes; only Receipts, in process, holds
// them. The package never logs.
package fakeengagelab

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/otpq/otpq/internal/engagelab"
)

// APIPath is the path of the one API endpoint the fake serves.
const APIPath = "/v1/codes"

// ControlPrefix is the path prefix of the fake's JSON control API.
const ControlPrefix = "/_fake/"

// DefaultMaxReceipts is the Receipt list cap used when Config.MaxReceipts is 0.
const DefaultMaxReceipts = 100000

// DefaultMaxBodyBytes is the request body limit used when
// Config.MaxBodyBytes is 0.
const DefaultMaxBodyBytes = 64 << 10

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// DevKey and DevSecret are the expected Basic auth credentials. If both
	// are empty, any Basic credentials whose key and secret are both
	// non-empty are accepted.
	DevKey, DevSecret string
	// Latency is added before every answer of the API (not of the control
	// API). A request whose context ends while waiting gets no answer.
	Latency time.Duration
	// Rules script failures per destination; see Rule.
	Rules []Rule
	// FrequencyWindow, when > 0, makes a send to the same to + template.id
	// within FrequencyWindow after a *successful* send answer 400 code 3004,
	// like the real API. 0 turns the check off.
	FrequencyWindow time.Duration
	// Templates, if non-empty, is the list of existing template IDs; a
	// template.id not in it answers 400 code 4001.
	Templates []string
	// MaxReceipts caps the Receipt list: once it holds MaxReceipts entries,
	// later requests are no longer appended (the oldest are kept), while all
	// counters (Total, Count, Delivered, stats) keep counting. 0 means
	// DefaultMaxReceipts; a negative value keeps no receipts at all.
	MaxReceipts int
	// MaxBodyBytes limits the request body; a larger body answers 413 with
	// code 3001. 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Callback, when its URL is set, posts signed status callbacks after
	// each accepted send; see CallbackConfig.
	Callback CallbackConfig
}

// Receipt records one API request that passed authentication and JSON
// parsing, whatever its outcome: success, validation error, scripted failure,
// frequency limit, unknown template, or no answer at all (hang, or the client
// went away during latency), in which case Status is 0.
type Receipt struct {
	// To, Code, TemplateID and Language are the request's fields as sent.
	To, Code, TemplateID, Language string
	// Params is the request's template.params (nil when absent).
	Params map[string]string
	// MessageID is the message_id answered, or "" when the answer was an
	// error.
	MessageID string
	// Status is the HTTP status answered; 0 when no answer was written.
	Status int
	// ErrCode is the EngageLab error code answered; 0 on success.
	ErrCode int
	// At is when the outcome was decided.
	At time.Time
}

// Server is the fake API. It is an http.Handler; all methods are safe for
// concurrent use. Create it with New.
type Server struct {
	key, secret []byte
	anyAuth     bool
	window      time.Duration
	templates   map[string]struct{} // nil: every template exists
	maxReceipts int
	maxBody     int64
	idBase      uint64

	latency atomic.Int64 // time.Duration
	total   atomic.Int64
	idSeq   atomic.Uint64

	mu        sync.Mutex
	rules     []ruleState
	byTo      map[string]*destCounts
	delivered int
	receipts  []Receipt
	freq      map[freqKey]time.Time
	freqSweep time.Time

	cb *callbacker // nil: no callbacks
}

type ruleState struct {
	Rule
	hits int
}

type destCounts struct {
	requests, delivered int
}

type freqKey struct {
	to, template string
}

// New returns a Server configured by cfg.
func New(cfg Config) *Server {
	s := &Server{
		key:         []byte(cfg.DevKey),
		secret:      []byte(cfg.DevSecret),
		anyAuth:     cfg.DevKey == "" && cfg.DevSecret == "",
		window:      cfg.FrequencyWindow,
		maxReceipts: cfg.MaxReceipts,
		maxBody:     cfg.MaxBodyBytes,
		// Millisecond clock × 10^6: a 19-digit number like the real IDs,
		// increasing across restarts.
		idBase: uint64(time.Now().UnixMilli()) * 1_000_000,
		byTo:   make(map[string]*destCounts),
		freq:   make(map[freqKey]time.Time),
	}
	if s.maxReceipts == 0 {
		s.maxReceipts = DefaultMaxReceipts
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if len(cfg.Templates) > 0 {
		s.templates = make(map[string]struct{}, len(cfg.Templates))
		for _, t := range cfg.Templates {
			s.templates[t] = struct{}{}
		}
	}
	s.cb = newCallbacker(cfg.Callback)
	s.latency.Store(int64(cfg.Latency))
	s.SetRules(cfg.Rules...)
	return s
}

// SetRules replaces the rules, resetting their Times budgets. It never fails:
// rules are interpreted as documented on Rule, without validation.
func (s *Server) SetRules(rules ...Rule) {
	rs := make([]ruleState, len(rules))
	for i, r := range rules {
		rs[i] = ruleState{Rule: r}
	}
	s.mu.Lock()
	s.rules = rs
	s.mu.Unlock()
}

// rulesSnapshot returns a copy of the current rules.
func (s *Server) rulesSnapshot() []Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Rule, len(s.rules))
	for i, r := range s.rules {
		out[i] = r.Rule
	}
	return out
}

// SetLatency sets the latency added before every API answer (Config.Latency).
func (s *Server) SetLatency(d time.Duration) {
	s.latency.Store(int64(d))
}

// Receipts returns a copy of the recorded receipts, oldest first. At most
// Config.MaxReceipts are kept; see there.
func (s *Server) Receipts() []Receipt {
	s.mu.Lock()
	out := make([]Receipt, len(s.receipts))
	copy(out, s.receipts)
	s.mu.Unlock()
	for i := range out {
		if p := out[i].Params; p != nil {
			c := make(map[string]string, len(p))
			for k, v := range p {
				c[k] = v
			}
			out[i].Params = c
		}
	}
	return out
}

// Count returns how many requests for destination to passed authentication
// and JSON parsing, whatever their outcome. It is counted on arrival, so a
// request that is still hanging is already included.
func (s *Server) Count(to string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.byTo[to]; d != nil {
		return d.requests
	}
	return 0
}

// Delivered returns how many successful sends (200 answers) went to
// destination to.
func (s *Server) Delivered(to string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.byTo[to]; d != nil {
		return d.delivered
	}
	return 0
}

// Total returns how many requests were made to APIPath, whatever the method
// or outcome (including authentication failures).
func (s *Server) Total() int {
	return int(s.total.Load())
}

// Reset clears receipts, all counters and the frequency-limit memory, and
// re-arms the rules' Times budgets. Rules, latency and configuration are
// kept. Message IDs keep increasing.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total.Store(0)
	s.byTo = make(map[string]*destCounts)
	s.delivered = 0
	s.receipts = nil
	s.freq = make(map[freqKey]time.Time)
	for i := range s.rules {
		s.rules[i].hits = 0
	}
}

// sendRequest is the API's request body. Unknown fields are ignored.
type sendRequest struct {
	To       string        `json:"to"`
	Code     string        `json:"code"`
	Template *sendTemplate `json:"template"`
}

type sendTemplate struct {
	ID       string            `json:"id"`
	Language string            `json:"language"`
	Params   map[string]string `json:"params"`
}

const proxyErrorPage = `<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
`

// ServeHTTP serves POST /v1/codes and the control API under /_fake/. Other
// paths answer 404 and other methods on /v1/codes 405, with a JSON error body
// of code 0.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, ControlPrefix) {
		s.serveControl(w, r)
		return
	}
	ctx := r.Context()
	isAPI := r.URL.Path == APIPath
	if isAPI {
		s.total.Add(1)
	}
	if !sleep(ctx, time.Duration(s.latency.Load())) {
		return
	}
	if !isAPI {
		writeError(w, http.StatusNotFound, 0, "Not Found")
		return
	}
	req, ok := s.readRequest(w, r)
	if !ok {
		return
	}
	rc := Receipt{To: req.To, Code: req.Code}
	if t := req.Template; t != nil {
		rc.TemplateID, rc.Language, rc.Params = t.ID, t.Language, t.Params
	}
	email := strings.Contains(rc.To, "@")
	errStatus, errCode, errMsg := validate(&rc, email)
	rule, matched := s.arrive(rc.To, errCode == 0)
	if errCode != 0 {
		s.fail(w, rc, errStatus, errCode, errMsg)
		return
	}
	if matched && s.applyRule(ctx, w, rc, rule) {
		return
	}
	if s.templates != nil && !s.knownTemplate(rc.TemplateID) {
		s.fail(w, rc, http.StatusBadRequest, 4001, DefaultMessage(4001))
		return
	}
	s.accept(w, rc, email)
}

// readRequest checks an API request's method, credentials, content type
// and size and decodes its body; on any failure it has written the API's
// error answer and returns false.
func (s *Server) readRequest(w http.ResponseWriter, r *http.Request) (sendRequest, bool) {
	var req sendRequest
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, 0, "Method Not Allowed")
		return req, false
	}
	if user, pass, ok := r.BasicAuth(); !ok || !s.authorized(user, pass) {
		writeError(w, http.StatusUnauthorized, 2001, DefaultMessage(2001))
		return req, false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusBadRequest, 3001, "Invalid request parameter format. Content-Type must be application/json.")
		return req, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, 3001,
				"Invalid request parameter format. Request body exceeds "+strconv.FormatInt(s.maxBody, 10)+" bytes.")
			return req, false
		}
		// The client went away mid-body; nobody will read an answer.
		writeError(w, http.StatusBadRequest, 3001, DefaultMessage(3001))
		return req, false
	}
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, 3001, DefaultMessage(3001))
		return req, false
	}
	return req, true
}

// arrive counts a request to to and, when the request is valid, picks the
// rule that applies to it, under the lock once.
func (s *Server) arrive(to string, valid bool) (rule Rule, matched bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if to != "" {
		s.destLocked(to).requests++
	}
	if valid {
		rule, matched = s.matchLocked(to)
	}
	return rule, matched
}

// applyRule plays a matched rule's latency, hang or failure; it returns
// true when the request is answered (or abandoned) by it, false when the
// request goes on to the normal checks.
func (s *Server) applyRule(ctx context.Context, w http.ResponseWriter, rc Receipt, rule Rule) bool {
	if !sleep(ctx, rule.Latency) {
		s.record(rc)
		return true
	}
	if rule.Hang {
		<-ctx.Done()
		s.record(rc)
		return true
	}
	if st := rule.failureStatus(); st != 0 {
		s.answerRule(w, rc, rule, st)
		return true
	}
	return false
}

// knownTemplate reports whether id is one of Config.Templates.
func (s *Server) knownTemplate(id string) bool {
	_, ok := s.templates[id]
	return ok
}

// accept answers a valid request: 3004 when the frequency window refuses
// it, else a new message_id (and, with callbacks on, the status callbacks
// that follow a delivery).
func (s *Server) accept(w http.ResponseWriter, rc Receipt, email bool) {
	now := time.Now()
	rc.At = now
	s.mu.Lock()
	if s.window > 0 {
		k := freqKey{rc.To, rc.TemplateID}
		if last, ok := s.freq[k]; ok && now.Sub(last) < s.window {
			rc.Status, rc.ErrCode = http.StatusBadRequest, 3004
			s.appendLocked(rc)
			s.mu.Unlock()
			writeError(w, http.StatusBadRequest, 3004, DefaultMessage(3004))
			return
		}
		s.freq[k] = now
		s.sweepFreqLocked(now)
	}
	rc.MessageID = strconv.FormatUint(s.idBase+s.idSeq.Add(1), 10)
	rc.Status = http.StatusOK
	s.destLocked(rc.To).delivered++
	s.delivered++
	s.appendLocked(rc)
	s.mu.Unlock()

	channel := "sms"
	if email {
		channel = "email"
	}
	if s.cb != nil {
		s.cb.accepted(rc.MessageID, rc.To, channel, rc.TemplateID, now)
	}
	writeJSON(w, http.StatusOK, struct {
		MessageID   string `json:"message_id"`
		SendChannel string `json:"send_channel"`
	}{rc.MessageID, channel})
}

// validate checks the request fields in the real API's order and returns the
// error to answer, or a zero code.
func validate(rc *Receipt, email bool) (status, code int, msg string) {
	missing := func(field string) (int, int, string) {
		return http.StatusBadRequest, 3002, "Invalid request parameters. Field " + field + " is required."
	}
	switch {
	case rc.To == "":
		return missing("to")
	case rc.Code == "":
		return missing("code")
	case rc.TemplateID == "":
		return missing("template.id")
	case rc.Language != "" && !engagelab.Language(rc.Language).Known():
		return http.StatusBadRequest, 3002, "Invalid request parameters. Field template.language " +
			strconv.Quote(rc.Language) + " is not one of " + engagelab.LanguageList() + "."
	}
	if email && !validEmail(rc.To) || !email && !validPhone(rc.To) {
		return http.StatusBadRequest, 5011, DefaultMessage(5011)
	}
	return 0, 0, ""
}

// validPhone reports whether s is E.164: "+" then 8 to 15 digits.
func validPhone(s string) bool {
	if len(s) < 9 || len(s) > 16 || s[0] != '+' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// validEmail reports whether s is local@domain with a dot inside the domain.
func validEmail(s string) bool {
	at := strings.LastIndexByte(s, '@')
	if at <= 0 {
		return false
	}
	domain := s[at+1:]
	dot := strings.IndexByte(domain, '.')
	return dot > 0 && dot < len(domain)-1 && !strings.ContainsAny(s, " \t\r\n")
}

func (s *Server) authorized(user, pass string) bool {
	if s.anyAuth {
		return user != "" && pass != ""
	}
	okUser := subtle.ConstantTimeCompare([]byte(user), s.key)
	okPass := subtle.ConstantTimeCompare([]byte(pass), s.secret)
	return okUser&okPass == 1
}

// matchLocked picks the rule for to (exact To first, then "*") and consumes
// one unit of its Times budget.
func (s *Server) matchLocked(to string) (Rule, bool) {
	best := -1
	for i := range s.rules {
		r := &s.rules[i]
		if r.Times > 0 && r.hits >= r.Times {
			continue
		}
		if r.To == to {
			best = i
			break
		}
		if r.To == "*" && best < 0 {
			best = i
		}
	}
	if best < 0 {
		return Rule{}, false
	}
	s.rules[best].hits++
	return s.rules[best].Rule, true
}

func (s *Server) destLocked(to string) *destCounts {
	d := s.byTo[to]
	if d == nil {
		d = &destCounts{}
		s.byTo[to] = d
	}
	return d
}

func (s *Server) appendLocked(rc Receipt) {
	if s.maxReceipts > 0 && len(s.receipts) < s.maxReceipts {
		s.receipts = append(s.receipts, rc)
	}
}

// sweepFreqLocked drops expired frequency entries now and then, so that a
// long run over many destinations does not grow the map without bound.
func (s *Server) sweepFreqLocked(now time.Time) {
	if len(s.freq) < 4096 || now.Sub(s.freqSweep) < s.window {
		return
	}
	s.freqSweep = now
	for k, t := range s.freq {
		if now.Sub(t) >= s.window {
			delete(s.freq, k)
		}
	}
}

// record stores rc (Status/ErrCode as already set) stamped with the time.
func (s *Server) record(rc Receipt) {
	rc.At = time.Now()
	s.mu.Lock()
	s.appendLocked(rc)
	s.mu.Unlock()
}

// fail records and answers a JSON error.
func (s *Server) fail(w http.ResponseWriter, rc Receipt, status, code int, msg string) {
	rc.Status, rc.ErrCode = status, code
	s.record(rc)
	writeError(w, status, code, msg)
}

// answerRule records and answers the scripted failure of rule.
func (s *Server) answerRule(w http.ResponseWriter, rc Receipt, rule Rule, status int) {
	rc.Status, rc.ErrCode = status, rule.Code
	s.record(rc)
	if status == http.StatusBadGateway && rule.Code == 0 {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, proxyErrorPage)
		return
	}
	if status == http.StatusTooManyRequests {
		ra := rule.RetryAfter
		if ra <= 0 {
			ra = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(ra))
	}
	msg := rule.Message
	if msg == "" {
		msg = DefaultMessage(rule.Code)
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	writeError(w, status, rule.Code, msg)
}

// sleep waits d, or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, apiError{Code: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":1000,"message":"Internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
