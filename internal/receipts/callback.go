package receipts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/redact"
)

// ErrMalformed is wrapped by ParseBody's errors: the body is not the
// callback envelope.
var ErrMalformed = errors.New("malformed callback body")

// ErrConfig is wrapped by configuration errors.
var ErrConfig = errors.New("callback receiver configuration")

// Row is one entry of a callback's rows, as EngageLab sends it. Only the
// fields otpq uses are decoded.
type Row struct {
	MessageID string     `json:"message_id"`
	To        string     `json:"to"`
	Channel   string     `json:"channel"`
	ITime     int64      `json:"itime"`
	Status    *RowStatus `json:"status"`
	// bad marks a row that is not an object or whose fields have the
	// wrong types (ParseBody): skipped and counted, never stored.
	bad bool
}

// RowStatus is a row's status object.
type RowStatus struct {
	MessageStatus string `json:"message_status"`
	StatusData    struct {
		MsgTime            int64  `json:"msg_time"`
		MessageID          string `json:"message_id"`
		CurrentSendChannel string `json:"current_send_channel"`
	} `json:"status_data"`
	Billing *struct {
		Cost     float64 `json:"cost"`
		Currency string  `json:"currency"`
	} `json:"billing"`
	ErrorCode   int `json:"error_code"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"error_detail"`
}

// envelope is {"total":N,"rows":[…]}.
type envelope struct {
	Total int               `json:"total"`
	Rows  []json.RawMessage `json:"rows"`
}

// ParseBody decodes a callback body into its rows. An empty body, "{}" and
// an envelope without rows (EngageLab's URL check) give no rows and no
// error. A row that is not an object, or whose fields have the wrong types,
// is returned as a zero Row that EventOf refuses (the receiver skips and
// counts it) so that one odd row cannot make EngageLab retry the others
// forever.
func ParseBody(body []byte) ([]Row, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, nil
	}
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	rows := make([]Row, len(env.Rows))
	for i, raw := range env.Rows {
		var r Row
		if json.Unmarshal(raw, &r) != nil {
			r = Row{bad: true}
		}
		rows[i] = r
	}
	return rows, nil
}

// Event is one status receipt reduced to what otpq stores: cleaned, capped,
// no destination (the link holds the masked one).
type Event struct {
	MessageID string
	// Status is the canonical status (or the cleaned raw value when
	// unknown); Raw is the value as sent (cleaned).
	Status, Raw string
	Known       bool
	Channel     string
	// At is when EngageLab sent the callback (itime, seconds), else when
	// it arrived; Received is when it arrived.
	At, Received time.Time
	ErrorCode    int
	// ErrorDetail is the provider's text as received, bounded (heldText),
	// until the receiver finds the task: it is stored and logged only
	// through detailText, which scrubs the task's code from it.
	ErrorDetail string
	Cost        float64
	Currency    string
	// MaskedTo is the row's destination, masked (for the cross-check).
	MaskedTo string
}

// Limits of stored provider text.
const (
	maxDetail = 200
	// maxHeldDetail caps an error detail as received, before the task's
	// code is scrubbed from it (see heldText).
	maxHeldDetail = 1024
	maxChannel    = 32
	maxStatus     = 40
)

// Bounds of a row's numbers. A row outside them is skipped (and counted
// by its reason), the rest of its callback stored: one bad row must not
// make EngageLab retry the others forever, nor leave a value that cannot
// be shown (a year past 9999 has no JSON form, +Inf neither).
const (
	// MinITime is the earliest itime accepted (2000-01-01, Unix seconds);
	// 0 means absent (the arrival time is used).
	MinITime = 946684800
	// MaxITimeAhead is how far past the receiver's clock an itime may be:
	// more is a clock gone wrong or a value in milliseconds.
	MaxITimeAhead = time.Hour
	// MaxCost is the highest billing.cost accepted for one row (USD); an
	// OTP costs cents, so anything above is not a price.
	MaxCost = 100.0
)

