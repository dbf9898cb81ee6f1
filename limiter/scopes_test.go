package limiter

import (
	"context"
	"math"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func newTestScopes(t *testing.T, max int) (*Scopes, *fakeClock) {
	t.Helper()
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	s, err := NewScopes(ScopesConfig{
		Limiter: Config{InitialRate: 100, MinRate: 1, MaxRate: 10_000, MaxConcurrency: 64, Now: clk.Now},
		Max:     max,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

var scopeThrottle = Sample{Outcome: Congested, Reason: "s3_slowdown"}

func TestScopesCostNothingUntilThrottled(t *testing.T) {
	s, _ := newTestScopes(t, 4)
	if s.Active() != 0 || s.Get("orders") != nil {
		t.Fatalf("a new set has limiters: active %d", s.Active())
	}
	if got := testing.AllocsPerRun(100, func() { _ = s.Get("orders") }); got != 0 {
		t.Errorf("Get of an empty set allocates %v times", got)
	}
}

func TestScopesThrottleCreatesAndCuts(t *testing.T) {
	s, clk := newTestScopes(t, 4)
	c := s.Throttle("orders", 800, 16, scopeThrottle)
	if s.Active() != 1 || s.Get("orders") != c {
		t.Fatalf("after a throttle: active %d, Get %p, want %p", s.Active(), s.Get("orders"), c)
	}
	snap := c.Snapshot()
	if snap.Rate != 800*decreaseFactor {
		t.Errorf("rate after the first throttle %.1f, want a cut from 800", snap.Rate)
	}
	if snap.Concurrency != 16 {
		t.Errorf("concurrency %d, want the store's 16", snap.Concurrency)
	}
	if snap.LastMaxRate != 800 || snap.Phase == PhaseStartup || snap.Decreases != 1 {
		t.Errorf("after the first throttle: throttle point %.1f, phase %s, %d decreases; want 800, out of startup, 1", snap.LastMaxRate, snap.Phase, snap.Decreases)
	}
	st, _ := s.Status()
	if len(st) != 1 || st[0].LastReason != "s3_slowdown" || st[0].LastThrottle.IsZero() {
		t.Errorf("status %+v, want the throttle", st)
	}
	// Its next throttle, through a permit, cuts it.
	clk.advance(time.Second)
	p, err := c.TryAcquire(1)
	if err != nil {
		t.Fatal(err)
	}
	p.Done(Sample{Outcome: Congested, Reason: "s3_slowdown", Latency: time.Millisecond})
	if r := c.Snapshot().Rate; r >= snap.Rate {
		t.Errorf("rate %.1f after a throttle through a permit, was %.1f", r, snap.Rate)
	}
	// A second throttle goes to the same limiter.
	if c2 := s.Throttle("orders", 800, 16, scopeThrottle); c2 != c {
		t.Error("a second throttle made a new limiter")
	}
	// Rates outside the bounds are clamped.
	if r := s.Throttle("huge", 1e12, 1e6, scopeThrottle).Snapshot().Rate; r > 10_000 {
		t.Errorf("rate %v past MaxRate", r)
	}
}

// TestScopesThrottleClampsTheRate: a rate out of the configured bounds,
// or none (NaN, from a caller's division by zero), starts the scope's
// limiter within them, as Throttle says, rather than panicking.
func TestScopesThrottleClampsTheRate(t *testing.T) {
	for _, tc := range []struct {
		rate, want float64
	}{
		{0.01, 1}, {1e9, 10_000}, {math.Inf(1), 10_000}, {math.Inf(-1), 1}, {math.NaN(), 1},
	} {
		s, _ := newTestScopes(t, 4)
		snap := s.Throttle("orders", tc.rate, 4, Sample{Outcome: Neutral}).Snapshot()
		if snap.LastMaxRate != tc.want {
			t.Errorf("Throttle at rate %v: the scope's limiter starts from %v, want %v", tc.rate, snap.LastMaxRate, tc.want)
		}
	}
}

func TestScopesEvictLeastRecentlyUsed(t *testing.T) {
	s, _ := newTestScopes(t, 2)
	s.Throttle("a", 100, 4, scopeThrottle)
	s.Throttle("b", 100, 4, scopeThrottle)
	s.Get("a") // b is now the least recently used
	s.Throttle("c", 100, 4, scopeThrottle)
	if got := s.Names(); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("scopes %q, want [a c]", got)
	}
	st, stats := s.Status()
	if stats.Evictions != 1 || stats.Active != 2 || stats.Max != 2 {
		t.Errorf("stats %+v, want 1 eviction, 2 active", stats)
	}
	if len(st) != 2 || st[0].Scope != "c" || st[1].Scope != "a" {
		t.Errorf("status order %v, want most recent first", st)
	}
	// An evicted limiter still serves the permits it gave.
	s.Throttle("d", 100, 4, scopeThrottle) // evicts a
	if s.Get("a") != nil {
		t.Fatal("a was not evicted")
	}
}

// TestScopesOverflowing: Overflowing holds from an eviction for
// RetireAfter, and not before any eviction.
func TestScopesOverflowing(t *testing.T) {
	s, clk := newTestScopes(t, 2)
	s.Throttle("a", 100, 4, scopeThrottle)
	s.Throttle("b", 100, 4, scopeThrottle)
	if s.Overflowing(clk.Now()) {
		t.Fatal("overflowing with no eviction")
	}
	s.Throttle("c", 100, 4, scopeThrottle) // evicts a
	evicted := clk.Now()
	for _, tc := range []struct {
		after time.Duration
		want  bool
	}{{0, true}, {DefaultScopeRetireAfter - time.Millisecond, true}, {DefaultScopeRetireAfter, false}} {
		if got := s.Overflowing(evicted.Add(tc.after)); got != tc.want {
			t.Errorf("Overflowing %v after an eviction: %v, want %v", tc.after, got, tc.want)
		}
	}
}

func TestScopesEvictedLimiterStillWorks(t *testing.T) {
	s, clk := newTestScopes(t, 1)
	a := s.Throttle("a", 100, 4, scopeThrottle)
	clk.advance(time.Second)
	p, err := a.TryAcquire(1)
	if err != nil {
		t.Fatal(err)
	}
	s.Throttle("b", 100, 4, scopeThrottle) // evicts a
	p.Done(Sample{Outcome: Success, Latency: time.Millisecond})
	if a.Snapshot().InFlight != 0 {
		t.Error("a permit of an evicted limiter did not release its slot")
	}
}

func TestScopesRetireWhenCleanAndRecovered(t *testing.T) {
	s, clk := newTestScopes(t, 4)
	s.Throttle("once", 100, 4, scopeThrottle)
	c := s.Throttle("orders", 100, 4, scopeThrottle)
	// Writes at 50/s through it, then a throttle it measured: a cut with a
	// throttle point.
	send := func(n int, smp Sample) {
		for range n {
			clk.advance(20 * time.Millisecond)
			if p, err := c.TryAcquire(1); err == nil {
				p.Done(smp)
			}
		}
	}
	ok := Sample{Outcome: Success, Latency: time.Millisecond}
	send(30, ok)
	send(1, Sample{Outcome: Congested, Reason: "s3_slowdown", Latency: time.Millisecond})
	if snap := c.Snapshot(); snap.LastMaxRate == 0 || snap.Rate >= snap.LastMaxRate {
		t.Fatalf("no measured cut: %+v", snap)
	}
	s.Tick(clk.now)
	if s.Active() != 2 {
		t.Fatal("retired right after a throttle")
	}
	// Clean for RetireAfter: "once", unused since it was made, goes;
	// "orders", used and below its throttle point, still constrains and
	// stays.
	for range 30 {
		clk.advance(DefaultScopeRetireAfter / 30)
		s.Get("orders")
		s.Tick(clk.now)
	}
	if got := s.Names(); !slices.Equal(got, []string{"orders"}) {
		t.Fatalf("after %v clean: %q, want [orders]", DefaultScopeRetireAfter, got)
	}
	// Grown back past its throttle point (successes while the rate is the
	// bottleneck), it goes too.
	for i := 0; i < 5000 && c.Snapshot().Rate < c.Snapshot().LastMaxRate; i++ {
		clk.advance(5 * time.Millisecond)
		for {
			p, err := c.TryAcquire(1)
			if err != nil {
				break
			}
			p.Done(ok)
		}
		if i%20 == 0 {
			s.Tick(clk.now)
		}
	}
	s.Tick(clk.now)
	if s.Active() != 0 {
		snap := c.Snapshot()
		t.Fatalf("not retired: rate %.1f, last max %.1f, phase %s", snap.Rate, snap.LastMaxRate, snap.Phase)
	}
	if _, stats := s.Status(); stats.Retired != 2 || stats.Evictions != 0 {
		t.Errorf("stats %+v, want 2 retired", stats)
	}
}

func TestNewScopesRejectsBadConfig(t *testing.T) {
	good := Config{InitialRate: 1, MinRate: 1, MaxRate: 10, MaxConcurrency: 1}
	for _, cfg := range []ScopesConfig{
		{Limiter: good, Max: 0},
		{Limiter: good, Max: 1, RetireAfter: -1},
		{Limiter: Config{}, Max: 1},
	} {
		if _, err := NewScopes(cfg); err == nil {
			t.Errorf("NewScopes(%+v) accepted", cfg)
		}
	}
}

// TestScopesClose: at shutdown the scopes' limiters close like the
// store's, so writes waiting on a throttled scope are refused at once, and
// a scope throttled after Close gets a closed limiter too.
func TestScopesClose(t *testing.T) {
	s, _ := newTestScopes(t, 4)
	c := s.Throttle("orders", 800, 16, scopeThrottle)
	s.Close()
	if _, err := c.TryAcquire(1); err != ErrClosed {
		t.Errorf("TryAcquire on a closed scope: %v, want ErrClosed", err)
	}
	if _, err := s.Throttle("users", 800, 16, scopeThrottle).TryAcquire(1); err != ErrClosed {
		t.Errorf("TryAcquire on a scope made after Close: %v, want ErrClosed", err)
	}
}

// TestScopesStatusWhileThrottled: Status reads what Throttle writes; run
// with -race.
func TestScopesStatusWhileThrottled(t *testing.T) {
	s, _ := newTestScopes(t, 4)
	s.Throttle("orders", 800, 16, scopeThrottle)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			s.Throttle("orders", 800, 16, Sample{Outcome: Congested, Reason: "r" + string(rune('a'+i%26))})
		}
	}()
	for range 200 {
		if st, _ := s.Status(); len(st) != 1 || st[0].LastReason == "" {
			t.Fatalf("status %+v", st)
		}
	}
	<-done
}

// TestScopeStartsWarm: the throttle that makes a scope's limiter was the
// store's answer, so the limiter does not start cold (two writes in
// flight until one of its own comes back): the scope keeps its slots.
func TestScopeStartsWarm(t *testing.T) {
	s, clk := newTestScopes(t, 4)
	c := s.Throttle("orders", 800, 16, scopeThrottle)
	clk.advance(time.Second) // the bucket fills
	for i := range 8 {
		if _, err := c.TryAcquire(1); err != nil {
			t.Fatalf("write %d into a new scope's limiter (16 slots, 720/s): %v", i+1, err)
		}
	}
}

func TestScopeLearnsTheStoresLatency(t *testing.T) {
	// The store's limiter has learned that the store's latency grows with
	// its load. A scope's limiter made from it knows that too: a rise of
	// latency with the scope's load does not cut its slots. One made
	// without it takes the rise for a queue of its own, and cuts.
	for _, seeded := range []bool{true, false} {
		s, clk := newTestScopes(t, 4)
		store, err := New(Config{InitialRate: 1e4, MinRate: 1, MaxRate: 1e4, InitialConcurrency: 8, MaxConcurrency: 64, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		store.mu.Lock()
		store.latBase, store.latRecent, store.latMean, store.latLoad = ms(40), ms(40), ms(40), true
		store.mu.Unlock()
		var c *Controller
		if seeded {
			c = s.ThrottleFrom("orders", store, scopeThrottle)
		} else {
			c = s.Throttle("orders", 1e4, 8, scopeThrottle)
		}
		if got := c.Snapshot().LatencyBaseline; seeded && got != ms(40) {
			t.Fatalf("seeded scope: latency baseline %v, want the store's 40ms", got)
		}
		clk.advance(ms(100)) // the cut emptied the bucket
		lat := ms(40)
		storeLat := func(int) time.Duration { return lat }
		for range 2 {
			littleWindow(t, c, clk, storeLat)
		}
		before := c.Snapshot().Decreases
		lat = ms(120)
		for range 3 {
			littleWindow(t, c, clk, storeLat)
		}
		cut := c.Snapshot().Decreases > before
		if cut == seeded {
			t.Errorf("seeded %v: latency 40ms → 120ms cut the slots: %v, want %v (%+v)", seeded, cut, !seeded, c.Snapshot())
		}
	}
}

// TestScopeStartsAtTheStoresSendRate: under a ceiling (a fleet's lease)
// the store's writes went out at the ceiling, not at its adapted limit;
// a scope throttled there starts from the ceiling, or its limiter would
// hold nothing back until the store throttled it again.
func TestScopeStartsAtTheStoresSendRate(t *testing.T) {
	s, clk := newTestScopes(t, 4)
	store, err := New(Config{InitialRate: 1000, MinRate: 1, MaxRate: 10_000, InitialConcurrency: 8, MaxConcurrency: 64, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetCeiling(100, clk.now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	snap := s.ThrottleFrom("orders", store, scopeThrottle).Snapshot()
	if snap.Rate > 100*decreaseFactor || snap.LastMaxRate > 100 {
		t.Errorf("scope throttled at the store's ceiling of 100/s: rate %.1f, throttle point %.1f; want a cut from 100", snap.Rate, snap.LastMaxRate)
	}
}

// oneScope is a Scopes with room for one scope's limiter: a second evicts
// the first.
func oneScope(t *testing.T) *Scopes {
	t.Helper()
	s, err := NewScopes(ScopesConfig{
		Limiter: Config{InitialRate: 100, MinRate: 1, MaxRate: 10_000, MaxConcurrency: 64},
		Max:     1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestScopesCloseReachesEvictedLimiters: a write waiting in a scope's
// limiter when a new scope evicts it is refused at Close like every other
// waiting write, not left waiting out the pause while shutdown drains.
func TestScopesCloseReachesEvictedLimiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := oneScope(t)
		// Paused for a minute by the store's Retry-After.
		a := s.Throttle("a", 100, 4, Sample{Outcome: Congested, Reason: "s3_slowdown", RetryAfter: time.Minute})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res := acquireAsync(ctx, a, 1, time.Now())
		s.Throttle("b", 100, 4, scopeThrottle) // evicts a, its write still waiting
		s.Close()
		synctest.Wait()
		select {
		case r := <-res:
			if r.err != ErrClosed {
				t.Errorf("the write waiting in an evicted scope: %v, want ErrClosed", r.err)
			}
		default:
			t.Error("Close left a write waiting in an evicted scope's limiter")
			cancel()
			<-res
		}
	})
}

// TestScopesCloseReachesWritesQueuedAfterTheDrop: a write that got a
// scope's limiter from Get just before it was evicted or retired, and
// queues in it after, is refused at Close like the others, not left to
// wait out its queue timeout while shutdown drains. (The proxy asks Get
// again at each pass, but a drop can still fall between its Get and its
// Acquire.)
func TestScopesCloseReachesWritesQueuedAfterTheDrop(t *testing.T) {
	drops := map[string]func(s *Scopes){
		"evicted": func(s *Scopes) { s.Throttle("b", 100, 4, scopeThrottle) },
		"retired": func(s *Scopes) {
			time.Sleep(2 * DefaultScopeRetireAfter)
			s.Tick(time.Now())
		},
	}
	for name, drop := range drops {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := oneScope(t)
				s.Throttle("a", 100, 4, scopeThrottle)
				a := s.Get("a")
				drop(s)
				if s.Get("a") == a {
					t.Fatal("a was not dropped")
				}
				// a's slots are all taken (its bucket refilled since the
				// throttle drained it): the write waits in a's queue.
				time.Sleep(time.Second)
				var held []*Permit
				for range a.Snapshot().Concurrency {
					p, err := a.TryAcquire(1)
					if err != nil {
						t.Fatal(err)
					}
					held = append(held, p)
				}
				defer doneAll(held, Sample{Outcome: Neutral})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				res := acquireAsync(ctx, a, 1, time.Now())
				start := time.Now()
				s.Close()
				if r := <-res; r.err != ErrClosed || time.Since(start) > 0 {
					t.Errorf("the write queued in a dropped scope's limiter: %v after %v, want ErrClosed at once", r.err, time.Since(start))
				}
			})
		})
	}
}
