package limiter

import (
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	fixed := func(v float64) func() float64 { return func() float64 { return v } }
	f := func(name string, b Backoff, attempt int, retryAfter time.Duration, rnd float64, want time.Duration) {
		t.Helper()
		if got := b.Delay(attempt, retryAfter, fixed(rnd)); got != want {
			t.Errorf("%s: Delay(%d, %v, rnd=%v) = %v, want %v", name, attempt, retryAfter, rnd, got, want)
		}
	}
	b := Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	// Full jitter above Min: attempt n draws from [Min, Min·2^(n+1)).
	f("first retry, low draw", b, 0, 0, 0, 100*time.Millisecond)
	f("first retry, mid draw", b, 0, 0, 0.5, 150*time.Millisecond)
	f("second retry, top draw", b, 1, 0, 0.999, 100*time.Millisecond+time.Duration(0.999*300e6))
	f("fourth retry", b, 3, 0, 0.5, 100*time.Millisecond+750*time.Millisecond)
	f("capped by Max", b, 10, 0, 0.5, 100*time.Millisecond+time.Duration(0.5*float64(9900*time.Millisecond)))
	f("huge attempt does not overflow", b, 1000, 0, 0.999, 100*time.Millisecond+time.Duration(0.999*float64(9900*time.Millisecond)))
	f("the largest attempt does not wrap into a negative shift", b, math.MaxInt, 0, 0.999, 100*time.Millisecond+time.Duration(0.999*float64(9900*time.Millisecond)))
	f("negative attempt is the first", b, -3, 0, 0.5, 150*time.Millisecond)
	// Retry-After honoured, clamped to [Min, Max], up to 10% jitter, never past Max.
	f("retry-after", b, 0, 2*time.Second, 0, 2*time.Second)
	f("retry-after jittered", b, 5, 2*time.Second, 0.5, 2100*time.Millisecond)
	f("retry-after below Min", b, 0, time.Millisecond, 0, 100*time.Millisecond)
	f("retry-after of 484289h", b, 0, 484289*time.Hour, 0.9, 10*time.Second)
	f("retry-after near Max", b, 0, 9900*time.Millisecond, 0.9, 10*time.Second)
	f("retry-after at a Max of the largest Duration", Backoff{Min: time.Second, Max: math.MaxInt64}, 0, math.MaxInt64, 0.9, math.MaxInt64)
	// Zero value and inverted bounds.
	f("zero Backoff", Backoff{}, 0, 0, 0, DefaultBackoffMin)
	f("zero Backoff, late attempt", Backoff{}, 50, 0, 0.999, DefaultBackoffMin+time.Duration(0.999*float64(DefaultBackoffMax-DefaultBackoffMin)))
	f("Max below Min", Backoff{Min: time.Second, Max: time.Millisecond}, 4, 0, 0.7, time.Second)
}

func TestBackoffClamp(t *testing.T) {
	f := func(name string, b Backoff, d, want time.Duration) {
		t.Helper()
		if got := b.Clamp(d); got != want {
			t.Errorf("%s: Clamp(%v) = %v, want %v", name, d, got, want)
		}
	}
	b := Backoff{Min: time.Second, Max: time.Minute}
	f("inside", b, 10*time.Second, 10*time.Second)
	f("below Min", b, time.Millisecond, time.Second)
	f("zero", b, 0, time.Second)
	f("above Max", b, 484289*time.Hour, time.Minute)
	f("zero Backoff", Backoff{}, time.Hour, DefaultBackoffMax)
	f("Max below Min", Backoff{Min: time.Second, Max: time.Millisecond}, time.Hour, time.Second)
}

