package auth

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Authenticator's Prometheus metrics. They are registered
// on the Registerer given to New, never on the global registry.
type metrics struct {
	fetches  *prometheus.CounterVec
	expiry   prometheus.Gauge
	duration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_auth_fetches_total",
			Help: "Upstream credential fetches by result (success, unchanged, error, timeout). A refresh storm shows as a high rate.",
		}, []string{"result"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_auth_credential_expiry_timestamp_seconds",
			Help: "Unix time at which the cached upstream credential expires; +Inf if it does not expire, 0 before the first one.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_auth_fetch_duration_seconds",
			Help:    "Duration of upstream credential fetches, failed ones included.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	// Every result exists from the start, so rate() and alerts see zeros.
	for _, r := range []string{ResultSuccess, ResultUnchanged, ResultError, ResultTimeout} {
		m.fetches.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.fetches, m.expiry, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("auth: registering metrics: %w", err)
		}
	}
	return m, nil
}
