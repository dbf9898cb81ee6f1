package limiter

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

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