func TestBackoffDefaultRandom(t *testing.T) {
	b := Backoff{Min: 10 * time.Millisecond, Max: time.Second}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := b.Delay(3, 0, nil)
		if d < 10*time.Millisecond || d >= 160*time.Millisecond {
			t.Fatalf("Delay(3) = %v outside [10ms, 160ms)", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct delays in 200 draws: no jitter?", len(seen))
	}
}

func TestNewRetryBudget(t *testing.T) {
	f := func(cfg RetryBudgetConfig, field string) {
		t.Helper()
		_, err := NewRetryBudget(cfg)
		if field == "" {
			if err != nil {
				t.Errorf("NewRetryBudget(%+v): %v", cfg, err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), "RetryBudgetConfig."+field) {
			t.Errorf("NewRetryBudget(%+v) = %v, want an error naming %s", cfg, err, field)
		}
	}
	f(RetryBudgetConfig{}, "")
	f(RetryBudgetConfig{Ratio: 0.5, MinRetries: 1, Window: time.Second}, "")
	f(RetryBudgetConfig{Ratio: -0.1}, "Ratio")
	f(RetryBudgetConfig{Ratio: math.NaN()}, "Ratio")
	f(RetryBudgetConfig{Ratio: math.Inf(1)}, "Ratio")
	f(RetryBudgetConfig{MinRetries: -1}, "MinRetries")
	f(RetryBudgetConfig{Window: time.Millisecond}, "Window")
}

func TestRetryBudget(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at       time.Duration // since t0
		requests int           // Request calls at this time
		retries  int           // TryRetry calls at this time
		allowed  int           // how many of them must succeed
	}
	f := func(name string, cfg RetryBudgetConfig, steps []step) {
		t.Helper()
		b, err := NewRetryBudget(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range steps {
			now := t0.Add(s.at)
			for range s.requests {
				b.Request(now)
			}
			got := 0
			for range s.retries {
				if b.TryRetry(now) {
					got++
				}
			}
			if got != s.allowed {
				t.Errorf("%s: step %d at %v: %d of %d retries allowed, want %d (snapshot %+v)", name, i, s.at, got, s.retries, s.allowed, b.Snapshot(now))
			}
		}
	}
	def := RetryBudgetConfig{}
	f("min retries with no traffic", def, []step{{0, 0, 5, 3}})
	f("20% of requests", def, []step{{0, 100, 30, 20}})
	f("min retries above the ratio", def, []step{{0, 10, 5, 3}})
	f("counts accumulate over the window", def, []step{
		{0, 50, 10, 10},
		{5 * time.Second, 50, 20, 10}, // 100 requests → 20, 10 used
	})
	f("old slots slide out", def, []step{
		{0, 100, 20, 20},
		{5 * time.Second, 0, 1, 0},  // still 20 of 20 used
		{10 * time.Second, 0, 3, 3}, // the first second left the window: no requests, MinRetries
		{11 * time.Second, 0, 1, 0},
	})
	f("a long gap resets everything", def, []step{
		{0, 1000, 200, 200},
		{time.Hour, 0, 4, 3},
	})
	f("custom ratio and window", RetryBudgetConfig{Ratio: 1, MinRetries: 1, Window: time.Second}, []step{
		{0, 4, 6, 4},
		{500 * time.Millisecond, 2, 3, 2},
		{1100 * time.Millisecond, 0, 3, 0}, // the slot at 0 left; 2 requests, 2 retries remain: full
		{1600 * time.Millisecond, 0, 3, 1}, // all left: MinRetries
	})
}

func TestRetryBudgetSnapshotAndNil(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b, _ := NewRetryBudget(RetryBudgetConfig{})
	for range 10 {
		b.Request(now)
	}
	for range 5 {
		b.TryRetry(now)
	}
	want := RetryBudgetSnapshot{Requests: 10, Retries: 3, Limit: 3, Allowed: 3, Denied: 2}
	if got := b.Snapshot(now); got != want {
		t.Errorf("Snapshot = %+v, want %+v", got, want)
	}
	var off *RetryBudget
	off.Request(now)
	if !off.TryRetry(now) || off.Snapshot(now) != (RetryBudgetSnapshot{}) {
		t.Error("a nil budget must allow every retry and report zeros")
	}
}

func TestRetryBudgetConcurrent(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b, _ := NewRetryBudget(RetryBudgetConfig{Ratio: 0.1, MinRetries: 1})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 16 {
		wg.Go(func() {
			for range 1000 {
				b.Request(now)
				if b.TryRetry(now) {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	s := b.Snapshot(now)
	if s.Requests != 16000 || uint64(allowed) != s.Allowed || s.Retries != s.Allowed || float64(s.Retries) > s.Limit {
		t.Errorf("after 16×1000 requests and retries: allowed %d, snapshot %+v", allowed, s)
	}
}
