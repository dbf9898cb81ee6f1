package state

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Manager's metrics. The per-job series are produced at
// scrape time from the live jobs, so a pruned job's series disappear with
// its record.
type metrics struct {
	transitions *prometheus.CounterVec
	actions     *prometheus.CounterVec
	writeErrors prometheus.Counter
	deferred    prometheus.Counter
	jobs        *jobCollector
}

func newMetrics(reg prometheus.Registerer, m *Manager) (*metrics, error) {
	met := &metrics{
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_job_transitions_total",
			Help: "Job state transitions, by from and to state.",
		}, []string{"from", "to"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_job_actions_total",
			Help: "Cancel and cleanup action attempts, by action and result (ok, already_gone, skipped, error, timeout).",
		}, []string{"action", "result"}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_state_write_errors_total",
			Help: "Failed writes of job records to the state store; the records are kept in memory and written again.",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_state_writes_deferred_total",
			Help: "Changes of a job's state that a write went on past before their record was saved, the state store taking over a second; a crash before it answers loses that change.",
		}),
		jobs: newJobCollector(m),
	}
	for from, tos := range transitions {
		for _, to := range tos {
			met.transitions.WithLabelValues(from.String(), to.String())
		}
	}
	for _, a := range []string{ActRunCancel.String(), ActRunCleanup.String()} {
		for _, r := range []string{ResultOK, ResultAlreadyGone, ResultSkipped, ResultError, ResultTimeout} {
			met.actions.WithLabelValues(a, r)
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{met.transitions, met.actions, met.writeErrors, met.deferred, met.jobs} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("state: register metrics: %w", err)
			}
		}
	}
	return met, nil
}

// jobCollector reports job counts by state and the per-job series.
type jobCollector struct {
	m                                          *Manager
	jobs, state, bytes, items, progress, stall *prometheus.Desc
	ratio, eta, heartbeat                      *prometheus.Desc
}

func newJobCollector(m *Manager) *jobCollector {
	return &jobCollector{
		m: m,
		jobs: prometheus.NewDesc("sluice_jobs",
			"Jobs by state, terminal ones included until pruned.", []string{"state"}, nil),
		state: prometheus.NewDesc("sluice_job_state",
			"1 for the job's current state, 0 for the others.", []string{"job_id", "state"}, nil),
		bytes: prometheus.NewDesc("sluice_job_acknowledged_bytes_total",
			"Request bytes of the job's writes acknowledged by the store.", []string{"job_id"}, nil),
		items: prometheus.NewDesc("sluice_job_acknowledged_items_total",
			"Bulk items of the job's writes acknowledged by the store, where the store's responses count them.", []string{"job_id"}, nil),
		progress: prometheus.NewDesc("sluice_job_last_progress_timestamp_seconds",
			"Unix time of the job's last progress (0: none yet).", []string{"job_id"}, nil),
		stall: prometheus.NewDesc("sluice_job_stalls_total",
			"Times the job became stalled.", []string{"job_id"}, nil),
		ratio: prometheus.NewDesc("sluice_job_progress_ratio",
			"Fraction of the job's declared total done (0 to 1); only for live jobs with a total.", []string{"job_id"}, nil),
		eta: prometheus.NewDesc("sluice_job_eta_seconds",
			"Seconds until the job reaches its declared total at its recent rate; only for live jobs whose ETA is known.", []string{"job_id"}, nil),
		heartbeat: prometheus.NewDesc("sluice_jobs_heartbeat_timestamp_seconds",
			"Last time the job manager's loop finished a round: stall detection, cancels, state writes (liveness).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *jobCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.jobs, c.state, c.bytes, c.items, c.progress, c.stall, c.ratio, c.eta, c.heartbeat} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. Per-job series exist only for
// live jobs and for failed ones (a human must act on those), the failed
// ones capped at MaxJobs, newest first: cardinality is bounded by twice the
// job cap whatever the churn. The jobs are copied under the lock and sent
// after it, so a scrape never holds up the proxy. Progress and ETA are
// for live jobs only: a finished job's fraction no longer moves.
func (c *jobCollector) Collect(ch chan<- prometheus.Metric) {
	type row struct {
		id           string
		state        State
		since        time.Time
		bytes, items int64
		last         time.Time
		stalls       uint64
		progress     *JobProgress
	}
	c.m.mu.Lock()
	now := c.m.now()
	counts := c.m.countsLocked()
	rows := make([]row, 0, len(c.m.jobs))
	var failed []row
	for id, e := range c.m.jobs {
		r := row{id, e.job.State, e.job.Since, e.totals.Bytes, e.totals.Items, e.lastProgress, e.job.Stalls, nil}
		switch {
		case !r.state.Terminal():
			r.progress = e.progressLocked(now)
			rows = append(rows, r)
		case r.state == Failed:
			failed = append(failed, r)
		}
	}
	limit := c.m.cfg.MaxJobs
	c.m.mu.Unlock()

	if len(failed) > limit {
		slices.SortFunc(failed, func(a, b row) int { return b.since.Compare(a.since) })
		failed = failed[:limit]
	}
	rows = append(rows, failed...)
	if hb := c.m.Heartbeat(); !hb.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.heartbeat, prometheus.GaugeValue, float64(hb.UnixNano())/1e9)
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(n), s.String())
	}
	for _, r := range rows {
		for _, s := range States() {
			v := 0.0
			if s == r.state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, r.id, s.String())
		}
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(r.bytes), r.id)
		ch <- prometheus.MustNewConstMetric(c.items, prometheus.CounterValue, float64(r.items), r.id)
		last := 0.0
		if !r.last.IsZero() {
			last = float64(r.last.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(c.progress, prometheus.GaugeValue, last, r.id)
		ch <- prometheus.MustNewConstMetric(c.stall, prometheus.CounterValue, float64(r.stalls), r.id)
		if p := r.progress; p != nil {
			ch <- prometheus.MustNewConstMetric(c.ratio, prometheus.GaugeValue, p.Fraction, r.id)
			if p.ETASeconds != nil {
				ch <- prometheus.MustNewConstMetric(c.eta, prometheus.GaugeValue, float64(*p.ETASeconds), r.id)
			}
		}
	}
}
