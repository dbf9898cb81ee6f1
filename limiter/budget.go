package limiter

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Defaults of RetryBudgetConfig.
const (
	DefaultRetryRatio      = 0.2
	DefaultRetryMinRetries = 3
	DefaultRetryWindow     = 10 * time.Second
)

// budgetSlots is the resolution of the sliding window: counts are kept in
// this many slots of Window/budgetSlots each.
const budgetSlots = 10

// RetryBudgetConfig configures a RetryBudget. Zero fields take defaults.
type RetryBudgetConfig struct {
	// Ratio of retries to requests allowed over the window; 0 means
	// DefaultRetryRatio (Envoy's 20%). Must be >= 0.
	Ratio float64
	// MinRetries are allowed per window whatever the request count, so that
	// a trickle of requests can still retry; 0 means DefaultRetryMinRetries.
	MinRetries int
	// Window is the sliding window; 0 means DefaultRetryWindow, otherwise
	// it must be >= 10ms.
	Window time.Duration
}

// RetryBudget bounds retries to a share of requests over a sliding window
// (Envoy's retry budget), so that retries cannot multiply the load on a
// store that is already failing: a retry is allowed while
// retries+1 <= max(MinRetries, Ratio·requests), counting both over the last
// Window (kept in budgetSlots fixed slots: bounded memory).
//
// Time is a parameter of every method. A nil *RetryBudget is "off": it
// allows every retry. RetryBudget is safe for concurrent use.
type RetryBudget struct {
	mu      sync.Mutex
	cfg     RetryBudgetConfig
	slotLen time.Duration
	slots   [budgetSlots]budgetSlot
	allowed uint64
	denied  uint64
}

type budgetSlot struct {
	index    int64 // absolute slot number: t / slotLen
	requests uint64
	retries  uint64
}

// NewRetryBudget returns an empty budget for cfg, or an error naming the
// invalid field.
func NewRetryBudget(cfg RetryBudgetConfig) (*RetryBudget, error) {
	switch {
	case !(cfg.Ratio >= 0) || math.IsInf(cfg.Ratio, 1):
		return nil, fmt.Errorf("limiter: RetryBudgetConfig.Ratio=%v must be finite and >= 0", cfg.Ratio)
	case cfg.MinRetries < 0:
		return nil, fmt.Errorf("limiter: RetryBudgetConfig.MinRetries=%d must be >= 0", cfg.MinRetries)
	case cfg.Window < 0 || (cfg.Window > 0 && cfg.Window < 10*time.Millisecond):
		return nil, fmt.Errorf("limiter: RetryBudgetConfig.Window=%v must be 0 (default) or >= 10ms", cfg.Window)
	}
	if cfg.Ratio == 0 {
		cfg.Ratio = DefaultRetryRatio
	}
	if cfg.MinRetries == 0 {
		cfg.MinRetries = DefaultRetryMinRetries
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultRetryWindow
	}
	return &RetryBudget{cfg: cfg, slotLen: cfg.Window / budgetSlots}, nil
}

// Request counts one original request (not a retry) at now.
func (b *RetryBudget) Request(now time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.slot(now).requests++
}

// TryRetry reports whether a retry at now fits the budget and, if so,
// counts it.
func (b *RetryBudget) TryRetry(now time.Time) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	requests, retries := b.sums(now)
	limit := max(float64(b.cfg.MinRetries), b.cfg.Ratio*float64(requests))
	if float64(retries+1) > limit {
		b.denied++
		return false
	}
	b.slot(now).retries++
	b.allowed++
	return true
}

// RetryBudgetSnapshot is the state of a RetryBudget at one time.
type RetryBudgetSnapshot struct {
	Requests uint64  // requests in the window
	Retries  uint64  // retries in the window
	Limit    float64 // retries the window allows: max(MinRetries, Ratio·Requests)
	Allowed  uint64  // TryRetry calls that returned true, since creation
	Denied   uint64  // TryRetry calls that returned false, since creation
}

// Snapshot returns the budget's state at now. A nil budget returns zeros.
func (b *RetryBudget) Snapshot(now time.Time) RetryBudgetSnapshot {
	if b == nil {
		return RetryBudgetSnapshot{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	requests, retries := b.sums(now)
	return RetryBudgetSnapshot{
		Requests: requests,
		Retries:  retries,
		Limit:    max(float64(b.cfg.MinRetries), b.cfg.Ratio*float64(requests)),
		Allowed:  b.allowed,
		Denied:   b.denied,
	}
}

// slot returns the slot for now, reset if it last held an older slot.
// Requires that b.mu is held.
func (b *RetryBudget) slot(now time.Time) *budgetSlot {
	idx := now.UnixNano() / int64(b.slotLen)
	s := &b.slots[mod(idx, budgetSlots)]
	if s.index != idx {
		*s = budgetSlot{index: idx}
	}
	return s
}

// sums adds the slots within the window ending at now. Requires b.mu held.
func (b *RetryBudget) sums(now time.Time) (requests, retries uint64) {
	idx := now.UnixNano() / int64(b.slotLen)
	for i := range b.slots {
		s := &b.slots[i]
		if s.index > idx-budgetSlots && s.index <= idx {
			requests += s.requests
			retries += s.retries
		}
	}
	return requests, retries
}

func mod(a, n int64) int64 { return ((a % n) + n) % n }
