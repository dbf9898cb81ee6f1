package limiter

import (
	"math"
	"sync/atomic"
	"time"
)

// LatencyFinding is what the limiters of one store share of its latency
// (Config.Latency): whether one of them found it to be the store's
// response to its load rather than a queue of theirs (see
// adoptLatencyLocked). Each limiter behind the same store would otherwise
// test it with a concurrency cut of its own, and with two in series (the
// store's and a scope's) the cut of one leaves the other's test nothing
// to judge by: the slots stay cut for seconds. The zero value has found
// nothing; it is safe for concurrent use.
type LatencyFinding struct {
	load atomic.Bool
}

// adoptSharedLatencyLocked takes over a finding of another limiter of the
// store: latency is its response to load. A latency cut of ours under
// test is undone as a failed test would be. Requires that c.mu is held.
func (c *Controller) adoptSharedLatencyLocked(now time.Time) {
	if c.latLoad || c.cfg.Latency == nil || !c.cfg.Latency.load.Load() {
		return
	}
	from := c.concLimit()
	if t := c.test; t.active {
		c.test = concTest{}
		c.conc, c.throttled = t.prev, t.throttled
	}
	c.adoptLatencyLocked("another limiter of the store found it", 0, 0, from, c.concLimit(), now)
	if c.concLimit() != from {
		c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reasonLatencyUndo, "", now)
	}
}

// updateLatencyLocked folds the latency of w's Success samples into the
// recent EWMAs and returns w's geometric-mean latency (0 if w has no
// latency sample). The geometric mean reads the latency most requests saw:
// a few stalls of a store that is otherwise fast do not make a window
// slow. The baseline follows drops at once by half; it never drifts up, so
// a queue we build in the store cannot become the new normal (a rise that
// concurrency cuts show to be the store's own is adopted in Tick).
func (c *Controller) updateLatencyLocked(w window) time.Duration {
	if w.latN == 0 {
		return 0
	}
	geo := w.geoLatency()
	mean := w.latSum / time.Duration(w.latN)
	if w.latN >= minSamples && (c.latFloor == 0 || geo < c.latFloor) {
		c.latFloor = geo
	}
	if c.latRecent == 0 {
		c.latRecent, c.latMean = geo, mean
	} else {
		c.latRecent += (geo - c.latRecent) / 2
		c.latMean += (mean - c.latMean) / 2
	}
	switch {
	case c.latLoad:
		// The store's latency moves with its load: the baseline follows it
		// both ways.
		c.latBase = c.latRecent
	case w.congested > 0:
	case c.latBase == 0:
		c.latBase = geo
	case geo < c.latBase:
		c.latBase += (geo - c.latBase) / 2
	}
	return geo
}

// geoLatency is the geometric mean of w's latency samples; 0 without one.
func (w *window) geoLatency() time.Duration { return geoMean(w.logSum, w.latN) }

// geoMean is the geometric mean of n latencies whose logarithms (of
// seconds) sum to logSum; 0 when n is.
func geoMean(logSum float64, n int64) time.Duration {
	if n == 0 {
		return 0
	}
	return durationFromNanos(math.Round(math.Exp(logSum/float64(n)) * float64(time.Second)))
}

// staleThrottlePointLocked reports whether w, a clean window, shows the
// rate's last throttle point to be stale: the store's latency follows its
// load (latLoad), it was loaded when it throttled (cutLat at least
// loadedLatency times the lowest latency seen), and now, taking close to
// what it took then, it answers almost as fast as when idle (judged by
// the window's second half when it has minSamples answers, so that a
// change within the window shows in it). At a store whose latency grows
// with utilisation (a queue of requests), that is a store with much more
// capacity than it had: it grew, or others that shared it left. The
// curve would spend a recoverTime creeping up to the old point and as
// long again past it, at a fraction of what the store would take.
// Requires that c.mu is held.
func (c *Controller) staleThrottlePointLocked(w window, elapsed time.Duration) bool {
	if w.latN < minSamples {
		return false
	}
	now := w.geoLatency()
	if w.lateN >= minSamples {
		now = geoMean(w.lateLogSum, w.lateN)
	}
	return c.staleAtLocked(now, w.accepted/elapsed.Seconds())
}

// staleAtLocked reports whether a store that answers at latency lat while
// taking took units/s shows the rate's last throttle point to be stale
// (see staleThrottlePointLocked). Requires that c.mu is held.
func (c *Controller) staleAtLocked(lat time.Duration, took float64) bool {
	if !c.latLoad || c.rate.startup() || c.latFloor <= 0 {
		return false
	}
	floor := float64(c.latFloor)
	return float64(c.cutLat) >= loadedLatency*floor &&
		float64(lat) <= idleLatency*floor &&
		took >= staleShare*c.rate.lastMax
}

