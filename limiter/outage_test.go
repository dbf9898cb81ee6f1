package limiter

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func unreachable(reason string) Sample { return Sample{Outcome: Unreachable, Reason: reason} }

// An outage, step by step: the first refused connection stops the sends,
// one probe at a time goes out at growing intervals, a probe whose loader
// left hands over to the next caller, and the first answer resumes the
// sends at the limits the store last took.
func TestOutageProbesOneAtATime(t *testing.T) {
	c, clk := newFake(t, 100, nil)
	c.jitter = func() float64 { return 0.5 } // the middle of each Backoff interval
	before := c.Snapshot()
	ps := take(t, c, 3)

	refused := func(what string) {
		t.Helper()
		if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
			t.Fatalf("%s: TryAcquire = %v, want ErrNoCapacity", what, err)
		}
	}
	nextProbe := func(what string, want time.Time) {
		t.Helper()
		if s := c.Snapshot(); !s.NextProbe.Equal(want) {
			t.Fatalf("%s: next probe at +%v, want +%v", what, s.NextProbe.Sub(clk.now), want.Sub(clk.now))
		}
	}

	// The first attempt that reaches no store begins the outage: nothing
	// goes out before the first probe, in 250ms + half of 250ms.
	start := clk.now
	ps[0].Done(unreachable("connection_refused"))
	if !c.Unreachable() || !c.Snapshot().UnreachableSince.Equal(start) {
		t.Fatalf("after a refused connection: unreachable %v, snapshot %+v", c.Unreachable(), c.Snapshot())
	}
	if ph := c.Snapshot().Phase; ph != PhaseUnreachable {
		t.Errorf("phase in an outage = %q, want %q", ph, PhaseUnreachable)
	}
	nextProbe("outage begun", start.Add(ms(375)))
	refused("before the first probe")
	if w := c.RetryWait(1); w < ms(375) {
		t.Errorf("RetryWait %v, want at least until the first probe (375ms)", w)
	}

	// An attempt granted before the outage finds the store gone too: the
	// interval stands.
	clk.advance(ms(10))
	ps[1].Done(unreachable("connection_reset"))
	nextProbe("an earlier attempt refused", start.Add(ms(375)))

	// At the interval, one probe; no second one while it is out.
	clk.now = start.Add(ms(375))
	probe := take(t, c, 1)[0]
	refused("with the probe out")
	if w := c.RetryWait(1); w < DefaultProbeMin {
		t.Errorf("RetryWait with the probe out: %v, want at least ProbeMin", w)
	}

	// Each probe that finds the store still unreachable doubles the
	// interval's range, up to ProbeMax: 250ms + half of 750ms, 1.75s,
	// 3.75s, then of 4.75s.
	for i, want := range []time.Duration{ms(625), ms(1125), ms(2125), ms(2625), ms(2625)} {
		clk.advance(ms(3))
		probe.Done(unreachable("connection_refused"))
		nextProbe("probe", clk.now.Add(want))
		clk.advance(want - 1)
		refused("1ns before the probe interval")
		clk.advance(1)
		probe = take(t, c, 1)[0]
		if c.Snapshot().UnreachableSince != start {
			t.Fatalf("probe %d: the outage restarted", i+1)
		}
	}

	// A probe that ends without an answer (its loader left) tells nothing:
	// the next caller probes at once.
	probe.Done(Sample{Outcome: Neutral, Reason: "cancelled"})
	probe = take(t, c, 1)[0]
	refused("with the new probe out")

	// The store answers: the outage is over, and writes flow at once.
	probe.Done(success(ms(4)))
	if c.Unreachable() || !c.Snapshot().NextProbe.IsZero() {
		t.Fatalf("after the probe's success: unreachable %v, snapshot %+v", c.Unreachable(), c.Snapshot())
	}
	doneAll(take(t, c, 20), success(ms(4)))
	ps[2].Done(success(ms(4)))

	// Nothing was learned of the store's capacity: the limits are the
	// ones it had before.
	s := c.Snapshot()
	if s.Rate != before.Rate || s.Concurrency != before.Concurrency || s.Decreases != 0 || s.Pauses != 0 {
		t.Errorf("limits after the outage: %+v, want those before: %+v", s, before)
	}
	if s.Samples[Unreachable] != 7 {
		t.Errorf("unreachable samples %d, want 7", s.Samples[Unreachable])
	}
}

// The store's first answer ends the outage, whichever attempt brings it
// and whatever it says: a throttle or a server error is still an answer.
// A late refusal of an attempt granted before the outage, or an attempt
// that ends without an answer, does not.
func TestOutageEndsOnAnyAnswer(t *testing.T) {
	f := func(name string, s Sample, wantOver bool) {
		t.Helper()
		c, _ := newFake(t, 100, nil)
		ps := take(t, c, 2)
		ps[0].Done(unreachable("dns"))
		ps[1].Done(s)
		if over := !c.Unreachable(); over != wantOver {
			t.Errorf("%s: outage over %v, want %v", name, over, wantOver)
		}
		if ph := c.Snapshot().Phase; (ph == PhaseUnreachable) == wantOver {
			t.Errorf("%s: phase %q with the outage over %v", name, ph, wantOver)
		}
	}
	f("success", success(ms(5)), true)
	f("throttle", congestedRA(time.Second), true)
	f("server error", Sample{Outcome: Failed, Reason: "status_500"}, true)
	f("another refusal", unreachable("connection_refused"), false)
	f("the loader left", Sample{Outcome: Neutral, Reason: "cancelled"}, false)
	f("a client error", Sample{Outcome: Neutral, Reason: "status_404", Answered: true}, true)
}

