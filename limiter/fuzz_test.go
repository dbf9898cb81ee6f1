package limiter

import (
	"math"
	"testing"
	"time"
)

// FuzzControllerInvariants drives a controller on a fake clock with an
// arbitrary sequence of operations and checks after each one that the clamps
// hold, that no Congested, Failed or Unreachable sample raised a limit, that a Success
// raised at most the rate and only in startup (a startup round), and that no
// Tick closing a window with such a sample raised one.
func FuzzControllerInvariants(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0, 0, 0, 0, 8, 8, 8, 1, 1, 1, 9, 9, 9, 2, 3, 4})
	f.Add([]byte{0, 0, 0, 0, 0, 5, 5, 5, 5, 9, 9, 0, 0, 6, 6, 7, 7, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clk := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
		cfg := Config{
			InitialRate: 50, MinRate: 5, MaxRate: 400,
			InitialConcurrency: 3, MaxConcurrency: 12,
			Burst: 4, Now: clk.Now,
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		var held []*Permit
		bad := false // the current window saw a Congested or Failed sample
		check := func(op string, before Snapshot, mayRaise bool) {
			t.Helper()
			s := c.Snapshot()
			if s.Rate < cfg.MinRate || s.Rate > cfg.MaxRate || math.IsNaN(s.Rate) {
				t.Fatalf("%s: rate %v outside [%v, %v]", op, s.Rate, cfg.MinRate, cfg.MaxRate)
			}
			if s.Concurrency < 1 || s.Concurrency > cfg.MaxConcurrency {
				t.Fatalf("%s: concurrency %d outside [1, %d]", op, s.Concurrency, cfg.MaxConcurrency)
			}
			if s.InFlight != len(held) || s.Queued != 0 {
				t.Fatalf("%s: in flight %d, want %d", op, s.InFlight, len(held))
			}
			if !mayRaise && (s.Rate > before.Rate || s.Concurrency > before.Concurrency) {
				t.Fatalf("%s raised a limit: rate %v -> %v, concurrency %d -> %d", op, before.Rate, s.Rate, before.Concurrency, s.Concurrency)
			}
		}
		for i, op := range ops {
			before := c.Snapshot()
			switch op % 10 {
			case 0, 1: // a request
				if p, err := c.TryAcquire(float64(1 + int(op)%3)); err == nil {
					held = append(held, p)
				}
				check("TryAcquire", before, false)
			case 2, 3, 4: // a success
				if len(held) > 0 {
					held[0].Done(Sample{Outcome: Success, Latency: time.Duration(1+op%7) * time.Millisecond})
					held = held[1:]
				}
				check("Done(success)", before, before.Phase == PhaseStartup)
				if s := c.Snapshot(); s.Concurrency > before.Concurrency {
					t.Fatalf("Done(success) raised concurrency %d -> %d", before.Concurrency, s.Concurrency)
				}
			case 5, 6: // a throttle, sometimes partial, sometimes with Retry-After
				if len(held) > 0 {
					held[len(held)-1].Done(Sample{Outcome: Congested, Share: float64(op%4) / 4, RetryAfter: time.Duration(op%3) * time.Second})
					held = held[:len(held)-1]
					bad = true
				}
				check("Done(congested)", before, false)
			case 7: // a server error, a client error, or no store at all
				if len(held) > 0 {
					o := [...]Outcome{Failed, Neutral, Unreachable}[i%3]
					held[0].Done(Sample{Outcome: o})
					held = held[1:]
					bad = bad || o != Neutral
				}
				check("Done(failed/neutral/unreachable)", before, false)
			case 8: // time passes
				clk.advance(time.Duration(op) * time.Millisecond)
				check("advance", before, false)
			case 9: // the window closes
				clk.advance(DefaultWindow)
				c.Tick(clk.now)
				check("Tick", before, !bad)
				bad = false
			}
		}
	})
}
