package limiter

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Outcome is what one upstream attempt told us about the store's capacity.
type Outcome uint8

const (
	// Success: the store accepted the work; the latency sample is valid.
	Success Outcome = iota
	// Congested: throttled (429, SlowDown, ProvisionedThroughputExceeded, an
	// Elasticsearch per-item 429…), overloaded (502/503/504) or timed out.
	Congested
	// Failed: another server error. Neither grows nor cuts a limit, but a
	// window that saw one does not grow.
	Failed
	// Neutral tells nothing about capacity (a 4xx client error, the loader
	// went away): Done only releases the slot.
	Neutral

	numOutcomes = 4
)

var outcomeNames = [numOutcomes]string{"success", "congested", "failed", "neutral"}

// String returns the lower-case name of o, for logs and metric labels.
func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Sample is the feedback of one attempt.
type Sample struct {
	Outcome Outcome
	// Latency is that of this attempt only (never across retries); 0 means
	// unknown. Only Success latencies feed the latency signal.
	Latency time.Duration
	// RetryAfter is the store's Retry-After, 0 if none. Read for Congested.
	RetryAfter time.Duration
	// Share is, for Congested only, the share of the work the store rejected,
	// in (0, 1] (Elasticsearch bulk partial 429s); 0 or out of range means 1.
	Share float64
	// Concurrency, for Congested only, says the store refused because it
	// had too many requests in flight, not because they came too fast
	// (VictoriaMetrics' -maxConcurrentInserts). The attempt then counts as
	// sent with all of ours that were in flight as it was refused, those
	// sent after it included; and from then on a startup round of the
	// rate, which such a store does not limit, is as many successes as the
	// concurrency limit if that is fewer than startupRound (see capsConc).
	// The cut is chosen as for any throttle.
	Concurrency bool
	// Reason is a short machine-readable cause such as "status_429",
	// "s3_slowdown" or "timeout"; it is logged and kept as LastReason.
	Reason string
}

