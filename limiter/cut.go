package limiter

import (
	"math"
	"time"
)

// cutLocked applies a multiplicative decrease after p, sent after the
// previous cut, was throttled, and reports whether the throttle was a spike
// (a concurrency event the rate had no part in). What to cut, from what
// and how far, is decided in one place (decideCutLocked) and carried out
// in another (applyCutLocked). Requires that c.mu is held.
func (c *Controller) cutLocked(p *Permit, s Sample, share float64, now time.Time) (spike bool) {
	d := c.decideCutLocked(p, s, share, now)
	c.applyCutLocked(d, s.Reason, s.RetryAfter, now)
	return d.spike
}

// cutDecision is what one throttle calls for: which limits to cut, from
// what and how far. The zero value cuts nothing.
type cutDecision struct {
	// spike: the throttle was a concurrency event (see spikeRatio); the
	// rate keeps its limit and its startup round.
	spike bool
	// concScore is the Controller's concScore with this throttle's
	// evidence folded in (see concEvidenceWeight).
	concScore float64
	// share is the share of the work the store rejected, in (0, 1]: a
	// partial rejection cuts less (see decreaseFactor).
	share float64

	rate       rateAction
	rateBase   float64 // what the store took: the rate's new throttle point, or what rateScale scales
	rateCap    float64 // rateCap: the rate is kept at most at this
	quotaBelow bool    // rateDecrease: a quota refused below the last throttle point (see quotaHold)
	recutOK    bool    // rateDecrease: the rate may be cut once more within a Window (see recutShare)
	fell       bool    // rateDecrease: a re-cut because the store's capacity fell (see fellShare)

	conc     concAction
	concBase float64 // the concurrency's new throttle point
	concTo   float64 // concSet: the new limit
	concOnly bool    // concSet: the store is taken to cap concurrency (see concMode)
}

// rateAction is what a throttle does to the rate limit.
type rateAction uint8

const (
	// rateKeep leaves the rate alone.
	rateKeep rateAction = iota
	// rateCap cuts concurrency only, and keeps the rate within growthCap
	// of the goodput: a limit far above what the store takes limits
	// nothing.
	rateCap
	// rateScale scales the limit down when there are too few samples to
	// trust a goodput, in startup, which goes on: one early throttle is no
	// estimate of the store's rate.
	rateScale
	// rateEndStartup is the first cut from a goodput: it ends startup and
	// may be cut once more within its Window (the rate may have overshot
	// the store's by up to twice).
	rateEndStartup
	// rateDecrease is a cut after startup; the rate then climbs back along
	// the curve.
	rateDecrease
)

// concAction is what a throttle does to the concurrency limit.
type concAction uint8

const (
	// concKeep leaves concurrency alone.
	concKeep concAction = iota
	// concSet cuts straight to concTo: the usual in-flight count after a
	// spike, the highest count the store took lately after a throttle at
	// a count it had not taken.
	concSet
	// concDecrease is a multiplicative decrease from concBase, keeping the
	// slots the new rate needs (Little's law).
	concDecrease
)

