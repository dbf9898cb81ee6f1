package proxy

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/sidecar/classify"
)

// metrics are the proxy's own series. The limiter's state is read at scrape
// time from its Snapshot (by the sidecar's collector), so the hot path pays nothing
// for it.
type metrics struct {
	requests             *prometheus.CounterVec
	rejected             *prometheus.CounterVec
	attempts             *prometheus.CounterVec
	throttles            *prometheus.CounterVec
	refusedShare         *prometheus.CounterVec
	retries              *prometheus.CounterVec
	retryBudgetExhausted prometheus.Counter
	attemptDuration      prometheus.Histogram
	queueWait            prometheus.Histogram
	ackRequests          prometheus.Counter
	ackBytes             prometheus.Counter
	ackItems             prometheus.Counter
	buffered             prometheus.Counter
	streamed             prometheus.Counter
	notKeptAlive         prometheus.Counter
	unscanned            prometheus.Counter
	pipelined            prometheus.Counter

	// The series every write counts, resolved once: WithLabelValues
	// hashes its values and looks them up under a lock on each call.
	byKind    [classify.Unreachable + 1]prometheus.Counter // attempts, by kind
	refusedBy [classify.Unreachable + 1]prometheus.Counter // refused share, by kind: nil but for the refusals
	byCode    [600]atomic.Pointer[prometheus.Counter]      // requests, by status, resolved at first use
}

// request counts a loader request answered with status code.
func (m *metrics) request(code int) {
	if code < 0 || code >= len(m.byCode) {
		m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
		return
	}
	c := m.byCode[code].Load()
	if c == nil {
		// Two writes may both get here: they resolve the same series.
		v := m.requests.WithLabelValues(strconv.Itoa(code))
		c = &v
		m.byCode[code].Store(c)
	}
	(*c).Inc()
}

// attempt counts an upstream attempt classified as k.
func (m *metrics) attempt(k classify.Kind) {
	if int(k) < len(m.byKind) {
		m.byKind[k].Inc()
		return
	}
	m.attempts.WithLabelValues(k.String()).Inc()
}

// refused adds the share of an attempt's work the store refused, when it
// refused it for capacity (throttled or overloaded): a bulk with 3 of its
// 1000 items refused adds 0.003, a whole request refused 1. Counting the
// bulk as one throttled attempt, as the attempts' counter must, would read
// as the store refusing all of it. A share out of (0, 1] is read as the
// limiter reads it (limiter.Sample): the whole attempt.
func (m *metrics) refused(k classify.Kind, share float64) {
	if int(k) >= len(m.refusedBy) || m.refusedBy[k] == nil {
		return // not a refusal
	}
	if !(share > 0 && share <= 1) {
		share = 1
	}
	m.refusedBy[k].Add(share)
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_requests_total",
			Help: "Loader requests answered by sluice, by the HTTP status the loader got (499: the loader went away, or its connection broke or was half-closed before the answer).",
		}, []string{"code"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_proxy_backpressure_total",
			Help: "Loader requests pushed back by sluice with SLUICE_PUSHBACK_STATUS, by reason: queue_full, queue_timeout, no_capacity, unreachable, hold_expired, buffer_budget, closed (shutting down).",
		}, []string{"reason"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_upstream_attempts_total",
			Help: "Upstream attempts by classified outcome: ok, throttled, overloaded, client_error, server_error, timeout, unreachable.",
		}, []string{"kind"}),
		throttles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_upstream_congestion_signals_total",
			Help: "Upstream attempts that signalled congestion (throttled, overloaded or timed out), by reason (status_429, s3_slowdown, es_bulk_item_429, timeout, ...).",
		}, []string{"reason"}),
		refusedShare: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_upstream_refused_share_total",
			Help: "Upstream attempts' worth of work the store refused, by kind (throttled, overloaded): each such attempt adds the share of its work refused, 1 for a whole request, 0.003 for a bulk with 3 of its 1000 items refused. Divided by sluice_upstream_attempts_total: the share of the work sent that was refused.",
		}, []string{"kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_upstream_retries_total",
			Help: "Upstream retries made by sluice, by the kind of the attempt that failed.",
		}, []string{"kind"}),
		retryBudgetExhausted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_upstream_retry_budget_exhausted_total",
			Help: "Retries not made because the retry budget (SLUICE_RETRY_BUDGET) was spent.",
		}),
		attemptDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_upstream_attempt_duration_seconds",
			Help:    "Duration of one upstream attempt until its response headers (never across retries).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_limiter_queue_wait_seconds",
			Help:    "Time a write waited in sluice's queue for a send slot.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 3, 14),
		}),
		ackRequests: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_upstream_acknowledged_requests_total",
			Help: "Writes the store acknowledged (goodput in requests).",
		}),
		ackBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_upstream_acknowledged_bytes_total",
			Help: "Request body bytes of writes the store acknowledged (goodput in bytes).",
		}),
		ackItems: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_upstream_acknowledged_items_total",
			Help: "Bulk items the store acknowledged, where the profile can count them (Elasticsearch _bulk).",
		}),
		buffered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_proxy_bodies_buffered_total",
			Help: "Request bodies buffered so that they can be retried.",
		}),
		streamed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_proxy_bodies_streamed_total",
			Help: "Request bodies streamed once without sidecar retry (over SLUICE_RETRY_BODY_MAX, or the buffer budget was spent).",
		}),
		notKeptAlive: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_proxy_connections_not_kept_alive_total",
			Help: "Answers sent with Connection: close because SLUICE_MAX_IDLE_CONNS loader connections were idle already.",
		}),
		unscanned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_upstream_answers_unscanned_total",
			Help: "2xx answers the profile reads for throttling (_bulk, BatchWriteItem, S3 writes) that came compressed, because the loader signed its Accept-Encoding: their throttling went unseen.",
		}),
		pipelined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_upstream_pipelined_total",
			Help: "Writes sent on a connection behind a write not yet answered (SLUICE_PIPELINE).",
		}),
	}
	// Known label values exist from the start, so that rate() and the
	// alerts' ratios see the first increment.
	for k := classify.OK; k <= classify.Unreachable; k++ { // Unreachable is the last kind
		m.byKind[k] = m.attempts.WithLabelValues(k.String())
		if k.Retryable() {
			m.retries.WithLabelValues(k.String())
		}
	}
	// A timeout is no refusal: the store may have taken the write.
	for _, k := range []classify.Kind{classify.Throttled, classify.Overloaded} {
		m.refusedBy[k] = m.refusedShare.WithLabelValues(k.String())
	}
	for _, r := range pushbackReasons {
		m.rejected.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.rejected, m.attempts, m.throttles, m.refusedShare, m.retries, m.retryBudgetExhausted,
		m.attemptDuration, m.queueWait, m.ackRequests, m.ackBytes, m.ackItems, m.buffered, m.streamed, m.notKeptAlive, m.unscanned, m.pipelined)
	return m
}