// Errors returned by Acquire and TryAcquire. They are returned as is, so ==
// works as well as errors.Is.
var (
	// ErrQueueFull: Config.QueueMax callers are already waiting.
	ErrQueueFull = errors.New("limiter: queue full")
	// ErrNoCapacity: TryAcquire would have had to wait.
	ErrNoCapacity = errors.New("limiter: no capacity")
	// ErrClosed: the Controller was closed.
	ErrClosed = errors.New("limiter: closed")
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
	// the rate may have overshot the store's by up to twice), or of one by a
	// throttle with a Retry-After (a quota whose burst allowance hid a probe
	// past it), the rate is cut once more when at least two attempts sent a
	// round trip (the recent latency) or more after the cut were throttled
	// and they are at least this share of those attempts' samples: the cut
	// was too small. The new cut is from the share of those attempts the
	// store took (at least half). Attempts sent sooner meet a store still
	// full of what everyone sent before the cut. All other cuts, the re-cut's
	// successor included, are once per Window: on a store shared by many
	// sidecars, a burst of throttles says little about one sidecar's own
	// rate, and cutting whoever was unlucky twice would make the shares
	// unfair.
	recutShare = 0.1
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

// Controller is an adaptive send-rate and concurrency limiter for writes to
// one store.
//
// The send rate is a token bucket (units/s) and the concurrency a count of
// slots; a request needs both. Callers Acquire a Permit (waiting in a bounded
// FIFO), send one attempt, and report what the store said with Permit.Done.
// Tick closes a measurement window and is the control loop's heartbeat.
//
// Both limits adapt together, from the same samples:
//
//   - Throttles cut at once, each limit at most once per Window and only for
//     requests sent after the previous cut (a burst of throttles counts
//     once). The cut is of the limit the throttle points at. An attempt
//     sent with more attempts in flight than usual (spikeRatio) was
//     throttled because the store stalled with our attempts queued in it:
//     concurrency is cut to the usual in-flight count and the rate is left
//     alone. Otherwise the rate is cut to decreaseFactor (scaled down by
//     Share) of the goodput the store actually took, so a limit far above
//     the real send rate is pulled down to reality, and concurrency too
//     when it was the bottleneck. After the cut that ended startup, or one
//     by a throttle with a Retry-After, throttles that keep coming from
//     attempts sent after it cut the rate once more within the Window
//     (recutShare).
//   - Growth happens where a limit was the bottleneck (callers waited on
//     it, and for the rate, what was sent reached half of it: sentShare)
//     and nothing went wrong: in startup the rate doubles every round
//     of startupRound successes (at a store that said it caps concurrency,
//     Sample.Concurrency, of as many as the concurrency limit if fewer: the
//     slots bound what reaches it), and at the end of a window otherwise;
//     after the first throttle, limits climb at each Tick along a
//     CUBIC-like curve, cautious near the last throttle point and fast far
//     from it. While latency may be a queue of ours, a growth of
//     concurrency is kept only if the next window's goodput grew with it
//     (growthGain), and the slots are kept at most at twice what the loader
//     keeps in flight (usedHeadroom). Concurrency is also kept at the slots
//     the rate needs (Little's law).
//   - Latency: a latency rising above its baseline holds growth and, when
//     it lasts, cuts concurrency (a queue of ours in the store). Each such
//     cut is checked against the next window's goodput: if goodput fell in
//     proportion, the latency was the store's response to load (its
//     latency grows with utilisation, whoever sends), the cut is undone and
//     latency stops counting as congestion; slots are then sized from the
//     recent latency. Only a window that the cut slots bound tests the
//     cut.
//   - A Retry-After of longRetryAfter or more, or short ones that a cut did
//     not help (pauseStreak), pause all sends until they pass. A shorter
//     one delays only its own write (the caller waits it out before
//     retrying), and keeps the rate from probing past the throttle point
//     for quotaHold times as long.
//   - With the default Burst, until the store has answered once, at most
//     two requests go out (coldMax): a store that is still cold does not
//     get a burst it would queue and refuse.
//
// Limit changes apply at once to queued callers: only the head of the FIFO
// is evaluated, by its own goroutine on its own timer, and every change
// re-evaluates it. No goroutine is started per caller.
//
// Controller is safe for concurrent use by multiple goroutines.
type Controller struct {
	mu sync.Mutex

	cfg    Config
	log    *slog.Logger
	jitter func() float64 // in [0, 1), for TickInterval; safe for concurrent use

	rate     probe // units/s
	conc     probe // slots; used as floor(conc.v)
	bucket   bucket
	inFlight int       // permits holding a slot
	leaders  []*Permit // pipelined permits holding a slot, not answered, with no follower yet (AcquirePipelined)
	staged   int       // staged permits: sent behind a leader, no slot yet
	q        fifo
	closed   bool

	win      window
	hist     [historyWindows]winStat // completed windows, ring
	histNext int

	cutSeq       uint64    // incremented by every congestion cut
	cutAt        time.Time // when cutSeq was last incremented
	freshOK      int       // Success samples of attempts sent a round trip after the last cut
	freshBad     int       // Congested samples of the same
	lastRateCut  time.Time // zero before the first
	recutOK      bool      // the last rate cut ended startup: it may be cut again within its Window
	lastConcCut  time.Time // zero before the first
	throttled    bool      // the rate was cut, sends paused or a latency cut stands: startup rounds are over
	answered     bool      // the store answered an attempt (Success, Congested or Failed)
	coldCost     float64   // the largest cost asked for before the store answered (see coldMax)
	lastGood     bool      // the latest capacity sample was Success
	raStreak     int       // see pauseStreak
	concScore    float64   // see concEvidenceWeight
	capsConc     bool      // a Congested sample said the store caps concurrency (Sample.Concurrency)
	pausedFrom   time.Time // start of the latest pause
	pausedUntil  time.Time
	lastThrottle time.Time
	lastReason   string
	probeAfter   time.Time // no rate growth past the last throttle point before (see quotaHold)

	// Startup rounds (see startupRound): a round starts at every change of
	// the rate limit.
	round        uint64    // incremented at every rate change
	roundOK      int       // Success samples of attempts granted in this round
	roundBlocked bool      // callers waited on the rate in this round
	roundBad     bool      // a throttle of the rate or a server error in this round
	roundAt      time.Time // when this round started
	roundUnits   float64   // units accepted in this round
	roundSent    float64   // units granted in this round
	grewFrom     float64   // the rate before its latest growth, which the store had taken in full
	grewAt       time.Time // when
	concGrewFrom int       // the concurrency limit before its latest growth
	concGrewAt   time.Time // when
	failedLevel  int       // the concurrency limit whose growth the store last refused at once
	failedGrowth int       // consecutive such refusals of growth to failedLevel
	concHold     time.Time // no growth to failedLevel before this

	avgInFlight float64 // EWMA of the windows' time-averaged in-flight counts
	haveFlight  bool    // avgInFlight has a completed window

	latBase   time.Duration // unloaded per-window latency (see updateLatencyLocked)
	latRecent time.Duration // fast EWMA of the windows' geometric-mean latency
	latMean   time.Duration // fast EWMA of the windows' arithmetic-mean latency (Little's law)
	latHigh   int           // consecutive windows with elevated latency
	latLoad   bool          // latency is the store's response to load, not a queue of ours
	test      concTest      // the latest latency cut, checked at the next Tick
	growTest  concTest      // the latest growth of concurrency, checked at the next Tick
	avgCost   float64       // EWMA of units per granted request

	samples   [numOutcomes]uint64
	decreases uint64
	increases uint64
	pauses    uint64
	heartbeat time.Time

	logs [numLimits][numReasons]logState
}

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

// window accumulates one measurement window.
type window struct {
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
	peak      int // highest in-flight count
	// okPeak is the highest in-flight count at grant of an attempt accepted
	// before the window's first Congested sample: our count includes the
	// attempts the store is rejecting at the time, which would inflate it.
	okPeak    int
	area      float64   // in-flight count integrated over time, slot·seconds
	areaAt    time.Time // when area was last brought up to date
	blockRate bool      // callers waited on the rate limit
	blockConc bool      // callers waited on the concurrency limit
	grew      bool      // a startup round doubled the rate in this window
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
}

// measure is what the store did over the recent past (see measureLocked).
type measure struct {
	goodput   float64 // units/s accepted
	trusted   bool    // enough samples for goodput
	peak      int     // highest in-flight count
	blockRate bool    // callers waited on the rate limit
	blockConc bool    // callers waited on the concurrency limit
}

// New returns a Controller for cfg, or the error of cfg.Validate.
func New(cfg Config) (*Controller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	now := cfg.Now()
	c := &Controller{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "limiter"),
		jitter:   rand.Float64,
		rate:     probe{v: cfg.InitialRate, min: cfg.MinRate, max: cfg.MaxRate},
		conc:     probe{v: float64(cfg.InitialConcurrency), min: 1, max: float64(cfg.MaxConcurrency)},
		win:      window{start: now, areaAt: now},
		lastGood: true,
		roundAt:  now,
	}
	burst := c.burstFor(cfg.InitialRate)
	c.bucket = bucket{rate: cfg.InitialRate, burst: burst, tokens: burst, last: now}
	return c, nil
}

