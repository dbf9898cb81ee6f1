package limiter

import "time"

// outage is the state of a store that answers nothing: its connections
// are refused, or reset before any answer, or its name does not resolve.
// Such an attempt tells nothing of the store's capacity, so it neither
// cuts nor grows a limit; but every write sent meanwhile would meet the
// same refused connection, at the full rate, and fail in a millisecond.
// So from the first Unreachable sample until the store answers again:
//
//   - one attempt at a time is admitted, the probe, and none before next.
//     After the nth probe in a row that found the store still unreachable
//     (n = 0 for the attempt that began the outage) next is
//     Backoff{ProbeMin, ProbeMax}.Delay(n) away: full jitter between
//     ProbeMin and min(ProbeMax, ProbeMin·2^(n+1)). So at most one probe
//     goes out per ProbeMin (250ms by default), and about one per
//     ProbeMax/2 once the outage has lasted;
//   - every other caller waits in the FIFO as in a pause (TryAcquire
//     returns ErrNoCapacity), and RetryWait says to come back after the
//     next probe;
//   - an Unreachable sample of an attempt granted before the outage began
//     changes nothing: only probes move next;
//   - the first answer of the store's (Success, Congested or Failed), the
//     probe's or that of an attempt granted before, ends the outage. A
//     probe that ends Neutral (its loader left) lets the next caller
//     probe at once.
//
// A probe is an ordinary permit: it needs a slot and its units, and what
// it answers is observed like any other sample.
//
// The zero value is "no outage". It is not safe for concurrent use; the
// Controller guards it.
type outage struct {
	n       uint64    // its number: the Controller's outages when it began
	since   time.Time // when it began; zero: no outage
	next    time.Time // no probe is admitted before
	failed  int       // probes in a row that found the store unreachable
	probing bool      // a probe is in flight
}

// active reports whether the store is in an outage.
func (o *outage) active() bool { return !o.since.IsZero() }

// retryAt is when a caller turned away at now should come back: after the
// next probe, and no sooner than minWait from now while one is in flight
// (its answer is what may end the outage). now when there is no outage.
func (o *outage) retryAt(now time.Time, minWait time.Duration) time.Time {
	if !o.active() {
		return now
	}
	at := now.Add(minWait)
	if o.next.After(at) {
		at = o.next
	}
	return at
}

// Unreachable reports whether the store is in an outage: an attempt found
// it unreachable and it has answered nothing since. Safe for concurrent use.
func (c *Controller) Unreachable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.active()
}

// admitOutageLocked reports whether an outage keeps a caller from being
// admitted at now and, if the probe interval does, until when. Requires
// that c.mu is held.
func (c *Controller) admitOutageLocked(now time.Time) (time.Time, blocker) {
	switch {
	case !c.out.active():
		return time.Time{}, blockNone
	case now.Before(c.out.next):
		return c.out.next, blockProbe
	case c.out.probing:
		return time.Time{}, blockProbe // the probe's Done wakes the head
	}
	return time.Time{}, blockNone
}

// grantProbeLocked makes p, just granted, the outage's probe, if there is
// an outage. Requires that c.mu is held.
func (c *Controller) grantProbeLocked(p *Permit) {
	if c.out.active() {
		p.probe = c.out.n
		c.out.probing = true
	}
}

// probesLocked reports whether p is the probe of the outage now under way:
// a probe of an outage that ended and was followed by another is not its
// probe, and its answer neither frees the probe slot (a second probe
// would go out while the outage's own is in flight) nor counts as a probe
// that failed. Requires that c.mu is held.
func (c *Controller) probesLocked(p *Permit) bool {
	return p.probe != 0 && c.out.active() && p.probe == c.out.n
}

// observeUnreachableLocked accounts an Unreachable sample of p at now: it
// begins an outage or, from its probe, sets the next probe further off.
// Requires that c.mu is held.
func (c *Controller) observeUnreachableLocked(p *Permit, s Sample, now time.Time) {
	// Nothing was learned of the store, but a window that saw it does not
	// grow: the loader's writes went unserved, which says nothing about
	// whether the limits bind.
	c.win.failed++
	c.lastGood = false
	if p.round == c.round {
		c.roundBad = true
	}
	switch {
	case !c.out.active():
		c.outages++
		c.out = outage{n: c.outages, since: now}
	case c.probesLocked(p):
		c.out.failed++
	default:
		return // granted before the outage began: the probe interval stands
	}
	c.out.next = now.Add(Backoff{Min: c.cfg.ProbeMin, Max: c.cfg.ProbeMax}.Delay(c.out.failed, 0, c.jitter))
	if c.out.failed == 0 {
		c.logEventLocked(&c.outLogs[0], now, "store unreachable: probing it with one write at a time until it answers",
			"cause", s.Reason, "next_probe", c.out.next)
	}
}

// endOutageLocked ends the outage, if any, on an answer of the store's at
// now. Requires that c.mu is held.
func (c *Controller) endOutageLocked(now time.Time) {
	if !c.out.active() {
		return
	}
	c.logEventLocked(&c.outLogs[1], now, "store answers again: writes resume",
		"unreachable_for", now.Sub(c.out.since), "failed_probes", c.out.failed)
	c.out = outage{}
}
