package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/limiter"
	"github.com/sluice-dev/sluice/sidecar/classify"
)

// Scopes (Deps.Scopes, SLUICE_SCOPES_MAX). A store throttles per part of
// itself (a DynamoDB table, an S3 prefix), and a single limiter for the
// whole store would slow every write for one table's throttling. So the
// profile names each write's scopes (classify.Profile.Scopes, computed
// once per write in roundTrip), and:
//
//   - Admission: an attempt takes a permit of each of its scopes'
//     limiters that exist, in the scopes' sorted order (two writes that
//     share scopes take them in the same order, so neither holds one the
//     other waits for while waiting for one it holds), and then the
//     store's. A write waits for a throttled scope in that scope's own
//     queue, never in the store's: writes to other scopes do not queue
//     behind it. A scope that was never throttled has no limiter: with
//     none at all (limiter.Scopes.Active is 0), admission does not look.
//   - Report: a throttle the profile calls scoped (classify.Result.Scoped)
//     goes to the write's scopes only: to the limiter of each (through its
//     permit, or by making it, limiter.Scopes.Throttle, from the store's
//     limits), and the store's limiter gets a Neutral sample: it must not
//     slow every write for it. Every other outcome goes to the store's
//     limiter as before; a scope's limiter gets successes and server
//     errors, and Neutral for store-wide signals (overload, timeouts, a
//     store that is unreachable), which are the store's to act on.
//   - A write whose scopes are unknown (a body that streams, for profiles
//     that read the body; more than classify.MaxWriteScopes) passes the
//     store's limiter only, and its scoped throttles count store-wide.
//   - Scopes too fine to learn from: while more scopes are throttled than
//     there are limiters for (limiter.Scopes.Overflowing: one was evicted
//     lately), a scoped throttle of a write that no scope's limiter paced
//     counts store-wide as well. Under hashed key prefixes each object is
//     its own scope; each throttle made a limiter no later write took
//     from, and the store's limiter, taking them as neutral, never slowed.

// scopePermits are one attempt's permits of its scopes' limiters: p[i] is
// that of the exchange's i-th scope (ex.scopes.At(i)), nil when the scope
// had no limiter at admission.
type scopePermits struct {
	p [classify.MaxWriteScopes]*limiter.Permit
	n int // scopes covered: p[n:] are nil
}

// none reports whether the attempt held no permit of a scope's limiter:
// none of its scopes had one at admission.
func (sp *scopePermits) none() bool {
	for i := range sp.n {
		if sp.p[i] != nil {
			return false
		}
	}
	return true
}

// release gives every permit back with s.
func (sp *scopePermits) release(s limiter.Sample) {
	for i := range sp.n {
		if sp.p[i] != nil {
			sp.p[i].Done(s)
			sp.p[i] = nil
		}
	}
	sp.n = 0
}

// unused gives every permit back unused (limiter.Permit.Unused): no
// attempt was made under them.
func (sp *scopePermits) unused() {
	for i := range sp.n {
		if sp.p[i] != nil {
			sp.p[i].Unused()
			sp.p[i] = nil
		}
	}
	sp.n = 0
}

// acquireScopes takes a permit of each of ex's scopes' limiters into
// ex.scopeHeld, until deadline; on an error it holds none and returns the
// pushback of the scope that refused.
//
// It never waits while holding a permit: it takes what is free at once,
// in the scopes' order, and when a scope has nothing free it gives back
// what it took, waits in that scope's queue (holding only that scope's
// permit) and tries the rest again. Otherwise a write over two tables
// would keep one table's slots while waiting for the other, throttled,
// one, and writes to the first table alone would queue behind it.
func (p *Proxy) acquireScopes(ctx context.Context, ex *exchange, deadline time.Time) error {
	sp := &ex.scopeHeld
	n := ex.scopes.Len()
	var lims [classify.MaxWriteScopes]*limiter.Controller
	sp.n = n
	for {
		busy := -1
		for i := range n {
			if sp.p[i] != nil {
				continue
			}
			// Each pass asks for the scope's limiter as it is now: while
			// the write waited for another scope, this one's may have been
			// evicted or retired (and another made), and a permit of a
			// dropped limiter would pace the write by a rate no longer the
			// scope's, its throttle unseen by the scope's limiter.
			if lims[i] = p.scopes.Get(ex.scopes.At(i)); lims[i] == nil {
				continue
			}
			permit, err := lims[i].TryAcquireFlow(ex.flow, ex.cost)
			if errors.Is(err, limiter.ErrNoCapacity) {
				busy = i
				break
			}
			if err != nil {
				sp.unused()
				return p.admitError(ctx, ex, lims[i], err)
			}
			sp.p[i] = permit
		}
		if busy < 0 {
			return nil
		}
		sp.unused()
		sp.n = n
		permit, err := p.take(ctx, ex, lims[busy], false, deadline)
		if err != nil {
			sp.unused()
			return p.admitError(ctx, ex, lims[busy], err)
		}
		sp.p[busy] = permit
	}
}

