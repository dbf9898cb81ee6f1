package limiter

import (
	"math/rand/v2"
	"time"
)

// Default bounds of a zero Backoff: those of sluice's own retries, as
// SLUICE_RETRY_BACKOFF_MIN and SLUICE_RETRY_BACKOFF_MAX default them.
const (
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 10 * time.Second
)

// Backoff is sluice's one retry schedule: the proxy's retries of a write,
// the job state machine's probes of a held job and its cancel and cleanup
// retries, and the credential refresher's fetches after a failure all wait
// what Delay returns, each with its own Min and Max.
//
// The policy is exponential with full jitter above a floor: attempt n (0
// for the first retry) waits a uniformly random time in
// [Min, min(Max, Min·2^(n+1))). Full jitter rather than equal jitter
// (a draw in [d/2, d]) because every caller is one of many backing off
// from one shared service (writers and jobs from a store, sidecars from a
// token endpoint), and spreading their returns over the whole window is
// what keeps them from coming back together; the floor keeps a retry from
// following at once, and the window still doubles per attempt up to Max.
//
// A Retry-After > 0 replaces the window: it is clamped to [Min, Max]
// (never the "retrying in 484289h" of an uncapped header, never sooner
// than Min), then lengthened by up to 10% (still at most Max), so that
// clients told the same instant do not return together and none returns
// before it was told to.
//
// The caller counts attempts and passes the randomness, so that Backoff
// holds no state and tests fix every draw. The zero Backoff uses
// DefaultBackoffMin and DefaultBackoffMax; a Max below Min is taken as
// Min. Backoff is a small value type, safe to copy and to use from many
// goroutines.
type Backoff struct {
	Min, Max time.Duration
}

// Delay returns the wait before retry attempt (0-based; negative counts as
// 0), given the store's Retry-After (0 if none). rnd returns values in
// [0, 1); nil means math/rand/v2's Float64, which is safe for concurrent use.
func (b Backoff) Delay(attempt int, retryAfter time.Duration, rnd func() float64) time.Duration {
	lo, hi := b.bounds()
	if rnd == nil {
		rnd = rand.Float64
	}
	if retryAfter > 0 {
		d := b.Clamp(retryAfter)
		return min(hi, addDurations(d, durationFromNanos(0.1*rnd()*float64(d))))
	}
	ceil := hi
	if n := min(max(attempt, 0), 62) + 1; n < 63 && lo <= hi>>n { // clamped before the +1, which wraps at MaxInt
		ceil = lo << n
	}
	return lo + time.Duration(rnd()*float64(ceil-lo))
}

// Clamp returns d limited to [Min, Max]: how long a Retry-After of d is
// honoured, before the jitter Delay adds.
func (b Backoff) Clamp(d time.Duration) time.Duration {
	lo, hi := b.bounds()
	return max(lo, min(hi, d))
}

func (b Backoff) bounds() (lo, hi time.Duration) {
	lo, hi = b.Min, b.Max
	if lo <= 0 {
		lo = DefaultBackoffMin
	}
	if hi <= 0 {
		hi = DefaultBackoffMax
	}
	return lo, max(lo, hi)
}
