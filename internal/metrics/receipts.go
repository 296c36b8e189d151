package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of one callback request, the values of the result label of
// otpq_callback_requests_total.
const (
	CallbackOK             = "ok"              // at least one receipt recorded (or a duplicate of one)
	CallbackCheck          = "check"           // EngageLab's URL check: empty body, {} or no rows
	CallbackIgnored        = "ignored"         // only rows without status (notifications, system events)
	CallbackUnknownMessage = "unknown_message" // only receipts for message_ids without a link yet (held pending)
	CallbackBadSignature   = "bad_signature"   // X-CALLBACK-ID missing, malformed or wrong: 401
	CallbackUnauthorized   = "unauthorized"    // Authorization header not the expected value: 401
	CallbackReplay         = "replay"          // timestamp outside the window or nonce seen: 401
	CallbackMalformed      = "malformed"       // not the JSON envelope, or over the size cap: 400/413
	CallbackError          = "error"           // Redis failed: 503, EngageLab retries
)

// Results of one receipt row, the values of the result label of
// otpq_callback_rows_total.
const (
	RowApplied   = "applied"   // recorded, state changed
	RowStale     = "stale"     // recorded in history; an earlier stage or no change of state
	RowDuplicate = "duplicate" // already recorded
	RowPending   = "pending"   // no link yet: held for DefaultPendingTTL
	RowAttached  = "attached"  // a held receipt was attached once the link appeared
	RowExpired   = "expired"   // a held receipt whose link never appeared, dropped
	RowIgnored   = "ignored"   // no status, or no message_id
	RowMismatch  = "mismatch"  // the row's destination is not the task's: dropped
	RowInvalid   = "invalid"   // a value out of range or of the wrong type: skipped (reason in otpq_callback_rows_dropped_total)
	RowDropped   = "dropped"   // no link yet and the held receipts are at their cap: not held (reason in otpq_callback_rows_dropped_total)
)

// Reasons a row is not stored, the values of the reason label of
// otpq_callback_rows_dropped_total.
const (
	DropBadType     = "bad_type"         // not an object, or a field of the wrong type
	DropBadTime     = "bad_time"         // itime before 2000, over an hour ahead, or in milliseconds
	DropBadCost     = "bad_cost"         // billing.cost negative or above the per-row maximum
	DropHeldCount   = "held_count"       // held receipts at their count cap
	DropHeldBytes   = "held_bytes"       // held receipts at their byte cap
	DropHeldMessage = "held_per_message" // this message_id already has its maximum of held receipts
)

// knownChannels are the channel label values; anything else is "other".
var knownChannels = map[string]bool{"sms": true, "whatsapp": true, "email": true, "voice": true}

// ChannelLabel bounds a provider channel name.
func ChannelLabel(ch string) string {
	ch = strings.ToLower(ch)
	if knownChannels[ch] {
		return ch
	}
	return "other"
}

// Receipts holds the delivery-receipt series. Methods are safe for
// concurrent use; a nil *Receipts records nothing.
type Receipts struct {
	received  *prometheus.CounterVec
	requests  *prometheus.CounterVec
	rows      *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	heldRows  prometheus.Gauge
	heldBytes prometheus.Gauge
	delivered prometheus.Histogram
	statuses  map[string]bool
}

// NewReceipts registers the receipt series with reg. statuses are the
// known (canonical) status values; any other is counted as "other".
func NewReceipts(reg prometheus.Registerer, statuses []string) (*Receipts, error) {
	r := &Receipts{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_receipts_total",
			Help: "Delivery receipts recorded (duplicates excluded), by canonical status (known values, other) and channel (sms, whatsapp, email, voice, other).",
		}, []string{"status", "channel"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_callback_requests_total",
			Help: "EngageLab callback requests, by result (ok, check, ignored, unknown_message, bad_signature, unauthorized, replay, malformed, error).",
		}, []string{"result"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_callback_rows_total",
			Help: "Rows of EngageLab callbacks, by result (applied, stale, duplicate, pending, attached, expired, ignored, mismatch, invalid, dropped).",
		}, []string{"result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_callback_rows_dropped_total",
			Help: "Callback rows not stored, by reason (bad_type, bad_time, bad_cost: the row is invalid; held_count, held_bytes, held_per_message: no link yet and the held receipts are at a cap).",
		}, []string{"reason"}),
		heldRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "otpq_callback_held_receipts",
			Help: "Receipts held in Redis waiting for their task's link, as last seen by this worker's matcher.",
		}),
		heldBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "otpq_callback_held_bytes",
			Help: "Bytes of the receipts held in Redis waiting for their task's link, as last seen by this worker's matcher.",
		}),
		delivered: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "otpq_receipt_delivered_seconds",
			Help:    "Time from EngageLab accepting a send to the arrival of its delivered receipt.",
			Buckets: []float64{.25, .5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800},
		}),
		statuses: map[string]bool{},
	}
	for _, s := range statuses {
		r.statuses[s] = true
	}
	for _, c := range []prometheus.Collector{r.received, r.requests, r.rows, r.dropped, r.heldRows, r.heldBytes, r.delivered} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, res := range []string{CallbackOK, CallbackCheck, CallbackIgnored, CallbackUnknownMessage, CallbackBadSignature,
		CallbackUnauthorized, CallbackReplay, CallbackMalformed, CallbackError} {
		r.requests.WithLabelValues(res)
	}
	for _, res := range []string{RowApplied, RowStale, RowDuplicate, RowPending, RowAttached, RowExpired, RowIgnored, RowMismatch, RowInvalid, RowDropped} {
		r.rows.WithLabelValues(res)
	}
	for _, reason := range []string{DropBadType, DropBadTime, DropBadCost, DropHeldCount, DropHeldBytes, DropHeldMessage} {
		r.dropped.WithLabelValues(reason)
	}
	return r, nil
}

// Request counts one callback request.
func (r *Receipts) Request(result string) {
	if r != nil {
		r.requests.WithLabelValues(result).Inc()
	}
}

// Row counts one callback row.
func (r *Receipts) Row(result string) {
	if r != nil {
		r.rows.WithLabelValues(result).Inc()
	}
}

// Dropped counts one row not stored: reason is a Drop value; the row
// counts as invalid (bad_*) or dropped (held_*) in otpq_callback_rows_total.
func (r *Receipts) Dropped(reason string) {
	if r == nil {
		return
	}
	r.dropped.WithLabelValues(reason).Inc()
	switch reason {
	case DropHeldCount, DropHeldBytes, DropHeldMessage:
		r.rows.WithLabelValues(RowDropped).Inc()
	default:
		r.rows.WithLabelValues(RowInvalid).Inc()
	}
}

// Held sets the held-receipt gauges.
func (r *Receipts) Held(rows, bytes int64) {
	if r != nil {
		r.heldRows.Set(float64(rows))
		r.heldBytes.Set(float64(bytes))
	}
}

// Received counts a recorded receipt.
func (r *Receipts) Received(status, channel string) {
	if r == nil {
		return
	}
	if !r.statuses[status] {
		status = "other"
	}
	r.received.WithLabelValues(status, ChannelLabel(channel)).Inc()
}

// Delivered observes acceptance → delivered; zero or negative spans are
// not observed.
func (r *Receipts) Delivered(accepted, delivered time.Time) {
	if r == nil || accepted.IsZero() || delivered.Before(accepted) {
		return
	}
	r.delivered.Observe(delivered.Sub(accepted).Seconds())
}