// Reasons EventOf refuses a row (the reason label of
// otpq_callback_rows_skipped_total; internal/metrics holds the values).
var (
	errNotReceipt = errors.New("not a status receipt")
	errBadType    = errors.New("row is not an object or has fields of the wrong type")
	errBadTime    = errors.New("itime out of range")
	errBadCost    = errors.New("billing.cost out of range")
)

// EventOf reduces a row with a status to an Event; ok is false for rows
// that are not status receipts (no status object, no message_status or no
// message_id) and for rows with a value out of range (see MinITime,
// MaxITimeAhead, MaxCost) or of the wrong type.
func EventOf(r Row, received time.Time) (Event, bool) {
	e, err := eventOf(r, received)
	return e, err == nil
}

// eventOf is EventOf with the reason of a refusal: errNotReceipt,
// errBadType, errBadTime or errBadCost.
func eventOf(r Row, received time.Time) (Event, error) {
	if r.bad {
		return Event{}, errBadType
	}
	if r.Status == nil || strings.TrimSpace(r.Status.MessageStatus) == "" {
		return Event{}, errNotReceipt
	}
	mid := r.MessageID
	if mid == "" {
		mid = r.Status.StatusData.MessageID
	}
	if mid == "" || len(mid) > maxFieldLen {
		return Event{}, errNotReceipt
	}
	if r.ITime != 0 && (r.ITime < MinITime || r.ITime > received.Add(MaxITimeAhead).Unix()) {
		return Event{}, errBadTime
	}
	if b := r.Status.Billing; b != nil && (b.Cost < 0 || b.Cost > MaxCost || math.IsNaN(b.Cost)) {
		return Event{}, errBadCost
	}
	raw := cleanText(r.Status.MessageStatus, maxStatus)
	canonical, known := Canonical(raw)
	ch := r.Status.StatusData.CurrentSendChannel
	if ch == "" {
		ch = r.Channel
	}
	e := Event{
		MessageID: mid, Status: canonical, Raw: raw, Known: known,
		Channel: cleanText(ch, maxChannel), At: received.UTC(), Received: received.UTC(), ErrorCode: r.Status.ErrorCode,
	}
	if r.ITime != 0 {
		e.At = time.Unix(r.ITime, 0).UTC()
	}
	if d := r.Status.ErrorDetail; d != nil {
		e.ErrorDetail = heldText(d.Message)
	}
	if b := r.Status.Billing; b != nil && b.Cost > 0 {
		e.Cost, e.Currency = b.Cost, cleanText(b.Currency, 8)
	}
	if r.To != "" {
		e.MaskedTo = redact.Destination(r.To)
	}
	return e, nil
}

// heldText is an error detail as received, bounded: valid UTF-8, cut to
// maxHeldDetail bytes (redact.Cut: a code the cut splits goes whole). It is
// finished by detailText once the receipt's task, hence the fingerprint of
// its code, is known.
func heldText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if cut, ok := redact.Cut(s, maxHeldDetail); ok {
		return cut + "…"
	}
	return s
}

// detailText makes an error detail safe to store and log: the task's code
// redacted wherever its fingerprint matches (any case, grouped by spaces or
// dashes), then cleanText.
func detailText(s, codeFingerprint string) string {
	return cleanText(redact.ByFingerprint(s, codeFingerprint), maxDetail)
}

// cleanText makes provider text safe to store and show: e-mail addresses
// masked, runs of 4 or more digits (also in groups joined by a space or a
// dash: redact.DigitRuns) replaced by '#' (a phone number or a code echoed
// by the provider must not be stored), control, bidi and zero-width
// characters escaped (engagelab.Printable), and the result capped at max
// bytes.
func cleanText(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	fields := strings.Fields(s)
	if len(fields) > 0 && strings.Contains(s, "@") {
		for _, f := range fields {
			if strings.Contains(f, "@") {
				s = strings.ReplaceAll(s, f, redact.Destination(f))
			}
		}
	}
	// Escaping and the cap are the same as for the provider's answers to
	// sends: control, bidi and zero-width characters never reach a terminal.
	return engagelab.Printable(redact.DigitRuns(s), max)
}
