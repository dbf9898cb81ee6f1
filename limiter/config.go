package limiter

import (
	"fmt"
	"log/slog"
	"math"
	"time"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultInitialConcurrency is the concurrency limit at start when
	// Config.InitialConcurrency is 0 (capped by MaxConcurrency).
	DefaultInitialConcurrency = 4
	// DefaultWindow is the measurement window when Config.Window is 0. It is
	// long enough to hold tens of samples at modest rates and short enough
	// to react to a halving of the store's capacity within a second.
	DefaultWindow = 500 * time.Millisecond
	// DefaultMaxRetryAfter caps honoured Retry-After values when
	// Config.MaxRetryAfter is 0.
	DefaultMaxRetryAfter = 60 * time.Second
	// DefaultQueueMax is the number of Acquire calls allowed to wait when
	// Config.QueueMax is 0.
	DefaultQueueMax = 1024
	// DefaultBurstWindow sizes the token bucket when Config.Burst is 0: the
	// bucket holds the units of 50ms at the current rate, at least one unit.
	// Tokens saved while concurrency paces are spent at once when it lets
	// go; a bucket smaller than the store's own burst keeps that from
	// tripping a strict quota.
	DefaultBurstWindow = 50 * time.Millisecond
	// DefaultLatencyTolerance is Config.LatencyTolerance when 0.
	DefaultLatencyTolerance = 1.5
)

// Config configures a Controller. Rates are in units per second, where a unit
// is whatever the caller charges per Acquire (1 per request, or the request's
// size in bytes); the controller never interprets it. Zero fields take the
// defaults documented on each field.
type Config struct {
	// InitialRate is the send-rate limit at start, units/s. It must lie in
	// [MinRate, MaxRate].
	InitialRate float64
	// MinRate and MaxRate clamp the send-rate limit at all times, units/s.
	// MinRate must be > 0 and MaxRate >= MinRate.
	MinRate, MaxRate float64
	// InitialConcurrency is the concurrency limit at start; 0 means
	// min(DefaultInitialConcurrency, MaxConcurrency). Slots the loader
	// leaves unused are trimmed at each Tick (see Controller).
	InitialConcurrency int
	// MaxConcurrency clamps the concurrency limit; it must be >= 1.
	MaxConcurrency int
	// MaxRetryAfter caps every Retry-After the controller honours (pauses
	// and RetryWait); 0 means DefaultMaxRetryAfter.
	MaxRetryAfter time.Duration
	// Window is the measurement window: limits grow at most once per window
	// and are cut at most once per window. Tick should be called about every
	// Window (TickInterval returns a jittered value). 0 means DefaultWindow;
	// otherwise it must be >= 1ms.
	Window time.Duration
	// QueueMax bounds the number of Acquire calls waiting at once; past it
	// Acquire fails at once with ErrQueueFull. 0 means DefaultQueueMax.
	QueueMax int
	// Burst is the token bucket's size in units. 0 means the units of
	// DefaultBurstWindow at the current rate, at least 1, following the rate
	// as it adapts; then, until the store has answered once, it holds at
	// most two writes' worth (of the largest cost asked for) and at most 2
	// writes are in flight. A cost larger than the burst is never an error:
	// it is admitted once the bucket is full and leaves the bucket in debt.
	Burst float64
	// LatencyTolerance is how far the recent latency may rise above its
	// baseline (as a factor, plus 1ms of slack) before it counts as an early
	// congestion signal that stops growth; 0 means DefaultLatencyTolerance,
	// otherwise it must be > 1.
	LatencyTolerance float64
	// Logger receives one record per limit change (keys: limit, from, to,
	// reason), repeats of the same change throttled. nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. It must advance with real time
	// because Acquire waits on real timers (tests use testing/synctest).
	Now func() time.Time
}

// Validate reports the first invalid field of c, naming it. Zero fields that
// have a default are valid.
func (c Config) Validate() error {
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	switch {
	case !finite(c.MinRate) || c.MinRate <= 0:
		return fmt.Errorf("limiter: Config.MinRate=%v must be finite and > 0", c.MinRate)
	case !finite(c.MaxRate) || c.MaxRate < c.MinRate:
		return fmt.Errorf("limiter: Config.MaxRate=%v must be finite and >= MinRate=%v", c.MaxRate, c.MinRate)
	case !finite(c.InitialRate) || c.InitialRate < c.MinRate || c.InitialRate > c.MaxRate:
		return fmt.Errorf("limiter: Config.InitialRate=%v must lie in [MinRate=%v, MaxRate=%v]", c.InitialRate, c.MinRate, c.MaxRate)
	case c.MaxConcurrency < 1:
		return fmt.Errorf("limiter: Config.MaxConcurrency=%d must be >= 1", c.MaxConcurrency)
	case c.InitialConcurrency < 0 || c.InitialConcurrency > c.MaxConcurrency:
		return fmt.Errorf("limiter: Config.InitialConcurrency=%d must lie in [0, MaxConcurrency=%d]", c.InitialConcurrency, c.MaxConcurrency)
	case c.MaxRetryAfter < 0:
		return fmt.Errorf("limiter: Config.MaxRetryAfter=%v must be >= 0", c.MaxRetryAfter)
	case c.Window != 0 && c.Window < time.Millisecond:
		return fmt.Errorf("limiter: Config.Window=%v must be 0 (default) or >= 1ms", c.Window)
	case c.QueueMax < 0:
		return fmt.Errorf("limiter: Config.QueueMax=%d must be >= 0", c.QueueMax)
	case !finite(c.Burst) || c.Burst < 0:
		return fmt.Errorf("limiter: Config.Burst=%v must be finite and >= 0", c.Burst)
	case !finite(c.LatencyTolerance) || (c.LatencyTolerance != 0 && c.LatencyTolerance <= 1):
		return fmt.Errorf("limiter: Config.LatencyTolerance=%v must be 0 (default) or > 1", c.LatencyTolerance)
	}
	return nil
}

// withDefaults returns c with every zero field that has a default set.
func (c Config) withDefaults() Config {
	if c.InitialConcurrency == 0 {
		c.InitialConcurrency = min(DefaultInitialConcurrency, c.MaxConcurrency)
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.QueueMax == 0 {
		c.QueueMax = DefaultQueueMax
	}
	if c.LatencyTolerance == 0 {
		c.LatencyTolerance = DefaultLatencyTolerance
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
