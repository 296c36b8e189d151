package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// apiMetrics are the API's series; a nil *apiMetrics records nothing.
type apiMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*apiMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &apiMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "otpq_api_requests_total",
			Help: "Requests to the EngageLab-compatible API, by key name (none: the credentials matched no key; anonymous: served without authentication), HTTP status and EngageLab answer code (0 on success).",
		}, []string{"key", "status", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "otpq_api_request_duration_seconds",
			Help:    "Time to answer one API request, by route (send, status, other).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *apiMetrics) observe(route, key string, a answer, took time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(key, strconv.Itoa(a.status), strconv.Itoa(int(a.code))).Inc()
	m.latency.WithLabelValues(route).Observe(took.Seconds())
}
