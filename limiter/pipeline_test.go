package limiter

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// oneSlot is a controller held at one slot, with rate to spare.
func oneSlot(t *testing.T) (*Controller, *fakeClock) {
	t.Helper()
	return newFake(t, 1000, func(c *Config) {
		c.InitialConcurrency, c.MaxConcurrency = 1, 1
	})
}

func tryPipelined(t *testing.T, c *Controller) *Permit {
	t.Helper()
	p, err := c.TryAcquirePipelined(1)
	if err != nil {
		t.Fatalf("TryAcquirePipelined: %v (snapshot %+v)", err, c.Snapshot())
	}
	return p
}

func wantFlight(t *testing.T, c *Controller, inFlight, staged int) {
	t.Helper()
	if s := c.Snapshot(); s.InFlight != inFlight || s.Staged != staged {
		t.Fatalf("in flight %d, staged %d; want %d, %d", s.InFlight, s.Staged, inFlight, staged)
	}
}

// answer has the store answer each permit in turn: Pass, then Done with a
// success.
func answer(ps ...*Permit) {
	for _, p := range ps {
		p.Pass()
		p.Done(success(ms(1)))
	}
}

func isReady(p *Permit) bool {
	select {
	case <-p.Ready():
		return true
	default:
		return false
	}
}

// At one slot, a pipelined write may be staged behind the one in flight,
// and only one: the store still sees one write at a time.
func TestPipelinedStagesOneBehindEachLeader(t *testing.T) {
	c, _ := oneSlot(t)
	a := tryPipelined(t, c)
	if a.Staged() || a.Ready() != nil {
		t.Fatal("the first write was staged with a slot free")
	}
	b := tryPipelined(t, c)
	if !b.Staged() || b.Leader() != a || isReady(b) {
		t.Fatal("the second write was not staged behind the first")
	}
	wantFlight(t, c, 1, 1)
	if _, err := c.TryAcquirePipelined(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("a third write: %v, want ErrNoCapacity (one follower per leader)", err)
	}
	if _, err := c.TryAcquire(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("a write that cannot be pipelined: %v, want ErrNoCapacity", err)
	}

	// The store answers a and takes b up: b has a's slot, and a new
	// follower may be staged behind b.
	a.Pass()
	if b.Staged() || b.Leader() != nil || !isReady(b) {
		t.Fatal("b still staged after a passed it its slot")
	}
	wantFlight(t, c, 1, 0)
	a.Done(success(ms(2)))
	wantFlight(t, c, 1, 0)
	d := tryPipelined(t, c)
	if d.Leader() != b {
		t.Fatal("no follower staged behind b")
	}
	b.Pass()
	b.Done(success(ms(2)))
	d.Pass()
	wantFlight(t, c, 1, 0)
	d.Done(success(ms(2)))
	wantFlight(t, c, 0, 0)
	if s := c.Snapshot(); s.Samples[Success] != 3 {
		t.Fatalf("successes %d, want 3", s.Samples[Success])
	}
}

// With two slots, each write in flight may lead one follower.
func TestPipelinedOneFollowerPerSlot(t *testing.T) {
	c, _ := newFake(t, 1000, func(c *Config) { c.InitialConcurrency, c.MaxConcurrency = 2, 2 })
	a, b := tryPipelined(t, c), tryPipelined(t, c)
	f, g := tryPipelined(t, c), tryPipelined(t, c)
	if f.Leader() == nil || g.Leader() == nil || f.Leader() == g.Leader() {
		t.Fatalf("followers behind %p and %p, want one behind each of %p, %p", f.Leader(), g.Leader(), a, b)
	}
	if _, err := c.TryAcquirePipelined(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("a fifth write: %v, want ErrNoCapacity", err)
	}
	wantFlight(t, c, 2, 2)
	answer(a, b, f, g)
	wantFlight(t, c, 0, 0)
}

// A write that the caller cannot pipeline never leads a follower.
func TestPipelinedNeedsAPipelinedLeader(t *testing.T) {
	c, _ := oneSlot(t)
	a := take(t, c, 1)[0]
	if _, err := c.TryAcquirePipelined(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("staged behind a write that is not pipelined: %v", err)
	}
	a.Done(success(ms(1)))
}

// Nothing is staged until the store has answered once: the cold start
// sends one write at a time per slot.
func TestPipelinedNotBeforeTheFirstAnswer(t *testing.T) {
	c, clk := newFake(t, 1000, func(c *Config) {
		c.InitialConcurrency, c.MaxConcurrency = 1, 1
		c.Burst = 0
	})
	a := tryPipelined(t, c)
	if _, err := c.TryAcquirePipelined(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("staged before any answer: %v", err)
	}
	answer(a)
	clk.advance(time.Second) // the bucket refills
	a = tryPipelined(t, c)
	b := tryPipelined(t, c)
	if b.Leader() != a {
		t.Fatal("not staged after the first answer")
	}
	answer(a, b)
}

// A staged write counts in the rate when it is granted: it is sent then.
func TestPipelinedStagingTakesTheRate(t *testing.T) {
	c, clk := newFake(t, 10, func(c *Config) {
		c.InitialConcurrency, c.MaxConcurrency = 1, 1
		c.Burst = 1
	})
	a := tryPipelined(t, c)
	if _, err := c.TryAcquirePipelined(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("staged with an empty bucket: %v", err)
	}
	clk.advance(100 * time.Millisecond)
	b := tryPipelined(t, c)
	if b.Leader() != a {
		t.Fatal("not staged once the rate allowed it")
	}
	answer(a, b)
}

