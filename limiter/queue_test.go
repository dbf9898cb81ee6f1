package limiter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// newReal returns a controller on the bubble's clock (Config.Now nil).
func newReal(t *testing.T, cfg Config) *Controller {
	t.Helper()
	if cfg.MinRate == 0 {
		cfg.MinRate = 1
	}
	if cfg.MaxRate == 0 {
		cfg.MaxRate = 1e6
	}
	if cfg.MaxConcurrency == 0 {
		cfg.MaxConcurrency = 100
		cfg.InitialConcurrency = 100
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// result is what one background Acquire returned, and when.
type result struct {
	p   *Permit
	err error
	at  time.Duration // since the test's start
}

// acquireAsync starts Acquire in a goroutine and waits until it has either
// returned or blocked, so that calls queue in the order they are started.
func acquireAsync(ctx context.Context, c *Controller, cost float64, start time.Time) <-chan result {
	ch := make(chan result, 1)
	go func() {
		p, err := c.Acquire(ctx, cost)
		ch <- result{p, err, time.Since(start)}
	}()
	synctest.Wait()
	return ch
}

func pending(ch <-chan result) bool {
	select {
	case r := <-ch:
		panic("not pending: " + r.at.String())
	default:
		return true
	}
}

func mustPermit(t *testing.T, r result) *Permit {
	t.Helper()
	if r.err != nil {
		t.Fatalf("Acquire: %v", r.err)
	}
	return r.p
}

func TestQueueFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 10, Burst: 1})
		start := time.Now()
		first, err := c.Acquire(t.Context(), 1) // takes the only token
		if err != nil {
			t.Fatal(err)
		}
		first.Done(success(ms(1)))
		var chs []<-chan result
		for range 5 {
			chs = append(chs, acquireAsync(t.Context(), c, 1, start))
		}
		if s := c.Snapshot(); s.Queued != 5 || s.QueuedCost != 5 {
			t.Fatalf("queued %d cost %v, want 5 and 5", s.Queued, s.QueuedCost)
		}
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
			t.Fatalf("TryAcquire with a queue: %v, want ErrNoCapacity (no queue jumping)", err)
		}
		for i, ch := range chs {
			r := <-ch
			mustPermit(t, r).Done(success(ms(1)))
			if want := time.Duration(i+1) * ms(100); r.at != want {
				t.Errorf("waiter %d admitted at %v, want %v (FIFO at 10/s)", i, r.at, want)
			}
		}
	})
}

func TestQueueFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 100, MaxConcurrency: 1, QueueMax: 2})
		start := time.Now()
		held, err := c.Acquire(t.Context(), 1)
		if err != nil {
			t.Fatal(err)
		}
		a := acquireAsync(t.Context(), c, 1, start)
		b := acquireAsync(t.Context(), c, 1, start)
		if _, err := c.Acquire(t.Context(), 1); err != ErrQueueFull {
			t.Fatalf("third waiter: %v, want ErrQueueFull at once", err)
		}
		if time.Since(start) != 0 {
			t.Fatalf("ErrQueueFull took %v", time.Since(start))
		}
		if s := c.Snapshot(); s.Queued != 2 || s.InFlight != 1 || s.Concurrency != 1 {
			t.Fatalf("snapshot %+v, want 2 queued, 1 in flight", s)
		}
		held.Done(success(ms(1)))
		mustPermit(t, <-a).Done(success(ms(1)))
		mustPermit(t, <-b).Done(success(ms(1)))
	})
}

func TestQueueCancelRemovesWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 100, MaxConcurrency: 1})
		start := time.Now()
		held, _ := c.Acquire(t.Context(), 1)
		ctxA, cancelA := context.WithCancel(t.Context())
		a := acquireAsync(ctxA, c, 1, start)
		ctxB, cancelB := context.WithTimeout(t.Context(), ms(50))
		defer cancelB()
		b := acquireAsync(ctxB, c, 1, start)
		d := acquireAsync(t.Context(), c, 1, start)

		cancelA() // the head leaves
		if r := <-a; !errors.Is(r.err, context.Canceled) || r.p != nil {
			t.Fatalf("cancelled waiter: %v %v, want context.Canceled", r.p, r.err)
		}
		if s := c.Snapshot(); s.Queued != 2 || s.QueuedCost != 2 {
			t.Fatalf("after cancel: queued %d cost %v, want 2", s.Queued, s.QueuedCost)
		}
		if r := <-b; !errors.Is(r.err, context.DeadlineExceeded) || r.at != ms(50) {
			t.Fatalf("timed-out waiter: %v at %v, want DeadlineExceeded at 50ms", r.err, r.at)
		}
		if s := c.Snapshot(); s.Queued != 1 {
			t.Fatalf("after timeout: queued %d, want 1", s.Queued)
		}
		synctest.Wait()
		pending(d)
		held.Done(success(ms(1)))
		mustPermit(t, <-d).Done(success(ms(1)))
		if s := c.Snapshot(); s.Queued != 0 || s.QueuedCost != 0 || s.InFlight != 0 {
			t.Fatalf("at the end: %+v", s)
		}
		// An already-ended ctx does not queue.
		held, _ = c.Acquire(t.Context(), 1)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := c.Acquire(ctx, 1); !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire with a dead ctx: %v", err)
		}
		held.Done(success(ms(1)))
	})
}

