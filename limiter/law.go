package limiter

import (
	"math"
	"time"
)

// Tuning constants of the control law (see also probe.go).
const (
	// longRetryAfter: a Retry-After at least this long pauses all sends at
	// once (the store is down for maintenance, say). A shorter one delays
	// only the write it came with (the proxy waits that long before
	// retrying it) and cuts the rate: a quota store that answers
	// "Retry-After: 2" to each rejected request among many accepted ones
	// must not idle the whole sidecar.
	longRetryAfter = 10 * time.Second
	// pauseStreak: this many consecutive Congested samples carrying a
	// Retry-After, from requests sent after the last cut (so the cut did not
	// help), pause all sends for the Retry-After even when it is short.
	pauseStreak = 4
	// minSamples: samples a goodput measurement needs to be trusted; with
	// fewer, a cut scales the configured limit instead, and in startup does
	// not end it (one early throttle is no estimate of the store's rate).
	minSamples = 8
	// startupRound: in startup the rate doubles as soon as this many
	// requests sent since the last change have succeeded while the rate was
	// the bottleneck, without waiting for the window to close, so that a
	// low initial rate costs a fast store a few hundred milliseconds, not
	// seconds.
	startupRound = 8
	// sentShare: the rate grows (a startup round, or a window) only when
	// what was sent under it reached at least this share of the limit: a
	// caller that found the bucket momentarily empty shows the limit bound
	// a burst, not that it held the loader back (a loader sending 1000
	// req/s in pairs through a one-token bucket would otherwise double the
	// limit without end). The limit stays within 1/sentShare·2 of the
	// rate actually sent.
	sentShare = 0.5
	// historyWindows: completed windows kept for measurements (fixed ring).
	historyWindows = 8
	// spikeRatio: a throttle of an attempt sent with n ≥ 2 in flight, where
	// n ≥ spikeRatio·typical + 1 (typical: the time-averaged in-flight
	// count), or one slot was usual (fewer than one in flight on average,
	// or a limit of 1 that grew within the Window) and the refusal looks
	// like a stall (no Retry-After, and not answered at the usual latency:
	// it waited in the store), is a concurrency event: the store stalled
	// and our attempts piled up behind it (VictoriaMetrics'
	// -maxConcurrentInserts), not a rate we sent too fast. It cuts
	// concurrency to the usual count and leaves the rate alone. (A rate
	// quota refuses at once, or with a Retry-After, whatever is in flight.)
	spikeRatio = 1.5
	// failedGrowthHold: when the store refuses a growth of concurrency at
	// once (a spike within a Window of the growth), the next growth to
	// that limit waits this long, doubling with every further refusal of
	// it in a row up to maxFailedGrowthHold; a growth the store takes, or
	// one to another limit, starts the count again. A store with a fixed
	// number of slots (VictoriaMetrics' -maxConcurrentInserts) then refuses
	// a probe every half minute instead of every two seconds.
	failedGrowthHold    = 2 * time.Second
	maxFailedGrowthHold = 32 * time.Second
	// grewRecent: a rate cut within this many Windows of a growth of the
	// rate does not go below what the store took at the rate before that
	// growth (over the window or startup round that earned it), whatever a
	// goodput measured over a longer span says: it lags a rate that
	// doubles.
	grewRecent = 2
	// recutShare: within a Window of the rate cut that ended startup (when
	// the rate may have overshot the store's by up to twice), of one by a
	// throttle with a Retry-After (a quota whose burst allowance hid a probe
	// past it), or of a tenth's scaling in startup (too few samples for a
	// goodput: one early throttle is no estimate, but more that keep coming
	// are), the rate is cut once more when at least two attempts sent a
	// round trip (the recent latency) or more after the cut were throttled
	// and they are at least this share of those attempts' samples: the cut
	// was too small. The new cut is from the share of those attempts the
	// store took (at least half); in startup it is again a scaling, which
	// may be followed by another. Attempts sent sooner meet a store still
	// full of what everyone sent before the cut. All other cuts, the re-cut's
	// successor after startup included, are once per Window (unless the
	// store's capacity fell, see fellShare): on a store shared by many
	// sidecars, a burst of throttles says little about one sidecar's own
	// rate, and cutting whoever was unlucky twice would make the shares
	// unfair.
	recutShare = 0.1
	// fellShare and fellMin: within a Window of any cut after startup, the
	// rate is cut again when at least fellMin of the attempts sent a round
	// trip or more after the cut were throttled and they are at least
	// fellShare of those attempts' samples: the store's capacity fell
	// below the cut (a halving refuses half of what is sent), and waiting
	// out the Window would let it refuse that much for half a second more.
	// The new throttle point is what the store took in the answers since
	// the cut, which is its capacity while it refuses that much, but at
	// least half the rate (our slots bound what it took too), and the
	// rate goes to (1+decreaseFactor)/2 of it: the cut before has let the
	// store drain. The bar is far above a shared store's steady state (a
	// few throttles in a hundred, whoever was unlucky), so it does not cut
	// twice on luck; a cut by it may itself be followed by another.
	fellShare = 0.25
	fellMin   = 4
	// okPeakWindows: completed windows over which the highest in-flight
	// count the store accepted is remembered (about 2s): long enough to span
	// the windows with throttles, short enough to forget a capacity drop.
	okPeakWindows = 4
	// concEvidenceWeight and concMode: each cut folds into concScore (an
	// EWMA starting at 0) whether the throttled attempt was sent with more
	// attempts in flight than any the store accepted in the last few
	// seconds (1) or not (0); a concurrency-only cut that did not help
	// counts 0. Above concMode the store is taken to cap concurrency, and
	// throttles at new in-flight counts cut only concurrency, to the
	// highest count it took. Starting at 0 means "rate-limited" until three
	// such throttles in a row, the safe default since a rate cut always
	// relieves the store.
	concEvidenceWeight = 0.3
	concMode           = 0.6
	// quotaHold: after a rate cut by a throttle that carried a Retry-After
	// (a quota: every write it refuses waits that long), the rate climbs back
	// to the last throttle point as usual but probes beyond it only
	// quotaHold·Retry-After after the cut, so that a store at a stable quota
	// refuses a write every few Retry-Afters rather than every second. A
	// refusal with a Retry-After below the throttle point (measured while
	// the quota's burst allowance took our excess, it was too high) sets the
	// point halfway between the cut and where the refusal came, as CUBIC's
	// fast convergence does.
	quotaHold = 3
	// latencyWindows: consecutive windows whose own latency is, like the
	// recent EWMA, elevated, after which the concurrency limit is cut from
	// the peak in flight by tolerance·baseline/recent, within [0.5,
	// decreaseFactor] (then again after as many more such windows).
	latencyWindows = 2
	// latencyKeep: a latency cut of concurrency by ratio r is a test; it
	// stands when the next window's goodput is at least 1 − latencyKeep·(1−r)
	// of the goodput before it (the latency was a queue of ours in the
	// store: fewer slots, same goodput). When goodput fell more, in
	// proportion to the slots, the latency is the store's response to its
	// load: the cut is undone and the controller stops reading latency as
	// congestion for this store (logged once). Only a window that the new
	// limit bound is a test: in one where the loader sent less, or the rate
	// held it, goodput says nothing about the slots, and the cut stands.
	latencyKeep = 0.5
	// loadedLatency, idleLatency and staleShare: the rate's last throttle
	// point is stale (see staleThrottlePointLocked) when the store
	// throttled at a latency of at least loadedLatency times the lowest
	// seen, and a window that carried staleShare of that point's rate or
	// more came back at no more than idleLatency times it. A queue's
	// latency grows as 1/(1−utilisation): ×2 is a store at most half busy,
	// and one that took at least staleShare of the old point's rate has
	// then gained at least half as much capacity again (a sidecar's own
	// scheduling on a busy machine adds to the latency too, so the bar is
	// not lower). The rate doubles then, as in startup, instead of
	// creeping back to the old point. The bar for "loaded" keeps stores
	// whose latency hardly moves with load (a quota, a cap on inserts)
	// out of it: there the latency says nothing of capacity.
	loadedLatency = 3.0
	idleLatency   = 2.0
	staleShare    = 0.75
	// growthGain: while latency may be a queue of ours, a growth of the
	// concurrency limit by ratio r that the limit binds after is kept only
	// if the next window's goodput is at least 1 + growthGain·(r−1) times
	// the one before: slots that only queue in the store (VictoriaMetrics
	// with one insert slot, a store past its thread pool) are taken back
	// before they pile up its stalls.
	growthGain = 0.5
	// latencySlack is added to LatencyTolerance·baseline so sub-millisecond
	// jitter of a fast store is not a signal.
	latencySlack = time.Millisecond
	// littleHeadroom: the concurrency limit is kept at least at
	// requests/s × latency × littleHeadroom (Little's law), so that slots
	// never starve the rate: with the baseline latency while latency may be
	// a queue of ours (and then below the in-flight count at which the
	// store last throttled), with the recent latency once it is known to be
	// the store's own.
	littleHeadroom = 1.25
	// usedHeadroom: while latency may be a queue of ours, the concurrency
	// limit is kept at most at usedHeadroom times the in-flight count the
	// loader uses (and at least 1): at each Tick, that of a window with
	// traffic in which it was not the bottleneck (its time average, or
	// requests/s × mean latency if larger); at each startup round, the
	// larger of the windows' EWMA and the current window's average so far,
	// unless concurrency bound in it. So TCP keeps an unused congestion
	// window from growing: slots far above what the loader uses let a stall
	// of the store pile a burst of our attempts up in it, and a store whose
	// insert limit is one slot refuses all but one of them. A loader that needs
	// more fills the slots it has, and they grow. (Bursts of requests sent
	// at once and rarely queue in the FIFO rather than overlap.)
	usedHeadroom = 2
	// coldMax: with the default Burst, until the store has answered once,
	// the bucket holds at most this many writes' worth (of the largest cost
	// asked for so far, at least a unit each: two requests, or two bodies'
	// bytes) and no more than this many are in flight: enough for writes to
	// overlap, not a burst into a store that may still be cold (its first
	// writes slow, the ones queued behind them refused).
	coldMax = 2
)

