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
	// went away): Done only releases the slot, and, with Sample.Answered,
	// counts as the store's answer (it ends an outage and the cold start).
	Neutral
	// Unreachable: no store answered at all (connection refused, reset
	// before any answer, name not resolved). It tells nothing about
	// capacity either, and leaves the limits alone, but starts an outage:
	// until the store answers again, one attempt at a time probes it (see
	// Controller).
	Unreachable

	numOutcomes = 5
)

var outcomeNames = [numOutcomes]string{"success", "congested", "failed", "neutral", "unreachable"}

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
	// Answered, with Neutral, says that the store did answer the attempt
	// (a client error, a throttle of a part of the store that another
	// limiter takes): it tells nothing about capacity, but the store is
	// up, so it ends an outage and the cold start like any answer.
	Answered bool
	// PartThrottled, with Neutral, says that the store throttled a part
	// of itself (a table, a key prefix) whose own limiter takes the
	// throttle: nothing for this Controller's law, but Load counts it,
	// since a fleet's budget is the whole store's and learns its capacity
	// from the throttles of every part.
	PartThrottled bool
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

// Controller is an adaptive send-rate and concurrency limiter for writes to
// one store.
//
// The send rate is a token bucket (units/s) and the concurrency a count of
// slots; a request needs both. Callers Acquire a Permit (waiting in a bounded
// queue, fair between flows: AcquireFlow, fairQueue), send one attempt, and
// report what the store said with Permit.Done.
// Tick closes a measurement window and is the control loop's heartbeat.
//
// Both limits adapt together, from the same samples:
//
//   - Throttles cut at once, each limit at most once per Window and only for
//     requests sent after the previous cut (a burst of throttles counts
//     once; at a store that caps concurrency, the burst's other refusals
//     only lower the count the slots climb back to). The cut is of the
//     limit the throttle points at. An attempt
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
//   - An Unreachable sample (nothing answered) starts an outage: the
//     limits stay as they were, and until the store answers again one
//     attempt at a time is admitted, the probe, at most one per probe
//     interval (a Backoff from Config.ProbeMin to ProbeMax, 250ms to 5s by
//     default, growing with each probe that finds the store still
//     unreachable). Everyone else waits as in a pause. The first answer of
//     the store's, whichever attempt brings it, ends the outage.
//
// Limit changes apply at once to queued callers: only the head of the queue
// is evaluated, by its own goroutine on its own timer, and every change
// re-evaluates it. No goroutine is started per caller.
//
// The zero Controller is not usable: make one with New. Controller is safe
// for concurrent use by multiple goroutines.
type Controller struct {
	mu sync.Mutex

	cfg    Config
	log    *slog.Logger
	jitter func() float64 // in [0, 1), for TickInterval and the probe interval; safe for concurrent use

	rate     probe // units/s
	conc     probe // slots; used as floor(conc.v)
	bucket   bucket
	inFlight int       // permits holding a slot
	leaders  []*Permit // pipelined permits holding a slot, not answered, with no follower yet (AcquirePipelined)
	staged   int       // staged permits: sent behind a leader, no slot yet
	q        fairQueue
	acct     accounting // grants per flow and class (flowstats.go)
	closed   bool
	done     chan struct{} // closed by Close

	win      window
	hist     [historyWindows]winStat // completed windows, ring
	histNext int

	cutSeq       uint64    // incremented by every congestion cut
	cutAt        time.Time // when cutSeq was last incremented
	cutTook      float64   // units the store took in answers since cutAt
	cutOK        int       // Success samples among those answers
	freshOK      int       // Success samples of attempts sent a round trip after the last cut
	freshBad     int       // Congested samples of the same
	lastRateCut  time.Time // zero before the first
	recutOK      bool      // the last rate cut may be followed by another within its Window (see recutShare)
	lastConcCut  time.Time // zero before the first
	capCutSeq    uint64    // cutSeq of the latest cut of concurrency only, at a count the store had not taken (see narrowCapLocked)
	throttled    bool      // the rate was cut, sends paused or a latency cut stands: startup rounds are over
	answered     bool      // the store answered an attempt (Success, Congested or Failed)
	coldCost     float64   // the largest cost asked for before the store answered (see coldMax)
	lastGood     bool      // the latest capacity sample was Success
	raStreak     int       // see pauseStreak
	concScore    float64   // see concEvidenceWeight
	capsConc     bool      // a Congested sample said the store caps concurrency (Sample.Concurrency)
	pausedFrom   time.Time // start of the latest pause
	pausedUntil  time.Time
	raFrom       time.Time // the latest Retry-After's span: from its first throttle...
	raUntil      time.Time // ...until the latest of them runs out (see quietLocked)
	quietFrom    time.Time // nothing in flight or queued since; zero when something is
	lastThrottle time.Time
	lastReason   string
	probeAfter   time.Time // no rate growth past the last throttle point before (see quotaHold)
	out          outage    // the store answers nothing (see outage.go)
	outages      uint64    // outages begun since New: the last one's number

	// Startup rounds (see startupRound): a round starts at every change of
	// the rate limit.
	round        uint64    // incremented at every rate change
	roundOK      int       // Success samples of attempts granted in this round
	roundBlocked bool      // callers waited on the rate in this round
	roundBad     bool      // a throttle of the rate or a server error in this round
	roundAt      time.Time // when this round started
	roundUnits   float64   // units accepted in this round
	roundSent    float64   // units granted in this round
	roundLogSum  float64   // ln(latency in seconds) of this round's successes
	roundLatN    int64     // how many of them carried a latency
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
	latFloor  time.Duration // the lowest windows' geometric-mean latency (of minSamples or more): the store idle
	cutLat    time.Duration // latRecent at the latest rate cut (see staleThrottlePointLocked)
	test      concTest      // the latest latency cut, checked at the next Tick
	growTest  concTest      // the latest growth of concurrency, checked at the next Tick
	avgCost   float64       // EWMA of units per granted request

	samples   [numOutcomes]uint64
	partThr   uint64 // Neutral samples with PartThrottled
	decreases uint64
	increases uint64
	pauses    uint64
	heartbeat time.Time

	logs    [numLimits][numReasons]logState
	outLogs [2]logState // an outage's beginning and its end

	ceil ceiling // a cap set from outside, see SetCeiling (ceiling.go)
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
		done:     make(chan struct{}),
	}
	burst := c.burstFor(cfg.InitialRate)
	c.bucket = bucket{rate: cfg.InitialRate, burst: burst, tokens: burst, last: now}
	c.q.floor = cfg.BulkFloor
	return c, nil
}