// finishScopes reports one attempt to its scopes' limiters: s (the
// store's sample) for a success or a server error, the throttle for a
// scoped one (scopedThrottle), making the limiter of a scope that had
// none; Neutral otherwise (see the comment at the top of this file).
func (p *Proxy) finishScopes(ex *exchange, sp *scopePermits, res classify.Result, s limiter.Sample, scopedThrottle bool) {
	if scopedThrottle {
		for i := range ex.scopes.Len() {
			if i < sp.n && sp.p[i] != nil {
				sp.p[i].Done(s)
				sp.p[i] = nil
				continue
			}
			p.scopes.ThrottleFrom(ex.scopes.At(i), p.lim, s)
		}
		sp.n = 0
		return
	}
	if sp.n == 0 {
		return
	}
	switch s.Outcome {
	case limiter.Success, limiter.Failed:
	default:
		s = limiter.Sample{Outcome: limiter.Neutral, Reason: s.Reason}
	}
	sp.release(s)
}

// scopeCollector exports the scopes' limiters at scrape time: one series
// per scope with a limiter, so the bound on scopes (SLUICE_SCOPES_MAX)
// bounds them, and a scope's series go with its limiter.
type scopeCollector struct {
	scopes                                            *limiter.Scopes
	rate, concurrency, inFlight, queued, lastThrottle *prometheus.Desc
	throttles, active, max, evictions, retired        *prometheus.Desc
}

func newScopeCollector(s *limiter.Scopes) *scopeCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &scopeCollector{
		scopes:       s,
		rate:         d("sluice_scope_rate_limit", "A throttled scope's send-rate limit, in SLUICE_RATE_UNIT per second.", "scope"),
		concurrency:  d("sluice_scope_concurrency_limit", "A throttled scope's limit on concurrent upstream attempts.", "scope"),
		inFlight:     d("sluice_scope_in_flight", "Upstream attempts in flight under a throttled scope's limiter.", "scope"),
		queued:       d("sluice_scope_queue_length", "Writes waiting in a throttled scope's queue.", "scope"),
		lastThrottle: d("sluice_scope_last_throttle_timestamp_seconds", "When the store last throttled the scope.", "scope"),
		throttles:    d("sluice_scope_throttles_total", "Throttles a scope's limiter took since it was made, the one that made it included.", "scope"),
		active:       d("sluice_scope_active", "Scopes with a limiter of their own (throttled lately)."),
		max:          d("sluice_scope_max", "The most scopes with a limiter at once (SLUICE_SCOPES_MAX)."),
		evictions:    d("sluice_scope_evictions_total", "Scope limiters dropped, least recently used first, to make room for a newly throttled scope."),
		retired:      d("sluice_scope_retired_total", "Scope limiters dropped because their scope was clean and back at its throttle point."),
	}
}

func (c *scopeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rate, c.concurrency, c.inFlight, c.queued, c.lastThrottle,
		c.throttles, c.active, c.max, c.evictions, c.retired} {
		ch <- d
	}
}

func (c *scopeCollector) Collect(ch chan<- prometheus.Metric) {
	scopes, stats := c.scopes.Status()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range scopes {
		g(c.rate, s.Rate, s.Scope)
		g(c.concurrency, float64(s.Concurrency), s.Scope)
		g(c.inFlight, float64(s.InFlight), s.Scope)
		g(c.queued, float64(s.Queued), s.Scope)
		if !s.LastThrottle.IsZero() {
			g(c.lastThrottle, float64(s.LastThrottle.UnixNano())/1e9, s.Scope)
		}
		ch <- prometheus.MustNewConstMetric(c.throttles, prometheus.CounterValue, float64(s.Samples[limiter.Congested]), s.Scope)
	}
	g(c.active, float64(stats.Active))
	g(c.max, float64(stats.Max))
	ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(stats.Evictions))
	ch <- prometheus.MustNewConstMetric(c.retired, prometheus.CounterValue, float64(stats.Retired))
}
