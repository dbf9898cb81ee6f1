package limiter

import (
	"math"
	"time"
)

// growLocked runs the growth step of Tick after w, a clean window elapsed
// long at a latency that was not elevated: each limit that was the
// bottleneck grows (concurrency not when tookBack: its last growth was
// just taken back), then concurrency is kept within what the loader uses
// and at what the rate needs. Requires that c.mu is held.
func (c *Controller) growLocked(w window, elapsed time.Duration, goodput float64, tookBack bool, now time.Time) {
	grew := c.growRateLocked(w, elapsed, now)
	if w.blockConc && !tookBack && c.growConcLocked(elapsed, goodput, now) {
		grew = true
	}
	if !w.blockConc && w.grants > 0 { // an idle window says nothing of what the loader needs
		c.trimToUseLocked(slotsUsed(w, elapsed), now)
	}
	if c.littleFloorLocked(w, now) {
		grew = true
	}
	if grew || w.grew {
		c.increases++
	}
}

// growRateLocked grows the rate one step along its curve after w, elapsed
// long, if the rate was the bottleneck in it (callers waited on it, and
// what was sent reached sentShare of it) and no startup round grew it
// already; before probeAfter, not past the last throttle point (see
// quotaHold). It reports whether the rate grew. Requires that c.mu is
// held.
func (c *Controller) growRateLocked(w window, elapsed time.Duration, now time.Time) bool {
	sent := w.granted / elapsed.Seconds()
	due := w.blockRate && !w.grew && sent >= sentShare*c.rate.v && (c.rate.v < c.rate.lastMax || !now.Before(c.probeAfter))
	if !due {
		return false
	}
	from := c.rate.v
	reason := c.growthReason(&c.rate)
	if c.staleThrottlePointLocked(w, elapsed) && !now.Before(c.probeAfter) {
		// Rounds run the same test sooner (roundLocked), but a round
		// counts only when callers waited on the rate throughout and
		// nothing but successes came back; this one at the window's end
		// catches the rises they miss: without it, 2 of 128 runs of the
		// quadrupling simulator (SIM_SEED 1, 17, …, 113) reached 80% of
		// the new capacity after 3.6 s and 4.4 s, with it 1.6 s at most.
		c.rate.leap()
		reason = reasonHeadroom
	} else {
		c.rate.grow(elapsed)
	}
	if now.Before(c.probeAfter) {
		c.rate.v = max(from, min(c.rate.v, c.rate.lastMax)) // see quotaHold
	}
	if c.rate.v > from {
		// What the store took at the old rate, not the limit.
		c.grewFrom, c.grewAt = min(from, w.accepted/elapsed.Seconds()), now
		c.newRoundLocked(now)
		c.applyRateLocked(now)
		c.logChangeLocked(limitRate, from, c.rate.v, reason, "", now)
		return true
	}
	return false
}

// growConcLocked grows concurrency, the bottleneck in a window elapsed
// long with the given goodput, one step along its curve, but not to
// failedLevel while growth to it is held (see failedGrowthHold). While
// latency may be a queue of ours the growth is put to the test of the
// next window (see growthGain). It reports whether the limit grew.
// Requires that c.mu is held.
func (c *Controller) growConcLocked(elapsed time.Duration, goodput float64, now time.Time) bool {
	from := c.concLimit()
	reason := c.growthReason(&c.conc)
	prev := c.conc
	if c.latLoad {
		// Slots are no limit of the store's here, only of the
		// latency its load brings: as many as the rate needs, at
		// once.
		c.conc.v = c.conc.clamp(c.conc.v * growthCap)
	} else {
		c.conc.grow(elapsed)
	}
	if c.failedLevel > 0 && now.Before(c.concHold) && c.concLimit() >= c.failedLevel {
		c.conc.v = max(float64(from), float64(c.failedLevel-1)) // see failedGrowthHold
	}
	if c.concLimit() <= from {
		return false
	}
	c.concGrewFrom, c.concGrewAt = from, now
	if !c.latLoad {
		c.growTest = concTest{active: true, prev: prev, from: from, to: c.concLimit(), goodput: goodput}
	}
	c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reason, "", now)
	return true
}

// littleFloorLocked raises concurrency after w to the slots the rate needs
// (Little's law, with littleHeadroom) and reports whether it grew.
// Requires that c.mu is held.
func (c *Controller) littleFloorLocked(w window, now time.Time) bool {
	// While latency may be a queue of ours, only the rate's own needs
	// (it was the bottleneck, slots were not) raise the slots: a rate
	// limit that outran what the slots could carry is no measure of
	// what the store takes.
	floor := c.littleLocked(true)
	if floor <= 0 || !(c.latLoad || w.blockRate && !w.blockConc) {
		return false
	}
	if !c.conc.startup() && !c.latLoad {
		// Up to the in-flight count at which the store last
		// throttled only the cautious probe may go: a store that
		// limits concurrency would throttle again at once.
		floor = min(floor, max(1, math.Ceil(c.conc.lastMax)-1))
	}
	from := c.concLimit()
	if floor <= float64(from) {
		return false
	}
	c.conc.v = c.conc.clamp(floor)
	if c.concLimit() <= from {
		return false
	}
	c.concGrewFrom, c.concGrewAt = from, now
	c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reasonLittle, "", now)
	return true
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