// flightLocked integrates the in-flight count up to now, before it
// changes. Requires that c.mu is held.
func (c *Controller) flightLocked(now time.Time) {
	if now.After(c.win.areaAt) {
		c.win.area += float64(c.inFlight) * now.Sub(c.win.areaAt).Seconds()
		c.win.areaAt = now
	}
}

// observeLocked accounts s for p. Requires that c.mu is held.
func (c *Controller) observeLocked(p *Permit, s Sample, now time.Time) {
	o := s.Outcome
	if o >= numOutcomes {
		o = Neutral
	}
	c.samples[o]++
	if o != Neutral && !c.answered {
		c.answered = true
		c.applyRateLocked(now) // the full burst from now on
	}
	fresh := p.epoch == c.cutSeq // sent after the last cut
	// sent a round trip after it: the store's answer reflects the cut
	late := fresh && !p.at.Before(c.cutAt.Add(c.latRecent))
	switch o {
	case Success:
		c.win.samples++
		c.win.accepted += p.cost
		if c.win.congested == 0 {
			c.win.okPeak = max(c.win.okPeak, p.inFlight)
		}
		if s.Latency > 0 {
			c.win.latSum += s.Latency
			c.win.logSum += math.Log(s.Latency.Seconds())
			c.win.latN++
		}
		c.lastGood = true
		c.raStreak = 0
		if late {
			c.freshOK++
		}
		if p.round == c.round {
			c.roundOK++
			c.roundUnits += p.cost
			c.startupRoundLocked(now)
		}
	case Failed:
		c.win.samples++
		c.win.failed++
		c.lastGood = false
		c.raStreak = 0
		if p.round == c.round {
			c.roundBad = true
		}
	case Congested:
		share := s.Share
		if !(share > 0 && share <= 1) {
			share = 1
		}
		c.win.samples++
		c.win.congested++
		c.win.accepted += p.cost * (1 - share)
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
		if fresh {
			if s.RetryAfter > 0 {
				c.raStreak++
			}
			spike = c.cutLocked(p, s, share, now)
		}
		if !spike && p.round == c.round {
			c.roundBad = true
		}
		if s.RetryAfter >= longRetryAfter || (s.RetryAfter > 0 && c.raStreak >= pauseStreak) {
			c.pauseLocked(s.RetryAfter, s.Reason, now)
		}
	}
}

