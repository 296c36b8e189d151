package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of one delivery attempt, the values of the outcome label.
const (
	OutcomeDelivered  = "delivered"
	OutcomeRetry      = "retry"
	OutcomeThrottle   = "throttle"
	OutcomeDeadLetter = "dead_letter"
	OutcomeExpired    = "expired"
)

// Provider request results, the values of the result label of the provider
// latency histogram.
const (
	ResultOK        = "ok"
	ResultAPIError  = "api_error"
	ResultTransport = "transport_error"
)

// knownCodes are the EngageLab error codes of the API spec. Any other code
// is reported as "other", so that a misbehaving provider cannot grow the
// label set.
var knownCodes = map[int]bool{
	1000: true, 2001: true, 2002: true, 2004: true, 3001: true, 3002: true, 3003: true, 3004: true,
	4001: true, 5001: true, 5011: true, 5012: true, 5013: true, 5014: true, 5015: true, 5016: true,
	5017: true, 5018: true, 5019: true, 5020: true,
}

// CodeLabel is the engagelab_code label value of a provider error code:
// "none" for 0 (success, or no API answer), the code for the codes of the
// spec, "other" for anything else.
func CodeLabel(code int) string {
	switch {
	case code == 0:
		return "none"
	case knownCodes[code]:
		return strconv.Itoa(code)
	}
	return "other"
}

// Delivery holds otpq's own delivery series. All methods are safe for
// concurrent use; a nil *Delivery records nothing.
type Delivery struct {
	sends       *prometheus.CounterVec
	provider    *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	expired     prometheus.Counter
	inFlight    prometheus.Gauge
	endToEnd    prometheus.Histogram
	reasons     map[string]string
}

// NewDelivery registers the delivery series with reg. deadLetterReasons
// maps each dead-letter reason the caller may report to its label value
// (for example "retries exhausted" → "retries_exhausted"); any other reason
// is counted as "other".
func NewDelivery(reg prometheus.Registerer, deadLetterReasons map[string]string) (*Delivery, error) {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	d := &Delivery{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_sends_total",
			Help: "Delivery attempts by outcome (delivered, retry, throttle, dead_letter, expired) and EngageLab error code (none, a code of the API spec, other).",
		}, []string{"outcome", "engagelab_code"}),
		provider: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "otpq_provider_request_duration_seconds",
			Help:    "Duration of one EngageLab API request, by result (ok, api_error, transport_error).",
			Buckets: buckets,
		}, []string{"result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_retries_total",
			Help: "Attempts scheduled to run again, by kind: retry (counts against --max-retry) or throttle (HTTP 429, does not).",
		}, []string{"kind"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_dead_letters_total",
			Help: "Tasks dead-lettered (archived), by reason.",
		}, []string{"reason"}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "otpq_expired_total",
			Help: "Codes that expired before they could be delivered (never sent, or not retried past their expiry).",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "otpq_sends_in_flight",
			Help: "Tasks being processed right now by this process.",
		}),
		endToEnd: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "otpq_enqueue_to_send_seconds",
			Help:    "Time from enqueue (the payload's created_at) to the provider accepting the code.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		reasons: map[string]string{},
	}
	for reason, label := range deadLetterReasons {
		d.reasons[reason] = label
	}
	for _, c := range []prometheus.Collector{d.sends, d.provider, d.retries, d.deadLetters, d.expired, d.inFlight, d.endToEnd} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Pre-create the series dashboards expect, so they read 0, not "no data".
	for _, o := range []string{OutcomeDelivered, OutcomeRetry, OutcomeThrottle, OutcomeDeadLetter, OutcomeExpired} {
		d.sends.WithLabelValues(o, "none")
	}
	for _, k := range []string{OutcomeRetry, OutcomeThrottle} {
		d.retries.WithLabelValues(k)
	}
	for _, label := range d.reasons {
		d.deadLetters.WithLabelValues(label)
	}
	return d, nil
}

// Begin counts a task as in flight; call the returned func when it is done.
func (d *Delivery) Begin() func() {
	if d == nil {
		return func() {}
	}
	d.inFlight.Inc()
	return d.inFlight.Dec
}

// ProviderRequest observes one provider request.
func (d *Delivery) ProviderRequest(result string, took time.Duration) {
	if d == nil {
		return
	}
	d.provider.WithLabelValues(result).Observe(took.Seconds())
}

// Delivered counts a delivered code, enqueued at createdAt (zero: unknown).
func (d *Delivery) Delivered(createdAt, now time.Time) {
	if d == nil {
		return
	}
	d.sends.WithLabelValues(OutcomeDelivered, "none").Inc()
	if !createdAt.IsZero() && !now.Before(createdAt) {
		d.endToEnd.Observe(now.Sub(createdAt).Seconds())
	}
}

// Retried counts an attempt that will run again; kind is OutcomeRetry or
// OutcomeThrottle.
func (d *Delivery) Retried(kind string, code int) {
	if d == nil {
		return
	}
	if kind != OutcomeThrottle {
		kind = OutcomeRetry
	}
	d.sends.WithLabelValues(kind, CodeLabel(code)).Inc()
	d.retries.WithLabelValues(kind).Inc()
}

// DeadLettered counts a task archived for reason (one of the reasons given
// to NewDelivery). expired says the code ran out of time; it is then also
// counted in otpq_expired_total and its outcome is "expired".
func (d *Delivery) DeadLettered(reason string, code int, expired bool) {
	if d == nil {
		return
	}
	outcome := OutcomeDeadLetter
	if expired {
		outcome = OutcomeExpired
		d.expired.Inc()
	}
	d.sends.WithLabelValues(outcome, CodeLabel(code)).Inc()
	label, ok := d.reasons[reason]
	if !ok {
		label = "other"
	}
	d.deadLetters.WithLabelValues(label).Inc()
}
