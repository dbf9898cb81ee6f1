package limiter

import (
	"math"
	"time"
)

// cutLocked applies a multiplicative decrease after p, sent after the
// previous cut, was throttled, and reports whether the throttle was a spike
// (a concurrency event the rate had no part in). Each limit is cut at most
// once per Window (a burst of throttles counts once), except that the rate
// is cut once more when throttles keep coming after the cut that ended
// startup or one by a throttle with a Retry-After (see recutShare).
// It cuts the limit the throttle points at:
//
//   - A spike (see spikeRatio): p was sent with more attempts in flight
//     than usual (with Sample.Concurrency, counting those sent after it
//     that were in flight as it was refused), or it looks like a stall and
//     was sent with more than the one slot that was usual, or that
//     concurrency just grew from. The
//     store stalled and queued our attempts
//     (VictoriaMetrics rejects the ones that waited too long): concurrency
//     is cut to the usual in-flight count, below p's; the rate, which did
//     not cause it, keeps its limit and its startup.
//   - Otherwise the rate is cut, from the goodput (or, on a re-cut, from
//     the share of the attempts sent since the last cut that the store
//     took), but not below what the store took before the rate's last
//     growth (grewRecent). The rate is cut even when concurrency was
//     pacing, because at small counts concurrency is a coarse pacer (4, 5,
//     6 slots at 10ms are 400, 500, 600 req/s) and the rate a fine one.
//     With too few samples to trust a goodput, the limit is scaled
//     instead, and startup goes on: one early throttle is no estimate of
//     the store's rate.
//   - Concurrency is also cut when it was the bottleneck (p was sent at
//     the limit, or callers waited on it), when p was sent with more in
//     flight than the store took lately and the store has behaved like that
//     before (concMode: then only concurrency, to that count), or when
//     neither limit was (the loader alone drove the store into
//     congestion): from the peak in flight, keeping the slots the new rate
//     needs (Little's law).
//
// "Sent with n in flight" is, for a Sample with Concurrency, the larger of
// the count at p's grant and the count when it was refused.
//
// Requires that c.mu is held.
func (c *Controller) cutLocked(p *Permit, s Sample, share float64, now time.Time) (spike bool) {
	cause, retryAfter := s.Reason, s.RetryAfter
	concDue := c.lastConcCut.IsZero() || !now.Before(c.lastConcCut.Add(c.cfg.Window))
	// Over the last Window, or half of it when the rate grew lately (the
	// measure must follow a rate that doubled, not average it with the
	// window before).
	span := c.cfg.Window
	if now.Before(c.grewAt.Add(grewRecent * c.cfg.Window)) {
		span /= 2
	}
	m := c.measureLocked(span, now)
	n := p.inFlight
	if s.Concurrency {
		// Refused for the store's slots: what counts is how many of ours
		// held or wanted one as it refused, those sent after p included.
		n = max(n, c.inFlight+1)
	}
	usual, typical := c.inFlightLocked(now)
	quick := s.Latency > 0 && c.latBase > 0 && !c.isHighLocked(s.Latency) // answered at the usual latency
	stall := retryAfter <= 0 && !quick
	// One slot lately: usually less than one attempt in flight, or a limit
	// of one until concurrency grew within the Window.
	oneSlot := usual < 1 || c.concGrewFrom == 1 && now.Before(c.concGrewAt.Add(c.cfg.Window))
	if n >= 2 && ((oneSlot && stall) || float64(n) >= spikeRatio*typical+1) {
		if !concDue {
			return true
		}
		from := c.concLimit()
		to := max(1, min(float64(n-1), math.Ceil(usual)))
		c.conc.cutTo(min(c.conc.v, float64(n)), to)
		c.lastConcCut = now
		c.cutDoneLocked(now)
		c.holdFailedGrowthLocked(from, now)
		// The rate did not cause it: its startup round goes on.
		c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reasonCongestion, cause, now)
		return true
	}
	inWindow := !c.lastRateCut.IsZero() && now.Before(c.lastRateCut.Add(c.cfg.Window))
	recut := inWindow && c.recutOK
	rateDue := !inWindow || (recut && c.freshBad >= 2 && float64(c.freshBad) >= recutShare*float64(c.freshOK+c.freshBad))
	if !rateDue && !concDue {
		return false
	}
	okPeak := c.okPeakLocked()
	newInFlight := okPeak > 0 && n > okPeak
	evidence := 0.0
	if newInFlight {
		evidence = 1
	}
	concOnly := newInFlight && c.concScore+(evidence-c.concScore)*concEvidenceWeight > concMode
	if concOnly && !concDue {
		concOnly, evidence = false, 0 // the recent concurrency-only cut did not help
	}
	c.concScore += (evidence - c.concScore) * concEvidenceWeight
	cutRate := rateDue && !concOnly
	cutConc := concDue && (newInFlight || n >= p.limit || m.blockConc || !m.blockRate)
	if !cutRate && !cutConc {
		return false
	}
	fromRate, fromConc := c.rate.v, c.concLimit()
	switch {
	case cutRate:
		base := c.rate.v
		switch {
		case recut:
			// From the share of what was sent at this rate that the store
			// took: the goodput over the last Window still holds the ramp.
			base *= max(0.5, float64(c.freshOK)/float64(c.freshOK+c.freshBad))
		case m.trusted:
			base = min(base, m.goodput)
			if now.Before(c.grewAt.Add(grewRecent * c.cfg.Window)) {
				// The rate grew only after the store had taken the one
				// before in full: it takes at least that, whatever a
				// goodput measured over the ramp says.
				base = max(base, min(c.rate.v, c.grewFrom))
			}
		}
		switch {
		case !m.trusted && c.rate.startup():
			c.rate.v = c.rate.clamp(base * (1 - (1-decreaseFactor)*share))
		case c.rate.startup():
			c.rate.cut(base, share, 0)
			c.throttled = true
			c.recutOK = true
		default:
			below := retryAfter > 0 && c.rate.v <= c.rate.lastMax
			c.rate.cut(base, share, 0)
			if below {
				// A quota refused us while we only climbed back to its
				// last throttle point: measured while its burst allowance
				// still took our excess, that point was too high. Aim
				// halfway between the cut and where it refused now
				// (CUBIC's fast convergence, (1+β)/2 for a full cut),
				// not back into the quota; the curve restarts toward it.
				c.rate.cutTo((c.rate.lastMax+c.rate.v)/2, c.rate.v)
			}
			c.throttled = true
			// A quota that answers with a Retry-After may have let a probe
			// far past it on its burst allowance, like a startup. A re-cut
			// is not re-cut (see recutShare).
			c.recutOK = !recut && retryAfter > 0
		}
		c.lastRateCut = now
		// Clamped before the product, which a huge Retry-After overflows.
		c.probeAfter = now.Add(quotaHold * min(retryAfter, c.cfg.MaxRetryAfter/quotaHold))
		c.newRoundLocked(now)
		// Tokens saved before the cut would go out as a burst into a store
		// that is out of capacity: start from an empty bucket.
		c.bucket.drain(now)
	case m.trusted:
		c.rate.v = c.rate.clamp(min(c.rate.v, growthCap*m.goodput))
	}
	switch {
	case !cutConc:
	case newInFlight:
		// Straight to the highest count the store is known to take.
		c.conc.cutTo(min(c.conc.v, float64(n)), float64(okPeak))
		c.lastConcCut = now
	default:
		c.conc.cut(min(c.conc.v, float64(max(m.peak, 1))), share, c.littleLocked(false))
		c.lastConcCut = now
	}
	c.cutDoneLocked(now)
	c.applyRateLocked(now)
	c.logChangeLocked(limitRate, fromRate, c.rate.v, reasonCongestion, cause, now)
	c.logChangeLocked(limitConc, float64(fromConc), float64(c.concLimit()), reasonCongestion, cause, now)
	return false
}

// holdFailedGrowthLocked notes a spike cut from the concurrency limit from:
// when it came within a Window of growing to from (the store refused the
// new slots at once), growth back to from waits failedGrowthHold·2^(n−1)
// after the nth such refusal in a row, at most maxFailedGrowthHold.
// Requires that c.mu is held.
func (c *Controller) holdFailedGrowthLocked(from int, now time.Time) {
	if c.concGrewAt.IsZero() || !now.Before(c.concGrewAt.Add(c.cfg.Window)) || from <= c.concGrewFrom {
		return // not the growth's failure
	}
	if from == c.failedLevel {
		c.failedGrowth++
	} else {
		c.failedLevel, c.failedGrowth = from, 1
	}
	hold := failedGrowthHold << min(c.failedGrowth-1, 16)
	c.concHold = now.Add(min(hold, maxFailedGrowthHold))
}

// cutDoneLocked starts a new cut epoch. Requires that c.mu is held.
func (c *Controller) cutDoneLocked(now time.Time) {
	c.cutSeq++
	c.cutAt = now
	c.freshOK, c.freshBad = 0, 0
	c.decreases++
}
