package limiter

import "time"

// window accumulates one measurement window.
type window struct {
	// seq numbers the windows: a permit's grant counted in the window
	// whose seq it carries (Permit.win).
	seq       uint64
	start     time.Time
	accepted  float64 // units the store accepted (Success, unrejected Share)
	granted   float64 // units admitted
	grants    uint64
	samples   uint64 // Success, Congested and Failed samples
	congested uint64
	failed    uint64
	latSum    time.Duration
	logSum    float64 // sum of ln(latency in seconds), for the geometric mean
	latN      int64
	// lateLogSum and lateN are logSum and latN of the samples that came
	// back in the second half of the Window: the store as it is now, when
	// it changed within the window (see staleThrottlePointLocked).
	lateLogSum float64
	lateN      int64
	peak       int // highest in-flight count
	// okPeak is the highest in-flight count at grant of an attempt accepted
	// before the window's first Congested sample: our count includes the
	// attempts the store is rejecting at the time, which would inflate it.
	okPeak    int
	area      float64       // in-flight count integrated over time, slot·seconds
	areaAt    time.Time     // when area was last brought up to date
	blockRate bool          // callers waited on the rate limit
	blockConc bool          // callers waited on the concurrency limit
	grew      bool          // a startup round doubled the rate in this window
	quiet     time.Duration // nothing asked for while a Retry-After ran (see quietLocked)
}

// winStat is what the history keeps of a completed window.
type winStat struct {
	elapsed   time.Duration
	accepted  float64
	samples   uint64
	peak      int
	okPeak    int
	blockRate bool
	blockConc bool
	quiet     time.Duration
}

// measure is what the store did over the recent past (see measureLocked).
type measure struct {
	goodput   float64 // units/s accepted
	trusted   bool    // enough samples for goodput
	peak      int     // highest in-flight count
	blockRate bool    // callers waited on the rate limit
	blockConc bool    // callers waited on the concurrency limit
}

// closeWindowLocked ends the current window, elapsed long, at now and
// returns it: its summary goes into the history, the next window starts,
// and its cost per request and average in-flight count are folded into
// their EWMAs. Requires that c.mu is held.
func (c *Controller) closeWindowLocked(elapsed time.Duration, now time.Time) window {
	c.flightLocked(now)
	if !c.quietFrom.IsZero() {
		// Quiet on: the part so far is this window's.
		c.win.quiet += c.quietLocked(c.quietFrom, now)
		c.quietFrom = now
	}
	w := c.win
	c.hist[c.histNext] = winStat{
		elapsed: elapsed, accepted: w.accepted, samples: w.samples,
		peak: w.peak, okPeak: w.okPeak, blockRate: w.blockRate, blockConc: w.blockConc,
		quiet: w.quiet,
	}
	c.histNext = (c.histNext + 1) % historyWindows
	c.win = window{seq: w.seq + 1, start: now, areaAt: now}

	if w.grants > 0 {
		cost := w.granted / float64(w.grants)
		if c.avgCost == 0 {
			c.avgCost = cost
		} else {
			c.avgCost += (cost - c.avgCost) / 4
		}
	}
	if flight := w.area / elapsed.Seconds(); !c.haveFlight {
		c.avgInFlight, c.haveFlight = flight, true
	} else {
		c.avgInFlight += (flight - c.avgInFlight) / 2
	}
	return w
}

// flightLocked integrates the in-flight count up to now, before it
// changes. Requires that c.mu is held.
func (c *Controller) flightLocked(now time.Time) {
	if now.After(c.win.areaAt) {
		c.win.area += float64(c.inFlight) * now.Sub(c.win.areaAt).Seconds()
		c.win.areaAt = now
	}
}

// slotsUsed returns the in-flight count the loader kept in w, elapsed
// long: its time average, or requests/s × mean latency (Little's law) if
// that is larger.
func slotsUsed(w window, elapsed time.Duration) float64 {
	used := w.area / elapsed.Seconds()
	if w.latN > 0 {
		used = max(used, float64(w.grants)/elapsed.Seconds()*(w.latSum/time.Duration(w.latN)).Seconds())
	}
	return used
}

