package receipts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
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
// is returned as a zero Row (ignored like a row without status) so that
// one odd row cannot make EngageLab retry the others forever.
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
		if json.Unmarshal(raw, &r) == nil {
			rows[i] = r
		}
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
	ErrorDetail  string
	Cost         float64
	Currency     string
	// MaskedTo is the row's destination, masked (for the cross-check).
	MaskedTo string
}

// Limits of stored provider text.
const (
	maxDetail  = 200
	maxChannel = 32
	maxStatus  = 40
)

// EventOf reduces a row with a status to an Event; ok is false for rows
// that are not status receipts (no status object, no message_status or no
// message_id).
func EventOf(r Row, received time.Time) (Event, bool) {
	if r.Status == nil || strings.TrimSpace(r.Status.MessageStatus) == "" {
		return Event{}, false
	}
	mid := r.MessageID
	if mid == "" {
		mid = r.Status.StatusData.MessageID
	}
	if mid == "" || len(mid) > maxFieldLen {
		return Event{}, false
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
	if r.ITime > 0 {
		e.At = time.Unix(r.ITime, 0).UTC()
	}
	if d := r.Status.ErrorDetail; d != nil {
		e.ErrorDetail = cleanText(d.Message, maxDetail)
	}
	if b := r.Status.Billing; b != nil && b.Cost > 0 {
		e.Cost, e.Currency = b.Cost, cleanText(b.Currency, 8)
	}
	if r.To != "" {
		e.MaskedTo = redact.Destination(r.To)
	}
	return e, true
}

// cleanText makes provider text safe to store and show: control, bidi and
// zero-width characters escaped (engagelab.Printable), runs of 4 or more digits replaced by '#' (a phone number or a
// code echoed by the provider must not be stored), e-mail addresses masked,
// and the result capped at max bytes.
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
	var b strings.Builder
	run := 0
	flush := func(i int) {
		if run >= 4 {
			b.WriteString(strings.Repeat("#", run))
		} else {
			b.WriteString(s[i-run : i])
		}
		run = 0
	}
	for i, c := range s {
		if c >= '0' && c <= '9' {
			run++
			continue
		}
		flush(i)
		b.WriteRune(c)
	}
	flush(len(s))
	// Escaping and the cap are the same as for the provider's answers to
	// sends: control, bidi and zero-width characters never reach a terminal.
	return engagelab.Printable(b.String(), max)
}