// applyRateLocked pushes rate.v, or a lower ceiling (see SetCeiling),
// into the bucket. Requires that c.mu is held.
func (c *Controller) applyRateLocked(now time.Time) {
	r := c.sendRateLocked(now)
	c.bucket.set(now, r, c.burstFor(r))
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

// concLimit returns the concurrency limit in slots. math.MaxInt slots (no
// limit) is 2^63 as a float64, one past every int, whose conversion wraps
// to a negative limit that admits nothing: it saturates instead.
func (c *Controller) concLimit() int {
	if c.conc.v >= math.MaxInt {
		return math.MaxInt
	}
	return int(c.conc.v)
}

// TickInterval returns Window jittered by ±10%, for the loop that calls
// Tick, so that sidecars sharing a store do not adapt in lockstep. Safe for
// concurrent use.
func (c *Controller) TickInterval() time.Duration {
	return durationFromNanos(float64(c.cfg.Window) * (0.9 + 0.2*c.jitter()))
}

// RetryWait estimates how long a loader whose request of cost units is
// rejected now should wait before retrying (for a 429's Retry-After): the
// rest of any pause (in an outage, at least until the next probe and
// ProbeMin), plus the time the rate needs to admit everything queued
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
	if at := c.out.retryAt(now, c.cfg.ProbeMin); start.Before(at) {
		start = at
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

// Closed returns a channel that Close closes: a caller that waits for
// something else before its next Acquire (a retry's backoff) learns that
// no permit will come without waiting it out.
func (c *Controller) Closed() <-chan struct{} { return c.done }

// Close makes every waiting and later Acquire return ErrClosed. Permits
// already granted may still be Done. Idempotent.
func (c *Controller) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	close(c.done)
	for w := c.q.head; w != nil; w = c.q.head {
		c.q.remove(w)
		w.err = ErrClosed
		w.signal()
	}
}