// forgetFailedGrowthLocked lifts the hold on growth to failedLevel once
// the store has taken that level for a Window (see failedGrowthHold).
// Requires that c.mu is held.
func (c *Controller) forgetFailedGrowthLocked(now time.Time) {
	if c.failedGrowth > 0 && c.concLimit() >= c.failedLevel && !now.Before(c.concGrewAt.Add(c.cfg.Window)) {
		c.failedLevel, c.failedGrowth, c.concHold = 0, 0, time.Time{}
	}
}

// growthReason is the reason logged for a growth of p: a doubling in
// startup, or a step along the curve after it.
func (c *Controller) growthReason(p *probe) reason {
	if p.startup() {
		return reasonStartup
	}
	return reasonProbe
}

// roundLocked doubles the rate after a round, without waiting for the
// window to close, for either of two reasons:
//
//   - startup (no throttle of the rate, no pause, no latency cut yet),
//     once startupRound attempts sent since its last change have
//     succeeded (at a store that caps concurrency, as many as the
//     concurrency limit, if fewer), at a good latency;
//   - a stale throttle point (see staleThrottlePointLocked), once
//     minSamples of them have succeeded at a latency and a rate taken
//     that show it, once per window. A round at the old point lasts a
//     tenth of a second, a window half a second: on real sockets, after
//     the store's capacity quadrupled, windows took the rate to the new
//     capacity 0.5–0.9 s after the step, rounds 0.1–0.2 s. Not on every
//     round: a store's latency follows its load a little late
//     (storesim's averages the last second), and doubling per round ran
//     past the new capacity before it rose (the store refused 1.2–2.2%
//     of the phase's writes, against 0.2–0.4%).
//
// Either way callers must have waited on the rate in the round, what was
// sent in it must reach sentShare of the limit, and nothing but successes
// (or spikes, which are no concern of the rate's) may have come back in
// it. Requires that c.mu is held.
func (c *Controller) roundLocked(now time.Time) {
	if !c.roundBlocked || c.roundBad || !c.lastGood || now.Before(c.pausedUntil) {
		return
	}
	startup := c.rate.startup() && !c.throttled && !c.latencyElevatedLocked()
	round := startupRound
	if startup && c.capsConc {
		// The slots bound what reaches the store: a round of the rate
		// need be no longer than one of them, and a slow start at 50/s
		// would idle a store that takes one write at a time for a third
		// of a second.
		round = min(round, max(1, c.concLimit()))
	}
	stale := !c.rate.startup() && !c.win.grew && c.roundLatN >= minSamples && !now.Before(c.probeAfter)
	if !startup && !stale || c.roundOK < round {
		return
	}
	from, took := c.rate.v, c.rate.v
	if d := now.Sub(c.roundAt); d > 0 {
		if c.roundSent/d.Seconds() < sentShare*from {
			return // the loader, not the limit, set the pace (see sentShare)
		}
		took = c.roundUnits / d.Seconds()
	}
	reason := reasonStartup
	if stale {
		if !c.staleAtLocked(geoMean(c.roundLogSum, c.roundLatN), took) {
			return
		}
		reason = reasonHeadroom
	}
	c.rate.leap()
	c.newRoundLocked(now)
	if c.rate.v > from {
		c.grewFrom, c.grewAt = min(from, took), now
		c.win.grew = true
		c.increases++
		c.applyRateLocked(now)
		c.logChangeLocked(limitRate, from, c.rate.v, reason, "", now)
	}
	if startup && !c.win.blockConc {
		// What is in flight now went out at the old rate; the new one
		// will keep that many times more in flight (Little's law).
		// Trimmed to what the old rate used, the slots held the new
		// rate back until they grew again, a window at a time: on
		// real sockets, trimmed to one at 50 requests/s, they then
		// grew through two windows and a test of the store's latency,
		// and a store of 200/s got about half of it for the first
		// three seconds.
		_, typical := c.inFlightLocked(now)
		c.trimToUseLocked(typical*c.rate.v/from, now)
	}
}

// newRoundLocked starts a startup round: the rate just changed. Requires
// that c.mu is held.
func (c *Controller) newRoundLocked(now time.Time) {
	c.round++
	c.roundOK = 0
	c.roundBlocked, c.roundBad = false, false
	c.roundAt, c.roundUnits, c.roundSent = now, 0, 0
	c.roundLogSum, c.roundLatN = 0, 0
}