// However many writers wait, an unreachable store sees at most one attempt
// per ProbeMin, one at a time, and fewer as the outage lasts; when it
// comes back, the first answer lets the queued writers through.
func TestOutageBoundsTheAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(Config{InitialRate: 1000, MinRate: 1, MaxRate: 1e6, MaxConcurrency: 64, InitialConcurrency: 64})
		if err != nil {
			t.Fatal(err)
		}
		const outage = time.Minute
		var (
			mu       sync.Mutex
			grants   []time.Time // while the store is down
			answered time.Time   // the first answer of the store's
			after    int         // grants in the second after it
		)
		back := time.Now().Add(outage)
		ctx, cancel := context.WithTimeout(context.Background(), outage+DefaultProbeMax+2*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for {
					p, err := c.Acquire(ctx, 1)
					if err != nil {
						return
					}
					now := time.Now()
					up := !now.Before(back)
					mu.Lock()
					switch {
					case !up:
						grants = append(grants, now)
					case answered.IsZero():
						answered = now
						after++
					case now.Before(answered.Add(time.Second)):
						after++
					}
					mu.Unlock()
					time.Sleep(ms(1)) // a refused connection is quick, so is the store
					if up {
						p.Done(success(ms(1)))
					} else {
						p.Done(unreachable("connection_refused"))
					}
				}
			})
		}
		wg.Wait()

		// Before the store answered first: the attempts of the cold start
		// (two at most), then probes, each ProbeMin or more apart.
		var probes int
		for i := 1; i < len(grants); i++ {
			gap := grants[i].Sub(grants[i-1])
			if gap == 0 && i < 2 {
				continue // the cold start's second attempt
			}
			probes++
			if gap < DefaultProbeMin {
				t.Errorf("probe %d only %v after the one before, want at least %v", probes, gap, DefaultProbeMin)
			}
		}
		t.Logf("%d attempts in %v of outage (%d probes); the store answered %v after it came back, %d writes in the second after",
			len(grants), outage, probes, answered.Sub(back), after)
		if limit := int(outage/DefaultProbeMin) + 2; len(grants) > limit {
			t.Errorf("%d attempts reached the unreachable store in %v, want at most %d", len(grants), outage, limit)
		}
		// Past the first few probes, the intervals average near ProbeMax/2.
		if limit := int(outage / (DefaultProbeMax / 4)); probes > limit {
			t.Errorf("%d probes in %v, want about one per %v (at most %d)", probes, outage, DefaultProbeMax/2, limit)
		}
		// The first probe after the store came back ended the outage,
		// within ProbeMax, and writes flowed at the rate from then on.
		if answered.Sub(back) > DefaultProbeMax {
			t.Errorf("the store answered %v after it came back, want within ProbeMax %v", answered.Sub(back), DefaultProbeMax)
		}
		if after < 500 {
			t.Errorf("%d writes in the second after the store came back, want the rate's (1000/s) within a probe interval", after)
		}
	})
}

// TestStaleProbeIsNotTheNextOutages: the probe of an outage that ended
// (another write answered while it hung) and was followed by another is
// not the new outage's probe: its answer neither frees the new outage's
// probe slot, which let a second probe go out while the new outage's own
// was in flight, nor counts as one of its failed probes.
func TestStaleProbeIsNotTheNextOutages(t *testing.T) {
	c, clk := newFake(t, 100, nil)
	c.jitter = func() float64 { return 0.5 }
	ps := take(t, c, 2)
	ps[0].Done(unreachable("connection_refused")) // outage 1
	clk.now = c.Snapshot().NextProbe
	p1 := take(t, c, 1)[0] // outage 1's probe; it hangs (connect timeout)
	clk.advance(ms(5))
	ps[1].Done(success(ms(5))) // granted before outage 1: the store answers, outage 1 ends
	if c.Unreachable() {
		t.Fatal("outage 1 did not end")
	}
	x := take(t, c, 1)[0]
	clk.advance(ms(5))
	x.Done(unreachable("connection_refused")) // outage 2
	clk.now = c.Snapshot().NextProbe
	p2 := take(t, c, 1)[0] // outage 2's probe
	if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("with outage 2's probe out: %v, want ErrNoCapacity", err)
	}
	clk.advance(ms(5))
	p1.Done(unreachable("connect_timeout")) // outage 1's probe comes back
	clk.now = c.Snapshot().NextProbe
	p3, err := c.TryAcquire(1)
	if err == nil {
		t.Fatalf("a second probe (%p) was admitted while outage 2's probe %p is still in flight (in flight: %d)", p3, p2, c.Snapshot().InFlight)
	}
}

// A fleet shares the store's capacity by the demand each sidecar reports
// (Load). A sidecar whose store answers nothing (an outage: one probe at a
// time) has writes waiting for the probe's slot, as in a Retry-After
// pause: that is no demand the rate holds back, and must not be reported
// as MaxRate. It was, so a sidecar cut off from the store (its node's
// network, its store node down) took a full share of the fleet's lease
// that it could not use, and its healthy peers got that much less.
func TestLoadDemandInAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := New(Config{InitialRate: 50, MinRate: 1, MaxRate: 1000, MaxConcurrency: 10})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for ctx.Err() == nil {
					p, err := c.Acquire(ctx, 1)
					if err != nil {
						return
					}
					time.Sleep(time.Millisecond)
					p.Done(unreachable("connection_refused"))
				}
			})
		}
		for range 20 {
			time.Sleep(500 * time.Millisecond)
			c.Tick(time.Now())
		}
		synctest.Wait()
		if !c.Unreachable() {
			t.Fatal("no outage")
		}
		if l := c.Load(time.Now()); l.Demand >= 50 {
			t.Errorf("10s into an outage, writes waiting for the probe: demand %v, want below the rate (50): nothing the rate holds back", l.Demand)
		}
		cancel()
		wg.Wait()
	})
}
