package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPairedAdded(t *testing.T) {
	ms := func(v ...int64) []int64 {
		for i := range v {
			v[i] *= int64(time.Millisecond)
		}
		return v
	}
	blocks := []pacedBlock{
		{Target: 0, Cycle: 0, LatNS: ms(1, 2, 3)},
		{Target: 1, Cycle: 0, LatNS: ms(2, 3, 4)},
		{Target: 1, Cycle: 1, LatNS: ms(9, 9, 9)}, // its bare block comes later in the cycle
		{Target: 0, Cycle: 1, LatNS: ms(5, 5, 5)},
		{Target: 1, Cycle: 2, LatNS: ms(1)}, // no bare block of its cycle: no pair
	}
	got := pairedAdded(blocks, 1, 0, 0.5)
	want := []time.Duration{time.Millisecond, 4 * time.Millisecond}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("pairedAdded = %v, want %v", got, want)
	}
}

func TestMedianInterval(t *testing.T) {
	f := func(name string, ds []time.Duration, wantMed time.Duration, wantVerdict string) {
		t.Helper()
		med, lo, hi := medianInterval(ds)
		if med != wantMed {
			t.Errorf("%s: median %v, want %v", name, med, wantMed)
		}
		if lo > med || hi < med {
			t.Errorf("%s: interval [%v, %v] does not hold the median %v", name, lo, hi, med)
		}
		if v := latencyVerdict(lo, hi); !strings.HasPrefix(v, wantVerdict) {
			t.Errorf("%s: verdict %q, want %q…", name, v, wantVerdict)
		}
	}
	us := time.Microsecond
	same := func(d time.Duration, n int) []time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			ds[i] = d
		}
		return ds
	}
	f("all below", same(50*us, 20), 50*us, "met")
	f("all above", same(900*us, 20), 900*us, "MISSED")
	// One pair spoiled by a stall does not decide it.
	f("one stall", append(same(20*us, 19), 40000*us), 20*us, "met")
	// Spread on both sides of the target: no verdict.
	spread := []time.Duration{-3000 * us, -2000 * us, -1000 * us, 0, 100 * us, 300 * us, 1000 * us, 2000 * us, 3000 * us}
	f("spread", spread, 100*us, "undecided")
}

// pooledQuantile finds, without pooling, the quantile that quantile finds
// in the blocks pooled, each as many times as its multiplicity says.
func TestPooledQuantile(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		blocks := make([][]int64, 1+rng.IntN(6))
		mult := make([]int, len(blocks))
		var pooled []int64
		for i := range blocks {
			for range rng.IntN(40) {
				blocks[i] = append(blocks[i], rng.Int64N(1000)-200)
			}
			slices.Sort(blocks[i])
			mult[i] = rng.IntN(3)
			for range mult[i] {
				pooled = append(pooled, blocks[i]...)
			}
		}
		for _, q := range []float64{0, 0.5, 0.9, 0.99, 1} {
			want := quantile(slices.Clone(pooled), q)
			if got := pooledQuantile(blocks, mult, q); got != want {
				t.Fatalf("trial %d, q %v: %v, want %v (blocks %v, mult %v)", trial, q, got, want, blocks, mult)
			}
		}
	}
}

// The pooled difference follows a shift of every write, its interval is
// the shift when every cycle shows it, a cycle without both blocks is
// left out, and a stall in one cycle widens the interval rather than
// deciding the verdict.
func TestPooledAdded(t *testing.T) {
	us := int64(time.Microsecond)
	lat := func(shift int64, n int) []int64 {
		xs := make([]int64, n)
		for i := range xs {
			xs[i] = int64(1000+i)*us + shift
		}
		return xs
	}
	var blocks []pacedBlock
	for c := range 30 {
		blocks = append(blocks, pacedBlock{Target: 0, Cycle: c, LatNS: lat(0, 200)}, pacedBlock{Target: 1, Cycle: c, LatNS: lat(50*us, 200)})
	}
	blocks = append(blocks, pacedBlock{Target: 1, Cycle: 99, LatNS: lat(90000*us, 200)}) // no bare block: no pair
	d, lo, hi := pooledAdded(blocks, 1, 0, 0.99)
	if want := 50 * time.Microsecond; d != want || lo != want || hi != want {
		t.Errorf("every write 50 µs later: added %v [%v, %v], want 50µs [50µs, 50µs]", d, lo, hi)
	}
	if v := latencyVerdict(lo, hi); v != "met" {
		t.Errorf("verdict %q, want met", v)
	}
	// One cycle's sluice block stalled: 60 writes of its 200, the 1% of
	// the 6,000 writes that sets the pooled p99, 40 ms later. The run's
	// p99 is then the stall's; the interval says that it rests on one
	// cycle: no verdict either way.
	stalled := lat(50*us, 200)
	for i := range 60 {
		stalled[140+i] += 40000 * us
	}
	blocks[1].LatNS = stalled
	d, lo, hi = pooledAdded(blocks, 1, 0, 0.99)
	if d < 39*time.Millisecond || lo > 50*time.Microsecond || hi < 39*time.Millisecond {
		t.Errorf("one stalled cycle of 30: added %v [%v, %v], want 39ms or more, in an interval from 50µs or less to 39ms or more", d, lo, hi)
	}
	if v := latencyVerdict(lo, hi); !strings.HasPrefix(v, "undecided") {
		t.Errorf("verdict %q, want undecided", v)
	}
}
