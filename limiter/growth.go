package limiter

import (
	"math"
	"time"
)

// startupRoundLocked doubles the rate in startup (no throttle of the rate,
// no pause, no latency cut yet) once startupRound attempts sent since its
// last change have succeeded (at a store that caps concurrency, as many as
// the concurrency limit, if fewer), if callers waited on the rate meanwhile,
// what was sent in the round reached sentShare of the limit, and nothing
// but successes (or spikes, which are no concern of the rate's) came back
// in the round, at a good latency. Requires that c.mu is held.
func (c *Controller) startupRoundLocked(now time.Time) {
	round := startupRound
	if c.capsConc {
		// The slots bound what reaches the store: a round of the rate
		// need be no longer than one of them, and a slow start at 50/s
		// would idle a store that takes one write at a time for a third
		// of a second.
		round = min(round, max(1, c.concLimit()))
	}
	if !c.rate.startup() || c.throttled || c.roundOK < round || !c.roundBlocked || c.roundBad || !c.lastGood ||
		now.Before(c.pausedUntil) || c.latencyElevatedLocked() {
		return
	}
	from, took := c.rate.v, c.rate.v
	if d := now.Sub(c.roundAt); d > 0 {
		if c.roundSent/d.Seconds() < sentShare*from {
			return // the loader, not the limit, set the pace (see sentShare)
		}
		took = c.roundUnits / d.Seconds()
	}
	c.rate.grow(0)
	c.newRoundLocked(now)
	if c.rate.v > from {
		c.grewFrom, c.grewAt = min(from, took), now
		c.win.grew = true
		c.increases++
		c.applyRateLocked(now)
		c.logChangeLocked(limitRate, from, c.rate.v, reasonStartup, "", now)
	}
	if !c.win.blockConc {
		_, typical := c.inFlightLocked(now)
		c.trimToUseLocked(typical, now)
	}
}

// trimToUseLocked keeps the concurrency limit within usedHeadroom of the
// average in-flight count avg. Requires that c.mu is held.
func (c *Controller) trimToUseLocked(avg float64, now time.Time) {
	if c.latLoad {
		// The store's latency grows with its load: a rising load needs
		// more slots than it uses now, at once.
		return
	}
	limit := max(1, math.Ceil(usedHeadroom*avg))
	if from := c.concLimit(); float64(from) > limit {
		c.conc.v = c.conc.clamp(limit)
		c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reasonUnused, "", now)
	}
}

// newRoundLocked starts a startup round: the rate just changed. Requires
// that c.mu is held.
func (c *Controller) newRoundLocked(now time.Time) {
	c.round++
	c.roundOK = 0
	c.roundBlocked, c.roundBad = false, false
	c.roundAt, c.roundUnits, c.roundSent = now, 0, 0
}

// littleLocked returns the slots the current rate needs by Little's law:
// requests/s × latency, with littleHeadroom if headroom is set; 0 while
// either is unknown. The latency is the baseline, or the recent mean once
// latency is known to be the store's own. Requires that c.mu is held.
func (c *Controller) littleLocked(headroom bool) float64 {
	lat := c.latBase
	if c.latLoad {
		lat = max(lat, c.latMean)
	}
	if c.avgCost <= 0 || lat <= 0 {
		return 0
	}
	need := c.rate.v / c.avgCost * lat.Seconds()
	if headroom {
		need *= littleHeadroom
	}
	return math.Ceil(need)
}

// checkConcGrowthLocked judges the growth of concurrency at the previous
// Tick by the goodput of the window that followed it (see growthGain),
// when the new limit was the bottleneck in it: slots that brought no
// goodput are taken back, and the count they reached is remembered as a
// throttle point, so that later growth probes it cautiously. Requires that
// c.mu is held.
func (c *Controller) checkConcGrowthLocked(bound bool, goodput float64, now time.Time) (tookBack bool) {
	t := c.growTest
	c.growTest = concTest{}
	if !bound || t.goodput <= 0 || t.from <= 0 || c.concLimit() != t.to {
		return false // the loader or the rate held goodput, or something else changed the limit
	}
	need := 1 + growthGain*(float64(t.to)/float64(t.from)-1)
	if goodput >= need*t.goodput {
		return false
	}
	c.conc = t.prev
	c.conc.cutTo(float64(t.to), float64(t.from))
	c.logChangeLocked(limitConc, float64(t.to), float64(c.concLimit()), reasonNoGain, "", now)
	return true
}

func (c *Controller) growthReason(p *probe) reason {
	if p.startup() {
		return reasonStartup
	}
	return reasonProbe
}
