package limiter

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// benchController has limits so high that nobody waits: the benchmarks
// measure the bookkeeping the proxy adds to every attempt.
func benchController(b *testing.B) *Controller {
	b.Helper()
	c, err := New(Config{
		InitialRate: 1e12, MinRate: 1, MaxRate: 1e12,
		InitialConcurrency: 1 << 20, MaxConcurrency: 1 << 20,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}

var benchSample = Sample{Outcome: Success, Latency: 1e6}

func BenchmarkAcquireDone(b *testing.B) {
	c := benchController(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p, err := c.Acquire(ctx, 1)
		if err != nil {
			b.Fatal(err)
		}
		p.Done(benchSample)
	}
}

// BenchmarkAcquireDoneParallel runs Acquire/Done from 64 goroutines at once
// (SetParallelism(64/GOMAXPROCS)) and reports the p99 of one Acquire+Done
// pair, the latency the controller adds to an attempt.
func BenchmarkAcquireDoneParallel(b *testing.B) {
	c := benchController(b)
	ctx := context.Background()
	b.SetParallelism(max(1, 64/runtimeGOMAXPROCS()))
	var mu sync.Mutex
	var all []time.Duration
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			start := time.Now()
			p, err := c.Acquire(ctx, 1)
			if err != nil {
				b.Error(err)
				return
			}
			p.Done(benchSample)
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		all = append(all, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	if len(all) > 0 {
		slices.Sort(all)
		b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds()), "p99-ns")
	}
}

// BenchmarkAcquireDoneQueued measures the slow path: 64 goroutines contend
// for 8 slots, so most calls wait in the FIFO and are handed a permit.
func BenchmarkAcquireDoneQueued(b *testing.B) {
	c, err := New(Config{
		InitialRate: 1e12, MinRate: 1, MaxRate: 1e12,
		InitialConcurrency: 8, MaxConcurrency: 8, QueueMax: 64,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	ctx := context.Background()
	b.SetParallelism(max(1, 64/runtimeGOMAXPROCS()))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := c.Acquire(ctx, 1)
			if err != nil {
				b.Error(err)
				return
			}
			p.Done(benchSample)
		}
	})
}

func BenchmarkTryAcquireDone(b *testing.B) {
	c := benchController(b)
	b.ReportAllocs()
	for b.Loop() {
		p, err := c.TryAcquire(1)
		if err != nil {
			b.Fatal(err)
		}
		p.Done(benchSample)
	}
}

func runtimeGOMAXPROCS() int { return runtime.GOMAXPROCS(0) }