// concTest is a change of the concurrency limit under test: a
// latency-driven cut (see latencyKeep) or a growth (see growthGain).
type concTest struct {
	active    bool
	prev      probe   // the concurrency probe before the change, restored on undo
	throttled bool    // Controller.throttled before the change, restored on undo
	from      int     // the concurrency limit (or peak in flight) changed from
	to        int     // and to
	goodput   float64 // units/s in the window before the change
}

// Tick closes the current measurement window at now and runs one step of
// the control loop: latency estimates and the check of the last latency
// cut, growth of the limits that were the bottleneck, Little's-law floor on
// concurrency, latency-driven concurrency cuts. The sidecar calls it about
// every Window (see TickInterval) from its own loop; its now is reported as
// Snapshot.Heartbeat. A now not after the window's start only records the
// heartbeat.
func (c *Controller) Tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heartbeat = now
	c.lapseCeilingLocked(now)
	elapsed := now.Sub(c.win.start)
	if c.closed || elapsed <= 0 {
		return
	}
	c.forgetFailedGrowthLocked(now)
	c.adoptSharedLatencyLocked(now)
	w := c.closeWindowLocked(elapsed, now)
	paused := now.Before(c.pausedUntil) || w.start.Before(c.pausedUntil)
	// Nothing went wrong in a clean window: growth may follow it.
	clean := w.congested == 0 && w.failed == 0 && c.lastGood && !paused
	goodput := w.accepted / elapsed.Seconds()
	mean := c.updateLatencyLocked(w)
	// A change of concurrency under test is judged by the window after it,
	// if the new limit bound that window.
	bound := clean && w.blockConc && !w.blockRate
	if c.test.active {
		c.checkLatencyCutLocked(bound, goodput, now)
	}
	tookBack := false
	if c.growTest.active {
		tookBack = c.checkConcGrowthLocked(bound, goodput, now)
	}
	elevated := c.countHighLatencyLocked(mean)
	switch {
	case clean && !elevated:
		c.growLocked(w, elapsed, goodput, tookBack, now)
	case elevated && c.latHigh >= latencyWindows && w.congested == 0 && !c.test.active && w.peak <= 1 && clean:
		// One request at a time cannot queue behind our own: the latency
		// is the store's.
		c.adoptLatencyLocked("one request in flight", goodput, goodput, 1, 1, now)
	case elevated && c.latHigh >= latencyWindows && w.congested == 0 && !c.test.active:
		c.latencyCutLocked(w, goodput, now)
	}
	c.dispatchLocked(now) // applies raises to waiters; marks the new window's blockers
}

