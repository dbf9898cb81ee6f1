package sidecar

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/proxy"
)

// bothRegisterer registers each collector in two registries.
type bothRegisterer struct{ a, b prometheus.Registerer }

func (r bothRegisterer) Register(c prometheus.Collector) error {
	if err := r.a.Register(c); err != nil {
		return err
	}
	if err := r.b.Register(c); err != nil {
		r.a.Unregister(c)
		return err
	}
	return nil
}

func (r bothRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r bothRegisterer) Unregister(c prometheus.Collector) bool {
	a, b := r.a.Unregister(c), r.b.Unregister(c)
	return a && b
}

// limiterCollector exports the controller's state at scrape time.
type limiterCollector struct {
	lim    *limiter.Controller
	budget *proxy.Budget

	rate, concurrency, inFlight, queued, paused, heartbeat, bufferBytes, latency *prometheus.Desc
	decreases, increases, phase                                                  *prometheus.Desc
}

func newLimiterCollector(lim *limiter.Controller, budget *proxy.Budget, rateUnit string) *limiterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &limiterCollector{
		lim:    lim,
		budget: budget,
		// The unit as a label: a dashboard draws a limit in requests
		// beside the requests acknowledged, one in bytes beside the bytes.
		rate: prometheus.NewDesc("sluice_limiter_rate_limit", "Current send-rate limit, in SLUICE_RATE_UNIT (the unit label) per second.",
			nil, prometheus.Labels{"unit": rateUnit}),
		concurrency: d("sluice_limiter_concurrency_limit", "Current limit on concurrent upstream attempts."),
		inFlight:    d("sluice_limiter_in_flight", "Upstream attempts in flight."),
		queued:      d("sluice_limiter_queue_length", "Writes waiting in sluice's queue for a send slot."),
		paused:      d("sluice_limiter_paused", "1 while all sends are paused by the store's Retry-After."),
		heartbeat:   d("sluice_limiter_heartbeat_timestamp_seconds", "Last time the control loop ran (liveness)."),
		bufferBytes: d("sluice_proxy_buffer_bytes", "Bytes of request bodies held for retries (bounded by SLUICE_BUFFER_BUDGET)."),
		latency:     d("sluice_limiter_latency_seconds", "Per-attempt latency as the controller sees it: the baseline and the recent average.", "window"),
		decreases:   d("sluice_limiter_decreases_total", "Multiplicative decreases of the limits on congestion."),
		increases:   d("sluice_limiter_increases_total", "Increases of the limits while the limiter was the bottleneck."),
		phase:       d("sluice_limiter_phase", "The controller's phase (1 for the current one).", "phase"),
	}
}

func (c *limiterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rate, c.concurrency, c.inFlight, c.queued, c.paused, c.heartbeat,
		c.bufferBytes, c.latency, c.decreases, c.increases, c.phase} {
		ch <- d
	}
}

func (c *limiterCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.lim.Snapshot()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(c.rate, s.Rate)
	g(c.concurrency, float64(s.Concurrency))
	g(c.inFlight, float64(s.InFlight))
	g(c.queued, float64(s.Queued))
	paused := 0.0
	if s.PausedUntil.After(time.Now()) {
		paused = 1
	}
	g(c.paused, paused)
	if !s.Heartbeat.IsZero() {
		g(c.heartbeat, float64(s.Heartbeat.UnixNano())/1e9)
	}
	g(c.bufferBytes, float64(c.budget.InUse()))
	g(c.latency, s.LatencyBaseline.Seconds(), "baseline")
	g(c.latency, s.LatencyRecent.Seconds(), "recent")
	ch <- prometheus.MustNewConstMetric(c.decreases, prometheus.CounterValue, float64(s.Decreases))
	ch <- prometheus.MustNewConstMetric(c.increases, prometheus.CounterValue, float64(s.Increases))
	for _, ph := range []string{limiter.PhaseStartup, limiter.PhaseRecovering, limiter.PhaseSteady, limiter.PhasePaused, limiter.PhaseUnreachable, limiter.PhaseClosed} {
		v := 0.0
		if ph == s.Phase {
			v = 1
		}
		g(c.phase, v, ph)
	}
}
