package limiter

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"
)

// sendFor offers a write every 1ms for d, each succeeding at once, and
// returns how many were admitted.
func sendFor(c *Controller, clk *fakeClock, d time.Duration) int {
	n := 0
	for end := clk.now.Add(d); clk.now.Before(end); clk.advance(time.Millisecond) {
		if p, err := c.TryAcquire(1); err == nil {
			p.Done(success(time.Millisecond))
			n++
		}
	}
	return n
}

// TestCeilingCapsTheRate: a ceiling below the adapted limit sets the pace;
// one above it changes nothing; it lapses at the first Tick after its
// time, and ClearCeiling removes it at once.
func TestCeilingCapsTheRate(t *testing.T) {
	f := func(name string, got, want int) {
		t.Helper()
		if got < want-2 || got > want+2 {
			t.Errorf("%s: %d writes admitted in a second, want about %d", name, got, want)
		}
	}
	c, clk := newFake(t, 200, func(cfg *Config) { cfg.Burst = 1; cfg.MaxRate = 200 })
	sendFor(c, clk, 100*time.Millisecond) // the store has answered: no cold start
	f("no ceiling", sendFor(c, clk, time.Second), 200)
	if err := c.SetCeiling(50, clk.now.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	f("ceiling 50", sendFor(c, clk, time.Second), 50)
	if r := c.SendRate(); r != 50 {
		t.Errorf("SendRate %v, want 50", r)
	}
	if r, until := c.Ceiling(); r != 50 || until.IsZero() {
		t.Errorf("Ceiling() = %v, %v", r, until)
	}
	if err := c.SetCeiling(500, clk.now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	f("ceiling above the limit", sendFor(c, clk, time.Second), 200)
	if err := c.SetCeiling(20, clk.now.Add(500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	f("ceiling 20 for half a second, then a Tick", sendFor(c, clk, 500*time.Millisecond)*2, 20)
	clk.tick(c)
	if r, _ := c.Ceiling(); r != 0 {
		t.Errorf("ceiling %v still set after its time", r)
	}
	f("lapsed", sendFor(c, clk, time.Second), 200)
	if err := c.SetCeiling(10, clk.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	c.ClearCeiling()
	f("cleared", sendFor(c, clk, time.Second), 200)
	for _, bad := range []float64{0, -1, math.Inf(1), math.NaN()} {
		if err := c.SetCeiling(bad, clk.now.Add(time.Second)); err == nil {
			t.Errorf("SetCeiling(%v): no error", bad)
		}
	}
}

// TestCeilingFloorIsMinRate: a ceiling below MinRate runs at MinRate, the
// least the controller ever sends.
func TestCeilingFloorIsMinRate(t *testing.T) {
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.MinRate = 5 })
	if err := c.SetCeiling(0.5, clk.now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if r := c.SendRate(); r != 5 {
		t.Errorf("SendRate %v, want MinRate 5", r)
	}
}

// TestCeilingWakesWaiters: a raised ceiling lets a queued caller in at
// once, as any limit change does.
func TestCeilingWakesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(Config{InitialRate: 100, MinRate: 0.1, MaxRate: 100, MaxConcurrency: 10, Burst: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.SetCeiling(0.1, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		p, err := c.Acquire(context.Background(), 1) // the one token
		if err != nil {
			t.Fatal(err)
		}
		p.Done(success(time.Millisecond))
		got := make(chan time.Duration)
		start := time.Now()
		go func() {
			p, err := c.Acquire(context.Background(), 1)
			if err == nil {
				p.Done(success(time.Millisecond))
			}
			got <- time.Since(start)
		}()
		time.Sleep(time.Second)
		synctest.Wait()
		c.ClearCeiling()
		if d := <-got; d > time.Second+20*time.Millisecond {
			t.Errorf("waiter admitted after %v, want at once when the ceiling went", d)
		}
	})
}

// TestCeilingKeepsTheLawWorking: under a ceiling the adapted limit stays
// within about twice it, and a throttle still cuts below it at once.
func TestCeilingKeepsTheLawWorking(t *testing.T) {
	c, clk := newFake(t, 50, func(cfg *Config) { cfg.Burst = 1; cfg.Window = 100 * time.Millisecond })
	if err := c.SetCeiling(100, clk.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for range 40 {
		sendFor(c, clk, 100*time.Millisecond)
		clk.tick(c)
	}
	if r := c.Snapshot().Rate; r < 100 || r > 2*100*growthCap {
		t.Errorf("adapted limit %v under a ceiling of 100, want within [100, 400]", r)
	}
	if r := c.SendRate(); r != 100 {
		t.Errorf("SendRate %v, want the ceiling 100", r)
	}
	ps := take(t, c, 1)
	clk.advance(time.Millisecond)
	doneAll(ps, congested("status_429"))
	if r := c.SendRate(); r >= 100 {
		t.Errorf("after a throttle: SendRate %v, want below the ceiling", r)
	}
}

// TestLoadDemand: held back by the rate, a sidecar wants MaxRate; free, it
// wants demandHeadroom times what it sends.
func TestLoadDemand(t *testing.T) {
	c, clk := newFake(t, 100, func(cfg *Config) { cfg.Burst = 1; cfg.MaxRate = 1000 })
	if err := c.SetCeiling(100, clk.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	sendFor(c, clk, time.Second) // a write every ms: 1000/s offered at 100/s
	clk.tick(c)
	sendFor(c, clk, 500*time.Millisecond)
	l := c.Load(clk.now)
	if l.Demand != 1000 {
		t.Errorf("held back by the rate: demand %v, want MaxRate 1000", l.Demand)
	}
	if l.Goodput < 80 || l.Goodput > 120 {
		t.Errorf("goodput %v, want about 100", l.Goodput)
	}
	// Now a loader sending 20/s, well under the limit.
	clk.tick(c)
	for range 4 {
		for range 10 {
			clk.advance(50 * time.Millisecond)
			if p, err := c.TryAcquire(1); err == nil {
				p.Done(success(time.Millisecond))
			}
		}
		clk.tick(c)
	}
	if l := c.Load(clk.now); l.Demand < 20*demandHeadroom*0.8 || l.Demand > 20*demandHeadroom*1.2 {
		t.Errorf("sending 20/s freely: demand %v, want about %v", l.Demand, 20*demandHeadroom)
	}
	clk.advance(50 * time.Millisecond)
	ps := take(t, c, 1)
	doneAll(ps, congested("status_429"))
	if l := c.Load(clk.now); l.Throttles != 1 {
		t.Errorf("throttles %d, want 1", l.Throttles)
	}
	// A throttle of a part of the store that another limiter takes (a
	// table, a prefix) moves nothing here, but a fleet's budget is the
	// whole store's: it counts. Another answer that moves nothing does not.
	rate := c.SendRate()
	clk.advance(time.Second) // at the cut rate, a permit is due
	take(t, c, 1)[0].Done(Sample{Outcome: Neutral, Reason: "dynamodb_provisioned_throughput_exceeded", Answered: true, PartThrottled: true})
	clk.advance(time.Second)
	take(t, c, 1)[0].Done(Sample{Outcome: Neutral, Answered: true})
	if l := c.Load(clk.now); l.Throttles != 2 || c.SendRate() != rate {
		t.Errorf("after a part's throttle and a client error: throttles %d, rate %v; want 2, %v", l.Throttles, c.SendRate(), rate)
	}
}

// TestLoadDemandHeld: at a ceiling of a write a second, what was sent in a
// Window tells nothing, but a caller waiting on the rate does: the demand
// is MaxRate.
func TestLoadDemandHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(Config{InitialRate: 50, MinRate: 1, MaxRate: 1000, MaxConcurrency: 10, Burst: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.SetCeiling(1, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ctx.Err() == nil {
				p, err := c.Acquire(ctx, 1)
				if err != nil {
					return
				}
				p.Done(success(time.Millisecond))
			}
		}()
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		if l := c.Load(time.Now()); l.Demand != 1000 {
			t.Errorf("a caller waiting at a ceiling of 1/s: demand %v, want MaxRate 1000", l.Demand)
		}
		cancel()
		<-done
	})
}