// observeLocked accounts s for p. Requires that c.mu is held.
func (c *Controller) observeLocked(p *Permit, s Sample, now time.Time) {
	o := s.Outcome
	if o >= numOutcomes {
		o = Neutral
	}
	c.samples[o]++
	if o == Neutral && s.PartThrottled {
		c.partThr++
	}
	if c.probesLocked(p) {
		c.out.probing = false
	}
	if (o != Neutral && o != Unreachable) || (o == Neutral && s.Answered) {
		// The store answered.
		c.endOutageLocked(now)
		if !c.answered {
			c.answered = true
			c.applyRateLocked(now) // the full burst from now on
		}
	}
	fresh := p.epoch == c.cutSeq // sent after the last cut
	// sent a round trip after it: the store's answer reflects the cut
	late := fresh && !p.at.Before(c.cutAt.Add(c.latRecent))
	switch o {
	case Success:
		c.observeSuccessLocked(p, s, late, now)
	case Failed:
		c.win.samples++
		c.win.failed++
		c.lastGood = false
		c.raStreak = 0
		if p.round == c.round {
			c.roundBad = true
		}
	case Congested:
		c.observeCongestedLocked(p, s, fresh, late, now)
	case Unreachable:
		c.observeUnreachableLocked(p, s, now)
	}
}

