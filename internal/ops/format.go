package ops

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
)

// Redacted replaces the code (and any field the UI does not know) in what
// the web UI shows.
const Redacted = "[redacted]"

// uiWidth is the longest line of a payload or result the UI shows: its
// boxes are at most 400 px wide (about 50 characters of its monospace
// font), and shorter lines leave the task tables room for every column at
// 1280 px. Longer summaries and values wrap.
const uiWidth = 40

// FormatPayload is the web UI's payload formatter: a summary line
// (destination masked, template, language), then the times in RFC3339
// seconds and the template's parameter names. It works on an allowlist:
// wire internals (the version, retention) are left out, parameter values,
// the code or sealed code of older payloads and every field it does not
// know (fields a later version adds) show as [redacted], and a payload
// that is not a JSON object is never echoed, only its size.
func FormatPayload(_ string, payload []byte) string {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil || fields == nil {
		return fmt.Sprintf("(undecodable %d-byte payload, not shown)", len(payload))
	}
	var head []string
	var v view
	if raw, ok := fields["to"]; ok {
		var to string
		if json.Unmarshal(raw, &to) == nil {
			head = append(head, "to "+redact.Destination(to))
		} else {
			head = append(head, "to "+Redacted)
		}
	}
	var tmpl view
	if raw, ok := fields["template"]; ok {
		head = append(head, templateSummary(raw, &tmpl)...)
	}
	for _, k := range sortedKeys(fields) {
		raw := fields[k]
		switch k {
		case "v", "retention_s", "to", "template": // wire internals, or in the summary
		case "created_at", "expires_at":
			v.field(k, timeValue(raw))
		case "scrubbed":
			if b, ok := scalarOr(raw).(bool); ok && b {
				v.field("code", "scrubbed, never sent")
			} else if !ok {
				v.field(k, Redacted)
			}
		case "code", "sealed":
			v.field("code", Redacted)
		default:
			v.field(k, Redacted)
		}
	}
	var out view
	out.summary(strings.Join(head, " · "))
	out.lines = append(out.lines, v.lines...)
	out.lines = append(out.lines, tmpl.lines...)
	return out.String()
}

// templateSummary returns the template ID and language for the summary
// line and adds the parameter names (values are personal data, never
// shown) and unknown template fields to v.
func templateSummary(raw json.RawMessage, v *view) []string {
	var t map[string]json.RawMessage
	if json.Unmarshal(raw, &t) != nil || t == nil {
		v.field("template", Redacted)
		return nil
	}
	var head []string
	for _, k := range sortedKeys(t) {
		switch k {
		case "id":
			head = slices.Insert(head, 0, "template "+scalarText(t[k]))
		case "language":
			head = append(head, scalarText(t[k]))
		case "params":
			var params map[string]json.RawMessage
			if json.Unmarshal(t[k], &params) != nil {
				v.field("params", Redacted)
				continue
			}
			if len(params) > 0 {
				v.field("params", strings.Join(sortedKeys(params), ", ")+" (values hidden)")
			}
		default:
			v.field("template."+k, Redacted)
		}
	}
	return head
}

// FormatResult is the web UI's result formatter for a completed send
// without a delivery receipt: see FormatResultReceipt. (asynqmon passes an
// empty task type for some views, so the type is not used.)
func FormatResult(_ string, result []byte) string {
	return FormatResultReceipt(result, nil)
}

