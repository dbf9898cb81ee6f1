package limiter

import "time"

// Phases reported in Snapshot.Phase.
const (
	// PhaseStartup: the send rate has no throttle point yet: it doubles
	// every window while it is the bottleneck, and every round of samples
	// too until the first sign of congestion (a throttle, a pause, a
	// latency cut that stands).
	PhaseStartup = "startup"
	// PhaseRecovering: after a cut, the rate limit is below the rate at
	// which the store last throttled and climbs back to it on the concave
	// part of the curve (cautiously near that point).
	PhaseRecovering = "recovering"
	// PhaseSteady: at or above the last throttle point, probing for more on
	// the convex part of the curve; the normal state of a saturated store.
	PhaseSteady = "steady"
	// PhasePaused: the store asked for a pause with Retry-After; nothing is
	// admitted until PausedUntil.
	PhasePaused = "paused"
	// PhaseUnreachable: the store answers nothing (an attempt was
	// Unreachable and none has been answered since): one probe at a time
	// goes out, see UnreachableSince and NextProbe.
	PhaseUnreachable = "unreachable"
	// PhaseClosed: Close was called.
	PhaseClosed = "closed"
)

// Snapshot is a consistent copy of the controller's state, for metrics and
// the status endpoint.
type Snapshot struct {
	Rate        float64 // current send-rate limit, units/s
	Burst       float64 // current token bucket size, units
	LastMaxRate float64 // rate at the last cut (the last throttle point); 0 before
	Concurrency int     // current concurrency limit
	InFlight    int     // admitted attempts holding a slot, not yet Done
	Staged      int     // staged attempts: sent behind another, no slot yet (AcquirePipelined)
	Queued      int     // waiting Acquire calls
	QueuedCost  float64 // units they wait for
	Phase       string  // one of the Phase constants
	PausedUntil time.Time
	// LastThrottle is when the latest Congested sample arrived, LastReason
	// its Reason.
	LastThrottle time.Time
	LastReason   string
	Samples      map[Outcome]uint64 // counts by outcome since start
	Decreases    uint64             // multiplicative decreases applied (congestion or latency)
	Increases    uint64             // windows in which a limit grew
	Pauses       uint64             // Retry-After pauses started or extended
	// LatencyBaseline is the unloaded per-window (geometric-mean) Success
	// latency: it follows drops, and rises only once a concurrency cut has
	// shown latency to be the store's response to its load, after which it
	// follows the recent latency; LatencyRecent is a fast EWMA of the same
	// means; LatencyElevated reports that recent is past the tolerance and
	// growth is held.
	LatencyBaseline time.Duration
	LatencyRecent   time.Duration
	LatencyElevated bool
	// CapsConcurrency reports that the store has said it caps concurrency
	// (a Congested Sample with Concurrency set) since the Controller was
	// made. It matters while the rate is in startup (see Sample).
	CapsConcurrency bool
	Heartbeat       time.Time // now of the last Tick
	// UnreachableSince is when the current outage began (an attempt found
	// the store unreachable and it has answered nothing since), zero
	// without one; NextProbe is then the earliest time the next probe may
	// go out.
	UnreachableSince time.Time
	NextProbe        time.Time
	// Flows are the flows granted or waiting in the last few seconds, by
	// key; Classes each class's counters, Bulk first.
	Flows   []FlowStats
	Classes []ClassStats
}

// Snapshot returns the current state. Safe for concurrent use.
func (c *Controller) Snapshot() Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	s := Snapshot{
		Rate:            c.rate.v,
		Burst:           c.bucket.burst,
		LastMaxRate:     c.rate.lastMax,
		Concurrency:     c.concLimit(),
		InFlight:        c.inFlight,
		Staged:          c.staged,
		Queued:          c.q.n,
		QueuedCost:      c.q.cost,
		Phase:           c.phaseLocked(now),
		LastThrottle:    c.lastThrottle,
		LastReason:      c.lastReason,
		Samples:         make(map[Outcome]uint64, numOutcomes),
		Decreases:       c.decreases,
		Increases:       c.increases,
		Pauses:          c.pauses,
		LatencyBaseline: c.latBase,
		LatencyRecent:   c.latRecent,
		LatencyElevated: c.latencyElevatedLocked(),
		CapsConcurrency: c.capsConc,
		Heartbeat:       c.heartbeat,
	}
	if now.Before(c.pausedUntil) {
		s.PausedUntil = c.pausedUntil
	}
	if c.out.active() {
		s.UnreachableSince, s.NextProbe = c.out.since, c.out.next
	}
	s.Flows = c.flowStatsLocked(now)
	s.Classes = c.classStatsLocked()
	for o, n := range c.samples {
		s.Samples[Outcome(o)] = n
	}
	return s
}

// phaseLocked returns the Phase constant for c at now. Requires that c.mu
// is held.
func (c *Controller) phaseLocked(now time.Time) string {
	switch {
	case c.closed:
		return PhaseClosed
	case c.out.active():
		return PhaseUnreachable
	case now.Before(c.pausedUntil):
		return PhasePaused
	case c.rate.startup():
		return PhaseStartup
	case c.rate.v < c.rate.lastMax:
		return PhaseRecovering
	default:
		return PhaseSteady
	}
}