// observeSuccessLocked accounts a Success sample s for p, late if p was
// sent a round trip after the last cut; it may end a startup round.
// Requires that c.mu is held.
func (c *Controller) observeSuccessLocked(p *Permit, s Sample, late bool, now time.Time) {
	c.win.samples++
	c.win.accepted += p.cost
	c.cutTook += p.cost
	c.cutOK++
	if c.win.congested == 0 {
		c.win.okPeak = max(c.win.okPeak, p.inFlight)
	}
	l := 0.0 // ln(latency in seconds), for the geometric means
	if s.Latency > 0 {
		l = math.Log(s.Latency.Seconds())
		c.win.latSum += s.Latency
		c.win.logSum += l
		c.win.latN++
		if !now.Before(c.win.start.Add(c.cfg.Window / 2)) {
			c.win.lateLogSum += l
			c.win.lateN++
		}
	}
	c.lastGood = true
	c.raStreak = 0
	if late {
		c.freshOK++
	}
	if p.round == c.round {
		c.roundOK++
		c.roundUnits += p.cost
		if s.Latency > 0 {
			c.roundLogSum += l
			c.roundLatN++
		}
		c.roundLocked(now)
	}
}

// observeCongestedLocked accounts a Congested sample s for p, fresh if p
// was sent after the last cut and late if a round trip after it: a fresh
// throttle may cut a limit, and a Retry-After may pause sends. Requires
// that c.mu is held.
func (c *Controller) observeCongestedLocked(p *Permit, s Sample, fresh, late bool, now time.Time) {
	share := s.Share
	if !(share > 0 && share <= 1) {
		share = 1
	}
	c.win.samples++
	c.win.congested++
	c.win.accepted += p.cost * (1 - share)
	c.cutTook += p.cost * (1 - share)
	c.lastGood = false
	c.lastThrottle = now
	c.lastReason = s.Reason
	if late {
		c.freshBad++
	}
	if s.Concurrency && !c.capsConc {
		c.capsConc = true
		if c.rate.startup() {
			c.log.Info("the store caps concurrency: startup rounds of the rate follow the concurrency limit", "cause", s.Reason)
		}
	}
	spike := false
	if s.RetryAfter > 0 {
		if now.After(c.raUntil) {
			c.raFrom = now
		}
		c.raUntil = laterOf(c.raUntil, now.Add(min(s.RetryAfter, c.cfg.MaxRetryAfter)))
	}
	if fresh {
		if s.RetryAfter > 0 {
			c.raStreak++
		}
		spike = c.cutLocked(p, s, share, now)
	} else {
		c.narrowCapLocked(p)
	}
	if !spike && p.round == c.round {
		c.roundBad = true
	}
	if s.RetryAfter >= longRetryAfter || (s.RetryAfter > 0 && c.raStreak >= pauseStreak) {
		c.pauseLocked(s.RetryAfter, s.Reason, now)
	}
}

// pauseLocked stops admitting anything until now+retryAfter (capped by
// MaxRetryAfter); it only ever extends a pause. Requires that c.mu is held.
func (c *Controller) pauseLocked(retryAfter time.Duration, cause string, now time.Time) {
	until := now.Add(min(retryAfter, c.cfg.MaxRetryAfter))
	if !until.After(c.pausedUntil) {
		return
	}
	if !now.Before(c.pausedUntil) {
		c.pausedFrom = now
	}
	c.pausedUntil = until
	c.pauses++
	c.throttled = true
	c.bucket.pause(now, until)
	c.logPauseLocked(until, retryAfter, cause, now)
}
