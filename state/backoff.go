package state

import (
	"math"
	"time"
)

// ExpBackoff computes exponentially growing delays with jitter, capped at Max.
//
// The n-th delay (n counting from 0 since the last Reset) is
// min(Max, Min·Factor^n), shortened by a random fraction of at most Jitter
// ("equal jitter": the result lies in [d·(1−Jitter), d]), so that many jobs
// backing off from the same store do not probe it in lockstep. A Retry-After
// hint replaces the exponential delay: it is clamped to [Min, Max] and
// lengthened by at most Jitter/2 (never shortened, the store asked for at
// least that long), then capped at Max.
//
// The random input is a parameter (a float in [0, 1)) so that callers
// decide the source and tests are deterministic. Zero Factor means 2; zero
// Min means one second; zero Max means one minute. An ExpBackoff is a value
// type and is not safe for concurrent use.
type ExpBackoff struct {
	Min, Max time.Duration
	Factor   float64 // growth per attempt; 0 means 2
	Jitter   float64 // fraction in [0, 1]

	attempt int // delays handed out since the last Reset
}

func (b *ExpBackoff) limits() (lo, hi time.Duration, factor float64) {
	lo, hi, factor = b.Min, b.Max, b.Factor
	if lo <= 0 {
		lo = time.Second
	}
	if hi <= 0 {
		hi = time.Minute
	}
	if hi < lo {
		hi = lo
	}
	if factor < 1 {
		factor = 2
	}
	return lo, hi, factor
}

func (b *ExpBackoff) jitter() float64 {
	return min(max(b.Jitter, 0), 1)
}

// Next returns the next delay and advances the attempt count. rnd must be in
// [0, 1).
func (b *ExpBackoff) Next(rnd float64) time.Duration {
	lo, hi, factor := b.limits()
	d := float64(lo) * math.Pow(factor, float64(b.attempt))
	if d > float64(hi) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(hi)
	} else {
		b.attempt++
	}
	return time.Duration(d * (1 - b.jitter()*rnd))
}

// RetryAfter returns the delay to wait for a store that sent Retry-After d,
// clamped to [Min, Max] with upward jitter, and advances the attempt count
// as Next does. rnd must be in [0, 1).
func (b *ExpBackoff) RetryAfter(d time.Duration, rnd float64) time.Duration {
	lo, hi, _ := b.limits()
	b.Next(rnd)
	d = min(max(d, lo), hi)
	return min(time.Duration(float64(d)*(1+b.jitter()*rnd/2)), hi)
}

// Attempt reports how many delays were handed out since the last Reset
// (it stops growing once the delay reached Max).
func (b *ExpBackoff) Attempt() int { return b.attempt }

// Reset starts the sequence again from Min.
func (b *ExpBackoff) Reset() { b.attempt = 0 }
