package limiter

import (
	"math"
	"time"
)

// Saturating Duration arithmetic. A Duration computed from a float (seconds
// = units / rate, Window × jitter) reaches the bounds of int64 at a low
// enough rate or a large enough setting, and from there Go's integer
// arithmetic wraps silently and an out-of-range float conversion is
// implementation-defined: a wait of centuries would come out negative, and
// a cap taken with min would not catch it. These clamp to the bounds
// instead.

// durationFromNanos converts ns nanoseconds to a Duration, saturating at
// the bounds of Duration; NaN is 0.
func durationFromNanos(ns float64) time.Duration {
	switch {
	case ns >= math.MaxInt64: // float64(math.MaxInt64) is 2^63, one past it
		return math.MaxInt64
	case ns <= math.MinInt64:
		return math.MinInt64
	case math.IsNaN(ns):
		return 0
	}
	return time.Duration(ns)
}

// durationCeil converts seconds to a Duration, rounding up to the next
// nanosecond so that waiting that long always suffices, and saturating.
func durationCeil(seconds float64) time.Duration {
	return durationFromNanos(math.Ceil(seconds * 1e9))
}

// addDurations returns a+b, saturating at the bounds of Duration.
func addDurations(a, b time.Duration) time.Duration {
	s := a + b
	if (s > a) != (b > 0) { // wrapped
		if b > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return s
}

// mulDuration returns n·d for n, d >= 0, saturating at the largest
// Duration.
func mulDuration(n int, d time.Duration) time.Duration {
	if n > 0 && d > math.MaxInt64/time.Duration(n) {
		return math.MaxInt64
	}
	return time.Duration(n) * d
}
