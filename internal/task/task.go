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

// Version is the payload version of a payload carrying a plaintext code
// (written by builds before VersionCodeKey; still read).
const Version = 1

// VersionSealed is the payload version of a payload whose code is sealed
// (encrypted, see internal/sealing): it carries Sealed instead of Code.
// Builds that predate it reject it as an unknown version instead of
// sending an empty code. Written by builds before VersionCodeKey; still read.
const VersionSealed = 2

// VersionCodeKey is the payload version this build writes: the payload
// carries no code at all. The code lives in its own Redis key next to the
// task (see asynqstore.CodeKey), holding CodeValue or SealedCodeValue and
// expiring with the code; the worker reads it at each attempt and deletes
// it once the code is delivered. Builds that predate it reject it as an
// unknown version instead of sending an empty code.
const VersionCodeKey = 3

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
	// RetentionSec is how long, in seconds, the task and its result are
	// kept after delivery (version 3; 0: the worker's default): the TTL of
	// the delivery receipt link.
	RetentionSec int64 `json:"retention_s,omitempty"`
	// Scrubbed marks a version 1 or 2 payload whose code an older build
	// removed after the task finished; it can never be sent.
	Scrubbed bool `json:"scrubbed,omitempty"`
}

// Encode returns the JSON form of p: VersionCodeKey when p carries no code
// (the code is in its code key), version 1 with a plaintext Code,
// VersionSealed with a Sealed code (the last two for tests of old tasks).
func Encode(p Payload) ([]byte, error) {
	switch {
	case p.Code != "" && p.Sealed != "":
		return nil, errors.New("task: a payload carries either code or sealed, not both")
	case p.Code != "":
		p.V = Version
	case p.Sealed != "":
		p.V = VersionSealed
	default:
		p.V = VersionCodeKey
	}
	return json.Marshal(p)
}

// Code key values: a plaintext code or a sealed one, told apart by a prefix.
const (
	plainPrefix  = "p:"
	sealedPrefix = "s:"
)

// CodeValue is the code key value of a plaintext code.
func CodeValue(code string) string { return plainPrefix + code }

// SealedCodeValue is the code key value of a code sealed (internal/sealing)
// with SealContext.
func SealedCodeValue(sealed string) string { return sealedPrefix + sealed }

// SealContext binds a sealed code to its destination and its task: a
// sealed value copied to another task's code key does not open.
func SealContext(to, taskID string) string { return to + "\x00" + taskID }

// ParseCodeValue splits a code key value into the code or the sealed code.
// The error never contains the value.
func ParseCodeValue(v string) (code, sealed string, err error) {
	switch {
	case len(v) > len(plainPrefix) && v[:len(plainPrefix)] == plainPrefix:
		return v[len(plainPrefix):], "", nil
	case len(v) > len(sealedPrefix) && v[:len(sealedPrefix)] == sealedPrefix:
		return "", v[len(sealedPrefix):], nil
	}
	return "", "", fmt.Errorf("%w: the code key holds a %d-byte value of unknown form", ErrBadPayload, len(v))
}

// Decode parses and checks a payload. It rejects junk, unknown fields,
// unknown versions and payloads missing a required field. Errors wrap
// ErrBadPayload and never contain the code.
func Decode(b []byte) (Payload, error) {
	var p Payload
	if !fastDecode(b, &p) {
		var err error
		if p, err = decodeJSON(b); err != nil {
			return Payload{}, err
		}
	}
	if err := check(p); err != nil {
		return Payload{}, err
	}
	return p, nil
}

// decodeJSON is Decode's parse by encoding/json: the reference fastDecode
// follows, and the path of every payload fastDecode declines.
func decodeJSON(b []byte) (Payload, error) {
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
	return p, nil
}

// check refuses a decoded payload that is not one a producer writes.
func check(p Payload) error {
	switch {
	case p.V != Version && p.V != VersionSealed && p.V != VersionCodeKey:
		return fmt.Errorf("%w: unsupported version %d (this build reads %d to %d)", ErrBadPayload, p.V, Version, VersionCodeKey)
	case p.Scrubbed:
		return fmt.Errorf("%w: the code was scrubbed when the task finished; it cannot be sent again", ErrBadPayload)
	case p.To == "":
		return fmt.Errorf("%w: missing to", ErrBadPayload)
	case p.V == Version && p.Sealed != "":
		return fmt.Errorf("%w: version %d cannot carry a sealed code", ErrBadPayload, Version)
	case p.V == VersionSealed && (p.Sealed == "" || p.Code != ""):
		return fmt.Errorf("%w: version %d needs a sealed code and no plaintext code", ErrBadPayload, VersionSealed)
	case p.V == VersionCodeKey && (p.Code != "" || p.Sealed != ""):
		return fmt.Errorf("%w: version %d carries no code (it is in the code key)", ErrBadPayload, VersionCodeKey)
	case p.V == Version && p.Code == "":
		return fmt.Errorf("%w: missing code", ErrBadPayload)
	case p.Template.ID == "":
		return fmt.Errorf("%w: missing template.id", ErrBadPayload)
	case p.ExpiresAt.IsZero():
		return fmt.Errorf("%w: missing expires_at", ErrBadPayload)
	}
	return nil
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
	// Outcome is outcome.Accepted, or outcome.AcceptedUnconfirmed when the
	// provider answered 2xx without a readable message_id (the code was
	// taken and is not sent again). Older workers wrote "delivered" or
	// nothing for Accepted: read it with outcome.Parse.
	Outcome outcome.Outcome `json:"outcome,omitempty"`
}