// decideCutLocked decides what a throttle of p, sent after the previous
// cut, calls for, and changes nothing but what it returns. Each limit is
// cut at most once per Window (a burst of throttles counts once), except
// that the rate is cut once more when throttles keep coming after the cut
// that ended startup, one by a throttle with a Retry-After or a scaling in
// startup (see recutShare), or when the store refuses much of what is sent
// after any cut (its capacity fell, see fellShare). It cuts the limit the
// throttle points at:
//
//   - A spike (see spikeRatio): p was sent with more attempts in flight
//     than usual (with Sample.Concurrency, counting those sent after it
//     that were in flight as it was refused), or it looks like a stall and
//     was sent with more than the one slot that was usual, or that
//     concurrency just grew from. The store stalled and queued our
//     attempts (VictoriaMetrics rejects the ones that waited too long):
//     concurrency is cut to the usual in-flight count, below p's; the
//     rate, which did not cause it, keeps its limit and its startup.
//   - Otherwise the rate is cut, from the goodput (or, on a re-cut, from
//     the share of the attempts sent since the last cut that the store
//     took), but not below what the store took before the rate's last
//     growth (grewRecent), nor below half the rate when our slots, not
//     the rate, held the goodput at a store whose latency follows its
//     load. The rate is cut even when concurrency was pacing, because at
//     small counts concurrency is a coarse pacer (4, 5, 6 slots at 10ms
//     are 400, 500, 600 req/s) and the rate a fine one.
//     With too few samples to trust a goodput, the limit is scaled
//     instead, and startup goes on: one early throttle is no estimate of
//     the store's rate.
//   - Concurrency is also cut when it was the bottleneck (p was sent at
//     the limit, or callers waited on it), when p was sent with more in
//     flight than the store took lately and the store has behaved like that
//     before (concMode: then only concurrency, to that count), or when
//     neither limit was (the loader alone drove the store into
//     congestion): from the peak in flight, keeping the slots the new rate
//     needs (Little's law); in the second case too at a store whose
//     latency follows its load, when the rate is cut as well. Only the
//     second of these when the throttle came with a Retry-After: that is
//     a quota's, which names a time to come back, and the rate's cut
//     relieves it; cutting the slots as well would only cap what is sent
//     at slots ÷ latency, below the quota whenever the store is slow
//     (nginx's quota of 40/s with one slot left at 25 ms a write).
//
// "Sent with n in flight" is, for a Sample with Concurrency, the larger of
// the count at p's grant and the count when it was refused.
//
// Requires that c.mu is held.
func (c *Controller) decideCutLocked(p *Permit, s Sample, share float64, now time.Time) cutDecision {
	d := cutDecision{concScore: c.concScore, share: share}
	concDue := c.lastConcCut.IsZero() || !now.Before(c.lastConcCut.Add(c.cfg.Window))
	n := p.inFlight
	if s.Concurrency {
		// Refused for the store's slots: what counts is how many of ours
		// held or wanted one as it refused, those sent after p included.
		n = max(n, c.inFlight+1)
	}
	usual, typical := c.inFlightLocked(now)
	if c.isSpikeLocked(n, s, usual, typical, now) {
		d.spike = true
		if concDue {
			d.conc, d.concBase = concSet, min(c.conc.v, float64(n))
			d.concTo = max(1, min(float64(n-1), math.Ceil(usual)))
		}
		return d
	}
	inWindow := !c.lastRateCut.IsZero() && now.Before(c.lastRateCut.Add(c.cfg.Window))
	fresh := float64(c.freshOK + c.freshBad)
	fell := inWindow && !c.rate.startup() && c.freshBad >= fellMin && float64(c.freshBad) >= fellShare*fresh
	recut := fell || inWindow && c.recutOK && c.freshBad >= 2 && float64(c.freshBad) >= recutShare*fresh
	rateDue := !inWindow || recut
	if !rateDue && !concDue {
		return d
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
	d.concScore = c.concScore + (evidence-c.concScore)*concEvidenceWeight
	m := c.measureLocked(c.cutSpanLocked(now), now)
	cutRate := rateDue && !concOnly
	cutConc := concDue && (newInFlight || s.RetryAfter <= 0 && (n >= p.limit || m.blockConc || !m.blockRate))
	switch {
	case !cutRate && !cutConc:
		return d
	case cutRate:
		c.decideRateCutLocked(&d, m, recut, s.RetryAfter, now)
		if span := now.Sub(c.cutAt).Seconds(); fell && d.rate == rateDecrease && span > 0 {
			// Every answer since the cut came from a store refusing a
			// good part of what it was sent, so what it took over that
			// time is its capacity. (The share of the attempts it took
			// would understate it: a refusal comes back at once, an
			// acceptance a latency later.) Not from fewer than
			// minSamples answers that the store took: one sidecar of many
			// whose few writes since the cut all met the store's bucket
			// dry has measured its luck, not the store; the re-cut then
			// goes from the share it took. Either way it halves the rate
			// at most (recutBaseLocked): right after startup on real
			// sockets, a few slots at a latency the burst drove up
			// measured a quarter of the store's capacity, and the curve
			// took 2 s to climb back.
			d.fell = true
			if c.cutOK >= minSamples {
				d.rateBase = c.recutBaseLocked(c.cutTook / span)
			}
		}
	case m.trusted:
		d.rate, d.rateCap = rateCap, growthCap*m.goodput
	}
	switch {
	case !cutConc:
	case newInFlight:
		// Straight to the highest count the store is known to take.
		d.conc, d.concBase, d.concTo = concSet, min(c.conc.v, float64(n)), float64(okPeak)
		d.concOnly = concOnly
	default:
		d.conc, d.concBase = concDecrease, min(c.conc.v, float64(max(m.peak, 1)))
	}
	return d
}

// isSpikeLocked reports whether a throttle of an attempt sent with n in
// flight is a spike (see spikeRatio), given the usual and typical
// in-flight counts (see inFlightLocked). Requires that c.mu is held.
func (c *Controller) isSpikeLocked(n int, s Sample, usual, typical float64, now time.Time) bool {
	quick := s.Latency > 0 && c.latBase > 0 && !c.isHighLocked(s.Latency) // answered at the usual latency
	stall := s.RetryAfter <= 0 && !quick
	// One slot lately: usually less than one attempt in flight, or a limit
	// of one until concurrency grew within the Window.
	oneSlot := usual < 1 || c.concGrewFrom == 1 && now.Before(c.concGrewAt.Add(c.cfg.Window))
	return n >= 2 && ((oneSlot && stall) || float64(n) >= spikeRatio*typical+1)
}

// cutSpanLocked returns the span a cut measures the goodput over: the last
// Window, or half of it when the rate grew lately, so that the measure
// follows a rate that doubled rather than average it with the window
// before. Requires that c.mu is held.
func (c *Controller) cutSpanLocked(now time.Time) time.Duration {
	if c.rateGrewLatelyLocked(now) {
		return c.cfg.Window / 2
	}
	return c.cfg.Window
}

// rateGrewLatelyLocked reports whether the rate grew within grewRecent
// Windows before now. Requires that c.mu is held.
func (c *Controller) rateGrewLatelyLocked(now time.Time) bool {
	return now.Before(c.grewAt.Add(grewRecent * c.cfg.Window))
}

// recutBaseLocked is the throttle point of a re-cut within the Window of
// the last cut (see recutShare and fellShare) from what the store was
// measured to take since that cut: never above the rate, and never below
// half of it, whichever way it was measured. Answers over that short span
// are few, and what they took is bounded by our own slots as much as by
// the store; a capacity that fell further is cut again a round trip
// later. Requires that c.mu is held.
func (c *Controller) recutBaseLocked(took float64) float64 {
	return min(c.rate.v, max(took, c.rate.v/2))
}

// decideRateCutLocked fills in d's cut of the rate, from the goodput m or,
// on a recut, from what the store took of the attempts sent since the last
// cut. Requires that c.mu is held.
func (c *Controller) decideRateCutLocked(d *cutDecision, m measure, recut bool, retryAfter time.Duration, now time.Time) {
	base := c.rate.v
	switch {
	case recut:
		// From the share of what was sent at this rate that the store
		// took: the goodput over the last Window still holds the ramp.
		base = c.recutBaseLocked(base * float64(c.freshOK) / float64(c.freshOK+c.freshBad))
	case m.trusted:
		base = min(base, m.goodput)
		if c.latLoad && m.blockConc && !m.blockRate {
			// Our slots, not the rate, held the goodput, and they are
			// no limit of the store's (its latency grows with its
			// load): what they carried is a floor of what it takes,
			// not its capacity. On real sockets a scope's limiter,
			// made at the first throttle after startup with the few
			// slots the store's limiter had then, measured half the
			// store's capacity on them, and the curve took 2 s to
			// climb back from a cut to that. The rate is halved at
			// most, as on a re-cut; a store that takes less refuses
			// much of it and is cut again a round trip later
			// (fellShare).
			base = c.recutBaseLocked(m.goodput)
		}
		if c.rateGrewLatelyLocked(now) && c.lastRateCut.Before(c.grewAt) {
			// The rate grew only after the store had taken the one
			// before in full: it takes at least that, whatever a
			// goodput measured over the ramp says. Not once a cut
			// since the growth was not enough: then the store refuses
			// what it took before (its capacity fell), and the floor
			// would hold the rate above it for another Window.
			base = max(base, min(c.rate.v, c.grewFrom))
		}
	}
	d.rateBase = base
	switch {
	case !m.trusted && c.rate.startup():
		d.rate = rateScale
	case c.rate.startup():
		d.rate = rateEndStartup
	default:
		d.rate = rateDecrease
		d.quotaBelow = retryAfter > 0 && c.rate.v <= c.rate.lastMax
		// A quota that answers with a Retry-After may have let a probe
		// far past it on its burst allowance, like a startup. A re-cut
		// is not re-cut (see recutShare).
		d.recutOK = !recut && retryAfter > 0
	}
}

// applyCutLocked carries out d, decided at now for a throttle with the
// given cause and Retry-After: it cuts the limits, starts a new cut epoch,
// and logs and counts the change. Requires that c.mu is held.
func (c *Controller) applyCutLocked(d cutDecision, cause string, retryAfter time.Duration, now time.Time) {
	c.concScore = d.concScore
	if d.rate == rateKeep && d.conc == concKeep {
		return
	}
	fromRate, fromConc := c.rate.v, c.concLimit()
	c.cutRateLocked(d, retryAfter, now)
	c.cutConcLocked(d, now)
	c.cutDoneLocked(now)
	if d.spike {
		// The rate did not cause it: its startup round goes on.
		c.holdFailedGrowthLocked(fromConc, now)
		c.logChangeLocked(limitConc, float64(fromConc), float64(c.concLimit()), reasonCongestion, cause, now)
		return
	}
	c.applyRateLocked(now)
	c.logChangeLocked(limitRate, fromRate, c.rate.v, reasonCongestion, cause, now)
	c.logChangeLocked(limitConc, float64(fromConc), float64(c.concLimit()), reasonCongestion, cause, now)
}

// cutRateLocked applies d's cut of the rate, if any, at now. Requires that
// c.mu is held.
func (c *Controller) cutRateLocked(d cutDecision, retryAfter time.Duration, now time.Time) {
	switch d.rate {
	case rateKeep:
		return
	case rateCap:
		c.rate.v = c.rate.clamp(min(c.rate.v, d.rateCap))
		return
	case rateScale:
		c.rate.v = c.rate.clamp(d.rateBase * (1 - (1-decreaseFactor)*d.share))
		// A tenth is no cut for a rate that overshot the store by far:
		// against a quota whose Retry-After pauses sends, a Window of
		// sending between such cuts is a pause and several seconds of
		// refusals each time (see recutShare).
		c.recutOK = true
	case rateEndStartup:
		c.rate.cut(d.rateBase, d.share, 0)
		c.throttled = true
		c.recutOK = true
	case rateDecrease:
		c.rate.cut(d.rateBase, d.share, 0)
		if d.fell {
			// rateBase is the store's new capacity, measured on what it
			// took of a rate it refused in good part, and the cut before
			// this one has already let it drain: a full decrease below
			// that would leave a tenth of it unused for the second the
			// curve takes to climb back.
			c.rate.cutTo(d.rateBase, d.rateBase*(1+decreaseFactor)/2)
		}
		if d.quotaBelow {
			// A quota refused us while we only climbed back to its
			// last throttle point: measured while its burst allowance
			// still took our excess, that point was too high. Aim
			// halfway between the cut and where it refused now
			// (CUBIC's fast convergence, (1+β)/2 for a full cut),
			// not back into the quota; the curve restarts toward it.
			c.rate.cutTo((c.rate.lastMax+c.rate.v)/2, c.rate.v)
		}
		c.throttled = true
		c.recutOK = d.recutOK
	}
	c.lastRateCut = now
	c.cutLat = c.latRecent
	// Clamped before the product, which a huge Retry-After overflows.
	c.probeAfter = now.Add(quotaHold * min(retryAfter, c.cfg.MaxRetryAfter/quotaHold))
	c.newRoundLocked(now)
	// Tokens saved before the cut would go out as a burst into a store
	// that is out of capacity: start from an empty bucket.
	c.bucket.drain(now)
}

// cutConcLocked applies d's cut of concurrency, if any, at now, after the
// rate's: a multiplicative decrease keeps the slots the new rate needs.
// Requires that c.mu is held.
func (c *Controller) cutConcLocked(d cutDecision, now time.Time) {
	switch d.conc {
	case concKeep:
		return
	case concSet:
		to := d.concTo
		if c.latLoad && (d.rate == rateEndStartup || d.rate == rateDecrease) {
			// The rate was cut, and the rate is what relieves a store
			// whose latency grows with its load: the slots need only
			// carry the new rate. Cut to the count the store was seen
			// to take, a scope's limiter made at the first throttle,
			// which has seen few, held a handful of slots for a second
			// on real sockets, and its next cut went from the goodput
			// they carried.
			to = max(to, c.littleLocked(false))
		}
		c.conc.cutTo(d.concBase, to)
		if d.concOnly {
			c.capCutSeq = c.cutSeq + 1 // the epoch cutDoneLocked starts
		}
	case concDecrease:
		c.conc.cut(d.concBase, d.share, c.littleLocked(false))
	}
	c.lastConcCut = now
}

// narrowCapLocked lowers the concurrency's throttle point to n after a
// throttle of an attempt sent with n in flight in the epoch that the
// latest cut ended, when that cut was one of concurrency only at a count
// the store had not taken (a store taken to cap concurrency, concMode)
// and n lies between the new limit and the throttle point that cut set.
// The attempts of one burst are granted together and reach the store in
// any order: the one whose refusal came back first and cut may have been
// sent with any count of the burst, and the lowest count the store
// refused is the closer bound on its slots. Climbing back toward the
// highest instead, the curve stepped past the store's slots again at
// each Window's growth: after a store's slots went from 4 to 16, a limit
// cut to 14 climbed back toward 29, 24, 20, 18 and 17 in turn, and in 60
// runs of the simulator it held the 16 slots 2.8–9.3 s after the step,
// depending on the order the bursts ran in (3.9–5.9 s with this).
// Requires that c.mu is held.
func (c *Controller) narrowCapLocked(p *Permit) {
	if p.epoch+1 != c.cutSeq || c.capCutSeq != c.cutSeq {
		return
	}
	if n := float64(p.inFlight); n > c.conc.v && n < c.conc.lastMax {
		c.conc.cutTo(n, c.conc.v)
	}
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
	c.cutTook, c.cutOK = 0, 0
	c.freshOK, c.freshBad = 0, 0
	c.decreases++
}
