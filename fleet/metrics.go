package fleet

import "github.com/prometheus/client_golang/prometheus"

// Metrics are fleet mode's series. They are registered whether or not
// fleet mode is on (all zero when it is off), so that dashboards and
// alerts find them on every sidecar.
type Metrics struct {
	lease    prometheus.Gauge
	budget   prometheus.Gauge
	members  prometheus.Gauge
	demand   prometheus.Gauge
	degraded prometheus.Gauge
	mode     *prometheus.GaugeVec
	duration prometheus.Histogram
	errors   prometheus.Counter
}

// NewMetrics registers fleet mode's series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		lease: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_fleet_lease_rate",
			Help: "This sidecar's lease from the fleet, in SLUICE_RATE_UNIT per second (the rate it may send; it sends no faster than its own limit either); its safe share while Redis is away, 0 while it holds neither.",
		}),
		budget: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_fleet_budget_rate",
			Help: "The fleet's shared budget as last seen, in SLUICE_RATE_UNIT per second: SLUICE_FLEET_CAPACITY, or what the fleet learned.",
		}),
		members: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_fleet_members",
			Help: "Live members of the fleet as last seen, this sidecar included.",
		}),
		demand: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_fleet_demand_rate",
			Help: "The demand this sidecar last reported, in SLUICE_RATE_UNIT per second: what it would send if unlimited (its maximum rate when held back).",
		}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_fleet_degraded",
			Help: "1 while the last refresh with Redis failed: the sidecar runs on its last lease, a safe share or its own limit.",
		}),
		mode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_fleet_mode",
			Help: "Where the sidecar stands on fleet mode's fallback ladder (1 for the current one): joining, leased, safe_share, local, left.",
		}, []string{"mode"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_fleet_refresh_duration_seconds",
			Help:    "Duration of one refresh with Redis (one script call), failed ones included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 10),
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_fleet_refresh_errors_total",
			Help: "Refreshes with Redis that failed (timeout, connection, script error).",
		}),
	}
	reg.MustRegister(m.lease, m.budget, m.members, m.demand, m.degraded, m.mode, m.duration, m.errors)
	for mode := range numModes {
		m.mode.WithLabelValues(mode.String())
	}
	return m
}