func TestQueueCutAppliesToWaiters(t *testing.T) {
	// rate.Limiter's trap: a waiter's delay is fixed when it reserves, so a
	// cut does not slow it. Here the queued head must feel the cut at once.
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 100, Burst: 1})
		// A second of light traffic: 10 accepted, goodput 10/s.
		for range 10 {
			p, err := c.Acquire(t.Context(), 1)
			if err != nil {
				t.Fatal(err)
			}
			p.Done(success(ms(1)))
			time.Sleep(ms(100))
		}
		p, _ := c.Acquire(t.Context(), 1) // empties the bucket
		start := time.Now()
		w := acquireAsync(t.Context(), c, 1, start) // would be admitted in 10ms at 100/s
		p.Done(congested("status_429"))             // cut to 0.9 × 10/s
		if s := c.Snapshot(); !approx(s.Rate, 9) {
			t.Fatalf("rate after the cut %v, want 9", s.Rate)
		}
		time.Sleep(ms(50))
		synctest.Wait()
		pending(w)
		r := <-w
		mustPermit(t, r).Done(success(ms(1)))
		if want := durationCeil(1.0 / 9); r.at != want {
			t.Fatalf("queued waiter admitted after %v, want %v at the cut rate", r.at, want)
		}
	})
}

func TestQueueRaiseWakesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 1, Burst: 1})
		p, _ := c.Acquire(t.Context(), 1)
		p.Done(success(0))
		start := time.Now()
		w := acquireAsync(t.Context(), c, 1, start) // 1s away at 1/s
		time.Sleep(ms(100))
		c.Tick(time.Now()) // the waiter was blocked on the rate: slow start doubles it
		if s := c.Snapshot(); s.Rate != 2 {
			t.Fatalf("rate %v, want 2", s.Rate)
		}
		r := <-w
		mustPermit(t, r).Done(success(0))
		// 0.1 token at 100ms, the remaining 0.9 at 2/s.
		if want := ms(550); r.at != want {
			t.Fatalf("admitted after %v, want %v", r.at, want)
		}
	})
}

func TestQueueConcurrencySlotWakesHead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 1000, MaxConcurrency: 2, Burst: 10})
		start := time.Now()
		a, _ := c.Acquire(t.Context(), 1)
		b, _ := c.Acquire(t.Context(), 1)
		w := acquireAsync(t.Context(), c, 1, start)
		time.Sleep(ms(30))
		b.Done(success(ms(30)))
		r := <-w
		if r.at != ms(30) {
			t.Fatalf("admitted at %v, want 30ms when a slot freed", r.at)
		}
		a.Done(success(ms(30)))
		mustPermit(t, r).Done(success(ms(1)))
	})
}

func TestQueuePauseKeepsWaitersQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 100, Burst: 1})
		start := time.Now()
		p, _ := c.Acquire(t.Context(), 1)
		w1 := acquireAsync(t.Context(), c, 1, start)
		p.Done(congestedRA(15 * time.Second))
		if s := c.Snapshot(); s.Phase != PhasePaused {
			t.Fatalf("phase %s, want paused", s.Phase)
		}
		time.Sleep(time.Second)
		w2 := acquireAsync(t.Context(), c, 1, start) // new callers queue too
		if s := c.Snapshot(); s.Queued != 2 {
			t.Fatalf("queued %d during the pause, want 2", s.Queued)
		}
		r1 := <-w1
		mustPermit(t, r1).Done(success(ms(1))) // the cut left one slot (peak in flight was 1)
		r2 := <-w2
		mustPermit(t, r2).Done(success(ms(1)))
		// The bucket refills from the end of the pause at the cut rate (90/s).
		if want := 15*time.Second + durationCeil(1.0/90); r1.at != want {
			t.Errorf("first waiter admitted at %v, want %v", r1.at, want)
		}
		if r2.at <= r1.at || r2.at > r1.at+ms(12) {
			t.Errorf("second waiter admitted at %v, want just after %v", r2.at, r1.at)
		}
	})
}

