package limiter

import (
	"cmp"
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
	// DefaultProbeMin and DefaultProbeMax bound the interval between
	// probes of an unreachable store when Config.ProbeMin and ProbeMax are
	// 0: a store that restarts in a second is found again within a
	// second, one that stays down costs a refused connection every few
	// seconds.
	DefaultProbeMin = 250 * time.Millisecond
	DefaultProbeMax = 5 * time.Second
	// DefaultBulkFloor is Config.BulkFloor when 0: while Bulk writes wait,
	// they get at least a tenth of what is granted, however much Live asks.
	DefaultBulkFloor = 0.1
	// MaxBulkFloor bounds Config.BulkFloor: past it, Live would hardly be
	// a priority.
	MaxBulkFloor = 0.9
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
	// Acquire fails with ErrQueueFull, the newcomer's or that of a waiter
	// of the flow that queues the most (see fairQueue). 0 means
	// DefaultQueueMax.
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
	// ProbeMin and ProbeMax bound the interval between two probes of an
	// unreachable store (see Controller): the interval after the nth probe
	// that found it still unreachable is a Backoff{ProbeMin, ProbeMax}
	// delay of attempt n, so at most one probe goes out per ProbeMin. 0
	// means DefaultProbeMin and DefaultProbeMax; otherwise each must be
	// >= 1ms, and ProbeMax >= ProbeMin.
	ProbeMin, ProbeMax time.Duration
	// BulkFloor is the least fraction of the units granted that Bulk
	// flows get while they wait, however much Live flows ask (see
	// fairQueue); 0 means DefaultBulkFloor, otherwise it must lie in
	// (0, MaxBulkFloor].
	BulkFloor float64
	// Latency, if set, is shared by the limiters of one store (the
	// store's own and its scopes', see Scopes): what one of them finds of
	// the store's latency, the others take as found. nil: each finds out
	// alone.
	Latency *LatencyFinding
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
	case c.ProbeMin != 0 && c.ProbeMin < time.Millisecond:
		return fmt.Errorf("limiter: Config.ProbeMin=%v must be 0 (default) or >= 1ms", c.ProbeMin)
	case c.ProbeMax != 0 && c.ProbeMax < time.Millisecond:
		return fmt.Errorf("limiter: Config.ProbeMax=%v must be 0 (default) or >= 1ms", c.ProbeMax)
	case !finite(c.BulkFloor) || c.BulkFloor < 0 || c.BulkFloor > MaxBulkFloor:
		return fmt.Errorf("limiter: Config.BulkFloor=%v must be 0 (default) or lie in (0, %v]", c.BulkFloor, MaxBulkFloor)
	case cmp.Or(c.ProbeMax, DefaultProbeMax) < cmp.Or(c.ProbeMin, DefaultProbeMin):
		return fmt.Errorf("limiter: Config.ProbeMax=%v must be >= ProbeMin=%v (0 is the default, %v and %v)",
			c.ProbeMax, c.ProbeMin, DefaultProbeMax, DefaultProbeMin)
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
	if c.ProbeMin == 0 {
		c.ProbeMin = DefaultProbeMin
	}
	if c.ProbeMax == 0 {
		c.ProbeMax = DefaultProbeMax
	}
	if c.BulkFloor == 0 {
		c.BulkFloor = DefaultBulkFloor
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