// startupRoundLocked doubles the rate in startup (no throttle of the rate,
// no pause, no latency cut yet) once startupRound attempts sent since its
// last change have succeeded (at a store that caps concurrency, as many as
// the concurrency limit, if fewer), if callers waited on the rate meanwhile,
// what was sent in the round reached sentShare of the limit, and nothing
// but successes (or spikes, which are no concern of the rate's) came back
// in the round, at a good latency. Requires that c.mu is held.
func (c *Controller) startupRoundLocked(now time.Time) {
	round := startupRound
	if c.capsConc {
		// The slots bound what reaches the store: a round of the rate
		// need be no longer than one of them, and a slow start at 50/s
		// would idle a store that takes one write at a time for a third
		// of a second.
		round = min(round, max(1, c.concLimit()))
	}
	if !c.rate.startup() || c.throttled || c.roundOK < round || !c.roundBlocked || c.roundBad || !c.lastGood ||
		now.Before(c.pausedUntil) || c.latencyElevatedLocked() {
		return
	}
	from, took := c.rate.v, c.rate.v
	if d := now.Sub(c.roundAt); d > 0 {
		if c.roundSent/d.Seconds() < sentShare*from {
			return // the loader, not the limit, set the pace (see sentShare)
		}
		took = c.roundUnits / d.Seconds()
	}
	c.rate.grow(0)
	c.newRoundLocked(now)
	if c.rate.v > from {
		c.grewFrom, c.grewAt = min(from, took), now
		c.win.grew = true
		c.increases++
		c.applyRateLocked(now)
		c.logChangeLocked(limitRate, from, c.rate.v, reasonStartup, "", now)
	}
	if !c.win.blockConc {
		_, typical := c.inFlightLocked(now)
		c.trimToUseLocked(typical, now)
	}
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

// newRoundLocked starts a startup round: the rate just changed. Requires
// that c.mu is held.
func (c *Controller) newRoundLocked(now time.Time) {
	c.round++
	c.roundOK = 0
	c.roundBlocked, c.roundBad = false, false
	c.roundAt, c.roundUnits, c.roundSent = now, 0, 0
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

// cutDoneLocked starts a new cut epoch. Requires that c.mu is held.
func (c *Controller) cutDoneLocked(now time.Time) {
	c.cutSeq++
	c.cutAt = now
	c.freshOK, c.freshBad = 0, 0
	c.decreases++
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

// measureLocked sums the current window and as many recent ones as needed
// to span at least span and minSamples samples. The goodput leaves out time
// spent paused, and is not trusted over less than half a Window of sending.
// Requires that c.mu is held.
func (c *Controller) measureLocked(span time.Duration, now time.Time) measure {
	minSpan := span
	w := c.win
	m := measure{peak: w.peak, blockRate: w.blockRate, blockConc: w.blockConc}
	accepted, samples, span := w.accepted, w.samples, now.Sub(w.start)
	for i := 1; i <= historyWindows && (span < minSpan || samples < minSamples); i++ {
		h := c.hist[(c.histNext-i+historyWindows)%historyWindows]
		if h.elapsed == 0 {
			break
		}
		accepted += h.accepted
		samples += h.samples
		span += h.elapsed
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
	if samples >= minSamples && span >= c.cfg.Window/2 {
		m.goodput, m.trusted = accepted/span.Seconds(), true
	}
	return m
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
	elapsed := now.Sub(c.win.start)
	if c.closed || elapsed <= 0 {
		return
	}
	c.flightLocked(now)
	if c.failedGrowth > 0 && c.concLimit() >= c.failedLevel && !now.Before(c.concGrewAt.Add(c.cfg.Window)) {
		// The store took the growth (see failedGrowthHold).
		c.failedLevel, c.failedGrowth, c.concHold = 0, 0, time.Time{}
	}
	w := c.win
	c.hist[c.histNext] = winStat{
		elapsed: elapsed, accepted: w.accepted, samples: w.samples,
		peak: w.peak, okPeak: w.okPeak, blockRate: w.blockRate, blockConc: w.blockConc,
	}
	c.histNext = (c.histNext + 1) % historyWindows
	c.win = window{start: now, areaAt: now}

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
	paused := now.Before(c.pausedUntil) || w.start.Before(c.pausedUntil)
	clean := w.congested == 0 && w.failed == 0 && c.lastGood && !paused
	goodput := w.accepted / elapsed.Seconds()
	mean := c.updateLatencyLocked(w)
	if c.test.active {
		c.checkLatencyCutLocked(clean && w.blockConc && !w.blockRate, goodput, now)
	}
	tookBack := false
	if c.growTest.active {
		tookBack = c.checkConcGrowthLocked(clean && w.blockConc && !w.blockRate, goodput, now)
	}
	elevated := c.latencyElevatedLocked()
	if elevated && c.isHighLocked(mean) {
		c.latHigh++ // the window itself was slow, not just the EWMA's memory
	} else {
		c.latHigh = 0
	}

	switch {
	case clean && !elevated:
		grew := false
		sent := w.granted / elapsed.Seconds()
		if w.blockRate && !w.grew && sent >= sentShare*c.rate.v && (c.rate.v < c.rate.lastMax || !now.Before(c.probeAfter)) {
			from := c.rate.v
			reason := c.growthReason(&c.rate)
			c.rate.grow(elapsed)
			if now.Before(c.probeAfter) {
				c.rate.v = max(from, min(c.rate.v, c.rate.lastMax)) // see quotaHold
			}
			if c.rate.v > from {
				// What the store took at the old rate, not the limit.
				c.grewFrom, c.grewAt = min(from, w.accepted/elapsed.Seconds()), now
				grew = true
				c.newRoundLocked(now)
				c.applyRateLocked(now)
				c.logChangeLocked(limitRate, from, c.rate.v, reason, "", now)
			}
		}
		if w.blockConc && !tookBack {
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
			if c.concLimit() > from {
				grew = true
				c.concGrewFrom, c.concGrewAt = from, now
				if !c.latLoad {
					c.growTest = concTest{active: true, prev: prev, from: from, to: c.concLimit(), goodput: goodput}
				}
				c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reason, "", now)
			}
		}
		if !w.blockConc && w.grants > 0 { // an idle window says nothing of what the loader needs
			// Little's law: slots in use = requests/s × latency.
			used := w.area / elapsed.Seconds()
			if w.latN > 0 {
				used = max(used, float64(w.grants)/elapsed.Seconds()*(w.latSum/time.Duration(w.latN)).Seconds())
			}
			c.trimToUseLocked(used, now)
		}
		// While latency may be a queue of ours, only the rate's own needs
		// (it was the bottleneck, slots were not) raise the slots: a rate
		// limit that outran what the slots could carry is no measure of
		// what the store takes.
		if floor := c.littleLocked(true); floor > 0 && (c.latLoad || w.blockRate && !w.blockConc) {
			if !c.conc.startup() && !c.latLoad {
				// Up to the in-flight count at which the store last
				// throttled only the cautious probe may go: a store that
				// limits concurrency would throttle again at once.
				floor = min(floor, max(1, math.Ceil(c.conc.lastMax)-1))
			}
			if from := c.concLimit(); floor > float64(from) {
				c.conc.v = c.conc.clamp(floor)
				if c.concLimit() > from {
					grew = true
					c.concGrewFrom, c.concGrewAt = from, now
					c.logChangeLocked(limitConc, float64(from), float64(c.concLimit()), reasonLittle, "", now)
				}
			}
		}
		if grew || w.grew {
			c.increases++
		}
	case elevated && c.latHigh >= latencyWindows && w.congested == 0 && !c.test.active && w.peak <= 1 && clean:
		// One request at a time cannot queue behind our own: the latency
		// is the store's.
		c.adoptLatencyLocked("one request in flight", goodput, goodput, 1, 1, now)
	case elevated && c.latHigh >= latencyWindows && w.congested == 0 && !c.test.active:
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
	c.dispatchLocked(now) // applies raises to waiters; marks the new window's blockers
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
// follow it (Little's law), for the Controller's life. (Dropping that
// when the latency falls back to the old baseline, or after some
// windows, was tried: a store whose latency grows with utilisation, the
// side-by-side harness's, then holds every later ramp of the rate on a
// latency it takes for a queue of ours, and converges after a rise in
// 8s instead of 3.) Requires that c.mu is held.
func (c *Controller) adoptLatencyLocked(why string, before, after float64, from, to int, now time.Time) {
	c.latLoad = true
	c.latBase = max(c.latBase, c.latRecent)
	c.latHigh = 0
	c.log.Info("latency is the store's response to load", "why", why, "goodput_before", before, "goodput_after", after,
		"latency", c.latRecent, "concurrency_from", from, "concurrency_to", to)
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

func (c *Controller) growthReason(p *probe) reason {
	if p.startup() {
		return reasonStartup
	}
	return reasonProbe
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
	geo := durationFromNanos(math.Round(math.Exp(w.logSum/float64(w.latN)) * float64(time.Second)))
	mean := w.latSum / time.Duration(w.latN)
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

// applyRateLocked pushes rate.v into the bucket. Requires that c.mu is held.
func (c *Controller) applyRateLocked(now time.Time) {
	c.bucket.set(now, c.rate.v, c.burstFor(c.rate.v))
}

func (c *Controller) burstFor(rate float64) float64 {
	if c.cfg.Burst > 0 {
		return c.cfg.Burst
	}
	b := max(1, rate*DefaultBurstWindow.Seconds())
	if !c.answered {
		b = min(b, coldMax*max(1, c.coldCost)) // see coldMax
	}
	return b
}

func (c *Controller) concLimit() int { return int(c.conc.v) }

// TickInterval returns Window jittered by ±10%, for the loop that calls
// Tick, so that sidecars sharing a store do not adapt in lockstep. Safe for
// concurrent use.
func (c *Controller) TickInterval() time.Duration {
	return durationFromNanos(float64(c.cfg.Window) * (0.9 + 0.2*c.jitter()))
}

// RetryWait estimates how long a loader whose request of cost units is
// rejected now should wait before retrying (for a 429's Retry-After): the
// rest of any pause, plus the time the rate needs to admit everything queued
// and this request, or the time the concurrency limit needs to drain the
// queue at the recent latency, whichever is longer; capped by MaxRetryAfter.
// The result is always in [0, MaxRetryAfter]: at a rate low enough, the
// drain time saturates, and the sums and products saturate with it.
func (c *Controller) RetryWait(cost float64) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	start := now
	if now.Before(c.pausedUntil) {
		start = c.pausedUntil
	}
	wait := start.Sub(now)
	var drain time.Duration
	if units := c.q.cost + max(cost, 0) - c.bucket.tokensAt(start); units > 0 {
		drain = durationCeil(units / c.bucket.rate)
	}
	if limit := c.concLimit(); c.latRecent > 0 {
		if ahead := c.q.n + 1 - (limit - c.inFlight); ahead > 0 {
			rounds := (ahead + limit - 1) / limit
			drain = max(drain, mulDuration(rounds, c.latRecent))
		}
	}
	return min(addDurations(wait, drain), c.cfg.MaxRetryAfter)
}

// Close makes every waiting and later Acquire return ErrClosed. Permits
// already granted may still be Done. Idempotent.
func (c *Controller) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	for w := c.q.head; w != nil; w = c.q.head {
		c.q.remove(w)
		w.err = ErrClosed
		w.signal()
	}
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlierOf(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