// After a cut below the writes in flight, nothing is staged until they
// are within the limit: the connections drain.
func TestPipelinedNotOverTheLimit(t *testing.T) {
	c, _ := newFake(t, 1000, func(c *Config) { c.InitialConcurrency, c.MaxConcurrency = 2, 2 })
	a, b := tryPipelined(t, c), tryPipelined(t, c)
	c.mu.Lock()
	c.conc.cutTo(2, 1) // as a congestion cut does
	c.mu.Unlock()
	if _, err := c.TryAcquirePipelined(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("staged with 2 in flight at a limit of 1: %v", err)
	}
	answer(a)
	if f := tryPipelined(t, c); f.Leader() != b {
		t.Fatal("not staged behind b once within the limit")
	} else {
		answer(b, f)
	}
}

// A leader whose attempt ended without an answer that was read (never
// sent, or its connection broke) hands its slot to its follower, which
// goes by itself.
func TestPipelinedLeaderDoneHandsOver(t *testing.T) {
	c, _ := oneSlot(t)
	a := tryPipelined(t, c)
	b := tryPipelined(t, c)
	a.Done(Sample{Outcome: Neutral, Reason: "not_sent"})
	if b.Staged() || !isReady(b) {
		t.Fatal("the follower did not get its leader's slot")
	}
	wantFlight(t, c, 1, 0)
	a.Pass() // after Done: nothing
	wantFlight(t, c, 1, 0)
	answer(b)
	wantFlight(t, c, 0, 0)
}

// A follower whose caller gives up before the store took it up frees its
// leader for another, and a waiting write is staged in its place.
func TestPipelinedStagedDoneWakesWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := oneSlot(t)
		a := tryPipelined(t, c)
		b := tryPipelined(t, c)
		got := make(chan *Permit, 1)
		go func() {
			p, err := c.AcquirePipelined(context.Background(), 1)
			if err != nil {
				t.Error(err)
			}
			got <- p
		}()
		synctest.Wait()
		if n := c.Snapshot().Queued; n != 1 {
			t.Fatalf("queued %d, want 1", n)
		}
		b.Done(Sample{Outcome: Neutral, Reason: "cancelled"})
		if !isReady(b) {
			t.Fatal("a follower that is done is not ready")
		}
		d := <-got
		if d.Leader() != a {
			t.Fatal("the waiter was not staged behind a in b's place")
		}
		wantFlight(t, c, 1, 1)
		answer(a, d)
		wantFlight(t, c, 0, 0)
	})
}

// While the concurrency limit is still growing from its start, nothing is
// staged: the store's own limit is not known yet, and followers would only
// add to what it may be refusing. After a cut, it is.
func TestPipelinedAfterTheLimitIsFound(t *testing.T) {
	c, _ := newFake(t, 1000, func(c *Config) { c.InitialConcurrency, c.MaxConcurrency = 1, 8 })
	a := tryPipelined(t, c)
	if _, err := c.TryAcquirePipelined(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("staged while the limit grows from its start: %v", err)
	}
	c.mu.Lock()
	c.conc.cutTo(2, 1)
	c.mu.Unlock()
	if b := tryPipelined(t, c); b.Leader() != a {
		t.Fatal("not staged after a cut")
	} else {
		answer(a, b)
	}
}

// A probe of one more slot runs without followers for a Window: if the
// store refuses the probe, it refuses that write alone, not each follower
// queued behind it on the new connection in turn.
func TestPipelinedNotBehindAProbe(t *testing.T) {
	c, clk := newFake(t, 1000, func(c *Config) { c.InitialConcurrency, c.MaxConcurrency = 1, 8 })
	c.mu.Lock()
	c.conc.cutTo(2, 2)                        // found the store's limit once...
	c.concGrewFrom, c.concGrewAt = 1, clk.now // ...and grew to it just now
	c.mu.Unlock()
	a, b := tryPipelined(t, c), tryPipelined(t, c)
	if _, err := c.TryAcquirePipelined(1); !errors.Is(err, ErrNoCapacity) {
		t.Fatalf("staged within a Window of a growth: %v", err)
	}
	clk.advance(DefaultWindow)
	f := tryPipelined(t, c)
	if f.Leader() == nil {
		t.Fatal("not staged a Window after the growth")
	}
	answer(a, b, f)
	wantFlight(t, c, 0, 0)
}

// An outage admits one probe at a time, at most one per probe interval
// (see outage): a pipelined write is no exception. With a slot held by an
// attempt that hangs from before the outage, and the other by a follower
// that took its refused leader's slot, a follower staged behind either
// would go out as no probe, and would not move the probe interval when
// refused in turn: a write to an unreachable store at the full rate.
func TestPipelinedNotDuringAnOutage(t *testing.T) {
	c, clk := newFake(t, 1000, func(c *Config) { c.InitialConcurrency, c.MaxConcurrency = 2, 2 })
	tryPipelined(t, c).Done(success(ms(1))) // the store answered once
	_, b := tryPipelined(t, c), tryPipelined(t, c)
	f := tryPipelined(t, c) // staged behind b
	if f.Leader() != b {
		t.Fatal("f not staged behind b")
	}
	b.Done(unreachable("connection_reset")) // f takes b's slot; the outage begins
	if !c.Unreachable() {
		t.Fatal("no outage")
	}
	sent := 0
	for range 400 { // 2s, ProbeMin 250ms to ProbeMax 5s between probes
		clk.advance(ms(5))
		p, err := c.TryAcquirePipelined(1)
		if err != nil {
			continue
		}
		sent++
		f.Done(unreachable("connection_refused"))
		f = p
	}
	if sent > 0 {
		t.Fatalf("%d pipelined writes went out in 2s of an outage with both slots held by attempts from before it, want none", sent)
	}
}