// FormatResultReceipt is the web UI's result of a completed send, rc its
// delivery receipt if any: the verdict's one-line summary first, in the
// words of otpq status (delivered · sms · 1.2 s after acceptance · 0.005
// USD), then message_id, attempts, when EngageLab accepted it and the
// receipt's state, times (RFC3339 seconds, or seconds after acceptance),
// error, cost and stages. Unknown result fields show as [redacted]; a
// result that is not a JSON object is not shown.
func FormatResultReceipt(result []byte, rc *receipts.Receipt) string {
	if len(result) == 0 {
		return ""
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(result, &fields); err != nil || fields == nil {
		return fmt.Sprintf("(undecodable %d-byte result, not shown)", len(result))
	}
	str := func(k string) string {
		var s string
		if json.Unmarshal(fields[k], &s) != nil {
			return ""
		}
		return engagelab.Printable(s, engagelab.MaxIDText)
	}
	var attempts int
	_ = json.Unmarshal(fields["attempts"], &attempts)
	var receiptVerdict outcome.Verdict
	if rc != nil {
		receiptVerdict = rc.Verdict()
	}
	f := outcome.Facts{
		Verdict:  outcome.Of(receiptVerdict, "completed", outcome.Outcome(str("outcome"))),
		Channel:  str("send_channel"),
		Attempts: attempts,
	}
	var v view
	if id := str("message_id"); id != "" {
		v.field("message_id", id)
	}
	if attempts > 0 {
		v.field("attempts", strconv.Itoa(attempts))
	}
	if _, ok := fields["sent_at"]; ok {
		v.field("accepted_at", timeValue(fields["sent_at"]))
	}
	if rc != nil {
		receiptFacts(&f, rc)
		receiptView(&v, rc, f.Channel)
	}
	for _, k := range sortedKeys(fields) {
		switch k {
		case "message_id", "send_channel", "attempts", "sent_at", "outcome":
		default:
			v.field(k, Redacted)
		}
	}
	var out view
	out.summary(f.Summary())
	out.lines = append(out.lines, v.lines...)
	return out.String()
}

// receiptFacts adds what the summary says of a receipt, as otpq status
// does: its channel, error, time after acceptance and cost.
func receiptFacts(f *outcome.Facts, rc *receipts.Receipt) {
	if rc.Channel != "" {
		f.Channel = rc.Channel
	}
	f.ErrorCode, f.ErrorText = rc.ErrorCode, rc.ErrorDetail
	f.Cost, f.Currency = rc.Cost, rc.Currency
	if d, ok := rc.SinceAccepted(rc.DeliveredAt); ok {
		f.After, f.HasAfter = d, true
	} else if d, ok := rc.SinceAccepted(rc.StateAt); ok && rc.Final {
		f.After, f.HasAfter = d, true
	}
}

// receiptView adds the receipt's fields to v: its state (and EngageLab's
// spelling, raw_status, when it differs), the channel when the send was accepted on
// another one, when the state was reported, and each stage in seconds
// after acceptance. Error and cost are in the summary.
func receiptView(v *view, rc *receipts.Receipt, acceptedOn string) {
	v.field("receipt", rc.State)
	if rc.RawStatus != "" && rc.RawStatus != rc.State {
		v.field("raw_status", rc.RawStatus)
	}
	at := func(t time.Time) string {
		if d, ok := rc.SinceAccepted(t); ok {
			return "+" + outcome.Seconds(d)
		}
		return t.UTC().Format(time.RFC3339)
	}
	if !rc.DeliveredAt.IsZero() {
		v.field("delivered_at", rc.DeliveredAt.UTC().Format(time.RFC3339))
	} else if !rc.StateAt.IsZero() {
		v.field("reported_at", rc.StateAt.UTC().Format(time.RFC3339))
	}
	if len(rc.History) == 0 {
		return
	}
	v.lines = append(v.lines, "stages:")
	for _, st := range rc.History {
		line := "  " + at(st.At) + " " + st.Status
		if st.Channel != "" && st.Channel != acceptedOn {
			line += " (" + st.Channel + ")"
		}
		if st.ErrorCode != 0 {
			line += " " + strconv.Itoa(st.ErrorCode)
		}
		v.lines = append(v.lines, line)
	}
}

// view is the text the UI shows in a payload or result box: lines of at
// most uiWidth characters where it can.
type view struct{ lines []string }

// summary adds s wrapped at its " · " separators (and at spaces inside a
// part longer than a line), then a blank line.
func (v *view) summary(s string) {
	if s == "" {
		return
	}
	line := ""
	for part := range strings.SplitSeq(s, " · ") {
		switch {
		case line == "":
			line = part
		case runes(line)+runes(" · ")+runes(part) <= uiWidth:
			line += " · " + part
		default:
			v.lines = append(v.lines, line)
			line = "· " + part
		}
		line = v.wrap(line, 2)
	}
	v.lines = append(v.lines, line, "")
}

// field adds "k: value", the value wrapped at spaces onto indented lines
// when the line would be too long.
func (v *view) field(k, value string) {
	line := v.wrap(k+": "+value, runes(k)+2) // adds the leading lines first
	v.lines = append(v.lines, line)
}

// wrap adds the leading lines of line, cut at spaces past its first keep
// runes, while it is longer than uiWidth, and returns the rest, indented.
func (v *view) wrap(line string, keep int) string {
	for runes(line) > uiWidth {
		cut, n := -1, 0
		for i, r := range line {
			if n > uiWidth {
				break
			}
			if r == ' ' && n > keep {
				cut = i
			}
			n++
		}
		if cut < 0 {
			break
		}
		v.lines = append(v.lines, line[:cut])
		line = "  " + line[cut+1:]
	}
	return line
}

func runes(s string) int { return utf8.RuneCountInString(s) }

func (v view) String() string { return strings.TrimRight(strings.Join(v.lines, "\n"), "\n") }

// timeValue shows a JSON time in RFC3339 seconds, UTC; anything else as
// Redacted.
func timeValue(raw json.RawMessage) string {
	var t time.Time
	if json.Unmarshal(raw, &t) != nil {
		return Redacted
	}
	return t.UTC().Format(time.RFC3339)
}

// scalarText is a JSON string, number or bool as text, anything else (an
// object or array that could nest a secret) as Redacted.
func scalarText(raw json.RawMessage) string {
	switch v := scalarOr(raw).(type) {
	case string:
		return engagelab.Printable(v, engagelab.MaxIDText)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	}
	return Redacted
}

// scalarOr returns a JSON string, number, bool or null as it is, anything
// else (an object or array that could nest a secret) as Redacted.
func scalarOr(raw json.RawMessage) any {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return Redacted
	}
	switch v.(type) {
	case string, float64, bool, nil:
		return v
	}
	return Redacted
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
