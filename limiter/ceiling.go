package limiter

import (
	"fmt"
	"math"
	"time"
)

// demandHeadroom: a sidecar that the rate did not hold back reports, as
// its demand, this many times what it sent lately, so that a lease sized
// to it leaves room for the loader to speed up by half before the next
// refresh.
const demandHeadroom = 1.5

// ceiling is a cap on the send rate set from outside the control law: a
// fleet's lease (package fleet). The zero value is no cap.
type ceiling struct {
	rate  float64   // units/s; 0: no cap
	until time.Time // the cap lapses then
}

// SetCeiling caps the send rate at rate units/s until until: the token
// bucket then runs at the smaller of the adapted limit and rate (never
// below MinRate). The adapted limit goes on adapting underneath, from
// what the store answers: a throttle still cuts it at once below the
// ceiling, and it grows only while the bucket held callers back and they
// used at least half of it, so it stays within about twice the ceiling
// and a raised ceiling applies at once. A later call replaces the cap; it
// lapses at until, at the first Tick after it. rate must be finite and >
// 0. Safe for concurrent use.
func (c *Controller) SetCeiling(rate float64, until time.Time) error {
	if math.IsNaN(rate) || math.IsInf(rate, 0) || rate <= 0 {
		return fmt.Errorf("limiter: SetCeiling(rate=%v): rate must be finite and > 0", rate)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ceil = ceiling{rate: rate, until: until}
	c.ceilingChangedLocked(c.cfg.Now())
	return nil
}

// ClearCeiling removes the cap of SetCeiling: the adapted limit alone
// sets the send rate again. Safe for concurrent use.
func (c *Controller) ClearCeiling() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ceil == (ceiling{}) {
		return
	}
	c.ceil = ceiling{}
	c.ceilingChangedLocked(c.cfg.Now())
}

// Ceiling returns the cap set by SetCeiling and when it lapses; rate 0
// means none. Safe for concurrent use.
func (c *Controller) Ceiling() (rate float64, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ceil.rate, c.ceil.until
}

// SendRate returns the rate the token bucket runs at now, units/s: the
// adapted limit (Snapshot.Rate), or the ceiling if that is lower. Safe for
// concurrent use.
func (c *Controller) SendRate() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendRateLocked(c.cfg.Now())
}

// sendRateLocked returns the rate the bucket should run at now. Requires
// that c.mu is held.
func (c *Controller) sendRateLocked(now time.Time) float64 {
	if c.ceil.rate > 0 && now.Before(c.ceil.until) {
		return max(c.cfg.MinRate, min(c.rate.v, c.ceil.rate))
	}
	return c.rate.v
}

// ceilingChangedLocked applies a new ceiling to the bucket and to waiting
// callers. Requires that c.mu is held.
func (c *Controller) ceilingChangedLocked(now time.Time) {
	c.applyRateLocked(now)
	c.dispatchLocked(now)
}

// lapseCeilingLocked removes a ceiling whose time is up (called by Tick).
// Requires that c.mu is held.
func (c *Controller) lapseCeilingLocked(now time.Time) {
	if c.ceil.rate > 0 && !now.Before(c.ceil.until) {
		c.ceil = ceiling{}
		c.applyRateLocked(now)
	}
}

// Load is what a Controller tells a fleet coordinator of its load.
type Load struct {
	// Demand is what the sidecar would send if it were unlimited, units/s:
	// MaxRate when callers wait on the send rate now, or waited lately and
	// used what it let through (the limit, the ceiling or the store held
	// them back: they want more than they get), unless the store is
	// unreachable (see Unreachable); otherwise demandHeadroom times what
	// it sent lately.
	Demand float64
	// Goodput is what the store accepted lately, units/s (0 until enough
	// samples tell).
	Goodput float64
	// Throttles counts the Congested samples since New, and those that
	// throttled a part of the store (Sample.PartThrottled).
	Throttles uint64
}

// Load returns the controller's load at now, measured over the last two
// Windows or more (as many as hold enough samples). Safe for concurrent
// use.
func (c *Controller) Load(now time.Time) Load {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.measureLocked(2*c.cfg.Window, now)
	l := Load{Throttles: c.samples[Congested] + c.partThr}
	if m.trusted {
		l.Goodput = m.goodput
	}
	sent := l.Goodput
	if d := now.Sub(c.win.start); d >= c.cfg.Window/2 {
		sent = max(sent, c.win.granted/d.Seconds())
	}
	rate := c.sendRateLocked(now)
	// Callers wait on the rate now, or waited lately and used what it let
	// through: a loader held back, not one sending in bursts. (At a rate
	// of a few units a second, what was sent in a Window or two says
	// nothing; the queue does.) Not callers waiting out a pause or an
	// outage's probe interval: no rate would let them through, and a
	// sidecar that cannot reach the store would claim a share of the
	// fleet's budget it cannot use.
	held := c.q.n > 0 && !c.q.head.deadline.IsZero() && !now.Before(c.pausedUntil)
	if !c.out.active() && (held || (m.blockRate || c.win.blockRate) && sent >= sentShare*rate) {
		l.Demand = c.cfg.MaxRate
		return l
	}
	l.Demand = min(c.cfg.MaxRate, max(c.cfg.MinRate, sent*demandHeadroom))
	return l
}
