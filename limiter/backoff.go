package limiter

import (
	"math/rand/v2"
	"time"
)

// Default bounds of a zero Backoff.
const (
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
)

// Backoff computes retry delays: exponential with full jitter above a floor,
// and the store's Retry-After honoured but clamped to [Min, Max] (never the
// "retrying in 484289h" of an uncapped Retry-After).
//
// Attempt n (0 for the first retry) waits a uniformly random time in
// [Min, min(Max, Min·2^(n+1))). A Retry-After > 0 replaces that with
// itself, clamped, plus up to 10% jitter (still at most Max) so clients told
// the same instant do not return together.
//
// The zero Backoff uses DefaultBackoffMin and DefaultBackoffMax; a Max below
// Min is taken as Min. Backoff is a small value type, safe to copy and to use
// from many goroutines.
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
		d := max(lo, min(hi, retryAfter))
		return min(hi, addDurations(d, durationFromNanos(0.1*rnd()*float64(d))))
	}
	ceil := hi
	if n := max(attempt, 0) + 1; n < 63 && lo <= hi>>n {
		ceil = lo << n
	}
	return lo + time.Duration(rnd()*float64(ceil-lo))
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
