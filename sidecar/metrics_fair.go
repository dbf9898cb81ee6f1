package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
)

// classCollector exports the limiter's fair queue per priority class at
// scrape time: two classes, so the cardinality is fixed. Per-job shares
// are in /v1/jobs, not in metrics: jobs come and go.
type classCollector struct {
	lim                   *limiter.Controller
	queued, grants, waits *prometheus.Desc
}

func newClassCollector(lim *limiter.Controller) *classCollector {
	return &classCollector{
		lim: lim,
		queued: prometheus.NewDesc("sluice_limiter_class_queue_length",
			"Writes waiting in sluice's queue for a send slot, by priority class (live, bulk).", []string{"class"}, nil),
		grants: prometheus.NewDesc("sluice_limiter_class_grants_total",
			"Send slots granted, by priority class.", []string{"class"}, nil),
		waits: prometheus.NewDesc("sluice_limiter_class_queue_wait_seconds",
			"Time writes waited in sluice's queue for their send slot, by priority class (0 for a slot free at once).", []string{"class"}, nil),
	}
}

func (c *classCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.queued
	ch <- c.grants
	ch <- c.waits
}

func (c *classCollector) Collect(ch chan<- prometheus.Metric) {
	bounds := limiter.ClassWaitBounds()
	for _, k := range c.lim.Snapshot().Classes {
		class := k.Class.String()
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(k.Queued), class)
		ch <- prometheus.MustNewConstMetric(c.grants, prometheus.CounterValue, float64(k.Grants), class)
		buckets := make(map[float64]uint64, len(bounds))
		for i, b := range bounds {
			buckets[b] = k.WaitBuckets[i]
		}
		ch <- prometheus.MustNewConstHistogram(c.waits, k.WaitBuckets[len(bounds)], k.WaitSum, buckets, class)
	}
}
