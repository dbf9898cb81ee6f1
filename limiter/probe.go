package limiter

import (
	"math"
	"time"
)

const (
	// decreaseFactor is the multiplicative decrease for a fully congested
	// sample (Share 1): the limit goes to 0.9 of what the store accepted.
	// A partial rejection of share s cuts by 1 - (1-decreaseFactor)·s.
	decreaseFactor = 0.9
	// recoverTime is how long the CUBIC-like curve takes to climb back from
	// decreaseFactor·lastMax to lastMax after a full cut; past lastMax it
	// speeds up (see convexSpeedup: ×1.8 after 2·recoverTime) and from
	// growthCap·lastMax on it doubles per window.
	recoverTime = 750 * time.Millisecond
	// growthCap bounds growth to ×2 per window.
	growthCap = 2.0
	// convexSpeedup: past lastMax the curve runs on convexSpeedup times
	// cubicScale, so it reaches 1.8·lastMax recoverTime after passing
	// lastMax, not 2·recoverTime after (when it was ×1.1). Past its
	// throttle point a lone sidecar is looking for capacity that grew:
	// with the flatter convex part it converged 2.3 s after a rise in the
	// simulator (C/2 → 2C; 1.9–2.8 s over earlier runs) and 1.5–2.7 s
	// after a quadrupling on real sockets; with it, 1.1 s and 1.0 s. The
	// cost: sidecars sharing a store probe past their throttle points
	// sooner, and the store throttles a little more (1.2–1.3% against
	// 1.0% with 32 and 64 of them; see BENCHMARKS.md).
	convexSpeedup = 8
)

// cubicScale makes lastMax·(1 + cubicScale·(t-K)³) start at
// decreaseFactor·lastMax when K = recoverTime (t and K in seconds).
var cubicScale = (1 - decreaseFactor) / math.Pow(recoverTime.Seconds(), 3)

// probe is one adapted limit: the send rate or the concurrency.
//
// Before its first cut it is in slow start and doubles per growth window.
// A cut remembers the value at which the store throttled (lastMax) and drops
// below it; growth then follows lastMax·(1 + cubicScale·(t-K)³), where t is
// the growth time since the cut and K the time to reach lastMax again:
// concave (cautious) close to the last throttle point, convex (fast) far from
// it, and once at growthCap·lastMax it doubles per window again. Only
// windows in which growth was allowed advance t, so idle, paused or
// congested periods bank no growth. All values stay in [min, max].
//
// probe is not safe for concurrent use; the Controller guards it.
type probe struct {
	v        float64       // current limit
	min, max float64       // clamps
	lastMax  float64       // value at the last cut; 0 before the first (slow start)
	k        time.Duration // growth time from the last cut back to lastMax
	t        time.Duration // growth time accumulated since the last cut
}

func (p *probe) clamp(v float64) float64 { return max(p.min, min(p.max, v)) }

// startup reports whether p has never been cut.
func (p *probe) startup() bool { return p.lastMax == 0 }

// cut sets lastMax to base (what the store actually took, clamped) and the
// limit to base scaled by the decrease for a rejected share in (0, 1], but
// not below floor (a level known to work).
func (p *probe) cut(base, share, floor float64) {
	p.cutTo(base, max(floor, base*(1-(1-decreaseFactor)*share)))
}

// cutTo sets lastMax to base and the limit to v, at most base (both
// clamped), and restarts the curve so it climbs back to base. (CUBIC's
// "fast convergence", a lower plateau whenever base is below the previous
// one, slowed recovery after a capacity drop for little fairness; the
// Controller uses it only for a quota's refusal below its throttle point,
// see quotaHold.)
func (p *probe) cutTo(base, v float64) {
	p.lastMax = p.clamp(base)
	p.v = p.clamp(min(p.lastMax, v))
	p.t = 0
	p.k = 0
	if drop := 1 - p.v/p.lastMax; drop > 0 {
		p.k = time.Duration(math.Cbrt(drop/cubicScale) * float64(time.Second))
	}
}

// leap doubles the limit (at most to max) and leaves the curve's time
// where it is: slow start's step, and how a throttle point found stale is
// passed (from growthCap·lastMax on, the curve doubles per window anyway).
func (p *probe) leap() { p.v = p.clamp(p.v * growthCap) }

// grow advances the curve by one growth window of length dt and raises the
// limit to it, at most ×growthCap. It never lowers the limit.
func (p *probe) grow(dt time.Duration) {
	if p.startup() {
		p.leap()
		return
	}
	p.t += dt
	x := (p.t - p.k).Seconds()
	scale := cubicScale
	if x > 0 {
		scale *= convexSpeedup
	}
	w := min(p.lastMax*(1+scale*x*x*x), p.v*growthCap)
	if p.v >= growthCap*p.lastMax {
		// Far past the last throttle point, which is stale (capacity grew,
		// or a stray early throttle ended slow start): grow as in slow start.
		w = p.v * growthCap
	}
	if w > p.v {
		p.v = p.clamp(w)
	}
}
