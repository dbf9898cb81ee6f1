package limiter

import "time"

// bucket is a token bucket that may go into debt: a cost up to the burst is
// admitted once that many tokens are there, a larger cost once the bucket is
// full, and the tokens then go negative, so the long-run rate is exact for
// any mix of costs. Unlike rate.Limiter it hands out no reservations: the
// caller asks readyAt, waits on its own timer, and asks again, so a change of
// rate or a pause applies at once to whoever is waiting.
//
// bucket is not safe for concurrent use; the Controller guards it.
type bucket struct {
	rate   float64   // refill, units/s; > 0
	burst  float64   // capacity, units; > 0
	tokens float64   // at last; may be negative (debt)
	last   time.Time // when tokens was computed; may be in the future (pause)
}

// tokensAt returns the tokens the bucket holds at now.
func (b *bucket) tokensAt(now time.Time) float64 {
	if !now.After(b.last) {
		return b.tokens
	}
	return min(b.burst, b.tokens+b.rate*now.Sub(b.last).Seconds())
}

// need returns the tokens that must be present to admit cost.
func (b *bucket) need(cost float64) float64 { return min(cost, b.burst) }

// readyAt returns the earliest time at which cost can be admitted.
func (b *bucket) readyAt(cost float64) time.Time {
	short := b.need(cost) - b.tokens
	if short <= 0 {
		return b.last
	}
	return b.last.Add(durationCeil(short / b.rate))
}

// take charges cost at now, which must not be before readyAt(cost).
func (b *bucket) take(cost float64, now time.Time) {
	b.advance(now)
	b.tokens -= cost
}

// advance brings tokens up to now (no-op if now is not after last).
func (b *bucket) advance(now time.Time) {
	if now.After(b.last) {
		b.tokens = b.tokensAt(now)
		b.last = now
	}
}

// set changes the rate and burst from now on; tokens above the new burst
// are dropped.
func (b *bucket) set(now time.Time, rate, burst float64) {
	b.advance(now)
	b.rate, b.burst = rate, burst
	b.tokens = min(b.tokens, burst)
}

// drain empties the bucket (keeping any debt) at now.
func (b *bucket) drain(now time.Time) {
	b.advance(now)
	b.tokens = min(b.tokens, 0)
}

// pause empties the bucket and stops refilling it until until.
func (b *bucket) pause(now, until time.Time) {
	b.advance(now)
	b.tokens = min(b.tokens, 0)
	if until.After(b.last) {
		b.last = until
	}
}