// inFlightLocked returns the usual number of attempts in flight, the EWMA
// of the completed windows' time averages (before the first window closes,
// the average of the current one so far), and the larger of it and the
// average of the current window so far, which follows a ramp of the send
// rate at once. Requires that c.mu is held.
func (c *Controller) inFlightLocked(now time.Time) (usual, typical float64) {
	current := 0.0
	if d := now.Sub(c.win.start); d > 0 {
		area := c.win.area
		if now.After(c.win.areaAt) {
			area += float64(c.inFlight) * now.Sub(c.win.areaAt).Seconds()
		}
		current = area / d.Seconds()
	}
	usual = current
	if c.haveFlight {
		usual = c.avgInFlight
	}
	return usual, max(usual, current)
}

// okPeakLocked returns the highest in-flight count at grant of an attempt
// accepted before the first throttle of its window, over the current window
// and the last okPeakWindows: a count the store is known to take. Requires
// that c.mu is held.
func (c *Controller) okPeakLocked() int {
	n := c.win.okPeak
	for i := 1; i <= okPeakWindows; i++ {
		n = max(n, c.hist[(c.histNext-i+historyWindows)%historyWindows].okPeak)
	}
	return n
}

// measureLocked sums the current window and as many recent ones as needed
// to span at least span and minSamples samples. The goodput leaves out time
// spent paused or quiet (see quietLocked), and is not trusted over less
// than half a Window of sending. Requires that c.mu is held.
func (c *Controller) measureLocked(span time.Duration, now time.Time) measure {
	minSpan := span
	w := c.win
	m := measure{peak: w.peak, blockRate: w.blockRate, blockConc: w.blockConc}
	quiet := w.quiet
	if !c.quietFrom.IsZero() {
		quiet += c.quietLocked(c.quietFrom, now)
	}
	accepted, samples, span := w.accepted, w.samples, now.Sub(w.start)
	for i := 1; i <= historyWindows && (span-quiet < minSpan || samples < minSamples); i++ {
		h := c.hist[(c.histNext-i+historyWindows)%historyWindows]
		if h.elapsed == 0 {
			break
		}
		accepted += h.accepted
		samples += h.samples
		span += h.elapsed
		quiet += h.quiet
		m.peak = max(m.peak, h.peak)
		m.blockRate = m.blockRate || h.blockRate
		m.blockConc = m.blockConc || h.blockConc
	}
	// Time we spent paused says nothing about what the store takes.
	if !c.pausedFrom.IsZero() {
		from, until := laterOf(c.pausedFrom, now.Add(-span)), earlierOf(c.pausedUntil, now)
		if until.After(from) {
			span -= until.Sub(from)
		}
	}
	span -= quiet // already without the pause
	if samples >= minSamples && span >= c.cfg.Window/2 {
		m.goodput, m.trusted = accepted/span.Seconds(), true
	}
	return m
}

// quietLocked returns how much of [from, until], a time in which nothing
// was in flight or queued, ran while the store's latest Retry-After did,
// leaving out time paused (measureLocked takes that out itself). Loaders
// that all wait out a Retry-After, each its own (a proxy honours it per
// write), leave the store asked for nothing: what it took over that time
// says nothing of what it takes. Outside a Retry-After, a loader that asks
// for little is what the store gets, and that counts (a rate cut then
// goes below what the loader asks). Requires that c.mu is held.
func (c *Controller) quietLocked(from, until time.Time) time.Duration {
	from, until = laterOf(from, c.raFrom), earlierOf(until, c.raUntil)
	if !until.After(from) {
		return 0
	}
	d := until.Sub(from)
	if pf, pu := laterOf(from, c.pausedFrom), earlierOf(until, c.pausedUntil); !c.pausedFrom.IsZero() && pu.After(pf) {
		d -= pu.Sub(pf)
	}
	return d
}

// askedLocked notes that a caller asks for a permit at now: any quiet time
// ends. Requires that c.mu is held.
func (c *Controller) askedLocked(now time.Time) {
	if !c.quietFrom.IsZero() {
		c.win.quiet += c.quietLocked(c.quietFrom, now)
		c.quietFrom = time.Time{}
	}
}

// releasedLocked notes that a permit ended at now: with nothing in flight
// or queued while a Retry-After runs, quiet time begins. (Only then: no
// answer, and so no Retry-After, can come while nothing is in flight, so
// a quiet time that begins outside one never overlaps one, and the
// common idle moment of a light load costs one comparison.) Requires that
// c.mu is held.
func (c *Controller) releasedLocked(now time.Time) {
	if c.inFlight == 0 && c.q.n == 0 && c.quietFrom.IsZero() && now.Before(c.raUntil) {
		c.quietFrom = now
	}
}

// laterOf returns the later of a and b.
func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// earlierOf returns the earlier of a and b.
func earlierOf(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
