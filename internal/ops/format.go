package ops

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/otpq/otpq/internal/receipts"
	"github.com/otpq/otpq/internal/redact"
)

// Redacted replaces the code (and any field the UI does not know) in what
// the web UI shows.
const Redacted = "[redacted]"

// FormatPayload is the web UI's payload formatter. It shows a task's
// payload with the code redacted and the destination masked. It works on an
// allowlist: only fields known to be safe are shown as they are (version,
// template ID and language, timestamps, retention, whether an old build
// scrubbed the code), the
// destination is masked, template
// parameter values and every other field (the code, a sealed code, fields a
// later version adds) are redacted. A payload that is not a JSON object is
// never echoed, only its size.
func FormatPayload(taskType string, payload []byte) string {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(payload, &fields); err != nil || fields == nil {
		return fmt.Sprintf("(undecodable %d-byte payload, not shown)", len(payload))
	}
	out := make([]kv, 0, len(fields))
	for _, k := range sortedKeys(fields) {
		v := fields[k]
		switch k {
		case "v", "expires_at", "created_at", "retention_s", "scrubbed":
			out = append(out, kv{k, scalarOr(v)})
		case "to":
			var to string
			if json.Unmarshal(v, &to) != nil {
				out = append(out, kv{k, Redacted})
				continue
			}
			out = append(out, kv{k, redact.Destination(to)})
		case "template":
			out = append(out, kv{k, formatTemplate(v)})
		default:
			out = append(out, kv{k, Redacted})
		}
	}
	return encodeOrdered(out)
}

// FormatResult is the web UI's result formatter: message_id, send_channel,
// attempts, sent_at and outcome (delivered, accepted_unconfirmed) of a
// completed send; any other field is redacted and
// a result that is not a JSON object is not shown. (asynqmon passes an empty
// task type for some views, so the type is not used.)
func FormatResult(_ string, result []byte) string {
	return FormatResultReceipt(result, nil)
}

// FormatResultReceipt is FormatResult with the task's delivery receipt, if
// any, under "delivery": state, channel, times, error and cost (all from
// the receipt store, which holds no code and a masked destination only).
func FormatResultReceipt(result []byte, rc *receipts.Receipt) string {
	if len(result) == 0 {
		return ""
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(result, &fields); err != nil || fields == nil {
		return fmt.Sprintf("(undecodable %d-byte result, not shown)", len(result))
	}
	out := make([]kv, 0, len(fields))
	for _, k := range sortedKeys(fields) {
		switch k {
		case "message_id", "send_channel", "attempts", "sent_at", "outcome":
			out = append(out, kv{k, scalarOr(fields[k])})
		default:
			out = append(out, kv{k, Redacted})
		}
	}
	if rc != nil {
		out = append(out, kv{"delivery", receiptFields(rc)})
	}
	return encodeOrdered(out)
}

// formatTemplate shows the template ID and language; parameter values are
// personal data, so only their names are shown.
func formatTemplate(raw json.RawMessage) any {
	var t map[string]json.RawMessage
	if json.Unmarshal(raw, &t) != nil || t == nil {
		return Redacted
	}
	out := make([]kv, 0, len(t))
	for _, k := range sortedKeys(t) {
		switch k {
		case "id", "language":
			out = append(out, kv{k, scalarOr(t[k])})
		case "params":
			var params map[string]json.RawMessage
			if json.Unmarshal(t[k], &params) != nil {
				out = append(out, kv{k, Redacted})
				continue
			}
			hidden := make([]kv, 0, len(params))
			for _, name := range sortedKeys(params) {
				hidden = append(hidden, kv{name, Redacted})
			}
			out = append(out, kv{k, ordered(hidden)})
		default:
			out = append(out, kv{k, Redacted})
		}
	}
	return ordered(out)
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

type kv struct {
	k string
	v any
}

// ordered is a JSON object that keeps its keys in order.
type ordered []kv

func (o ordered) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func encodeOrdered(o []kv) string {
	b, err := json.MarshalIndent(ordered(o), "", "  ")
	if err != nil {
		return "(not shown)"
	}
	return string(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
