package fakeengagelab

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// ruleJSON is the control API's wire form of a Rule.
type ruleJSON struct {
	To         string `json:"to"`
	Status     int    `json:"status,omitempty"`
	Code       int    `json:"code,omitempty"`
	Message    string `json:"message,omitempty"`
	Times      int    `json:"times,omitempty"`
	LatencyMS  int64  `json:"latency_ms,omitempty"`
	Hang       bool   `json:"hang,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"`
}

func (j ruleJSON) rule() Rule {
	return Rule{
		To: j.To, Status: j.Status, Code: j.Code, Message: j.Message, Times: j.Times,
		Latency: time.Duration(j.LatencyMS) * time.Millisecond, Hang: j.Hang, RetryAfter: j.RetryAfter,
	}
}

func toRuleJSON(r Rule) ruleJSON {
	return ruleJSON{
		To: r.To, Status: r.Status, Code: r.Code, Message: r.Message, Times: r.Times,
		LatencyMS: r.Latency.Milliseconds(), Hang: r.Hang, RetryAfter: r.RetryAfter,
	}
}

type destStats struct {
	Requests  int `json:"requests"`
	Delivered int `json:"delivered"`
}

type stats struct {
	Total     int                  `json:"total"`
	Delivered int                  `json:"delivered"`
	ByTo      map[string]destStats `json:"by_to"`
}

func (s *Server) stats() stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := stats{Total: s.Total(), Delivered: s.delivered, ByTo: make(map[string]destStats, len(s.byTo))}
	for to, d := range s.byTo {
		st.ByTo[to] = destStats{Requests: d.requests, Delivered: d.delivered}
	}
	return st
}

// serveControl serves the control API. Its answers never contain OTP codes:
// they are built only from counters, rules and latency. Errors answer
// {"error":"..."}.
func (s *Server) serveControl(w http.ResponseWriter, r *http.Request) {
	route := r.URL.Path[len(ControlPrefix):]
	allow := map[string]string{
		"stats":   "GET",
		"reset":   "POST",
		"rules":   "GET, PUT",
		"latency": "GET, PUT",
	}[route]
	if allow == "" {
		controlError(w, http.StatusNotFound, "unknown control endpoint "+r.URL.Path+
			" (want stats, reset, rules or latency under "+ControlPrefix+")")
		return
	}
	switch route + " " + r.Method {
	case "stats GET":
		writeJSON(w, http.StatusOK, s.stats())
	case "reset POST":
		s.Reset()
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	case "rules GET":
		s.writeRules(w)
	case "rules PUT":
		rules, err := decodeRules(http.MaxBytesReader(w, r.Body, DefaultMaxBodyBytes))
		if err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.SetRules(rules...)
		s.writeRules(w)
	case "latency GET":
		s.writeLatency(w)
	case "latency PUT":
		q := r.URL.Query().Get("ms")
		ms, err := strconv.ParseInt(q, 10, 64)
		if err != nil || ms < 0 {
			controlError(w, http.StatusBadRequest, fmt.Sprintf("query parameter ms=%q is not a non-negative integer", q))
			return
		}
		s.SetLatency(time.Duration(ms) * time.Millisecond)
		s.writeLatency(w)
	default:
		w.Header().Set("Allow", allow)
		controlError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path+" (allowed: "+allow+")")
	}
}

func decodeRules(body io.Reader) ([]Rule, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("reading body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var in []ruleJSON
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("body must be a JSON array of rules with fields to, status, code, message, times, latency_ms, hang, retry_after: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("unexpected data after the JSON array")
	}
	rules := make([]Rule, len(in))
	for i, j := range in {
		if j.LatencyMS < 0 {
			return nil, fmt.Errorf("rule %d: latency_ms %d is negative", i, j.LatencyMS)
		}
		rules[i] = j.rule()
		if err := rules[i].validate(); err != nil {
			return nil, fmt.Errorf("rule %d: %v", i, err)
		}
	}
	return rules, nil
}

func (s *Server) writeRules(w http.ResponseWriter) {
	rules := s.rulesSnapshot()
	out := make([]ruleJSON, len(rules))
	for i, r := range rules {
		out[i] = toRuleJSON(r)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) writeLatency(w http.ResponseWriter) {
	d := time.Duration(s.latency.Load())
	writeJSON(w, http.StatusOK, map[string]int64{"latency_ms": d.Milliseconds()})
}

func controlError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