// latencyElevatedLocked reports whether the recent latency is clearly above
// the baseline, for a store whose latency may be a queue of ours: growth
// holds. Requires that c.mu is held.
func (c *Controller) latencyElevatedLocked() bool {
	return !c.latLoad && c.isHighLocked(c.latRecent)
}

// isHighLocked reports whether latency d is past the tolerance above the
// baseline. Requires that c.mu is held.
func (c *Controller) isHighLocked(d time.Duration) bool {
	if c.latBase == 0 {
		return false
	}
	return float64(d) > float64(c.latBase)*c.cfg.LatencyTolerance+float64(latencySlack)
}

// countHighLatencyLocked reports whether the recent latency is elevated
// (see latencyElevatedLocked), and counts in latHigh the windows in a row
// in which it was and the window's own latency, mean, was high too: the
// window itself was slow, not just the EWMA's memory. Requires that c.mu
// is held.
func (c *Controller) countHighLatencyLocked(mean time.Duration) (elevated bool) {
	elevated = c.latencyElevatedLocked()
	if elevated && c.isHighLocked(mean) {
		c.latHigh++
	} else {
		c.latHigh = 0
	}
	return elevated
}

// latencyCutLocked cuts concurrency from w's peak in flight after the
// latency stayed elevated for latencyWindows windows (a queue of ours in
// the store), and puts the cut to the test of the next window's goodput
// (see latencyKeep). Requires that c.mu is held.
func (c *Controller) latencyCutLocked(w window, goodput float64, now time.Time) {
	c.latHigh = 0
	from := c.concLimit()
	// Gently when latency is just past the tolerance, by up to half
	// when it is far past (a deep queue of ours in the store).
	factor := max(0.5, min(decreaseFactor, float64(c.latBase)*c.cfg.LatencyTolerance/float64(c.latRecent)))
	peak := min(c.conc.v, float64(max(w.peak, 1)))
	prev, throttled := c.conc, c.throttled
	c.conc.cutTo(peak, peak*factor)
	c.throttled = true
	if c.concLimit() < int(peak) {
		c.test = concTest{active: true, prev: prev, throttled: throttled, from: int(peak), to: c.concLimit(), goodput: goodput}
	}
	if c.concLimit() < from {
		c.decreases++
		c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reasonLatency, "", now)
	}
}

// checkLatencyCutLocked judges the latency cut of the previous Tick by the
// goodput of the window that followed it (see latencyKeep): a cut that
// cost goodput in proportion to the slots is undone, and latency is taken
// to be the store's response to load from then on. A window that was not
// clean, or that the new limit did not bind (bound is false: the loader
// sent less, or the rate held it), tells nothing and leaves the cut in
// place. Requires that c.mu is held.
func (c *Controller) checkLatencyCutLocked(bound bool, goodput float64, now time.Time) {
	t := c.test
	c.test = concTest{}
	if !bound || t.goodput <= 0 || t.from <= 0 {
		return
	}
	keep := 1 - latencyKeep*(1-float64(t.to)/float64(t.from))
	if goodput >= keep*t.goodput {
		return // fewer slots, the same goodput: the latency was a queue of ours
	}
	from := c.concLimit()
	// The latency was no congestion: the cut never happened, and neither
	// did the end of startup it brought.
	c.conc, c.throttled = t.prev, t.throttled
	c.adoptLatencyLocked("a concurrency cut cost goodput", t.goodput, goodput, t.from, t.to, now)
	c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reasonLatencyUndo, "", now)
}

// adoptLatencyLocked takes the recent latency to be the store's response to
// its load, not a queue of ours: it stops counting as congestion, and slots
// follow it (Little's law), for the Controller's life. Not only until the
// latency falls back to the old baseline, or for some windows: at a store
// whose latency grows with utilisation (internal/storesim's, in the
// side-by-side benchmark), every later ramp of the rate would then be held
// on a latency taken for a queue of ours, and converge after a rise in 8s
// instead of 3. Requires that c.mu is held.
func (c *Controller) adoptLatencyLocked(why string, before, after float64, from, to int, now time.Time) {
	c.latLoad = true
	if c.cfg.Latency != nil {
		c.cfg.Latency.load.Store(true)
	}
	c.latBase = max(c.latBase, c.latRecent)
	c.latHigh = 0
	c.log.Info("latency is the store's response to load", "why", why, "goodput_before", before, "goodput_after", after,
		"latency", c.latRecent, "concurrency_from", from, "concurrency_to", to)
}
