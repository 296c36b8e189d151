// Package task holds otpq's wire format: the asynq task type name and the
// versioned JSON payload that producers write and workers read. Both sides
// of the queue import it, so the format is defined in exactly one place.
package task

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/otpq/otpq/internal/outcome"
)

// TypeSend is the asynq task type of an OTP send. It is a permanent wire
// name: tasks already in Redis carry it, so it must never change.
const TypeSend = "otp:send"

// Version is the payload version this build writes for a plaintext code.
const Version = 1

// VersionSealed is the payload version of a payload whose code is sealed
// (encrypted, see internal/sealing): it carries Sealed instead of Code.
// Builds that predate it reject it as an unknown version instead of
// sending an empty code. Decode reads both versions.
const VersionSealed = 2

// Queue names. Interactive sends go to QueueCritical, batch jobs to QueueBulk;
// workers serve QueueCritical first (strict priority).
const (
	QueueCritical = "critical"
	QueueBulk     = "bulk"
)

// ErrBadPayload is wrapped by every Decode error.
var ErrBadPayload = errors.New("bad payload")

// Template is the EngageLab template reference of a send.
type Template struct {
	ID       string            `json:"id"`
	Language string            `json:"language,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
}

// Payload is the body of an otp:send task.
type Payload struct {
	V    int    `json:"v"`
	To   string `json:"to"`
	Code string `json:"code,omitempty"`
	// Sealed is the code encrypted with a payload key (version 2 only):
	// kid:base64(nonce‖ciphertext‖tag), bound to To.
	Sealed    string    `json:"sealed,omitempty"`
	Template  Template  `json:"template"`
	ExpiresAt time.Time `json:"expires_at"`
	CreatedAt time.Time `json:"created_at"`
	// Scrubbed is set on the stored copy of a finished task whose code was
	// removed (see Scrub); such a payload can never be sent again.
	Scrubbed bool `json:"scrubbed,omitempty"`
}

// Encode returns the JSON form of p: version 1 with a plaintext Code,
// VersionSealed with a Sealed code.
func Encode(p Payload) ([]byte, error) {
	p.V = Version
	if p.Sealed != "" {
		if p.Code != "" {
			return nil, errors.New("task: a payload carries either code or sealed, not both")
		}
		p.V = VersionSealed
	}
	return json.Marshal(p)
}

// Scrub returns the stored payload b with its code (plaintext or sealed)
// removed and Scrubbed set, for a task that is finished and must not keep a
// live code, and the code's expiry read in the same pass (zero when b has
// none). It works on the raw JSON so that fields and versions this build
// does not know are kept. ok is false when b is not a JSON object or holds
// no code (already scrubbed, or not otpq's).
func Scrub(b []byte) (out []byte, expires time.Time, ok bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil || m == nil {
		return nil, time.Time{}, false
	}
	_, hasCode := m["code"]
	_, hasSealed := m["sealed"]
	if !hasCode && !hasSealed {
		return nil, time.Time{}, false
	}
	if raw, has := m["expires_at"]; has {
		_ = json.Unmarshal(raw, &expires) // a malformed expiry reads as zero
	}
	delete(m, "code")
	delete(m, "sealed")
	m["scrubbed"] = json.RawMessage("true")
	out, err := json.Marshal(m)
	return out, expires, err == nil
}

// Decode parses and checks a payload. It rejects junk, unknown fields,
// unknown versions and payloads missing a required field. Errors wrap
// ErrBadPayload and never contain the code.
func Decode(b []byte) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return Payload{}, fmt.Errorf("%w: invalid JSON at offset %d", ErrBadPayload, syn.Offset)
		case errors.As(err, &typ):
			return Payload{}, fmt.Errorf("%w: field %q has the wrong type", ErrBadPayload, typ.Field)
		default:
			// Messages from encoding/json name fields, never values.
			return Payload{}, fmt.Errorf("%w: %s", ErrBadPayload, jsonErrText(err))
		}
	}
	if dec.More() {
		return Payload{}, fmt.Errorf("%w: trailing data after JSON object", ErrBadPayload)
	}
	switch {
	case p.V != Version && p.V != VersionSealed:
		return Payload{}, fmt.Errorf("%w: unsupported version %d (this build reads %d and %d)", ErrBadPayload, p.V, Version, VersionSealed)
	case p.Scrubbed:
		return Payload{}, fmt.Errorf("%w: the code was scrubbed when the task finished; it cannot be sent again", ErrBadPayload)
	case p.To == "":
		return Payload{}, fmt.Errorf("%w: missing to", ErrBadPayload)
	case p.V == Version && p.Sealed != "":
		return Payload{}, fmt.Errorf("%w: version %d cannot carry a sealed code", ErrBadPayload, Version)
	case p.V == VersionSealed && (p.Sealed == "" || p.Code != ""):
		return Payload{}, fmt.Errorf("%w: version %d needs a sealed code and no plaintext code", ErrBadPayload, VersionSealed)
	case p.V == Version && p.Code == "":
		return Payload{}, fmt.Errorf("%w: missing code", ErrBadPayload)
	case p.Template.ID == "":
		return Payload{}, fmt.Errorf("%w: missing template.id", ErrBadPayload)
	case p.ExpiresAt.IsZero():
		return Payload{}, fmt.Errorf("%w: missing expires_at", ErrBadPayload)
	}
	return p, nil
}

func jsonErrText(err error) string {
	if errors.Is(err, io.EOF) {
		return "empty payload"
	}
	return err.Error()
}

// Result is what a worker writes as the task result of a completed send.
type Result struct {
	MessageID   string    `json:"message_id"`
	SendChannel string    `json:"send_channel"`
	Attempts    int       `json:"attempts"`
	SentAt      time.Time `json:"sent_at"`
	// Outcome is outcome.Delivered, or outcome.AcceptedUnconfirmed when the
	// provider answered 2xx without a readable message_id (the code was
	// taken and is not sent again). Empty in results of older workers:
	// delivered.
	Outcome outcome.Outcome `json:"outcome,omitempty"`
}

// Languages are the template languages the API accepts.
var Languages = []string{"default", "zh_CN", "zh_HK", "en", "ja", "th", "es"}
