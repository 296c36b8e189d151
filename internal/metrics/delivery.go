package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/otpq/otpq/internal/engagelab"
	"github.com/otpq/otpq/internal/outcome"
)

// Provider request results, the values of the result label of the provider
// latency histogram.
const (
	ResultOK        = "ok"
	ResultAPIError  = "api_error"
	ResultTransport = "transport_error"
)

// CodeLabel is the engagelab_code label value of a provider error code:
// "none" for 0 (success, or no API answer), the code for the codes of the
// spec (engagelab.Codes), "other" for anything else, so that a misbehaving
// provider cannot grow the label set.
func CodeLabel(code engagelab.Code) string {
	switch {
	case code == 0:
		return "none"
	case code.Known():
		return strconv.Itoa(int(code))
	}
	return "other"
}

// sendOutcomes are the outcome label values of otpq_sends_total.
func sendOutcomes() []outcome.Outcome {
	return []outcome.Outcome{outcome.Accepted, outcome.AcceptedUnconfirmed, outcome.AlreadyAccepted, outcome.Retry, outcome.Throttle, outcome.DeadLetter, outcome.Expired}
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
}

// NewDelivery registers the delivery series with reg.
func NewDelivery(reg prometheus.Registerer) (*Delivery, error) {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	d := &Delivery{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_sends_total",
			Help: "Delivery attempts by outcome (accepted, accepted_unconfirmed, already_accepted, retry, throttle, dead_letter, expired) and EngageLab error code (none, a code of the API spec, other).",
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
			Help: "Tasks dead-lettered (archived), by reason (bad_payload, expired, no_code, retries_exhausted, provider_rejected, configuration, other).",
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
	}
	for _, c := range []prometheus.Collector{d.sends, d.provider, d.retries, d.deadLetters, d.expired, d.inFlight, d.endToEnd} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Pre-create the series dashboards expect, so they read 0, not "no data".
	for _, o := range sendOutcomes() {
		d.sends.WithLabelValues(string(o), "none")
	}
	for _, k := range []outcome.Outcome{outcome.Retry, outcome.Throttle} {
		d.retries.WithLabelValues(string(k))
	}
	for _, r := range outcome.Reasons() {
		d.deadLetters.WithLabelValues(r.Label())
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

// Completed counts a completed attempt of a code enqueued at createdAt
// (zero: unknown): o is outcome.Accepted or outcome.AcceptedUnconfirmed
// for a code the provider took on this attempt, outcome.AlreadyAccepted
// for an attempt that found an earlier attempt's acceptance recorded (not
// a send, and not timed: the send was the earlier attempt's).
func (d *Delivery) Completed(o outcome.Outcome, createdAt, now time.Time) {
	if d == nil {
		return
	}
	switch o {
	case outcome.AcceptedUnconfirmed:
	case outcome.AlreadyAccepted:
		d.sends.WithLabelValues(string(o), "none").Inc()
		return
	default:
		o = outcome.Accepted
	}
	d.sends.WithLabelValues(string(o), "none").Inc()
	if !createdAt.IsZero() && !now.Before(createdAt) {
		d.endToEnd.Observe(now.Sub(createdAt).Seconds())
	}
}

// Retried counts an attempt that will run again; kind is outcome.Retry or
// outcome.Throttle.
func (d *Delivery) Retried(kind outcome.Outcome, code engagelab.Code) {
	if d == nil {
		return
	}
	if kind != outcome.Throttle {
		kind = outcome.Retry
	}
	d.sends.WithLabelValues(string(kind), CodeLabel(code)).Inc()
	d.retries.WithLabelValues(string(kind)).Inc()
}

// DeadLettered counts a task archived for reason. A code that ran out of
// time (outcome.CodeExpired) is also counted in otpq_expired_total and its
// outcome is "expired".
func (d *Delivery) DeadLettered(reason outcome.Reason, code engagelab.Code) {
	if d == nil {
		return
	}
	o := outcome.DeadLetter
	if reason == outcome.CodeExpired {
		o = outcome.Expired
		d.expired.Inc()
	}
	d.sends.WithLabelValues(string(o), CodeLabel(code)).Inc()
	d.deadLetters.WithLabelValues(reason.Label()).Inc()
}