func TestQueueCostAboveBurst(t *testing.T) {
	// A cost larger than the burst is never an error: it goes when the
	// bucket is full and leaves debt that later callers wait out.
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 10, Burst: 1})
		start := time.Now()
		big, err := c.Acquire(t.Context(), 25)
		if err != nil || time.Since(start) != 0 {
			t.Fatalf("Acquire(25) with burst 1: %v after %v, want at once", err, time.Since(start))
		}
		big.Done(success(ms(1)))
		w := acquireAsync(t.Context(), c, 1, start)
		r := <-w
		mustPermit(t, r).Done(success(ms(1)))
		if want := ms(2500); r.at != want {
			t.Fatalf("next caller admitted after %v, want %v (24 units of debt + 1 at 10/s)", r.at, want)
		}
		if got := c.RetryWait(1); got != ms(100) {
			t.Fatalf("RetryWait %v, want 100ms", got)
		}
	})
}

func TestCloseWakesAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 100, MaxConcurrency: 1})
		start := time.Now()
		held, _ := c.Acquire(t.Context(), 1)
		var chs []<-chan result
		for range 3 {
			chs = append(chs, acquireAsync(t.Context(), c, 1, start))
		}
		c.Close()
		for i, ch := range chs {
			if r := <-ch; r.err != ErrClosed {
				t.Errorf("waiter %d: %v, want ErrClosed", i, r.err)
			}
		}
		if _, err := c.Acquire(t.Context(), 1); err != ErrClosed {
			t.Errorf("Acquire after Close: %v", err)
		}
		if _, err := c.TryAcquire(1); err != ErrClosed {
			t.Errorf("TryAcquire after Close: %v", err)
		}
		held.Done(success(ms(1))) // still allowed
		c.Close()                 // idempotent
		if s := c.Snapshot(); s.Phase != PhaseClosed || s.Queued != 0 || s.InFlight != 0 {
			t.Errorf("after Close: %+v", s)
		}
	})
}

func TestConcurrentAcquireDone(t *testing.T) {
	// Many goroutines, every outcome, ticks and snapshots at once: the race
	// detector checks the locking, the invariants the bookkeeping.
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 500, MaxConcurrency: 8, InitialConcurrency: 4, QueueMax: 16})
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		wg.Go(func() {
			for ctx.Err() == nil {
				time.Sleep(c.TickInterval())
				c.Tick(time.Now())
				if s := c.Snapshot(); s.InFlight > s.Concurrency+8 || s.Queued > 16 || s.Rate < 1 || s.Rate > 1e6 {
					t.Errorf("invariant broken: %+v", s)
				}
			}
		})
		for i := range 32 {
			wg.Go(func() {
				for n := 0; ctx.Err() == nil; n++ {
					qctx, qcancel := context.WithTimeout(ctx, ms(20))
					p, err := c.Acquire(qctx, float64(1+n%3))
					qcancel()
					if err != nil {
						time.Sleep(ms(1)) // ErrQueueFull returns at once: back off
						continue
					}
					time.Sleep(ms(1 + (i+n)%7))
					p.Done(Sample{Outcome: Outcome((i + n) % 5), Latency: ms(5), RetryAfter: ms(100 * (n % 2))})
					p.Done(success(0))
				}
			})
		}
		wg.Wait()
		if s := c.Snapshot(); s.InFlight != 0 || s.Queued != 0 {
			t.Errorf("after all callers left: %+v", s)
		}
	})
}

func TestQueueColdStartSendsTwo(t *testing.T) {
	// With the default burst, before the store has answered anything only
	// two writes go out: a cold store's first write can be slow, and the
	// ones queued behind it refused. The first answer opens the limits.
	synctest.Test(t, func(t *testing.T) {
		c := newReal(t, Config{InitialRate: 1000, InitialConcurrency: 8, MaxConcurrency: 8})
		start := time.Now()
		a, _ := c.Acquire(t.Context(), 1)
		b, _ := c.Acquire(t.Context(), 1)
		w := acquireAsync(t.Context(), c, 1, start)
		time.Sleep(ms(50)) // plenty of tokens at 1000/s, and 6 free slots
		synctest.Wait()
		pending(w)
		a.Done(success(ms(50)))
		r := <-w
		if r.at != ms(50) {
			t.Errorf("third write admitted at %v, want at the first answer (50ms)", r.at)
		}
		// From then on the configured limits apply (the bucket refills at
		// 1000/s to its full 50ms).
		time.Sleep(ms(10))
		var ps []*Permit
		for range 5 {
			p, err := c.TryAcquire(1)
			if err != nil {
				t.Fatalf("after the first answer: %v (%+v)", err, c.Snapshot())
			}
			ps = append(ps, p)
		}
		doneAll(append(ps, b, mustPermit(t, r)), success(ms(1)))
	})
}
