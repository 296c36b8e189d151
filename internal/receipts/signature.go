package receipts

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// HeaderCallbackID is the header EngageLab signs each callback with:
// timestamp=…;nonce=…;username=…;signature=…
const HeaderCallbackID = "X-CALLBACK-ID"

// Verification errors. A *VerifyError wraps one of them.
var (
	// ErrBadSignature: the X-CALLBACK-ID header is missing, malformed, for
	// another username, or its signature does not match.
	ErrBadSignature = errors.New("bad callback signature")
	// ErrUnauthorized: the Authorization header is not the expected value.
	ErrUnauthorized = errors.New("bad callback authorization")
	// ErrReplay: the timestamp is outside the window, or the nonce was
	// already seen within it.
	ErrReplay = errors.New("callback replayed")
)

// VerifyError says why a callback was refused. Reason never holds the
// secret or the expected values.
type VerifyError struct {
	Err    error // ErrBadSignature, ErrUnauthorized or ErrReplay
	Reason string
}

func (e *VerifyError) Error() string { return e.Err.Error() + ": " + e.Reason }

// Unwrap returns the sentinel.
func (e *VerifyError) Unwrap() error { return e.Err }

func refuse(err error, format string, args ...any) error {
	return &VerifyError{Err: err, Reason: fmt.Sprintf(format, args...)}
}

// Sign returns EngageLab's callback signature: the lowercase hex
// HMAC-SHA256, keyed with secret, of timestamp+nonce+username.
func Sign(secret, timestamp, nonce, username string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp + nonce + username))
	return hex.EncodeToString(m.Sum(nil))
}

// CallbackID is a parsed X-CALLBACK-ID header.
type CallbackID struct {
	Timestamp, Nonce, Username, Signature string
}

// String formats id as EngageLab sends it.
func (id CallbackID) String() string {
	return "timestamp=" + id.Timestamp + ";nonce=" + id.Nonce + ";username=" + id.Username + ";signature=" + id.Signature
}

// NewCallbackID builds a signed header value (the fake provider and tests).
func NewCallbackID(secret, username, nonce string, at time.Time) CallbackID {
	ts := strconv.FormatInt(at.Unix(), 10)
	return CallbackID{Timestamp: ts, Nonce: nonce, Username: username, Signature: Sign(secret, ts, nonce, username)}
}

// maxFieldLen bounds each header field (a nonce becomes part of a Redis key).
const maxFieldLen = 128

// ParseCallbackID parses timestamp=…;nonce=…;username=…;signature=… (fields
// in any order, spaces around them ignored). Every field is required.
func ParseCallbackID(h string) (CallbackID, error) {
	var id CallbackID
	for _, part := range strings.Split(h, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			if strings.TrimSpace(part) == "" {
				continue
			}
			return CallbackID{}, refuse(ErrBadSignature, "X-CALLBACK-ID field without '='")
		}
		if len(v) > maxFieldLen {
			return CallbackID{}, refuse(ErrBadSignature, "X-CALLBACK-ID field %s longer than %d bytes", cleanText(k, 32), maxFieldLen)
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "timestamp":
			id.Timestamp = v
		case "nonce":
			id.Nonce = v
		case "username":
			id.Username = v
		case "signature":
			id.Signature = v
		}
	}
	for name, v := range map[string]string{"timestamp": id.Timestamp, "nonce": id.Nonce, "username": id.Username, "signature": id.Signature} {
		if v == "" {
			return CallbackID{}, refuse(ErrBadSignature, "X-CALLBACK-ID has no %s", name)
		}
	}
	return id, nil
}

// Credentials are what the receiver checks. The zero value checks nothing
// (acceptable on a loopback address only).
type Credentials struct {
	// Username and Secret, set in the EngageLab console, verify
	// X-CALLBACK-ID; both or neither.
	Username, Secret string
	// Authorization, when set, is the exact Authorization header value
	// expected (the console's optional "Authorization" setting).
	Authorization string
}

// Verifies reports whether c checks anything at all.
func (c Credentials) Verifies() bool { return c.Secret != "" || c.Authorization != "" }

// Check validates c.
func (c Credentials) Check() error {
	if (c.Username == "") != (c.Secret == "") {
		return fmt.Errorf("%w: set both OTPQ_CALLBACK_USER and OTPQ_CALLBACK_SECRET, or neither", ErrConfig)
	}
	return nil
}

// verify checks the Authorization header and the signature of header; it
// returns the parsed header (zero when no secret is configured) for the
// replay checks.
func (c Credentials) verify(header, authorization string) (CallbackID, error) {
	if c.Authorization != "" && !equal(authorization, c.Authorization) {
		return CallbackID{}, refuse(ErrUnauthorized, "Authorization header does not match")
	}
	if c.Secret == "" {
		return CallbackID{}, nil
	}
	if header == "" {
		return CallbackID{}, refuse(ErrBadSignature, "no X-CALLBACK-ID header")
	}
	id, err := ParseCallbackID(header)
	if err != nil {
		return CallbackID{}, err
	}
	want := Sign(c.Secret, id.Timestamp, id.Nonce, id.Username)
	// Both compared, always: no early exit tells which one was wrong.
	okSig, okUser := equal(strings.ToLower(id.Signature), want), equal(id.Username, c.Username)
	if !okSig || !okUser {
		return CallbackID{}, refuse(ErrBadSignature, "signature or username does not match")
	}
	return id, nil
}

// checkTime rejects a signed timestamp (Unix seconds) outside ±window of now.
func checkTime(id CallbackID, now time.Time, window time.Duration) error {
	sec, err := strconv.ParseInt(id.Timestamp, 10, 64)
	if err != nil {
		return refuse(ErrBadSignature, "X-CALLBACK-ID timestamp is not Unix seconds")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > window || d < -window {
		return refuse(ErrReplay, "timestamp %d is %s away from now, outside ±%s", sec, d.Round(time.Second), window)
	}
	return nil
}

// equal compares in constant time (over hashes, so lengths leak nothing).
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}
