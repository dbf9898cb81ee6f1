package limiter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-dev/sluice/limiter"
)

func Example() {
	ctl, err := limiter.New(limiter.Config{
		InitialRate: 100, MinRate: 1, MaxRate: 10000, // requests/s
		MaxConcurrency: 64,
	})
	if err != nil {
		panic(err)
	}
	defer ctl.Close()

	// One attempt: acquire, send, report.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second) // the queue timeout
	defer cancel()
	p, err := ctl.Acquire(ctx, 1)
	if err != nil {
		fmt.Println("push back; retry in", ctl.RetryWait(1))
		return
	}
	p.Done(limiter.Sample{Outcome: limiter.Success, Latency: 12 * time.Millisecond})

	s := ctl.Snapshot()
	fmt.Println(s.Phase, s.Rate, s.Concurrency, s.Samples[limiter.Success])
	// Output: startup 100 4 1
}

func ExampleBackoff() {
	b := limiter.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}
	half := func() float64 { return 0.5 } // tests fix the jitter; nil uses math/rand/v2
	fmt.Println(b.Delay(0, 0, half), b.Delay(3, 0, half), b.Delay(0, 484289*time.Hour, half))
	// Output: 150ms 850ms 30s
}
