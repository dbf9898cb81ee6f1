package main

import (
	"net/http"
	"net/http/httptest"
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

// A quantile is the smallest sample with at least that share of the
// samples at or below it (nearest rank), the definition the in-process
// bench uses: p99 of 100 samples is the 99th, not the largest, and p50 of
// an even count is the lower middle one.
func TestQuantileNearestRank(t *testing.T) {
	seq := func(n int) []int64 {
		xs := make([]int64, n)
		for i := range xs {
			xs[i] = int64(n - i) // unsorted: quantile sorts
		}
		return xs
	}
	for _, tc := range []struct {
		n    int
		q    float64
		want time.Duration
	}{
		{100, 0.99, 99}, {300, 0.99, 297}, {1000, 0.99, 990}, {101, 0.99, 100}, {50, 0.99, 50},
		{4, 0.5, 2}, {5, 0.5, 3}, {1, 0.99, 1},
	} {
		if got := quantile(seq(tc.n), tc.q); got != tc.want {
			t.Errorf("quantile of 1..%d at %v = %d, want %d", tc.n, tc.q, got, tc.want)
		}
		tl := &tally{lat: seq(tc.n)}
		if got := tl.pct(tc.q); got != tc.want {
			t.Errorf("pct of 1..%d at %v = %d, want %d", tc.n, tc.q, got, tc.want)
		}
	}
}

// The pacer lag is the generator's own lateness: a target slower than the
// writers can keep up with delays its writes in the queue, and that wait
// belongs to the target's latency (open loop), not to the pacer.
func TestPacerLagIsTheGenerators(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	// One writer at 100/s for 300 ms on a target of 20 ms a write: the
	// 30 writes take 600 ms, the last one waiting some 290 ms for the
	// writer.
	spec := pacedSpec{Targets: []string{srv.URL}, Writers: 1, Size: 16, Rate: 100}
	b := pacedBlockRun(&http.Client{}, spec, 0, make([]byte, 16), 300*time.Millisecond)
	if b.Writes != 30 || b.Errors != 0 {
		t.Fatalf("%d writes, %d errors (%s); want 30 and none", b.Writes, b.Errors, b.FirstErr)
	}
	if lat := quantile(b.LatNS, 0.99); lat < 250*time.Millisecond {
		t.Errorf("latency p99 %v, want the queue's wait in it (≥ 250ms)", lat)
	}
	if lag := quantile(b.LagNS, 0.99); lag > 50*time.Millisecond {
		t.Errorf("pacer lag p99 %v for a pacer that kept its schedule, want the pacer's own lateness (< 50ms)", lag)
	}
}
